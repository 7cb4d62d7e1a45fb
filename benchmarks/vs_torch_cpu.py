"""The CPU train step of tljax against PyTorch, side by side: HF transformers
`ResNetForImageClassification` (ResNet-50) and `ViTForImageClassification` (ViT-B/16) in
eager PyTorch, against tljax's ResNet-50 and ViT-B/16, both with random weights, SGD with
momentum 0.9, 1000 classes, same batch and resolution, full fine-tuning and a linear probe.

    python -m benchmarks.vs_torch_cpu --models=resnet50,vit-b16 --modes=full,linear_probe \
        --xla_flags="default;--xla_cpu_use_onednn=true"

Each side is its own process with --threads threads (torch.set_num_threads; XLA:CPU's pool is
sized by the cores the process may use, set with os.sched_setaffinity), kept alive for the
whole comparison; the rounds interleave them (torch, tljax with each XLA_FLAGS variant,
torch, ...) so a load change on the machine hits every side alike. Prints ms per step
(median over rounds of each round's median) and tljax's speed relative to PyTorch.
"""
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("models", "resnet50,vit-b16", "resnet50 and/or vit-b16")
flags.DEFINE_string("modes", "full,linear_probe", "full and/or linear_probe")
flags.DEFINE_integer("batch", 8, "images per step")
flags.DEFINE_integer("image_size", 224, "resolution")
flags.DEFINE_integer("threads", 2, "threads (cores) per side")
flags.DEFINE_integer("rounds", 3, "interleaved rounds")
flags.DEFINE_integer("steps", 3, "timed steps per round")
flags.DEFINE_string("xla_flags", "default", "';'-separated XLA_FLAGS variants for tljax "
                    "('default': tljax's own settings)")
FLAGS = flags.FLAGS


# ---------------------------------------------------------------- the two workers

def _random_batch(batch, size, channels_last):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, size, size, 3), np.float32)
    labels = rng.integers(0, 1000, batch).astype(np.int32)
    return (images if channels_last else images.transpose(0, 3, 1, 2).copy()), labels


def _jax_worker(model, mode, batch, size):
    import jax

    from benchmarks.common import build_model, build_step

    module, variables = build_model(model, size)
    step, state, _, _ = build_step(module, variables, size, mode)
    images, labels = _random_batch(batch, size, channels_last=True)
    data = {"image": jax.device_put(images), "label": jax.device_put(labels)}
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, data).compile()
    box = [state]

    def one_step():
        box[0], metrics = compiled(box[0], data)
        jax.block_until_ready(metrics)

    return one_step


def _torch_worker(model, mode, batch, size):
    import torch
    import transformers

    torch.manual_seed(0)
    if model == "resnet50":
        net = transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=1000))
        head = net.classifier
    else:
        net = transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=size, num_labels=1000))
        head = net.classifier
    net.train()
    if mode == "linear_probe":
        for p in net.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        for m in net.modules():  # Frozen BatchNorm normalises with its running statistics.
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
    images, labels = _random_batch(batch, size, channels_last=False)
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()

    def one_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(pixel_values=x).logits, y)
        loss.backward()
        opt.step()

    return one_step


def _serve(side, model, mode, batch, size, threads):
    """A worker: builds its step, says "ready", then runs `steps` steps per "run N" line."""
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        one_step = _torch_worker(model, mode, batch, size)
    else:
        one_step = _jax_worker(model, mode, batch, size)
    one_step()
    one_step()
    print("ready", flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line.split()[1])):
            begin = time.perf_counter()
            one_step()
            times.append(time.perf_counter() - begin)
        print(f"{1000 * statistics.median(times):.1f}", flush=True)


# ---------------------------------------------------------------- the comparison

class _Worker:
    def __init__(self, side, model, mode, xla_flags=None):
        env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS=str(FLAGS.threads))
        if xla_flags is not None:
            env["XLA_FLAGS"] = "" if xla_flags == "default" else xla_flags
        cores = sorted(os.sched_getaffinity(0))[:FLAGS.threads]
        self.proc = subprocess.Popen(
            ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m",
             "benchmarks.vs_torch_cpu", f"--serve={side},{model},{mode}",
             f"--batch={FLAGS.batch}", f"--image_size={FLAGS.image_size}",
             f"--threads={FLAGS.threads}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.name = side if xla_flags is None else f"tljax {xla_flags}"
        self.times = []

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            sys.exit(f"{self.name} worker failed to start")

    def run(self, steps):
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        self.times.append(float(self.proc.stdout.readline()))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main(argv):
    del argv
    if FLAGS.serve:
        side, model, mode = FLAGS.serve.split(",")
        return _serve(side, model, mode, FLAGS.batch, FLAGS.image_size, FLAGS.threads)
    variants = FLAGS.xla_flags.split(";")
    print(f"| model | mode | side | ms/step (batch {FLAGS.batch}, {FLAGS.image_size} px, "
          f"{FLAGS.threads} threads) | tljax speed / PyTorch |")
    print("|---|---|---|---:|---:|")
    for model in FLAGS.models.split(","):
        for mode in FLAGS.modes.split(","):
            workers = [_Worker("torch", model, mode)] + [
                _Worker("jax", model, mode, v) for v in variants]
            for w in workers:  # Built one after another: compiling is not what is timed.
                w.wait_ready()
            for _ in range(FLAGS.rounds):
                for w in workers:
                    w.run(FLAGS.steps)
            torch_ms = statistics.median(workers[0].times)
            for w in workers:
                ms = statistics.median(w.times)
                speed = "" if w is workers[0] else f"{torch_ms / ms:.2f}x"
                print(f"| {model} | {mode} | {w.name} | {ms:.0f} | {speed} |", flush=True)
                w.close()


flags.DEFINE_string("serve", "", "internal: run as a worker 'side,model,mode'")

if __name__ == "__main__":
    app.run(main)

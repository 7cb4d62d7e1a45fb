"""Training throughput (images/s) and model-FLOPs utilisation for full fine-tuning, per
parallelism path and activation dtype.

    python -m benchmarks.throughput --model=resnet50 --batch=128
    python -m benchmarks.throughput --model=vit-b16 --dtypes=float32,bfloat16 --paths=jit,pmap

Model FLOPs per image are XLA's count for the train step compiled on the CPU (exact; GPU
cost analysis leaves out cuDNN/cuBLAS calls): --flops_per_image, defaulting to the table
below measured with benchmarks/step_cost.py. MFU is against --peak_tflops (dense bf16).
"""
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks.common import build_model, build_step
from tljax.training import parallel

# Full fine-tuning train step at 224 px, GFLOPs per image (benchmarks/step_cost.py on CPU).
TRAIN_GFLOPS_PER_IMAGE = {"resnet50": 23.97, "vit-b16": 106.18}

flags.DEFINE_string("model", "resnet50", "step_cost preset")
flags.DEFINE_integer("image_size", 224, "resolution")
flags.DEFINE_integer("batch", 128, "global batch")
flags.DEFINE_string("dtypes", "float32,bfloat16", "activation dtypes")
flags.DEFINE_string("paths", "jit,pmap", "parallelism paths")
flags.DEFINE_integer("accum_steps", 1, "gradient accumulation")
flags.DEFINE_integer("steps", 20, "timed steps")
flags.DEFINE_float("flops_per_image", 0.0, "train GFLOPs per image (0: table)")
flags.DEFINE_float("peak_tflops", 989.0, "accelerator peak, for MFU (H100 SXM dense bf16)")
FLAGS = flags.FLAGS


def measure(model, image_size, batch, dtype, path, accum_steps=1, n_steps=20):
    par = parallel.build(path)
    module, variables = build_model(model, image_size, dtype)
    step, state, _, _ = build_step(module, variables, image_size, "full",
                                   accum_steps=accum_steps, axis_name=par.axis_name)
    rng = np.random.default_rng(0)
    host_batch = {"image": rng.standard_normal((batch, image_size, image_size, 3), np.float32),
                  "label": rng.integers(0, 1000, batch).astype(np.int32)}
    compiled = par.compile_train(step)
    state, device_batch = par.put_state(state), par.put_batch(host_batch)
    for _ in range(3):
        state, metrics = compiled(state, device_batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        state, metrics = compiled(state, device_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main(argv):
    del argv
    gflops = FLAGS.flops_per_image or TRAIN_GFLOPS_PER_IMAGE.get(FLAGS.model, float("nan"))
    print(f"{FLAGS.model} @ {FLAGS.image_size}px, batch {FLAGS.batch}, accum {FLAGS.accum_steps}, "
          f"{jax.device_count()} x {jax.devices()[0].device_kind}")
    print("| path | dtype | images/s | MFU % |\n|---|---|---:|---:|")
    for path in FLAGS.paths.split(","):
        for dtype in FLAGS.dtypes.split(","):
            rate = measure(FLAGS.model, FLAGS.image_size, FLAGS.batch, dtype, path,
                           FLAGS.accum_steps, FLAGS.steps)
            mfu = 100 * rate * gflops * 1e9 / (FLAGS.peak_tflops * 1e12 * jax.device_count())
            print(f"| {path} | {dtype} | {rate:.0f} | {mfu:.1f} |", flush=True)


if __name__ == "__main__":
    app.run(main)

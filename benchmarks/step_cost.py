"""Cost of one train step per freezing strategy: compiled FLOPs and bytes, ratio to a forward
pass, optimizer-state bytes, and measured ms/step (comparable only within one run).

    python -m benchmarks.step_cost --model=resnet50 --image_size=224 --batch=8
    python -m benchmarks.step_cost --model=vit-b16 --strategies="full;linear_probe;last_k:2"
    python -m benchmarks.step_cost --model=vit-b16 --strategies="lora:r=8;ssf;freezeout:t0=0.5"

FLOPs and bytes come from XLA's cost analysis of the compiled step (exact, stable);
timing is the median of --time_steps steps after a warm-up (0 skips timing).
"""
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks.common import PRESETS, build_model, build_step, phase_count
from tljax.metrics import compiled_cost

DEFAULT_STRATEGIES = "linear_probe;last_k:1;last_k:2;bitfit;norm_only;full"

flags.DEFINE_string("model", "resnet50", f"one of {sorted(PRESETS)}")
flags.DEFINE_integer("image_size", 224, "square input resolution")
flags.DEFINE_integer("batch", 8, "global batch")
flags.DEFINE_string("strategies", DEFAULT_STRATEGIES, "';'-separated freeze specs (specs "
                    "themselves contain commas, e.g. lora:r=8,targets=qv)")
flags.DEFINE_string("optimizer", "sgd", "sgd | adam | adamw")
flags.DEFINE_integer("time_steps", 3, "timed steps per strategy (0: FLOPs only)")
flags.DEFINE_string("dtype", "float32", "activation dtype")
flags.DEFINE_integer("total_steps", 1000, "run length that places multi-phase strategies' phases")
FLAGS = flags.FLAGS


def _cost(compiled):
    cost = compiled_cost(compiled)
    return cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)


def _nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _time(fn, args, n):
    if not n:
        return float("nan")
    out = fn(*args)  # Warm-up; donated state is rebuilt from the output.
    jax.block_until_ready(out)
    times = []
    state, batch = out[0], args[1]
    for _ in range(n):
        start = time.perf_counter()
        state, metrics = fn(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(model, image_size, batch, strategies, optimizer="sgd", time_steps=3, dtype="float32",
            total_steps=1000):
    """Rows of (strategy, flops, bytes, ratio to forward, opt-state bytes, trainable %, ms).

    A multi-phase strategy (gradual, lp_ft, freezeout, a method with start/stop) compiles
    every phase; its row holds the step-weighted mean over `total_steps`."""
    module, variables = build_model(model, image_size, dtype)
    images = jnp.ones((batch, image_size, image_size, 3), jnp.float32)
    forward = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(variables, images).compile()
    fwd_flops, _ = _cost(forward)
    batch_data = {"image": images, "label": jnp.zeros((batch,), jnp.int32)}
    rows = [("forward only", fwd_flops, None, 1.0, 0, None, _time(
        lambda s, b: (s, forward(s, b["image"])), (variables, batch_data), time_steps))]
    for spec in strategies:
        phases = []  # (steps, flops, bytes, opt bytes, trainable fraction, ms) per phase
        for phase in range(phase_count(module, variables, image_size, spec, total_steps)):
            step, state, fraction, length = build_step(module, variables, image_size, spec,
                                                       optimizer, total_steps=total_steps,
                                                       phase=phase)
            compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch_data).compile()
            flops, nbytes = _cost(compiled)
            opt_bytes = _nbytes(state.opt_state)
            state = jax.tree.map(jnp.copy, state)
            phases.append((length, flops, nbytes, opt_bytes, fraction,
                           _time(compiled, (state, batch_data), time_steps)))
        mean = [sum(p[0] * p[i] for p in phases) / total_steps for i in range(1, 6)]
        flops, nbytes, opt_bytes, fraction, ms = mean
        label = spec if len(phases) == 1 else f"{spec} ({len(phases)} phases, step-weighted)"
        rows.append((label, flops, nbytes, flops / fwd_flops, opt_bytes, 100 * fraction, ms))
    return rows


def format_table(rows):
    lines = ["| strategy | train-step GFLOPs | GB accessed | x forward | opt state MB | trainable % | ms/step |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for spec, flops, nbytes, ratio, opt_bytes, frac, ms in rows:
        lines.append(f"| {spec} | {flops / 1e9:.2f} | {'' if nbytes is None else f'{nbytes / 1e9:.2f}'} "
                     f"| {ratio:.2f} | {opt_bytes / 2**20:.1f} | {'' if frac is None else f'{frac:.2f}'} "
                     f"| {ms:.0f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    rows = measure(FLAGS.model, FLAGS.image_size, FLAGS.batch, FLAGS.strategies.split(";"),
                   FLAGS.optimizer, FLAGS.time_steps, FLAGS.dtype, FLAGS.total_steps)
    print(f"{FLAGS.model} @ {FLAGS.image_size}px, batch {FLAGS.batch}, {FLAGS.optimizer}, "
          f"{FLAGS.dtype}, {jax.devices()[0].device_kind}")
    print(format_table(rows))


if __name__ == "__main__":
    app.run(main)

"""tljax's half of benchmarks/gpu_suite.sh: the compiled train step on synthetic data, one
JSON row per measurement, rows in priority order under a time budget.

    python -m benchmarks.gpu_tljax --out=/tmp/rows.jsonl --budget_s=240
    python -m benchmarks.gpu_tljax --vit=vit-ti16 --cnn=tiny-bit --image_size=32 --batch=8  # CPU

A step is timed as real training runs it: `--steps` donated steps queued back to back, one
wait at the end (no per-step host sync), after 3 warm-up steps. Peak memory is XLA's own
account of the compiled step (arguments + outputs - donated aliases + temporaries); the
largest batch is projected from it and then measured. MFU counts model FLOPs (XLA's count
of the same step compiled for the CPU, benchmarks/step_cost.py: GPU cost analysis leaves
out cuDNN/cuBLAS calls) against --peak_tflops.
"""
import dataclasses
import glob
import gzip
import json
import os
import re
import time
from collections import defaultdict
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import gpu_common
from benchmarks.common import build_model, build_step
from tljax import models
from tljax.models import layers

SPECS = {"full": "full", "linear": "linear_probe", "lora": "lora:r=8"}

flags.DEFINE_string("vit", "vit-b16", "ViT preset (benchmarks/common.py)")
flags.DEFINE_string("cnn", "resnet50", "CNN preset")
flags.DEFINE_integer("image_size", 224, "resolution")
flags.DEFINE_integer("batch", 128, "the batch every side is compared at")
flags.DEFINE_string("dtype", "bfloat16", "activation dtype (parameters stay float32)")
flags.DEFINE_integer("steps", 20, "timed steps per row")
flags.DEFINE_float("budget_s", 300, "no new row starts after this many seconds")
flags.DEFINE_string("rows", "", "comma-separated indices into rows() to measure (default: all)")
flags.DEFINE_string("out", "", "JSON lines file the rows are appended to")
flags.DEFINE_string("profile_out", "", "markdown file for the top XLA ops of the ViT and the "
                    "CNN full fine-tuning steps")
flags.DEFINE_string("variant", "", "a label added to every row's variant (e.g. the XLA_FLAGS "
                    "this process runs under, for A/B rows)")
flags.DEFINE_float("peak_tflops", gpu_common.PEAK_TFLOPS, "dense bf16 peak for MFU")
flags.DEFINE_string("cache_dir", "", "JAX's persistent compilation cache, with XLA's autotune "
                    "results (one folder per card kind, kept for the next GPU run); '' = off")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    mode: str           # forward | full | linear | lora
    batch: str          # "base": --batch; "max": the largest batch projected to fit
    attention: str = "auto"
    param_dtype: str = ""
    batch_norm: str = ""  # "two_pass": the two-pass variance tljax used before (A/B row)

    @property
    def variant(self):
        parts = [f"attention={self.attention}"] if self.attention != "auto" else []
        parts += [f"params {self.param_dtype}"] if self.param_dtype else []
        return ", ".join(parts + ([f"BatchNorm {self.batch_norm}"] if self.batch_norm else []))


def rows(vit, cnn):
    """What the suite measures, most wanted first (the time budget cuts from the end; on an
    H100 a ViT-B/16 or ResNet-50 row takes 45-95 s, mostly compilation)."""
    return [Row(vit, "full", "base"), Row(cnn, "full", "base"), Row(vit, "linear", "base"),
            Row(vit, "forward", "base"), Row(vit, "full", "base", param_dtype="bfloat16"),
            Row(vit, "lora", "base"),
            # Training attention is xla under auto (cuDNN refuses 197 tokens' backward pass);
            # inference takes cuDNN: this row shows what it gains.
            Row(vit, "forward", "base", attention="xla"),
            # One-pass shifted BatchNorm statistics (models/layers.py) against the two passes
            # of E[(x - E[x])^2] they replaced: what the second read of every activation cost.
            Row(cnn, "full", "base", batch_norm="two_pass"),
            Row(cnn, "linear", "base"), Row(cnn, "forward", "base"), Row(cnn, "lora", "base"),
            Row(vit, "full", "max"), Row(cnn, "full", "max")]


def _memory_bytes(compiled):
    m = compiled.memory_analysis()
    if m is None:
        return None, None
    fixed = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return fixed + m.temp_size_in_bytes, m.temp_size_in_bytes


def _device_limit():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def _batch_data(batch, size):
    rng = np.random.default_rng(0)
    return {"image": jnp.asarray(rng.standard_normal((batch, size, size, 3), np.float32)),
            "label": jnp.asarray(rng.integers(0, 1000, batch).astype(np.int32))}


def _time(fn, carry, data, steps):
    """ms per call: `steps` calls queued back to back, one wait at the end."""
    for _ in range(3):
        carry = fn(carry, data)
    jax.block_until_ready(carry)
    start = time.perf_counter()
    for _ in range(steps):
        carry = fn(carry, data)
    jax.block_until_ready(carry)
    return 1000 * (time.perf_counter() - start) / steps, carry


def two_pass_moments(x, axis_name=None):
    """BatchNorm statistics as PyTorch's formula reads them: the mean, then E[(x - mean)^2]
    in a second pass over x (tljax's BatchNorm before the one-pass moments)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes) if axis_name is None else jax.lax.pmean(x.mean(axes), axis_name)
    var = jnp.square(x - mean).mean(axes)
    return mean, var if axis_name is None else jax.lax.pmean(var, axis_name)


def measure(row, batch, size, dtype, steps, profile_out=""):
    if row.batch_norm == "two_pass":
        with mock.patch.object(layers, "batch_moments", two_pass_moments):
            return measure(dataclasses.replace(row, batch_norm=""), batch, size, dtype, steps)
    module, variables = build_model(row.model, size, dtype)
    module = models.with_numerics(module, dtype, row.attention)
    data = _batch_data(batch, size)
    if row.mode == "forward":
        compiled = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(
            variables, data["image"]).compile()
        ms, _ = _time(lambda c, d: (c[0], compiled(c[0], d["image"])), (variables, None), data, steps)
    else:
        step, state, _, _ = build_step(module, variables, size, SPECS[row.mode],
                                       param_dtype=row.param_dtype or None)
        compiled = jax.jit(step, donate_argnums=(0,)).lower(state, data).compile()
        ms, carry = _time(lambda c, d: compiled(c[0], d), (state, None), data, steps)
        if profile_out:
            held = [carry[0]]

            def one_step():  # threads the donated state through
                held[0], step_metrics = compiled(held[0], data)
                return step_metrics

            _profile(one_step, profile_out, compiled.as_text(), f"{row.model} {row.mode} step")
    peak, temp = _memory_bytes(compiled)
    return ms, peak, temp


def _profile(run_step, path, hlo_text="", title="step", top=15):
    """Top XLA ops (by device time) of one step, from a jax.profiler trace, as markdown
    appended to `path`: each op's result shape read from the optimized HLO (`hlo_text`), and
    the share of the step's span the device was busy."""
    trace_dir = path + ".trace"
    jax.block_until_ready(run_step())
    try:  # a profiler that fails here costs the profile, not the measurement
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(run_step())
        files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        lines = (summarise_trace(files[0], top, hlo_shapes(hlo_text)) if files
                 else ["no perfetto trace was written"])
    except Exception as e:  # noqa: BLE001
        lines = [f"profiling failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"]
    with open(path, "a") as f:
        f.write("\n".join([f"### {title}", "", *lines, ""]) + "\n")


_HLO_RESULT = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+\[[^\]]*\])", re.M)


def hlo_shapes(hlo_text):
    """{instruction name: result shape} of an optimized HLO module's text (a fusion's output,
    e.g. "bf16[128,12,197,197]"), so a profile's op names say what they work on."""
    return {name: shape for name, shape in _HLO_RESULT.findall(hlo_text)}


def summarise_trace(path, top=15, shapes=None):
    """Markdown rows of the ops with the most time on the device (or on the host threads
    when the trace has no device, as on a CPU), their shapes where `shapes` names them, and
    a last line with the device's busy share of the traced span."""
    shapes = shapes or {}
    with gzip.open(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, name in names.items() if "GPU" in name or "/device:" in name}
    totals, counts, spans = defaultdict(float), defaultdict(int), []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        if device_pids and e.get("pid") not in device_pids:
            continue
        if not device_pids and e["name"].startswith("$"):  # Python frames of the host trace
            continue
        totals[e["name"]] += e["dur"]
        counts[e["name"]] += 1
        spans.append((float(e["ts"]), float(e["ts"]) + e["dur"]))
    whole = sum(totals.values()) or 1.0
    out = ["| op | shape | calls | ms | % |", "|---|---|---:|---:|---:|"]
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        shape = shapes.get(name, shapes.get(name.split(":")[0], ""))
        out.append(f"| `{name[:60]}` | {shape[:60]} | {counts[name]} | {us / 1000:.2f} "
                   f"| {100 * us / whole:.1f} |")
    if spans:
        span = max(end for _, end in spans) - min(start for start, _ in spans)
        out += ["", f"busy {100 * _busy(spans) / span:.0f} % of the step's {span / 1000:.2f} ms "
                    f"span ({'device' if device_pids else 'host threads'})"]
    return out


def _busy(spans):
    """Time covered by at least one of the (start, end) spans (overlapping streams once)."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def _projected_max(peak, temp, batch, limit):
    """Largest batch whose step fits JAX's memory pool (`limit`: XLA_PYTHON_CLIENT_MEM_FRACTION
    of the card), temporaries growing with the batch, the rest (state, donated) fixed."""
    if not (peak and temp and limit):
        return None
    return gpu_common.projected_max(peak - temp, temp / batch, limit)


def enable_caches(folder):
    """The persistent compilation cache (tljax.compilation) plus XLA's own caches in it
    (jax_persistent_cache_enable_xla_caches: GPU autotune results and kernels), so that a
    later run on the same card kind loads instead of compiling and autotuning."""
    from tljax import compilation

    compilation.enable_cache(folder)
    jax.config.update("jax_persistent_cache_enable_xla_caches", "all")


def main(argv):
    del argv
    from tljax import compilation

    if FLAGS.cache_dir:
        enable_caches(FLAGS.cache_dir)
    begin = time.monotonic()
    device = jax.devices()[0]
    print(f"tljax: jax {jax.__version__}, {device.device_kind}, {FLAGS.dtype}, "
          f"{FLAGS.image_size}px", flush=True)
    base = {}  # model -> (peak, temp) at the base batch, for the projection
    last_cost = 0.0
    wanted = rows(FLAGS.vit, FLAGS.cnn)
    if FLAGS.rows:
        wanted = [wanted[int(i)] for i in FLAGS.rows.split(",")]
    to_profile = {Row(FLAGS.vit, "full", "base"), Row(FLAGS.cnn, "full", "base")}
    if FLAGS.profile_out:
        open(FLAGS.profile_out, "w").close()
    else:
        to_profile = set()
    for row in wanted:
        elapsed = time.monotonic() - begin
        if elapsed + last_cost > FLAGS.budget_s:
            print(f"tljax: time budget reached at {elapsed:.0f}s; rows left out from {row}")
            break
        batch = FLAGS.batch
        if row.batch == "max":
            batch = _projected_max(*base.get(row.model, (None, None)), FLAGS.batch, _device_limit())
            if batch is None or batch <= FLAGS.batch:
                continue
        variant = ", ".join(filter(None, (row.variant, FLAGS.variant)))
        result = {"side": "tljax", "model": row.model, "mode": row.mode, "batch": batch,
                  "dtype": FLAGS.dtype, "variant": variant, "device": device.device_kind}
        started, compiled_before = time.monotonic(), compilation.stats()
        try:
            ms, peak, temp = measure(row, batch, FLAGS.image_size, FLAGS.dtype, FLAGS.steps,
                                     FLAGS.profile_out if row in to_profile else "")
        except Exception as e:  # noqa: BLE001  an out-of-memory batch or a missing kernel is a row
            result["error"] = gpu_common.error_text(e)
        else:
            if row.mode == "full" and row.batch == "base" and variant == "":
                base[row.model] = (peak, temp)
            rate = 1000 * batch / ms
            result.update(step_ms=round(ms, 2), images_per_s=round(rate, 1),
                          peak_gib=round(peak / 2**30, 2) if peak else None,
                          mfu=gpu_common.mfu(rate, row.model, row.mode, FLAGS.peak_tflops))
        compiling = compilation.stats().since(compiled_before)
        result.update(compile_s=round(compiling.seconds, 1), cache_hits=compiling.cache_hits)
        last_cost = time.monotonic() - started
        gpu_common.emit(result, last_cost, FLAGS.out)


if __name__ == "__main__":
    app.run(main)

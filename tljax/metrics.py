"""Metric writers (metrics.jsonl + TensorBoard through clu) and the progress line (step, loss, images/s, ETA)."""
import contextlib
import json
import time

from absl import logging
from etils import epath

from tljax import paths
from tljax import workdir as workdir_lib


def read_records(workdir):
    """The records of workdir/metrics.jsonl ([] when there is none)."""
    path = epath.Path(workdir) / workdir_lib.METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """One JSON object per event in metrics.jsonl, scalars mirrored to TensorBoard.

    A resumed run drops the records after its checkpoint (they are recomputed), so the
    file reads as one uninterrupted run. The file is rewritten whole on each write (via a
    rename, which works on buckets too, where appending does not). Only the main process
    writes; others get a writer that does nothing.
    """

    def __init__(self, workdir, enabled=True, resume_step=0, hparams=None):
        """`hparams`: a flat {name: value} config shown in TensorBoard's HPARAMS tab."""
        self.enabled = enabled
        if not enabled:
            return
        from clu import metric_writers  # Heavy import (TF), and only process 0 needs it.

        self._path = epath.Path(workdir) / workdir_lib.METRICS
        self._lines = [json.dumps(r) for r in read_records(workdir) if r["step"] <= resume_step]
        self._tb = metric_writers.SummaryWriter(str(epath.Path(workdir) / workdir_lib.TENSORBOARD))
        if hparams:
            self._tb.write_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                    for k, v in hparams.items()})

    def write(self, step, values, kind="train"):
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time()}
        record.update({k: (float(v) if hasattr(v, "__float__") else v) for k, v in values.items()})
        self._lines.append(paths.strict_json(record))
        paths.write_text_atomic(self._path, "\n".join(self._lines) + "\n")
        self._tb.write_scalars(int(step), {
            f"{kind}/{key}": value for key, value in record.items()
            if key not in ("step", "time", "kind") and isinstance(value, (int, float))})

    def close(self):
        if self.enabled:
            self._tb.flush()
            self._tb.close()


class Progress:
    """Turns (step, images seen) into images/s and an ETA for the log line.

    Time spent in `paused()` blocks (compiling, evaluating, checkpointing) is left out, so
    images/s is the train step's throughput and the ETA is what the remaining steps take.
    """

    def __init__(self, start_step, total_steps, global_batch):
        self.total_steps = total_steps
        self.global_batch = global_batch
        self._last_step, self._last_time = start_step, time.monotonic()
        self._paused = 0.0

    @contextlib.contextmanager
    def paused(self):
        begin = time.monotonic()
        try:
            yield
        finally:
            self._paused += time.monotonic() - begin

    def line(self, step, loss):
        now = time.monotonic()
        steps = max(step - self._last_step, 1)
        elapsed = max(now - self._last_time - self._paused, 1e-9)
        self._last_step, self._last_time, self._paused = step, now, 0.0
        images_per_s = steps * self.global_batch / elapsed
        eta = (self.total_steps - step) * elapsed / steps
        text = (f"step {step}/{self.total_steps}  loss {loss:.4f}  {images_per_s:.1f} examples/s  "
                f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        logging.info(text)
        return {"images_per_s": images_per_s}


def compiled_cost(compiled):
    """XLA's cost analysis of a compiled (or lowered, not yet compiled) computation as a dict
    ('flops', 'bytes accessed', ...). Exact for the compiled program; a lowered one is
    counted before optimisation. Some backends return one dict per device program.
    """
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {k: float(v) for k, v in (cost or {}).items()}


def compiled_memory(compiled):
    """Bytes one device holds while running a compiled computation (XLA's buffer
    assignment: arguments, outputs and temporaries, less what outputs reuse), or None."""
    stats = compiled.memory_analysis()
    stats = stats[0] if isinstance(stats, (list, tuple)) else stats
    if stats is None:
        return None
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes)

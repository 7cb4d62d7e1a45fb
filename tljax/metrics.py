"""Metric writers (metrics.jsonl + TensorBoard) and the progress line (step, loss, images/s, ETA)."""
import json
import os
import time

from absl import logging


class MetricWriter:
    """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard.

    Only the main process writes; others get a writer that does nothing.
    """

    def __init__(self, workdir, enabled=True):
        self.enabled = enabled
        if not enabled:
            return
        import tensorflow as tf  # Heavy import, and only process 0 needs it.

        self._tf = tf
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step, values, kind="train"):
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time()}
        record.update({k: (float(v) if hasattr(v, "__float__") else v) for k, v in values.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        with self._tb.as_default(step=int(step)):
            for key, value in record.items():
                if key not in ("step", "time", "kind") and isinstance(value, (int, float)):
                    self._tf.summary.scalar(f"{kind}/{key}", value)

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


class Progress:
    """Turns (step, images seen) into images/s and an ETA for the log line."""

    def __init__(self, start_step, total_steps, global_batch):
        self.total_steps = total_steps
        self.global_batch = global_batch
        self._last_step, self._last_time = start_step, time.monotonic()

    def line(self, step, loss):
        now = time.monotonic()
        steps = max(step - self._last_step, 1)
        elapsed = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        images_per_s = steps * self.global_batch / elapsed
        eta = (self.total_steps - step) * elapsed / steps
        text = (f"step {step}/{self.total_steps}  loss {loss:.4f}  {images_per_s:.1f} img/s  "
                f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        logging.info(text)
        return {"images_per_s": images_per_s}

"""A run's directory, its files named once, and its life: claim (is it a directory, is it the
same run as the config.json there, lock it, write config.json) -> finished? -> write the
summary -> release. Local paths or URLs that etils.epath handles (gs://).

    workdir = Workdir("/tmp/run")
    with workdir.claimed(config):
        ...                                   # train or probe into workdir.path
        workdir.write_summary(summary)
"""
import contextlib

import jax

from tljax import config_lib, distributed, lock, paths
from tljax.errors import UserError

# The files and folders of a run directory (docs/running.md says what each holds).
CONFIG = "config.json"           # the run's config, written when the workdir is claimed
SUMMARY = "summary.json"         # status and results, recomputed from the run record
METRICS = "metrics.jsonl"        # one JSON object per event, always with "step"
TENSORBOARD = "tensorboard"
MODEL_RECORD = "model.json"      # what the run built (architecture, pp, class names)
MODEL = "model.safetensors"      # the final weights (export_weights)
BEST = "best.safetensors"        # the validation-selected weights
EMA = "ema.safetensors"          # the EMA weights (ema.export)
CHECKPOINTS = "checkpoints"      # orbax: train state + run record
BEST_CHECKPOINT = "best"         # orbax: the best-by-validation variables
FAILED = "failed.json"           # a run that failed inside a sweep, suite or search
LOCK = lock.LOCK_NAME            # one run per workdir
FEATURES = "features"            # a probe's cached features
RUN_FILES = (CONFIG, SUMMARY, METRICS, MODEL_RECORD, MODEL, BEST, EMA, FAILED, LOCK)


def is_run_file(path):
    """Whether `path` is one of a run directory's own files (which no other command may
    overwrite)."""
    path = paths.resolve(path)
    return path.name in RUN_FILES and (path.parent / CONFIG).exists()


class Workdir:
    def __init__(self, path):
        self.path = paths.resolve(path)
        self._lock = None

    def __str__(self):
        return str(self.path)

    def file(self, name):
        """The path of one of this module's names (SUMMARY, MODEL, ...) in the workdir."""
        return self.path / name

    def read_summary(self):
        """summary.json as a dict, or None when it is absent or not a run's summary."""
        path = self.file(SUMMARY)
        if not path.exists():
            return None
        try:
            summary = paths.read_json(path)
        except ValueError:
            return None
        return summary if isinstance(summary, dict) and "status" in summary else None

    def is_done(self):
        summary = self.read_summary()
        return summary is not None and summary["status"] == "done"

    def finished_summary(self, config, exports):
        """The summary of the finished run of `config` here, or None. A different config is
        refused as on resume; a finished run that should now write exports it lacks
        (`exports`: the config asks for weights files) is not finished."""
        summary = self.read_summary()
        if summary is None or summary["status"] != "done" or not self.file(CONFIG).exists():
            return None
        config_lib.check_same_run(paths.read_json(self.file(CONFIG)), config_lib.to_dict(config))
        if exports and not self.file(MODEL).exists():
            return None
        return summary

    def claim(self, config):
        """Checks the workdir, locks it (process 0) and writes config.json.

        Every check comes before the first write, so a refused start leaves the workdir as
        it was; every process reads config.json before process 0 rewrites it (atomically),
        and a refusal fails on every process.
        """
        path = self.file(CONFIG)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--workdir {self.path} is a file, not a directory; use another "
                            f"--workdir")
        if path.exists() and self._holds_progress():
            config_lib.check_same_run(paths.read_json(path), config_lib.to_dict(config))
        workdir_lock, error = lock.WorkdirLock(self.path), None
        if jax.process_index() == 0:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                workdir_lock.acquire()
            except PermissionError:
                error = UserError(f"cannot create workdir {self.path} (permission denied); "
                                  f"use a writable --workdir")
            except UserError as e:
                error = e
        if distributed.process_zero_failed(error is not None):
            raise error or UserError(f"process 0 could not claim workdir {self.path}; see its log")
        if jax.process_index() == 0:
            paths.write_text_atomic(path, config.to_json_best_effort(indent=2))
        self._lock = workdir_lock

    def _holds_progress(self):
        """Whether a run here got far enough to resume or report (a checkpoint, cached
        features or a summary).
        A run that stopped before either, say at its first step's memory check, leaves
        nothing a new config could clash with, so the corrected command may start here."""
        def non_empty(name):
            folder = self.file(name)
            return folder.is_dir() and any(folder.iterdir())
        return (self.file(SUMMARY).exists() or non_empty(CHECKPOINTS)
                or non_empty(BEST_CHECKPOINT) or non_empty(FEATURES))

    def release(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextlib.contextmanager
    def claimed(self, config):
        """The workdir claimed for `config` for the duration of the block, released after."""
        self.claim(config)
        try:
            yield self
        finally:
            self.release()

    def write_summary(self, summary):
        """summary.json (process 0; every process returns the same summary)."""
        if jax.process_index() == 0:
            paths.write_json(self.file(SUMMARY), summary)
        return summary

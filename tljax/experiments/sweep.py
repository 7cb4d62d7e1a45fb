"""Runs (or emits the commands of) every freezing schedule x seed x grid value, then reports.
A schedule `probe:ridge` / `probe:logreg` / `probe:knn` is a feature probe (config.probe).

    tljax sweep --config=configs/digits.py \\
        --schedules=full,linear_probe,last_k:1,gradual:every=50,lp_ft:lp_steps=100,bitfit,layer_decay:0.7 \\
        --seeds=3 --workdir=/tmp/sweep
    tljax sweep ... --grid=optim.lr=0.01,0.03 --set=total_steps=300
    tljax sweep ... --emit=commands   # one tljax.main command per line, for launch/slurm_array.sh

Each run is an ordinary tljax run in WORKDIR/<schedule>/<grid>/seed<N>. A run with a
finished summary.json is skipped, so re-running a sweep resumes it; a run that
fails writes failed.json with its error, and the report lists it as failed.
"""
import itertools
import os
import re
import shlex
import time
import traceback

from absl import logging
from etils import epath

from tljax import config_lib, freezing, paths
from tljax import workdir as workdir_lib
from tljax.workdir import Workdir
from tljax.errors import UserError


def split_schedules(text):
    """The --schedules list, split by the freezing grammar (freezing.split_list); every spec
    is parsed here, so a typo fails before the first run starts."""
    schedules = freezing.split_list(text)
    for schedule in schedules:
        if schedule.startswith(freezing.PROBE + ":"):
            continue
        for piece in schedule.split(",")[1:]:  # options are key=value: a bare name is a
            if "=" not in piece:               # mistyped schedule of its own, shown alone
                freezing.parse(piece)
        freezing.parse(schedule)
    return schedules


def slug(text):
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text.replace(":", "-")).strip("_") or "default"


def grid_axes(grid):
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise UserError(f"--grid {item!r} must look like key=v1,v2")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return axes


def how(schedule):
    """The override that makes a run of `schedule`: a freezing spec, or a feature probe."""
    method = schedule.startswith("probe:") and schedule[len("probe:"):]
    return f"probe.method={method}" if method else f"freeze={schedule}"


def plan_runs(config_spec, schedules, seeds, workdir, grid=(), fixed=()):
    """[(run_dir, overrides)] for every schedule x grid point x seed."""
    runs = []
    for schedule in schedules:
        for point in itertools.product(*grid_axes(grid)):
            grid_dir = "_".join(slug(p) for p in point) or "default"
            for seed in range(seeds):
                run_dir = os.path.join(workdir, slug(schedule), grid_dir, f"seed{seed}")
                overrides = [*fixed, how(schedule), f"seed={seed}", *point]
                runs.append((run_dir, overrides))
    return runs


def command(python, config_spec, run_dir, overrides):
    args = [python, "-m", "tljax.main", f"--config={config_spec}", f"--workdir={run_dir}"]
    args += [f"--config.{o}" for o in overrides]
    return " ".join(shlex.quote(a) for a in args)


def is_finished(run_dir):
    return Workdir(run_dir).is_done()


def run_one(config_spec, run_dir, overrides):
    """Trains one run in-process; failures become failed.json instead of stopping the sweep."""
    from tljax import runs

    config = config_lib.load(config_spec)
    for override in overrides:
        config_lib.apply_override(config, override)
    failed = Workdir(run_dir).file(workdir_lib.FAILED)
    try:
        runs.run(config, run_dir)
    except Exception as e:  # noqa: BLE001 - a failed schedule is a result to report.
        failed.parent.mkdir(parents=True, exist_ok=True)
        paths.write_json(failed, {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc(), "overrides": overrides})
        logging.error("run %s failed: %s", run_dir, e)
        return False
    failed.unlink(missing_ok=True)
    return True


def failed_runs(root):
    """The run directories under `root` whose run failed: a failed.json (written by run_one),
    or a summary.json with status "failed" (a run that diverged). Sorted."""
    failed = []
    for run_dir, _, filenames in epath.Path(root).walk():
        summary = Workdir(run_dir).read_summary() if workdir_lib.SUMMARY in filenames else None
        if workdir_lib.FAILED in filenames or (summary or {}).get("status") == "failed":
            failed.append(str(run_dir))
    return sorted(failed)


def check_none_failed(root, what):
    """A UserError naming how many of the runs under `root` failed (after their report)."""
    failed = failed_runs(root)
    if failed:
        raise UserError(f"{len(failed)} {what} failed (each holds failed.json or a failed "
                        f"summary.json; the report marks them), e.g. {failed[0]}")


def _eta(seconds_per_run, runs_left):
    if seconds_per_run is None:
        return "ETA after the first run"
    seconds = int(seconds_per_run * runs_left)
    return f"ETA {seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"ETA {seconds // 60}m{seconds % 60:02d}s")


def run_all(config_spec, runs):
    """Runs every unfinished run in order, skipping finished ones; returns the dirs it ran.
    Logs sweep progress with an ETA from the mean time of the runs done so far."""
    todo = [(d, o) for d, o in runs if not is_finished(d)]
    if len(todo) < len(runs):
        logging.info("sweep: %d of %d runs finished already, skipped", len(runs) - len(todo),
                     len(runs))
    ran, started = [], time.monotonic()
    for index, (run_dir, overrides) in enumerate(todo):
        per_run = (time.monotonic() - started) / index if index else None
        logging.info("sweep: run %d/%d (%s) %s: %s", index + 1, len(todo),
                     _eta(per_run, len(todo) - index), run_dir, " ".join(overrides))
        run_one(config_spec, run_dir, overrides)
        ran.append(run_dir)
    logging.info("sweep: %d runs done in %.0fs", len(ran), time.monotonic() - started)
    return ran

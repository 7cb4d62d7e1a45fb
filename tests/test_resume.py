"""SIGKILL at any step, then resume: the same parameters, summary and metrics as an uninterrupted run.

The killed process gets no chance to clean up (no `finally`, in-flight asynchronous
checkpoint saves are cut), as when a SLURM job is preempted.
"""
import json
import os
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers import assert_same_params, exported_params, records
from tljax import runs

# BatchNorm ResNet (batch statistics are state too), two phases, Adam (optimizer state
# with step counts), evaluation and checkpoints every 2 steps.
OVERRIDES = {"model.name": "resnet", "model.arch": {"depth": 18, "base_width": 4, "stem": "small"},
             "freeze": "lp_ft:lp_steps=4+ssf", "total_steps": 10, "eval_every": 2,  # SSF: added parameters
             "checkpoint_every": 2, "log_every": 1, "export_weights": True,
             "optim.name": "adam", "optim.lr": 0.01,
             # Every augmentation and regulariser on: their random numbers and the EMA
             # (state) must resume exactly too.
             "data.mixup_alpha": 0.4, "data.cutmix_alpha": 1.0, "label_smoothing": 0.1,
             "model.drop_path": 0.2, "model.dropout": 0.1, "ema.decay": 0.9, "ema.warmup": True,
             "data.pp_train": "resize(8)|gray_to_rgb|randaug(2, 9)|value_range(-1,1)"}
PHASE_BOUNDARY = 4
# A kill at k comes once k steps are done: right after the (asynchronous) checkpoint save of
# step k began when k is even. One kill at the phase boundary (the checkpoint of step 4,
# the first of phase 1, is being written then), one mid-phase at an odd step drawn at random
# (fixed seed, so a failure reproduces), when the newest checkpoint is a step behind.
KILL_STEPS = [PHASE_BOUNDARY] + random.Random(0).sample([s for s in range(5, 10, 2)], 1)

_KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.conftest import tiny_config
from tljax import runs
from tljax.training import loop
real_call, calls = loop._PhaseRunner.__call__, [0]
def call(self, state, batch):
    if calls[0] == {kill_at}:  # Dies as step {kill_at} would start.
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    return real_call(self, state, batch)
loop._PhaseRunner.__call__ = call
runs.run(tiny_config({data_dir!r}, "scratch", **{overrides!r}), {workdir!r})
"""


def _summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    summary.pop("wall_time_s")
    return summary


@pytest.mark.slow
def test_sigkill_at_any_step_then_resume_equals_the_uninterrupted_run(make_config, data_dir,
                                                                       tmp_path):
    config = make_config("scratch", **OVERRIDES)
    whole = str(tmp_path / "whole")
    runs.run(config, whole)
    expected_params, expected_summary = exported_params(whole), _summary(whole)
    expected_losses = [(r["step"], r["loss"]) for r in records(whole)]
    assert len(expected_summary["val_history"]) == 5
    assert expected_summary["test_accuracy"] is not None
    assert expected_summary["ema_test_accuracy"] is not None  # the EMA is on, and resumes
    assert set(expected_summary["train_step_flops"]) == {"0", "1"}

    for kill_at in KILL_STEPS:
        workdir = str(tmp_path / f"killed{kill_at}")
        script = _KILL_SCRIPT.format(root=ROOT, kill_at=kill_at, data_dir=data_dir,
                                     overrides=OVERRIDES, workdir=workdir)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        assert result.returncode == -9, result.stderr[-3000:]
        runs.run(config, workdir)

        assert_same_params(exported_params(workdir), expected_params, f"kill at {kill_at}")
        assert _summary(workdir) == expected_summary, f"kill at {kill_at}"
        export = os.path.join(workdir, "model.safetensors")
        assert open(export, "rb").read() == open(os.path.join(whole, "model.safetensors"), "rb").read()
        assert [(r["step"], r["loss"]) for r in records(workdir)] == expected_losses, kill_at


def test_a_run_stopped_at_a_step_resumes_to_the_uninterrupted_result(make_config, tmp_path):
    """stop_at_step (the search's rungs): the run validates and checkpoints there, reports
    itself unfinished, and a later start with stop_at_step=0 ends bit-identical to a run that
    never stopped (the schedule is total_steps long from the start)."""
    whole = runs.run(make_config(export_weights=True), str(tmp_path / "whole"))
    paused = runs.run(make_config(export_weights=True, stop_at_step=5), str(tmp_path / "parts"))
    assert paused["status"] == "running"
    validations = [r["step"] for r in records(str(tmp_path / "parts"), "eval")
                   if r.get("split") == "validation"]
    assert validations[-1] == 5 and paused["val_history"][-1][0] == 5
    assert (tmp_path / "parts" / "checkpoints" / "5").is_dir()  # off the 6-step interval
    assert not (tmp_path / "parts" / "model.safetensors").exists()
    resumed = runs.run(make_config(export_weights=True), str(tmp_path / "parts"))
    # (The validation at the stop adds a selection candidate; the final state is the same.)
    assert resumed["status"] == "done" and resumed["final_accuracy"] == whole["final_accuracy"]
    assert_same_params(exported_params(str(tmp_path / "parts")),
                       exported_params(str(tmp_path / "whole")), "stopped at 5, resumed")


def test_ema_resumes_after_groups_froze(make_config, tmp_path):
    """A phase freezes the body while the EMA keeps its average (as FreezeOut's phases do):
    a run resumed after that restores the EMA (its tree is larger than the current phase's
    trainable set) and ends with the uninterrupted run's EMA weights and BatchNorm statistics."""
    overrides = {"freeze_phases": ((0, ((".*", 1.0),)), (6, (("head/.*", 1.0), (".*", None)))),
                 "ema.decay": 0.8,
                 "ema.export": True, "export_weights": True, "model.name": "resnet",
                 "model.arch": {"depth": 18, "base_width": 4, "stem": "small"}}
    runs.run(make_config(**overrides), str(tmp_path / "whole"))
    runs.run(make_config(stop_at_step=9, **overrides), str(tmp_path / "parts"))
    runs.run(make_config(**overrides), str(tmp_path / "parts"))
    from flax import traverse_util

    from tljax.weights import tljax_format

    one, two = (traverse_util.flatten_dict(tljax_format.load(
        str(tmp_path / run / "ema.safetensors")).variables, sep="/") for run in ("whole", "parts"))
    assert any(p.startswith("batch_stats/") for p in one)
    assert_same_params(two, one, "EMA export, stopped at 9 and resumed")

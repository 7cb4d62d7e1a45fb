"""Bad input and failures: one clear line, an unchanged workdir, never a poisoned checkpoint."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.helpers import records
from tljax import freezing, paths, recipes, run_init, runs, weights
from tljax.errors import UserError
from tljax.lock import LOCK_NAME

BAD_CONFIGS = [
    ({"freeze": "foo"}, "unknown freezing strategy 'foo'"),
    ({"freeze": "last_k:x"}, "last_k:x: k must be an integer, not 'x'"),
    ({"freeze": "bitfit:3"}, "freezing strategy 'bitfit' takes no arguments"),
    ({"freeze": "last_k:k=2,foo=3"}, "last_k has no argument 'foo'"),
    ({"freeze": "lp_ft:1,2"}, "lp_ft:1,2: lp_steps must be an integer, not '1,2'"),
    ({"freeze": "last_k:1+l2sp:0.1"}, "L2-SP is a regulariser"),
    ({"optim.l2sp": (0.1,)}, "config.optim.l2sp must be () or (alpha, beta)"),
    ({"freeze": "layer_decay:fast"}, "decay must be a number, not 'fast'"),
    ({"checkpoint_every": 0}, "config.checkpoint_every must be a whole number >= 1"),
    ({"log_every": 0}, "config.log_every must be a whole number >= 1"),
    ({"total_steps": 0}, "config.total_steps must be a whole number >= 1"),
    ({"data.batch_size": 0}, "config.data.batch_size must be a whole number >= 1"),
    ({"data.image_size": 0}, "config.data.image_size must be a whole number >= 1"),
    ({"data.batch_size": 10**9}, "data.batch_size=1000000000 needs 715 GiB for its 8x8 float32 "
                                  "images alone"),
    ({"optim.lr": -0.1}, "config.optim.lr must be a finite number >= 0"),
    # Checks declared in the config table (tljax/defaults.py), once at the use:
    ({"model.dtype": "float64"}, "config.model.dtype must be one of 'float32', 'bfloat16'"),
    ({"model.dropout": 1.0}, "config.model.dropout must be in [0, 1), not 1.0"),
    ({"probe.method": "svm"}, "config.probe.method must be one of '', 'ridge', 'logreg', 'knn'"),
    ({"probe.method": "knn", "data.val_split": ""}, "a probe chooses its hyperparameter on "
                                                     "validation: set data.val_split"),
    ({"model.num_classes": 3}, "model.num_classes=3 but tljax_digits has 5 classes"),
    ({"accum_steps": 2, "model.name": "resnet",
      "model.arch": {"depth": 18, "base_width": 4, "stem": "small"}},
     "accum_steps=2 while BatchNorm trains (stage1/unit1/bn1"),
    ({"model.init": "/no/such/model.safetensors"}, "do not exist"),
    ({"data.name": "mnist", "data.data_dir": "/no/tfds"}, "dataset 'mnist' is not prepared"),
    ({"model.init": "/no/such/model.safetensors", "model.init_recipe": "configs/digits.py:pretrain"},
     "the init recipe configs/digits.py:pretrain would write"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS)
def test_bad_config_is_one_line_and_leaves_no_workdir(make_config, tmp_path, overrides, message):
    workdir = tmp_path / "run"
    with pytest.raises(UserError) as error:
        runs.run(make_config(**overrides), str(workdir))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not workdir.exists()
    assert not os.path.exists("/no")


@pytest.mark.parametrize("phases,message", [
    ([(5, [(".*", 1.0)]), (0, [("head/.*", 1.0), (".*", None)])], "increasing start steps"),
    ([(0, [("head/(", 1.0), (".*", None)])], "not a valid regular expression"),
    ([(0, [(".*", -1.0)])], "multipliers must be >= 0"),
    ([(0, [(".*", "fast")])], "use a number or None"),
])
def test_bad_explicit_phases_are_one_line_errors(phases, message):
    groups = [("stem", "stem/.*"), ("head", "head/.*")]
    with pytest.raises(UserError, match=message):
        freezing.make_plan(phases, groups, ["stem/w", "head/kernel"])


def test_a_workdir_that_is_a_file_is_refused(make_config, tmp_path):
    path = tmp_path / "file"
    path.write_text("notes")
    with pytest.raises(UserError, match="is a file, not a directory"):
        runs.run(make_config(total_steps=2), str(path))
    assert path.read_text() == "notes"


def test_non_finite_state_is_never_saved_and_the_run_fails(make_config, tmp_path):
    config = make_config(total_steps=12, checkpoint_every=1, log_every=4,
                         **{"optim.lr": 1e30, "optim.warmup_steps": 0})
    with pytest.raises(UserError, match=r"became NaN/Inf by step \d+ .* was not saved") as error:
        runs.run(config, str(tmp_path))
    assert "\n" not in str(error.value)
    assert paths.read_json(tmp_path / "summary.json")["status"] == "failed"
    manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"), item_names=("state", "meta"))
    saved = manager.all_steps()
    assert 0 < len(saved) < 12
    for step in saved:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
        leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state["state"])]
        assert all(np.all(np.isfinite(x)) for x in leaves if x.dtype.kind == "f"), step
    manager.close()


def test_a_batch_larger_than_the_train_set_trains_with_repeated_examples(make_config, tmp_path,
                                                                        caplog):
    """BiT-HyperRule's few-shot setting (5 shots per class at batch 512): allowed, and said."""
    with caplog.at_level("WARNING"):
        summary = runs.run(make_config(total_steps=2, **{"data.batch_size": 32}), str(tmp_path))
    assert summary["status"] == "done"
    assert "data.batch_size=32 is larger than the 25 train examples" in caplog.text


def test_a_step_that_cannot_fit_a_device_is_one_line_and_the_fix_runs_there(make_config, tmp_path,
                                                                            monkeypatch):
    """XLA's compiled memory of the step against the device's: refused before any step, and
    the workdir (which holds no checkpoint) takes the corrected config."""
    from tljax.training import parallel

    with monkeypatch.context() as patch:
        patch.setattr(parallel, "device_memory_bytes", lambda: 1024)
        with pytest.raises(UserError) as error:
            runs.run(make_config(total_steps=2, **{"data.batch_size": 16}), str(tmp_path))
    assert "\n" not in str(error.value)
    assert str(error.value).startswith("the train step at data.batch_size=16 needs ")
    assert "GiB per device (XLA's compiled memory) but a device has 0.0 GiB" in str(error.value)
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")
    summary = runs.run(make_config(total_steps=2, **{"data.batch_size": 8}), str(tmp_path))
    assert summary["status"] == "done"


def test_a_second_run_in_a_locked_workdir_is_refused_and_a_stale_lock_taken_over(make_config,
                                                                                tmp_path):
    config = make_config(total_steps=2)
    tmp_path.mkdir(exist_ok=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(),
                                                      "pid": live.pid, "since": "now"}))
        with pytest.raises(UserError, match=f"is in use by pid {live.pid}"):
            runs.run(config, str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]
    finally:
        live.kill()
        live.wait()
    # The holder is gone (as after a SIGKILL): its lock is stale and the run proceeds.
    summary = runs.run(config, str(tmp_path))
    assert summary["status"] == "done" and not (tmp_path / LOCK_NAME).exists()


def test_rerunning_a_finished_run_changes_nothing_and_builds_nothing(make_config, tmp_path,
                                                                     monkeypatch):
    config = make_config(total_steps=2)
    first = runs.run(config, str(tmp_path))
    metrics_text = (tmp_path / "metrics.jsonl").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run's re-run built a model or read data")

    with monkeypatch.context() as patch:  # It reads summary.json back: no model, no data.
        patch.setattr(run_init, "start", refuse)
        patch.setattr(recipes, "pending", refuse)
        second = runs.run(config, str(tmp_path))
    assert second == first
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_text
    assert len(records(str(tmp_path), kind="summary")) == 1
    # A config that computes something else is refused as on resume, not answered.
    with pytest.raises(UserError, match="different config"):
        runs.run(make_config(total_steps=2, **{"optim.lr": 0.5}), str(tmp_path))
    # Weights asked for now that the run did not export: the full path writes them.
    os.remove(tmp_path / "model.safetensors")
    assert runs.run(config, str(tmp_path)) == first
    assert (tmp_path / "model.safetensors").exists()


def test_metrics_are_strict_json():
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    text = paths.strict_json({"loss": float("nan"), "grad_norm": [float("inf"), 1.0]})
    value = json.loads(text, parse_constant=refuse)
    assert value == {"loss": "nan", "grad_norm": ["inf", 1.0]}
    assert np.isnan(float(value["loss"]))


def test_unreadable_weight_files_are_one_line_errors(tmp_path):
    fake = tmp_path / "model.npz"
    fake.write_text("not an archive")
    with pytest.raises(UserError, match="is not an .npz archive") as error:
        weights.load_model(str(fake))
    assert "\n" not in str(error.value)

    torch = pytest.importorskip("torch")
    pickled = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "extra": _NotATensor()}, pickled)
    with pytest.raises(UserError, match="pickled Python objects besides tensors") as error:
        weights.load_model(str(pickled))
    assert "\n" not in str(error.value)


class _NotATensor:
    """An arbitrary object: unpickling it would run code, so weights_only loading refuses it."""


def test_equal_weights_export_to_equal_bytes(tmp_path):
    from tljax.weights import tljax_format

    variables = {"params": {f"block{i}": {"kernel": np.full((2, 3), i, np.float32)}
                            for i in range(12)}}
    meta = dict(model="vit", arch={"width": 3, "depth": 12}, num_classes=3,
                preprocessing={"normalization": "value_range(-1,1)", "image_size": 8})
    blobs = []
    for name in ("a", "b", "c"):  # safetensors' own header order varies from call to call
        tljax_format.save(tmp_path / f"{name}.safetensors", variables, **meta)
        blobs.append((tmp_path / f"{name}.safetensors").read_bytes())
    assert blobs[0] == blobs[1] == blobs[2]
    loaded = tljax_format.load(str(tmp_path / "a.safetensors"))
    np.testing.assert_array_equal(loaded[4]["params"]["block7"]["kernel"], 7)


def test_an_init_recipe_another_process_is_making_is_waited_for(tmp_path, monkeypatch):
    """Two runs that need the same missing init weights: the second waits for the first's
    recipe run (its workdir locked by a live process) and then uses its weights."""
    from tljax import defaults, lock

    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path / "cache"))
    recipe = os.path.join(os.path.dirname(__file__), "..", "configs", "digits.py") + ":pretrain"
    output = recipes.recipe_output(recipe)
    config = defaults.base()
    config.model.init, config.model.init_recipe = output, recipe
    os.makedirs(os.path.dirname(output))
    holder = {"host": socket.gethostname(), "pid": os.getppid()}  # alive, and not this process
    (tmp_path / "cache" / "recipes" / "digits_pretrain" / LOCK_NAME).write_text(json.dumps(holder))
    tries = []

    def run(recipe_config, directory):  # the dispatcher's claim, then the other run finishing
        tries.append(directory)
        lock.WorkdirLock(directory).acquire().release()
        with open(output, "w") as f:
            f.write("weights")

    def finish_on_third_look(seconds):
        if len(tries) == 2:
            os.remove(os.path.join(os.path.dirname(output), LOCK_NAME))

    monkeypatch.setattr(recipes.time, "sleep", finish_on_third_look)
    recipes.make(config, run, poll_seconds=0)
    assert len(tries) == 3 and open(output).read() == "weights"

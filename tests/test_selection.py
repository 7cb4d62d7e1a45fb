"""Validation selects, test reports: test is evaluated only at the end, at the final step and
at the step validation chose, whose state the best checkpoint holds."""
import numpy as np
import pytest
import orbax.checkpoint as ocp
from flax import traverse_util

from tests.helpers import records
from tljax import data, models, runs


def _restore(directory, step):
    manager = ocp.CheckpointManager(str(directory), item_names=("state", "meta"))
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
    manager.close()
    return state


def _test_accuracy(config, params):
    """Accuracy on the test split, computed here from the data and the module."""
    module = models.build(config.model.name, config.model.arch, 5)
    batches, count = data.eval_batches(config.data, seed=config.seed, global_batch=64)
    correct = 0.0
    for batch in batches:
        logits = module.apply({"params": params}, batch["image"])
        correct += float(np.sum((np.argmax(logits, -1) == batch["label"]) * batch["mask"]))
    return correct / count


def test_validation_selects_the_step_and_test_is_read_only_at_the_end(make_config, tmp_path):
    # A high constant lr makes validation accuracy go up and down, so the best step is
    # not the last one (deterministic for this seed).
    config = make_config("scratch", total_steps=12, eval_every=2, checkpoint_every=1,
                         keep_checkpoints=20, **{"optim.lr": 0.5, "optim.schedule": "constant"})
    summary = runs.run(config, str(tmp_path))
    evals = records(str(tmp_path), kind="eval")
    val = [(r["step"], r["accuracy"]) for r in evals if r["split"] == "validation"]
    assert [s for s, _ in val] == [2, 4, 6, 8, 10, 12]
    last_val_time = max(r["time"] for r in evals if r["split"] == "validation")
    tests = [r for r in evals if r["split"] == "test"]
    assert len(tests) == 2 and all(r["time"] >= last_val_time for r in tests)

    best_step, best_acc = max(val, key=lambda v: (v[1], -v[0]))  # first of the best
    assert summary["selected_step"] == best_step and summary["val_accuracy"] == best_acc
    assert best_step != 12, "pick settings whose best step is not the last"
    best = _restore(tmp_path / "best", best_step)
    periodic = _restore(tmp_path / "checkpoints", best_step)
    for path, value in traverse_util.flatten_dict(periodic["params"], sep="/").items():
        np.testing.assert_array_equal(
            traverse_util.flatten_dict(best["params"], sep="/")[path], value, err_msg=path)
    assert summary["test_accuracy"] == pytest.approx(_test_accuracy(config, best["params"]), abs=1e-6)
    final = _restore(tmp_path / "checkpoints", 12)
    assert summary["final_accuracy"] == pytest.approx(_test_accuracy(config, final["params"]), abs=1e-6)

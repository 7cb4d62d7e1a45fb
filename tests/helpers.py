"""Reading a finished run back (exported params and metrics records), and comparing logits
with a reference implementation's."""
import json
import os

import numpy as np

from flax import traverse_util

from tljax.weights import tljax_format


def exported_params(workdir, name="model.safetensors"):
    """Flat {path: array} of the params a run exported to workdir/NAME."""
    variables = tljax_format.load(os.path.join(workdir, name)).variables
    return traverse_util.flatten_dict(variables["params"], sep="/")


def records(workdir, kind="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def relative_error(ours, reference):
    """max |ours - reference| / max |reference|: the parity tests' measure (<= 1e-4 passes)."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def square_images(size, n=2, seed=0):
    """n random NHWC images in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def assert_same_params(got, want, context=""):
    """`got` and `want` (flat {path: array}) hold the same, non-empty set of paths, each
    bit-identical: a comparison over `want`'s keys alone would pass for an empty or partial
    `got`'s subset."""
    assert want, f"{context}: nothing to compare"
    assert sorted(got) == sorted(want), (
        f"{context}: paths differ: only in got {sorted(set(got) - set(want))[:5]}, "
        f"only in want {sorted(set(want) - set(got))[:5]}")
    for path, value in want.items():
        np.testing.assert_array_equal(got[path], value, err_msg=f"{context}: {path}")


def checkpoint_params(workdir):
    """Flat {path: array} of the params in the run's newest checkpoint, as they trained
    (PEFT modules unmerged, unlike an export)."""
    import orbax.checkpoint as ocp

    from tljax import workdir as workdir_lib

    folder = os.path.abspath(os.path.join(workdir, workdir_lib.CHECKPOINTS))
    manager = ocp.CheckpointManager(folder, item_names=("state", "meta"))
    try:
        state = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore()))["state"]
    finally:
        manager.close()
    return traverse_util.flatten_dict(state["params"], sep="/")


def assert_trained_only(summary, initial, final, trained, fraction=None):
    """What a freezing spec guarantees, read from a finished run: every parameter of
    `initial` (flat {path: array}, what the run started from) outside `trained` ends
    bit-identical in `final` (its newest checkpoint), a parameter of `trained` moved, and the
    summary counts `final`'s parameters and, as trainable, `trained`'s share of them (or
    `fraction`: a step-weighted share, for schedules whose phases train different sets)."""
    import pytest

    trained = set(trained)
    assert initial and trained and trained <= set(final), sorted(trained - set(final))[:5]
    assert set(initial) <= set(final), sorted(set(initial) - set(final))[:5]
    for path in sorted(set(initial) - trained):
        np.testing.assert_array_equal(final[path], initial[path], err_msg=f"frozen {path} moved")
    assert any(not np.array_equal(final[p], initial[p]) for p in trained & set(initial)), (
        "no trained parameter moved")
    total = sum(np.size(v) for v in final.values())
    assert summary["num_params"] == total
    if fraction is None:
        fraction = sum(np.size(final[p]) for p in trained) / total
    assert summary["trainable_fraction"] == pytest.approx(fraction, rel=1e-9)


def record_initial_params(monkeypatch):
    """A list that receives, for each run started from now on, the flat params it starts
    from (model built, weights merged, PEFT modules added), copied before the train step
    donates their buffers."""
    from tljax import run_init

    starts, real_start = [], run_init.start

    def start(config, spec):
        result = real_start(config, spec)
        starts.append({p: np.array(v) for p, v in traverse_util.flatten_dict(
            result.model.variables["params"], sep="/").items()})
        return result

    monkeypatch.setattr(run_init, "start", start)
    return starts

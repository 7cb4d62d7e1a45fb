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

"""Reading a finished run back: exported params and metrics records."""
import json
import os

from flax import traverse_util

from tljax.weights import tljax_format


def exported_params(workdir, name="model.safetensors"):
    """Flat {path: array} of the params a run exported to workdir/NAME."""
    variables = tljax_format.load(os.path.join(workdir, name)).variables
    return traverse_util.flatten_dict(variables["params"], sep="/")


def records(workdir, kind="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]

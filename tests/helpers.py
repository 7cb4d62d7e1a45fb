"""Reading a finished run back: exported params and metrics records."""
import json
import os

from flax import traverse_util

from tljax.weights import tljax_format


def exported_params(workdir):
    """Flat {path: array} of the params a run exported to workdir/model.safetensors."""
    variables = tljax_format.load(os.path.join(workdir, "model.safetensors")).variables
    return traverse_util.flatten_dict(variables["params"], sep="/")


def records(workdir, kind="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]

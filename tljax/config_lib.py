"""Loading config files outside absl flags (init recipes, sweeps) and config checks."""
import ast
import importlib.util
import json
import os

import ml_collections as mlc

from tljax.errors import UserError

# Keys that may change when a run is resumed: they do not change what is computed.
# (total_steps is not among them: it shapes the learning-rate schedule.)
RESUMABLE_CHANGES = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "export_weights", "data.data_dir", "data.manual_dir")


def load(spec):
    """The locked ConfigDict of "path/to/config.py[:arg]"."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_tljax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    config.lock()
    return config


def apply_override(config, assignment):
    """Sets "a.b=value" on a locked ConfigDict; the value is a Python literal or a plain string."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise UserError(f"override {assignment!r} is not of the form key=value")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, leaf = key.split(".")
    node = config
    try:
        for parent in parents:
            node = node[parent]
        current = node[leaf]
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(current, str) and not isinstance(value, str):
            value = text
        node[leaf] = value
    except (KeyError, AttributeError, TypeError) as e:
        raise UserError(f"cannot set config key {key!r} to {text!r}: {e}") from None


def copy(config):
    """A locked deep copy."""
    duplicate = mlc.ConfigDict(config.to_dict())
    duplicate.lock()
    return duplicate


def to_dict(config):
    return json.loads(config.to_json_best_effort())


def flatten(tree, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def check_same_run(saved, current):
    """Raises if a resumed run's config differs from the saved one in what it computes."""
    old, new = flatten(saved), flatten(current)
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise UserError(f"the workdir holds a run with a different config ({details}); "
                        f"use a new --workdir, or the same config to resume")

"""Loading config files outside absl flags (init recipes, sweeps) and config checks."""
import difflib
import importlib.util
import json
import os
import sys

import ml_collections as mlc

from tljax import config_keys, defaults, literals
from tljax.errors import ConfigArgumentError, UserError

# Keys that change neither what a run computes nor what it reports: where files are read
# from, how often it logs and saves, whether it exports. Runs differing only in these (and
# the seed) are one row of a report.
NO_EFFECT_KEYS = ("log_every", "checkpoint_every", "keep_checkpoints", "export_weights",
                  "data.data_dir", "data.manual_dir", "compilation_cache", "stop_at_step")
# Keys that may change when a run is resumed: those, and eval_every (later evaluations only
# add candidates for selection). total_steps is not among them: it shapes the lr schedule.
RESUMABLE_CHANGES = NO_EFFECT_KEYS + ("eval_every",)


def load(spec):
    """The locked ConfigDict of "path/to/config.py[:arg]"."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"config file {path!r} does not exist")
    make_siblings_importable(path)
    module_spec = importlib.util.spec_from_file_location(f"_tljax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ImportError as e:
        raise UserError(f"config file {path} could not import {e.name or 'a module'!r} ({e}). A "
                        f"config file outside tljax's configs/ folder starts from "
                        f"`from tljax.defaults import base`") from None
    except SyntaxError as e:
        raise UserError(f"config file {path} has a syntax error at line {e.lineno}: {e.msg}; "
                        f"fix the file") from None
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except (ValueError, KeyError, TypeError) as e:  # the config's own refusal of its argument
        raise ConfigArgumentError(f"config {spec}: {e.args[0] if e.args else e}") from None
    config.lock()
    return config


def with_argument(spec, argument):
    """`spec` with one more argument for its get_config (configs/flowers.py ->
    configs/flowers.py:dinov2-b14; configs/vtab.py:dtd -> configs/vtab.py:dtd,dinov2-b14):
    a model, a task. "" leaves it as it is."""
    if not argument:
        return spec
    return f"{spec}{',' if ':' in spec else ':'}{argument}"


def make_siblings_importable(path):
    """Lets a config file inside a package folder (configs/, with its __init__.py) import
    its siblings as that package (`from configs import transfer`), from any working
    directory, as Python would import it as part of its package. Config files are loaded
    by path; the folder is not installed."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(folder, "__init__.py")):
        root = os.path.dirname(folder)
        if root not in sys.path:
            sys.path.insert(0, root)


def apply_override(config, assignment):
    """Sets "a.b=value" on a locked ConfigDict; the value is a Python literal or a plain string."""
    key, text = literals.assignment(assignment)
    value = literals.value(text)
    *parents, leaf = key.split(".")
    parent = config_keys.lookup(config, ".".join(parents), missing=None) if parents else config
    if parent is None or (isinstance(parent, mlc.ConfigDict) and leaf not in parent):
        raise UserError(unknown_key_message(config, key))
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


def unknown_key_message(config, key):
    """One line for a key neither `config` nor the table (tljax/defaults.py KEYS) has, with
    the closest known key: by whole name, or by last part ("lr" -> "optim.lr")."""
    names = sorted({k.name for k in defaults.KEYS} | set(flatten(config.to_dict())))

    def score(name):
        return max(difflib.SequenceMatcher(None, key, name).ratio(),
                   difflib.SequenceMatcher(None, key.rsplit(".", 1)[-1],
                                           name.rsplit(".", 1)[-1]).ratio())

    best = max(names, key=score, default=None)
    hint = f"; did you mean {best!r}?" if best is not None and score(best) >= 0.75 else ""
    return f"unknown config key {key!r}{hint} (every key is declared in tljax/defaults.py)"


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


def validate(config):
    """Every key's check in the table (tljax/defaults.py KEYS), then its CROSS_CHECKS: one
    clear line for the first problem, raised before anything is written into the workdir.
    Checks that need the data, the model or the devices come where those are known."""
    problems = config_keys.problems(config, defaults.KEYS, defaults.CROSS_CHECKS)
    if problems:
        raise UserError(problems[0])

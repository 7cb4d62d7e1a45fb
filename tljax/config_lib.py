"""Loading config files outside absl flags (init recipes, sweeps) and config checks."""
import importlib.util
import json
import math
import os

import ml_collections as mlc

from tljax import literals, paths
from tljax.errors import UserError

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
    module_spec = importlib.util.spec_from_file_location(f"_tljax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    config.lock()
    return config


def apply_override(config, assignment):
    """Sets "a.b=value" on a locked ConfigDict; the value is a Python literal or a plain string."""
    key, text = literals.assignment(assignment)
    value = literals.value(text)
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


def _check(condition, message):
    if not condition:
        raise UserError(message)


def validate(config):
    """Types and ranges of the keys every run uses: one clear line per problem, raised before
    anything is written into the workdir."""
    for key in ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints",
                "accum_steps"):
        _check(isinstance(config[key], int) and config[key] >= 1,
               f"config.{key} must be a whole number >= 1, not {config[key]!r}")
    _check(isinstance(config.eval_every, int) and config.eval_every >= 0,
           f"config.eval_every must be a whole number >= 0 (0: only at the end), "
           f"not {config.eval_every!r}")
    for key in ("batch_size", "eval_batch_size", "image_size"):
        _check(isinstance(config.data[key], int) and config.data[key] >= 1,
               f"config.data.{key} must be a whole number >= 1, not {config.data[key]!r}")
    _check(isinstance(config.freeze, str),
           f"config.freeze must be a strategy string (explicit phases go in config.freeze_phases), "
           f"not {config.freeze!r}")
    _check(isinstance(config.model.peft, str),
           f"config.model.peft must be a string of parameter-efficient methods such as "
           f"'lora:r=8', not {config.model.peft!r}")
    phases = config.freeze_phases
    _check(isinstance(phases, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int)
        and isinstance(p[1], (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == 2
                                                    for r in p[1]) for p in phases),
           f"config.freeze_phases must be ((start_step, ((regex, lr_mult or None), ...)), ...), "
           f"not {phases!r}")
    lr = config.optim.lr
    _check(isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0,
           f"config.optim.lr must be a finite number >= 0, not {lr!r}")
    l2sp = tuple(config.optim.l2sp)
    _check(l2sp == () or (len(l2sp) == 2 and all(isinstance(v, (int, float)) and v >= 0
                                                for v in l2sp)),
           f"config.optim.l2sp must be () or (alpha, beta) with both >= 0, not {l2sp!r}")
    _check(config.model.num_classes == -1 or config.model.num_classes >= 1,
           f"config.model.num_classes must be -1 (from the data) or >= 1, "
           f"not {config.model.num_classes!r}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        _check(config.data[key] >= 0, f"config.data.{key} must be >= 0 (0 = off), not {config.data[key]!r}")
    for key in ("mix_prob", "mix_switch_prob"):
        _check(0 <= config.data[key] <= 1, f"config.data.{key} must be in [0, 1], not {config.data[key]!r}")
    _check(0 <= config.label_smoothing < 1,
           f"config.label_smoothing must be in [0, 1), not {config.label_smoothing!r}")
    _check(0 <= config.ema.decay < 1, f"config.ema.decay must be in [0, 1) (0 = off), not {config.ema.decay!r}")
    _check(0 <= config.stop_at_step <= config.total_steps,
           f"config.stop_at_step={config.stop_at_step} must be in 0..total_steps="
           f"{config.total_steps} (0: train to the end)")


def recipe_output(spec):
    """Where the init recipe "path/to/config.py:arg" writes its weights.

    A recipe only ever runs to produce this file, so a mistyped model.init can never
    start a recipe that writes into an unrelated directory.
    """
    path, _, arg = spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0] + (f"_{arg}" if arg else "")
    return os.path.join(paths.cache_root(), "recipes", name, "model.safetensors")

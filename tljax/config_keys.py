"""The shape of the config table (tljax/defaults.py KEYS): a `Key` per config key, with its
default, its one-line doc and the `Check` its values must pass; and the kinds of check a key
declares (whole numbers, ranges, choices). config_lib.validate runs them; nothing here
imports jax."""
import copy
import dataclasses
import math
from typing import Callable, Optional

import ml_collections as mlc


@dataclasses.dataclass(frozen=True)
class Check:
    """What a good value is: `ok(value)` (False, or an exception, rejects it), and `rule`, the
    words that finish "config.KEY must be ..."."""
    ok: Callable[[object], bool]
    rule: str

    def problem(self, name, value):
        """The one-line error for `value` of key `name`, or None when it passes."""
        try:
            good = bool(self.ok(value))
        except (TypeError, ValueError):
            good = False
        return None if good else f"config.{name} must be {self.rule}, not {value!r}"


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key: its dotted name ("optim.lr"), default, one-line doc and check."""
    name: str
    default: object
    doc: str
    check: Optional[Check] = None


@dataclasses.dataclass(frozen=True)
class CrossCheck:
    """A check that reads several keys: `ok(config)`, else the UserError `message(config)`."""
    ok: Callable[[object], bool]
    message: Callable[[object], str]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def whole_numbers(low):
    """A non-empty sequence of ints, each >= low."""
    return Check(lambda v: len(v) > 0 and all(isinstance(k, int) and not isinstance(k, bool)
                                              and k >= low for k in v),
                 f"a non-empty tuple of whole numbers >= {low}")


def whole(low, note=""):
    """An int >= low."""
    return Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
                 f"a whole number >= {low}{note}")


def at_least(low, note=""):
    """A number >= low."""
    return Check(lambda v: _is_number(v) and v >= low, f">= {low}{note}")


def finite_at_least(low):
    """A finite number >= low."""
    return Check(lambda v: _is_number(v) and math.isfinite(v) and v >= low,
                 f"a finite number >= {low}")


def in_range(low, high, high_open=False, note=""):
    """A number in [low, high] ([low, high) with high_open)."""
    if high_open:
        return Check(lambda v: _is_number(v) and low <= v < high, f"in [{low}, {high}){note}")
    return Check(lambda v: _is_number(v) and low <= v <= high, f"in [{low}, {high}]{note}")


def one_of(choices, note=""):
    """One of `choices`."""
    return Check(lambda v: v in choices, f"one of {', '.join(repr(c) for c in choices)}{note}")


def of_type(kind, rule):
    """An instance of `kind`, described by `rule`."""
    return Check(lambda v: isinstance(v, kind), rule)


def check_table(keys):
    """Raises ValueError unless every name is declared once and no name is another's section."""
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"config keys declared more than once: {twice}")
    sections = {n.rsplit(".", 1)[0] for n in names if "." in n}
    clash = sorted(sections & set(names))
    if clash:
        raise ValueError(f"config keys that are also sections: {clash}")


def build(keys):
    """The ConfigDict of `keys`' defaults (sections made on the way; a dict default becomes a
    ConfigDict). Each call makes fresh values."""
    config = mlc.ConfigDict()
    for key in keys:
        *parents, leaf = key.name.split(".")
        node = config
        for parent in parents:
            if parent not in node:
                node[parent] = mlc.ConfigDict()
            node = node[parent]
        default = copy.deepcopy(key.default)
        node[leaf] = mlc.ConfigDict(default) if isinstance(default, dict) else default
    return config


_MISSING = object()


def lookup(config, name, missing=_MISSING):
    """config["a"]["b"] for name "a.b"; `missing` when a part is absent."""
    node = config
    for part in name.split("."):
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError):
            return missing
    return node


def problems(config, keys, cross_checks=()):
    """The one-line errors of `config` against the table, in table order, then the cross-key
    checks (each run only when the keys' own checks passed). Keys the config lacks are skipped."""
    found = []
    for key in keys:
        value = lookup(config, key.name)
        if key.check is not None and value is not _MISSING:
            problem = key.check.problem(key.name, value)
            if problem:
                found.append(problem)
    if not found:
        for cross in cross_checks:
            try:
                good = bool(cross.ok(config))
            except (TypeError, ValueError, KeyError, AttributeError):
                good = False
            if not good:
                found.append(cross.message(config))
    return found

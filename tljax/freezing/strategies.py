"""Freezing strategies: each maps its arguments and the model's ordered groups to phases of
rules, [(start_step, [(regex, lr_mult or None)][, Restart])], first matching rule wins.

To add a strategy: a function here and one line in STRATEGIES.
"""
import dataclasses
import re
from typing import Callable

from tljax.errors import UserError
from tljax.models.family import depth_groups
from tljax.models.names import HEAD


@dataclasses.dataclass(frozen=True, order=True)
class Restart:
    """A phase that starts a new fine-tuning run on the current weights (the FT of LP-FT):
    every parameter it trains gets fresh optimizer state and its own lr schedule: `warmup`
    steps of linear warmup to `lr`, then optim.schedule's decay over the remaining steps.
    warmup < 0 means optim.warmup_steps; lr <= 0 means optim.lr."""
    warmup: int = -1
    lr: float = 0.0


def _regex_of(group_list, names):
    by_name = dict(group_list)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"unknown model groups {unknown}; this model's groups are "
                        f"{[n for n, _ in group_list]}")
    return [(by_name[n], 1.0) for n in names]


def _train_groups(group_list, names):
    """Rules that train the named groups and the head, and freeze the rest."""
    return _regex_of(group_list, list(names) + [HEAD]) + [(".*", None)]


def _full(args, group_list, paths, total_steps):
    return [(0, [(".*", 1.0)])]


def _linear_probe(args, group_list, paths, total_steps):
    return [(0, _train_groups(group_list, []))]


def _flat(units):
    return [name for unit in units for name in unit]


def _last_k(args, group_list, paths, total_steps):
    k = args.get("k", 1)
    units = depth_groups(group_list)
    if not 0 <= k <= len(units):
        raise UserError(f"last_k:{k} but the model has {len(units)} depth groups below the head: "
                        f"{units}")
    return [(0, _train_groups(group_list, _flat(units[len(units) - k:])))]


def _surgical(args, group_list, paths, total_steps):
    names = [n for n in re.split(r"[,;\s]+", args.get("groups", "")) if n]
    if not names:
        raise UserError("surgical needs group names, e.g. surgical:stage1 or surgical:groups=stem;stage1")
    return [(0, _train_groups(group_list, names))]


def _gradual(args, group_list, paths, total_steps):
    every = args.get("every", 0)
    if every <= 0:
        raise UserError("gradual needs a positive unfreezing interval, e.g. gradual:every=50")
    units = depth_groups(group_list)
    return [(i * every, _train_groups(group_list, _flat(units[len(units) - i:]) if i else []))
            for i in range(len(units) + 1)]


def _lp_ft(args, group_list, paths, total_steps):
    """Kumar et al. 2022: a linear probe, then fine-tuning of everything as a new run on the
    probed weights (fresh optimizer, its own warmup and peak lr: ft_warmup, ft_lr)."""
    lp_steps = args.get("lp_steps", 0)
    if lp_steps <= 0:
        raise UserError("lp_ft needs the linear-probe length, e.g. lp_ft:lp_steps=100")
    restart = Restart(args.get("ft_warmup", -1), args.get("ft_lr", 0.0))
    return [(0, _train_groups(group_list, [])), (lp_steps, [(".*", 1.0)], restart)]


def _bitfit(args, group_list, paths, total_steps):
    return [(0, _regex_of(group_list, [HEAD]) + [(r".*/bias", 1.0), (".*", None)])]


def _norm_only(args, group_list, paths, total_steps):
    """Normalization scales and offsets: a `bias` counts when its module also has a `scale`."""
    norm_modules = {p.rsplit("/", 1)[0] for p in paths if p.endswith("/scale")}
    return [(0, _regex_of(group_list, [HEAD])
             + [(re.escape(m) + "/(scale|bias)", 1.0) for m in sorted(norm_modules)]
             + [(".*", None)])]


FREEZEOUT_SPACING = {"linear": lambda t: t, "squared": lambda t: t**2, "cubic": lambda t: t**3}


def freezeout_times(t0, spacing, count):
    """FreezeOut (Brock et al. 2017; ajbrock/FreezeOut `WRN.py`): unit i of `count` freezes at
    fraction spacing(t0 + (1 - t0)·i/count) of training, the head (i = count) at the end;
    t0 is given before the spacing is applied ("pre-cubed")."""
    return [FREEZEOUT_SPACING[spacing](t0 + (1 - t0) * i / count) for i in range(count)]


def _freezeout(args, group_list, paths, total_steps):
    """Each depth unit's lr anneals to 0 at its own step (scaled up by 1/t_i with scale_lr,
    as FreezeOut's default), then the unit freezes and leaves the backward pass."""
    t0, spacing = args.get("t0", 0.5), args.get("spacing", "cubic")
    if not 0 < t0 <= 1 or spacing not in FREEZEOUT_SPACING:
        raise UserError(f"freezeout needs 0 < t0 <= 1 and spacing in "
                        f"{sorted(FREEZEOUT_SPACING)} (got t0={t0}, spacing={spacing})")
    if not total_steps:
        raise UserError("freezeout needs the run's total_steps to place its freezing steps")
    units = depth_groups(group_list)
    times = freezeout_times(t0, spacing, len(units))
    by_name = dict(group_list)
    mults = [1.0 / t if args.get("scale_lr", 1) else 1.0 for t in times]
    stops = [max(1, round(t * total_steps)) for t in times]
    phases = []
    for start in sorted({0, *stops}):
        rules = [(by_name[HEAD], 1.0)]
        for unit, mult, stop in zip(units, mults, stops):
            rules += [(by_name[name], mult if start < stop else None) for name in unit]
        phases.append((start, rules))
    return phases


def layer_decay_depths(group_list):
    """Depth from the top per group: head 0, the last depth group (block + final norm) 1, ...,
    the embedding deepest: the same depth groups as last_k and gradual."""
    units = depth_groups(group_list)
    depths = {HEAD: 0}
    depths.update({name: len(units) - i for i, unit in enumerate(units) for name in unit})
    return depths


def _layer_decay(args, group_list, paths, total_steps):
    decay = args.get("decay", 0.0)
    if not 0 < decay <= 1:
        raise UserError(f"layer_decay needs a decay in (0, 1], e.g. layer_decay:0.7 (got {decay})")
    depths = layer_decay_depths(group_list)
    return [(0, [(regex, decay ** depths[name]) for name, regex in group_list])]


@dataclasses.dataclass(frozen=True)
class Strategy:
    phases: Callable  # (args dict, group_list, paths, total_steps or None) -> phases of rules
    args: dict = dataclasses.field(default_factory=dict)  # name -> type, in positional order
    anneals: bool = False  # groups anneal their lr to 0 by the step they freeze (Label.until)


STRATEGIES = {
    "full": Strategy(_full), "linear_probe": Strategy(_linear_probe),
    "last_k": Strategy(_last_k, {"k": int}), "surgical": Strategy(_surgical, {"groups": str}),
    "gradual": Strategy(_gradual, {"every": int}),
    "lp_ft": Strategy(_lp_ft, {"lp_steps": int, "ft_warmup": int, "ft_lr": float}),
    "bitfit": Strategy(_bitfit), "norm_only": Strategy(_norm_only),
    "layer_decay": Strategy(_layer_decay, {"decay": float}),
    "freezeout": Strategy(_freezeout, {"t0": float, "spacing": str, "scale_lr": int}, anneals=True),
}

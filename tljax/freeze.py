"""Freezing schedules: which parameters train, from which step, at what lr multiplier.

A schedule is a list of phases. Each phase assigns every parameter path a
learning-rate multiplier, or None for frozen. Schedules come from named
strategies ("full", "last_k:2", "gradual:every=50", "lp_ft:lp_steps=100", ...,
combinable with "+", e.g. "last_k:2+layer_decay:0.7") or from an explicit list
of phases: [(start_step, [(regex, lr_mult or None), ...]), ...], first matching
rule wins, every parameter must be matched.

Trainable parameters are grouped into optimizer *labels*: (model group, lr
multiplier, step since which the parameter has trained at that multiplier).
A label has its own optimizer state and step count, so a group that starts
training mid-run starts with fresh state while the others keep theirs.
"""
import dataclasses
import re

from absl import logging

from tljax import peft_methods
from tljax.errors import UserError
from tljax.models import HEAD, depth_groups, group_of, peft


@dataclasses.dataclass(frozen=True, order=True)
class Restart:
    """A phase that starts a new fine-tuning run on the current weights (the FT of LP-FT):
    every parameter it trains gets fresh optimizer state and its own lr schedule: `warmup`
    steps of linear warmup to `lr`, then optim.schedule's decay over the remaining steps.
    warmup < 0 means optim.warmup_steps; lr <= 0 means optim.lr."""
    warmup: int = -1
    lr: float = 0.0


@dataclasses.dataclass(frozen=True, order=True)
class Label:
    """An optimizer group: parameters of one model group trained at one lr multiplier since
    one step. Each label has its own optimizer state and step count; `restart` gives it its
    own schedule (else it follows the run's global schedule from step `since`); `until`
    (FreezeOut) makes that schedule reach 0 at the step the group freezes."""
    group: str
    lr_mult: float
    since: int
    restart: Restart = None
    until: int = None

    @property
    def key(self):
        """The name of this label's optimizer state (checkpoints need string keys)."""
        return f"{self.group}|lr{self.lr_mult:g}|from{self.since}"


@dataclasses.dataclass(frozen=True)
class Phase:
    start_step: int
    mults: dict  # path -> lr multiplier (float) or None (frozen)
    restart: Restart = None  # a new fine-tuning run starts here (see Restart)

    def trainable_paths(self):
        return sorted(p for p, m in self.mults.items() if m is not None)


@dataclasses.dataclass(frozen=True)
class Plan:
    phases: tuple  # Phase, sorted by start_step, first one starts at 0
    labels: tuple  # per phase: {path: Label} for trainable paths

    def phase_index(self, step):
        """Index of the phase that governs the update taken at `step`."""
        return max(i for i, p in enumerate(self.phases) if p.start_step <= step)


def resolve(rules, paths):
    """{path: mult} from ordered (regex, mult) rules; unmatched paths are an error."""
    compiled = []
    for regex, mult in rules:
        try:
            compiled.append((re.compile(regex), None if mult is None else float(mult)))
        except re.error as e:
            raise UserError(f"freeze rule {regex!r} is not a valid regular expression ({e})") from None
        except (TypeError, ValueError):
            raise UserError(f"freeze rule {regex!r} has multiplier {mult!r}; use a number "
                            f"or None (frozen)") from None
        if compiled[-1][1] is not None and not compiled[-1][1] >= 0:
            raise UserError(f"freeze rule {regex!r} has learning-rate multiplier {mult}; "
                            f"multipliers must be >= 0 (None freezes)")
    mults, uncovered = {}, []
    for path in paths:
        match = next((mult for regex, mult in compiled if regex.fullmatch(path)), "none")
        if match == "none":
            uncovered.append(path)
        mults[path] = match
    if uncovered:
        raise UserError(f"freeze rules {[r for r, _ in rules]} match no rule for parameters "
                        f"{uncovered[:10]}{' ...' if len(uncovered) > 10 else ''}; "
                        f"add a rule such as ('.*', None)")
    return mults


# ---------------------------------------------------------------- strategies
# Each strategy gets (args, group_list, paths, total_steps or None) and returns
# [(start_step, rules[, Restart])].

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


# name -> (strategy, its arguments and their types, in positional order)
STRATEGIES = {
    "full": (_full, {}), "linear_probe": (_linear_probe, {}), "last_k": (_last_k, {"k": int}),
    "surgical": (_surgical, {"groups": str}), "gradual": (_gradual, {"every": int}),
    "lp_ft": (_lp_ft, {"lp_steps": int, "ft_warmup": int, "ft_lr": float}), "bitfit": (_bitfit, {}), "norm_only": (_norm_only, {}),
    "layer_decay": (_layer_decay, {"decay": float}),
    "freezeout": (_freezeout, {"t0": float, "spacing": str, "scale_lr": int}),
}
# Strategies whose groups anneal their lr to 0 by the step they freeze (Label.until).
ANNEALING = {"freezeout"}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "text"}


def _parse_args(name, text, types):
    """Typed arguments of one strategy from "k=2" or the positional "2"."""
    if not text:
        return {}
    if not types:
        raise UserError(f"freezing strategy {name!r} takes no arguments, got {name}:{text}")
    if "=" in text:
        pairs = [item.partition("=")[::2] for item in filter(None, text.split(","))]
    else:  # The positional form names the first argument: last_k:2 = last_k:k=2.
        pairs = [(next(iter(types)), text)]
    args = {}
    for key, value in ((k.strip(), v.strip()) for k, v in pairs):
        if key not in types:
            raise UserError(f"{name} has no argument {key!r} (in {name}:{text}); its arguments "
                            f"are {', '.join(types) or 'none'}")
        try:
            args[key] = types[key](value)
        except ValueError:
            raise UserError(f"{name}:{text}: {key} must be {_TYPE_NAMES[types[key]]}, "
                            f"not {value!r}") from None
    return args


def _parts(spec):
    """([(strategy, args)], [(PEFT method, args)]) of a '+'-joined spec."""
    strategies, methods = [], []
    for part in filter(None, (p.strip() for p in spec.split("+"))):
        name, _, arg_text = part.partition(":")
        if name == "l2sp":
            raise UserError("L2-SP is a regulariser, not a freezing schedule: set "
                            "optim.l2sp=(alpha, beta), which combines with any config.freeze")
        if name in peft_methods.METHODS:
            methods.append((name, _parse_args(name, arg_text.strip(), peft_methods.arg_types(name))))
        elif name in STRATEGIES:
            strategies.append((name, _parse_args(name, arg_text.strip(), STRATEGIES[name][1])))
        else:
            raise UserError(f"unknown freezing strategy {name!r} in {spec!r} (config.freeze); "
                            f"known: {', '.join(sorted(STRATEGIES))}; parameter-efficient "
                            f"methods: {', '.join(sorted(peft_methods.METHODS))}")
    if not strategies and not methods:
        raise UserError("config.freeze is empty; use e.g. 'full' or 'linear_probe'")
    return strategies, methods


def peft_of(spec):
    """The parameter-efficient modules (models.peft.Peft) a freezing spec adds to the model."""
    if not isinstance(spec, str):
        return peft.NONE
    return peft_methods.modules(_parts(spec)[1])


def _anneals(spec):
    return isinstance(spec, str) and any(name in ANNEALING for name, _ in _parts(spec)[0])


def _phases_from_spec(spec, group_list, paths, total_steps):
    """[(start, mults, [Restart] or [])] per '+'-joined component. Freezing strategies decide
    the backbone (a linear probe's when only PEFT methods are given); each method decides
    its own added parameters."""
    strategies, methods = _parts(spec)
    backbone = [p for p in paths if not peft.is_added(p)]
    neutral = {p: 1.0 for p in paths if peft.is_added(p)}
    components = []
    for name, args in strategies or [("linear_probe", {})]:
        strategy, _ = STRATEGIES[name]
        components.append([(start, {**resolve(rules, backbone), **neutral}, restart)
                           for start, rules, *restart in strategy(args, group_list, backbone, total_steps)])
    return components + peft_methods.components(methods, paths)


def _combine(components, paths):
    """Multiplies the multipliers of all components at every phase start; None wins.

    Components are lists of (start, mults, [Restart] or []); a phase restarts when a
    component's phase that starts there does."""
    starts = sorted({start for comp in components for start, _, _ in comp})
    phases = []
    for start in starts:
        mults = {}
        for path in paths:
            mult = 1.0
            for comp in components:
                active = [m for s, m, _ in comp if s <= start][-1]
                mult = None if mult is None or active[path] is None else mult * active[path]
            mults[path] = mult
        restarts = [r[0] for comp in components for s, _, r in comp if s == start and r]
        phases.append(Phase(start, mults, restarts[0] if restarts else None))
    return phases


def make_plan(spec, group_list, paths, total_steps=None):
    """The freezing Plan for a strategy string or an explicit list of phases."""
    paths = sorted(paths)
    if isinstance(spec, str):
        components = _phases_from_spec(spec, group_list, paths, total_steps)
    else:
        starts = [int(start) for start, _ in spec]
        if starts != sorted(set(starts)):
            raise UserError(f"explicit freezing phases must have increasing start steps, "
                            f"got {starts}")
        components = [[(int(start), resolve(rules, paths), []) for start, rules in spec]]
    phases = _combine(components, paths)
    if phases[0].start_step != 0:
        raise UserError(f"the first freezing phase must start at step 0, not {phases[0].start_step}")
    if total_steps is not None and any(p.start_step >= total_steps for p in phases):
        late = [p.start_step for p in phases if p.start_step >= total_steps]
        logging.warning("freezing phases starting at steps %s never run (total_steps=%d)",
                        late, total_steps)
        phases = [p for p in phases if p.start_step < total_steps]
    if not any(phase.trainable_paths() for phase in phases):
        raise UserError(f"freezing schedule {spec!r} trains no parameter")

    group = {p: group_of(p, group_list) for p in paths}
    anneal = _anneals(spec)
    labels, since = [], {}  # since: path -> (start step, Restart or None) of its current label
    for index, phase in enumerate(phases):
        previous = phases[index - 1].mults if index else {}
        for path, mult in phase.mults.items():
            if mult is not None and (previous.get(path) != mult or phase.restart):
                since[path] = (phase.start_step, phase.restart)
        labels.append({p: Label(group[p], m, *since[p],
                                until=_frozen_from(phases, index, p) if anneal else None)
                       for p, m in phase.mults.items() if m is not None})
    return Plan(tuple(phases), tuple(labels))


def _frozen_from(phases, index, path):
    """The first step after phase `index` at which `path` is frozen (None: never)."""
    return next((p.start_step for p in phases[index + 1:] if p.mults[path] is None), None)


def summary_rows(plan, group_list, param_sizes):
    """Rows (group, #params, per-phase 'frozen'/'x{mult}') for the start-of-run table."""
    rows = []
    for name, _ in group_list:
        members = [p for p in param_sizes if group_of(p, group_list) == name]
        if not members:
            continue
        cells = []
        for phase in plan.phases:
            mults = sorted({phase.mults[p] for p in members}, key=lambda m: (m is None, m or 0))
            cells.append("/".join("frozen" if m is None else f"x{m:g}" for m in mults))
        rows.append((name, sum(param_sizes[p] for p in members), cells))
    return rows


def trainable_fraction(phase, param_sizes):
    total = sum(param_sizes.values())
    return sum(param_sizes[p] for p in phase.trainable_paths()) / total

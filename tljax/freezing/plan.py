"""The freezing Plan of a Spec: which parameters train, from which step, at what lr multiplier.

A plan is a list of phases. Each phase assigns every parameter path a learning-rate
multiplier, or None for frozen. The phases come from the spec's strategies and PEFT methods
(multiplied together, None wins) or from its explicit phases, [(start_step, [(regex,
lr_mult or None), ...]), ...], first matching rule wins, every parameter must be matched.

Trainable parameters are grouped into optimizer *labels*: (model group, lr
multiplier, step since which the parameter has trained at that multiplier).
A label has its own optimizer state and step count, so a group that starts
training mid-run starts with fresh state while the others keep theirs.
"""
import dataclasses
import re

from absl import logging

from tljax.errors import UserError
from tljax.freezing import methods as methods_lib
from tljax.freezing import spec as spec_lib
from tljax.freezing.strategies import STRATEGIES, Restart
from tljax.models import peft
from tljax.models.family import group_of


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


def _phases_from_spec(spec, group_list, paths, total_steps):
    """[(start, mults, [Restart] or [])] per component. Freezing strategies decide the
    backbone (a linear probe's when only PEFT methods are given); each method decides its
    own added parameters."""
    if spec.phases is not None:
        return [[(start, resolve(rules, paths), []) for start, rules in spec.phases]]
    backbone = [p for p in paths if not peft.is_added(p)]
    neutral = {p: 1.0 for p in paths if peft.is_added(p)}
    components = []
    for part in spec.strategies or (spec_lib.Part("linear_probe"),):
        phases = STRATEGIES[part.name].phases(dict(part.args), group_list, backbone, total_steps)
        components.append([(start, {**resolve(rules, backbone), **neutral}, restart)
                           for start, rules, *restart in phases])
    return components + methods_lib.components(spec.methods, paths)


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
    """The freezing Plan of a Spec (a spec string or explicit phases are parsed first)."""
    if not isinstance(spec, spec_lib.Spec):
        spec = spec_lib.parse(spec)
    paths = sorted(paths)
    components = _phases_from_spec(spec, group_list, paths, total_steps)
    phases = _combine(components, paths)
    if phases[0].start_step != 0:
        raise UserError(f"the first freezing phase must start at step 0, not {phases[0].start_step}")
    if total_steps is not None and any(p.start_step >= total_steps for p in phases):
        late = [p.start_step for p in phases if p.start_step >= total_steps]
        logging.warning("freezing phases starting at steps %s never run (total_steps=%d)",
                        late, total_steps)
        phases = [p for p in phases if p.start_step < total_steps]
    if not any(phase.trainable_paths() for phase in phases):
        raise UserError(f"freezing schedule {spec.label!r} trains no parameter")

    group = {p: group_of(p, group_list) for p in paths}
    anneal = spec.anneals
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


def compiled_phases(plan, group_list):
    """The plan as big_vision-style explicit phases, [(start, [(regex, lr_mult or None)])]:
    one rule per model group where its parameters share a multiplier, else one per
    parameter, in group order (first match wins, as group membership does). Written into
    summary.json so a reader sees exactly what trained; as config.freeze_phases it gives
    back the same multipliers."""
    members = {}
    for path in sorted(plan.phases[0].mults):
        members.setdefault(group_of(path, group_list), []).append(path)
    phases = []
    for phase in plan.phases:
        rules = []
        for name, regex in group_list:
            mults = {phase.mults[p] for p in members.get(name, ())}
            if len(mults) == 1:
                rules.append([regex, mults.pop()])
            else:
                rules += [[re.escape(p), phase.mults[p]] for p in members.get(name, ())]
        phases.append([phase.start_step, rules])  # lists: the same value after a JSON round trip
    return phases

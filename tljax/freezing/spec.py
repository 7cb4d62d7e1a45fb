"""The freezing/PEFT grammar, parsed once into a Spec.

`config.freeze` is '+'-joined components, each a freezing strategy or a parameter-efficient
method with optional arguments: "last_k:2", "lora:r=8,targets=qv+bitfit",
"lp_ft:lp_steps=100,ft_lr=0.01". `config.freeze_phases`, when set, replaces it by explicit
phases ((start_step, ((regex, lr_mult or None), ...)), ...). `config.model.peft` names PEFT
methods that are added to the model but trained only by what the phases say.

A run parses its spec once (`from_config`) and hands the Spec to the model builder (which
modules to add: `Spec.peft`) and to the plan builder (which parameters train). The sweep
splits a comma-separated list of specs with `split_list`, on the same names.
"""
import dataclasses
import re

from tljax.errors import UserError
from tljax.freezing import methods as methods_lib
from tljax.freezing import strategies as strategies_lib

PROBE = "probe"  # "probe:ridge" in a sweep's schedule list: a probe run, not a freezing spec
_TYPE_NAMES = {int: "an integer", float: "a number", str: "text"}


@dataclasses.dataclass(frozen=True)
class Part:
    """One component of a spec: a strategy or method name and its typed arguments."""
    name: str
    args: tuple = ()  # ((key, value), ...) in the order given

    def get(self, key, default=None):
        return dict(self.args).get(key, default)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What trains and which modules are added, as parsed from the config."""
    strategies: tuple = ()     # Parts naming freezing strategies
    methods: tuple = ()        # Parts naming PEFT methods (they add modules and train them)
    phases: tuple = None       # explicit phases instead of strategies and methods
    model_methods: tuple = ()  # Parts of model.peft: added to the model, trained by `phases`
    text: str = ""             # the string it was parsed from ("" for explicit phases)

    @property
    def label(self):
        """The schedule's name in summaries and reports."""
        return phases_text(self.phases) if self.phases is not None else self.text

    @property
    def anneals(self):
        """Whether groups anneal their lr to 0 by the step they freeze (FreezeOut)."""
        return any(strategies_lib.STRATEGIES[p.name].anneals for p in self.strategies)

    @property
    def peft(self):
        """The parameter-efficient modules (models.peft.Peft) the model gets."""
        return methods_lib.modules(self.methods + self.model_methods)


def _parse_args(name, text, types):
    """Typed arguments of one component from "k=2" or the positional "2"."""
    if not text:
        return ()
    if not types:
        raise UserError(f"freezing strategy {name!r} takes no arguments, got {name}:{text}")
    if "=" in text:
        pairs = [item.partition("=")[::2] for item in filter(None, text.split(","))]
    else:  # The positional form names the first argument: last_k:2 = last_k:k=2.
        pairs = [(next(iter(types)), text)]
    args = []
    for key, value in ((k.strip(), v.strip()) for k, v in pairs):
        if key not in types:
            raise UserError(f"{name} has no argument {key!r} (in {name}:{text}); its arguments "
                            f"are {', '.join(types) or 'none'}")
        try:
            args.append((key, types[key](value)))
        except ValueError:
            raise UserError(f"{name}:{text}: {key} must be {_TYPE_NAMES[types[key]]}, "
                            f"not {value!r}") from None
    return tuple(args)


def _parse_text(text):
    strategies, methods = [], []
    for part in filter(None, (p.strip() for p in text.split("+"))):
        name, _, arg_text = part.partition(":")
        if name == "l2sp":
            raise UserError("L2-SP is a regulariser, not a freezing schedule: set "
                            "optim.l2sp=(alpha, beta), which combines with any config.freeze")
        if name in methods_lib.METHODS:
            methods.append(Part(name, _parse_args(name, arg_text.strip(), methods_lib.arg_types(name))))
        elif name in strategies_lib.STRATEGIES:
            types = strategies_lib.STRATEGIES[name].args
            strategies.append(Part(name, _parse_args(name, arg_text.strip(), types)))
        else:
            raise UserError(f"unknown freezing strategy {name!r} in {text!r} (config.freeze); "
                            f"known: {', '.join(sorted(strategies_lib.STRATEGIES))}; parameter-"
                            f"efficient methods: {', '.join(sorted(methods_lib.METHODS))}")
    if not strategies and not methods:
        raise UserError("config.freeze is empty; use e.g. 'full' or 'linear_probe'")
    return Spec(tuple(strategies), tuple(methods), text=text)


def _parse_phases(phases):
    phases = tuple((int(start), tuple((regex, mult) for regex, mult in rules))
                   for start, rules in phases)
    starts = [start for start, _ in phases]
    if starts != sorted(set(starts)):
        raise UserError(f"explicit freezing phases must have increasing start steps, got {starts}")
    return Spec(phases=phases)


def parse(spec):
    """The Spec of a strategy string, or of explicit phases [(start, [(regex, mult)])]."""
    spec = _parse_text(spec) if isinstance(spec, str) else _parse_phases(spec)
    spec.peft  # noqa: B018 - a method given twice with different settings fails here
    return spec


def from_config(config):
    """The run's Spec: config.freeze_phases or config.freeze, plus config.model.peft."""
    spec = parse(config.freeze_phases or config.freeze)
    if not config.model.peft:
        return spec
    extra = parse(config.model.peft)
    if extra.strategies:
        raise UserError(f"config.model.peft={config.model.peft!r} names freezing strategies "
                        f"{[p.name for p in extra.strategies]}; it takes PEFT methods only")
    spec = dataclasses.replace(spec, model_methods=extra.methods)
    try:
        spec.peft  # noqa: B018
    except UserError as e:
        raise UserError(f"config.freeze and config.model.peft: {e}") from None
    return spec


def split_list(text):
    """A comma-separated list of specs, split on commas that start a new strategy, method or
    probe ("lp_ft:lp_steps=9,ft_warmup=3" stays whole)."""
    starters = set(strategies_lib.STRATEGIES) | set(methods_lib.METHODS) | {PROBE}
    pieces = []
    for piece in text.split(","):
        name = re.match(r"\s*([a-z_0-9]+)", piece)
        if pieces and not (name and name.group(1) in starters):
            pieces[-1] += "," + piece
        else:
            pieces.append(piece.strip())
    return [p for p in pieces if p]


def phases_text(phases):
    """Explicit freezing phases as one readable line, e.g.
    "0: head/.*=1, .*=frozen | 100: .*=1" (for summaries and report rows)."""
    def rule(regex, mult):
        return f"{regex}={'frozen' if mult is None else format(float(mult), 'g')}"
    return " | ".join(f"{int(start)}: " + ", ".join(rule(*r) for r in rules)
                      for start, rules in phases)


def label_of(config_dict):
    """The schedule's name in reports, from a (flattened or nested) config dict such as a
    run's config.json: a probe's method, the explicit phases, or the freeze string."""
    probe = config_dict.get("probe.method") or (config_dict.get("probe") or {}).get("method")
    if probe:
        return f"{PROBE}:{probe}"
    phases = config_dict.get("freeze_phases")
    return phases_text(phases) if phases else config_dict.get("freeze", "?")

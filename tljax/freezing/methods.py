"""Parameter-efficient methods as components of a freezing spec.

`lora:r=8,targets=qv`, `adapter:dim=8`, `adaptformer:dim=8`, `vpt:tokens=10`, `ssf` each add
modules to the model (tljax/models/peft.py) and train them. They combine with '+': with
freezing strategies, which then decide the backbone's parameters (`lora:r=8+bitfit` trains
LoRA, every bias and the head), and with each other. Without a freezing strategy the
backbone is frozen and the head trains, as in the papers. `start` and `stop` (steps)
bound when a method trains, so a run can switch methods:
`adapter:dim=8,stop=200+lora:r=8,start=200`; outside its window a method's modules stay in
the model, frozen.

To add a method: its modules in models/peft.py, one line in METHODS.
"""
import dataclasses
import re
from typing import Callable

from tljax.errors import UserError
from tljax.models import peft

_WINDOW = {"start": int, "stop": int}


def _lora(args):
    rank = _positive("lora", args, "r", 8)
    return peft.Peft(lora=peft.Lora(rank, args.get("alpha", float(rank)), args.get("targets", ""),
                                    args.get("dropout", 0.0), bool(args.get("dora", 0))))


def _positive(name, args, key, default):
    value = args.get(key, default)
    if value < 1:
        raise UserError(f"{name}:{key}={value}; it must be >= 1")
    return value


def _adapter(args):
    where = args.get("where", "both")
    if where not in ("both", "mlp"):
        raise UserError(f"adapter:where={where}; use both (after attention and MLP, Houlsby) "
                        f"or mlp (after the MLP only)")
    return peft.Peft(adapter=peft.Adapter(_positive("adapter", args, "dim", 8), where))


def _adaptformer(args):
    return peft.Peft(adaptformer=peft.Adapter(_positive("adaptformer", args, "dim", 8),
                                              scale=args.get("scale", 0.1)))


def _vpt(args):
    return peft.Peft(prompts=peft.Prompts(_positive("vpt", args, "tokens", 10),
                                          bool(args.get("deep", 1))))


def _ssf(args):
    return peft.Peft(ssf=True)


@dataclasses.dataclass(frozen=True)
class Method:
    build: Callable  # its arguments (dict) -> the peft.Peft modules it adds
    trains: str      # regex of the added parameters it trains
    args: dict       # argument name -> type, in positional order


METHODS = {
    "lora": Method(_lora, rf".*/({'|'.join(peft.LORA_PARAMS)})",
                   {"r": int, "alpha": float, "targets": str, "dropout": float, "dora": int}),
    "adapter": Method(_adapter, rf"(.*/)?({'|'.join(peft.ADAPTER_MODULES)})/.*",
                      {"dim": int, "where": str}),
    "adaptformer": Method(_adaptformer, rf".*/{peft.ADAPTFORMER_MODULE}/.*",
                          {"dim": int, "scale": float}),
    "vpt": Method(_vpt, rf".*/{peft.PROMPTS}", {"tokens": int, "deep": int}),
    "ssf": Method(_ssf, rf".*/({'|'.join(peft.SSF_PARAMS)})", {}),
}


def arg_types(name):
    return {**METHODS[name].args, **_WINDOW}


def modules(parts):
    """The peft.Peft that the method parts (spec.Part) add."""
    methods = peft.NONE
    for part in parts:
        try:
            methods = methods.union(METHODS[part.name].build(dict(part.args)))
        except ValueError as e:
            raise UserError(f"{e}; give each method once") from None
    return methods


def components(parts, paths):
    """Per method, its phases [(start, {path: mult}, [])]: its own added parameters train in
    its window and are frozen outside it; every other parameter is left to the other
    components (multiplier 1). Added parameters no method trains stay frozen."""
    added = [p for p in paths if peft.is_added(p)]
    owned, result = set(), []
    for part in parts:
        regex = re.compile(METHODS[part.name].trains)
        mine = {p for p in added if regex.fullmatch(p)}
        if not mine:
            raise UserError(f"{part.name} adds no parameters to this model (check its targets, "
                            f"e.g. lora:targets=qv for ViT attention or targets=c for 1x1 convs)")
        owned |= mine
        start, stop = part.get("start", 0), part.get("stop")
        if start < 0 or (stop is not None and stop <= start):
            raise UserError(f"{part.name}: start={start}, stop={stop}; need 0 <= start < stop")
        phases = {0: None, start: 1.0}  # frozen until `start` (start 0 overrides)
        if stop is not None:
            phases[stop] = None
        result.append([(s, {p: (m if p in mine else 1.0) for p in paths}, [])
                       for s, m in sorted(phases.items())])
    unowned = set(added) - owned
    if unowned:
        result.append([(0, {p: None if p in unowned else 1.0 for p in paths}, [])])
    return result

"""Model registry: name + architecture kwargs -> linen Module, and its ordered parameter groups.

Every family exposes its parameters as an ordered list of named groups from
input to output; depth-based freezing strategies are defined on that list.
"""
import re

import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import peft, resnet, resnetv2, vit

# The top group of every family, and the module name of its classifier (the layer a
# transfer run resets). Every strategy, merge rule and regulariser uses these names.
HEAD = "head"
FINAL_NORM = "norm"  # the group of a family's norm after the last block (BiT, ViT)

_FAMILIES = {
    "bit": resnetv2.ResNetV2,
    "resnet": resnet.ResNet,
    "vit": vit.ViT,
}


def build(name, arch, num_classes, dtype="float32"):
    """The linen Module for family `name` with architecture kwargs `arch` (a dict)."""
    if name not in _FAMILIES:
        raise UserError(f"unknown model {name!r} (model.name); known: {', '.join(sorted(_FAMILIES))}")
    cls = _FAMILIES[name]
    arch = dict(arch)
    unknown = set(arch) - set(cls.__dataclass_fields__)
    if unknown:
        raise UserError(f"model {name!r} has no architecture options {sorted(unknown)} (model.arch)")
    if "block_counts" in arch:
        arch["block_counts"] = tuple(arch["block_counts"])
    if "peft" in arch:  # stored as a dict in exports (see export.arch_of)
        arch["peft"] = with_peft(cls, peft.Peft.from_dict(arch["peft"]))
    return cls(num_classes=num_classes, dtype=jnp.dtype(dtype), **arch)


def with_peft(family, methods):
    """`methods` (a peft.Peft) if model class `family` supports them, else a UserError."""
    tokens = [name for name in ("prompts", "adaptformer") if getattr(methods, name)]
    if tokens and family is not vit.ViT:
        raise UserError(f"{' and '.join(tokens)} need a ViT (VPT prompts are tokens; AdaptFormer "
                        f"adapts a transformer MLP); {family.__name__} supports lora, adapter and ssf")
    return methods


def groups(module):
    """Ordered [(group_name, regex)] from input to output; regexes fullmatch '/'-joined paths."""
    if isinstance(module, resnetv2.ResNetV2):
        stages = [(f"stage{i + 1}", rf"stage{i + 1}/.*") for i in range(len(module.block_counts))]
        return [("stem", "stem/.*"), *stages, (FINAL_NORM, "norm/.*"), (HEAD, "head/.*")]
    if isinstance(module, resnet.ResNet):
        stages = [(f"stage{i + 1}", rf"stage{i + 1}/.*") for i in range(len(module.block_counts))]
        return [("stem", "stem/.*"), *stages, (HEAD, "head/.*")]
    if isinstance(module, vit.ViT):
        blocks = [(f"block{i}", rf"encoder/block{i}/.*") for i in range(module.dims()[1])]
        return [("embed", "embed/.*"), *blocks, (FINAL_NORM, "encoder/norm/.*"),
                (HEAD, "(pre_logits|head)/.*")]
    raise TypeError(f"no parameter groups defined for {type(module).__name__}")


def depth_groups(group_list):
    """Group names below the head as depth units, input to output: every group is one unit,
    except that a final norm belongs to the block it normalises (the top one). So `last_k:1`
    trains the last block, its norm and the head on every family, and gradual unfreezing and
    layer-wise lr decay count the same depths."""
    units = []
    for name, _ in group_list:
        if name == HEAD:
            continue
        if name == FINAL_NORM and units:
            units[-1].append(name)
        else:
            units.append([name])
    return units


def is_classifier(path):
    """True for parameters of the classifier layer (reset on transfer, decayed to 0 by L2-SP)."""
    return path.startswith(HEAD + "/")


def for_device_axis(module, axis_name):
    """`module` with BatchNorm statistics averaged over `axis_name` (pmap's device axis).

    Under jit the batch is one global array, so statistics are already global; under
    pmap each device sees its shard and must average with the others to match.
    """
    if axis_name and "bn_axis_name" in getattr(module, "__dataclass_fields__", {}):
        return module.clone(bn_axis_name=axis_name)
    return module


def with_frozen_norms(module, frozen_param_paths):
    """`module` with BatchNorm layers whose scale is frozen set to use running statistics."""
    if "frozen_norms" not in getattr(module, "__dataclass_fields__", {}):
        return module
    norms = tuple(sorted(p[: -len("/scale")] for p in frozen_param_paths if p.endswith("/scale")))
    return module.clone(frozen_norms=norms)


def mergeable_lora(module):
    """False for BiT: weight standardisation is not linear in the kernel, so W + ΔW cannot
    be folded into one stored kernel."""
    return not isinstance(module, resnetv2.ResNetV2)


def group_of(path, group_list):
    """Name of the first group whose regex fullmatches `path`."""
    for name, regex in group_list:
        if re.fullmatch(regex, path):
            return name
    raise UserError(f"parameter {path!r} belongs to no model group")

"""A model family: its linen Module, what the rest of tljax needs to know about it and how its
checkpoints are read, kept in the family's own module (its FAMILY), and the registry of
families by name.

To add a family: write models/<family>.py with the linen Module (fields `num_classes`,
`dtype`, `peft`; its forward pass inside `peft.intercept(...)` for the op-level PEFT methods,
then layers.classifier_head: the head HEAD and its input sown as names.HEAD_INPUT), its
checkpoint converters (there, or in models/<family>_weights.py beside it, which it imports)
and its FAMILY, then add FAMILY to the registry line in models/__init__.py (or `register` it,
as tests do). A family that reads token ids instead of images (bert, gpt2) says so by its
example_input (token_input) and takes `attention_mask=` (and `token_type_ids=`) keywords.
"""
import dataclasses
import re
from typing import Callable

import jax.numpy as jnp
import numpy as np

from tljax.errors import UserError
from tljax.models import peft
from tljax.models.names import HEAD, TOP_OF_LAST_BLOCK


def image_input(shape):
    """A batch of one image of `shape` (height, width, channels), what vision families take
    (numpy: made without an XLA program of its own)."""
    return np.zeros((1, *shape), np.float32)


def token_input(shape):
    """A batch of one token-id sequence of `shape` (length,), what text families take."""
    return np.zeros((1, *shape), np.int32)


def mean_pool(module, x, attention_mask=None):
    """A depth group's output as one feature vector per example: the mean over positions."""
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


@dataclasses.dataclass(frozen=True)
class Family:
    name: str                    # model.name
    module: type                 # the linen Module class
    groups: Callable             # module -> ordered [(group name, regex)], input to output,
    #                              the last one HEAD; a final norm is named FINAL_NORM
    # (module, a depth group's output, the batch's attention mask or None) -> (batch,
    # features) for probes
    pool: Callable = mean_pool
    token_methods: bool = False  # takes VPT prompts and AdaptFormer (token/transformer methods)
    mergeable_lora: bool = True  # LoRA folds into the stored kernels on export
    # (module, params, [tokens of the last n blocks], avgpool) -> DINOv2's linear-probe input,
    # for families with a class token (probe.n_last_blocks); None elsewhere
    linear_input: Callable = None
    blocks: Callable = None      # module -> names of its transformer blocks, input to output
    # arch dict as older exports recorded it -> today's fields (renamed options)
    upgrade_arch: Callable = lambda arch: arch
    # the checkpoint layouts it reads: converter modules or formats/convert.py Layouts (each
    # with HF_MODEL_TYPES, from_hf, from_file, READS); weights/detect.py asks every registered
    # family's, in registration order
    layouts: tuple = ()
    # per-example input shape -> a batch of one that module.init takes (images or token ids)
    example_input: Callable = image_input

    @property
    def reads_tokens(self):
        """Whether its modules read token ids (a text family) rather than images."""
        return self.example_input is token_input


FAMILIES = {}  # name -> Family, in registration order (the order checkpoints are detected in)


def register(*families):
    for family in families:
        FAMILIES[family.name] = family


def unregister(name):
    FAMILIES.pop(name, None)


def get(name):
    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r} (model.name); known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def of(module):
    """The Family of a module instance."""
    for family in FAMILIES.values():
        if isinstance(module, family.module):
            return family
    raise TypeError(f"{type(module).__name__} is not a registered model family")


def build(name, arch, num_classes, dtype="float32"):
    """The linen Module of family `name` with architecture kwargs `arch` (a dict)."""
    family = get(name)
    arch = dict(family.upgrade_arch(dict(arch)))
    unknown = set(arch) - set(family.module.__dataclass_fields__)
    if unknown:
        raise UserError(f"model {name!r} has no architecture options {sorted(unknown)} (model.arch)")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}  # from JSON
    if "peft" in arch:  # stored as a dict in exports (see export.arch_of)
        arch["peft"] = with_peft(family, peft.Peft.from_dict(arch["peft"]))
    return family.module(num_classes=num_classes, dtype=jnp.dtype(dtype), **arch)


def with_peft(family, methods):
    """`methods` (a peft.Peft) if `family` supports them, else a UserError."""
    tokens = [name for name in ("prompts", "adaptformer") if getattr(methods, name)]
    if tokens and not family.token_methods:
        raise UserError(f"{' and '.join(tokens)} need a ViT or another transformer family (VPT "
                        f"prompts are tokens; AdaptFormer adapts a transformer MLP); "
                        f"{family.module.__name__} supports lora, adapter and ssf")
    return methods


def groups(module):
    """Ordered [(group_name, regex)] from input to output; regexes fullmatch '/'-joined paths."""
    return of(module).groups(module)


def takes_tokens(module):
    """Whether `module` reads token ids (a text family) rather than images."""
    return of(module).reads_tokens


def example_input(module, shape):
    """A batch of one input of per-example `shape` for `module` (its family's example_input)."""
    return of(module).example_input(shape)


TEXT_INPUTS = ("attention_mask", "token_type_ids")  # keyword inputs of the text families


def model_inputs(batch):
    """(args, kwargs) of module.apply for a data batch: its images, or its token ids with
    their attention mask (and token types, for sentence pairs)."""
    if "input_ids" in batch:
        return (batch["input_ids"],), {k: batch[k] for k in TEXT_INPUTS if k in batch}
    return (batch["image"],), {}


def depth_groups(group_list):
    """Group names below the head as depth units, input to output: every group is one unit,
    except that a final norm (or BERT's pooler) belongs to the block it reads (the top one).
    So `last_k:1` trains the last block, its norm and the head on every family, and gradual
    unfreezing and layer-wise lr decay count the same depths."""
    units = []
    for name, _ in group_list:
        if name == HEAD:
            continue
        if name in TOP_OF_LAST_BLOCK and units:
            units[-1].append(name)
        else:
            units.append([name])
    return units


def group_of(path, group_list):
    """Name of the first group whose regex fullmatches `path`."""
    for name, regex in group_list:
        if re.fullmatch(regex, path):
            return name
    raise UserError(f"parameter {path!r} belongs to no model group")

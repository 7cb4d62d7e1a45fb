"""Model families and what every run asks of a model: build by name, ordered parameter
groups, PEFT support, BatchNorm settings. Each family keeps its knowledge in its own module
(its FAMILY, see family.py: the linen Module, groups, checkpoint layouts); the line below is
the registry. Its order is the order checkpoint files are tried in (weights/detect.py): the
Keras layouts of vgg, mobilenet_v2 and inception_v3 are tried in that order."""
import jax.numpy as jnp

from tljax.models import (attention, bert, bit, convnext, family, gpt2, inception_v3, mobilenet_v2,
                          resnet, vgg, vit)
from tljax.models.family import (build, depth_groups, example_input, group_of, groups,  # noqa: F401
                                 model_inputs, takes_tokens)
from tljax.models.names import FINAL_NORM, HEAD, is_classifier  # noqa: F401

family.register(bit.FAMILY, resnet.FAMILY, vit.FAMILY, convnext.FAMILY, vgg.FAMILY,
                mobilenet_v2.FAMILY, inception_v3.FAMILY, bert.FAMILY,
                gpt2.FAMILY)  # the registry: one entry per family


def with_peft(module, methods):
    """`methods` (a peft.Peft) if `module`'s family supports them, else a UserError."""
    return family.with_peft(family.of(module), methods)


def mergeable_lora(module):
    """Whether LoRA folds into `module`'s stored kernels on export (not BiT's standardized convs)."""
    return family.of(module).mergeable_lora


def pos_resize(module):
    """How `module`'s pretrained position embeddings are resampled to another resolution
    (weights/merge.py RESAMPLERS); families without them never resample."""
    return getattr(module, "pos_resize", "zoom_linear")


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


def with_numerics(module, dtype, attention_implementation="auto"):
    """`module` computing activations in `dtype` (model.dtype), with the attention
    implementation (model.attention) where the family has attention. Numerics, not
    architecture: exports do not store them."""
    changes = {"dtype": jnp.dtype(dtype)}
    if "attention" in module.__dataclass_fields__:
        changes["attention"] = attention.check(attention_implementation)
    return module.clone(**changes)

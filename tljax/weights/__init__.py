"""Pretrained weights: load any supported source into (module, variables) in tljax layout.

Contract: `load_model(source, *, model=None, num_classes=None)` returns
`(module, variables)` with `module.apply(variables, images_nhwc, train=False)`
giving logits, plus `load_model_with_meta` that also returns preprocessing.
"""
import os

import jax
import jax.numpy as jnp

from tljax import models
from tljax.errors import UserError
from tljax.weights import merge as merge_lib
from tljax.weights import tljax_format


def _read_source(source, model):
    """(name, arch, num_classes, preprocessing, variables) from any supported source."""
    if not os.path.exists(source):
        raise UserError(f"weights {source!r} do not exist; check the path (model.init), or "
                        f"see `python -m tljax.weights.catalog` for downloadable checkpoints")
    if tljax_format.is_tljax_file(source):
        return tljax_format.load(source)
    raise UserError(f"cannot tell the format of weights {source!r}: expected a tljax "
                    f".safetensors file")


def init_variables(module, image_shape, seed=0):
    """Variables of `module` initialised for NHWC images of `image_shape` (H, W, C)."""
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    return jax.jit(lambda rng: module.init(rng, dummy, train=False))(jax.random.PRNGKey(seed))


def load_model_with_meta(source, *, model=None, num_classes=None, image_shape=None):
    """(module, variables, preprocessing dict). A new `num_classes` gets a zero head."""
    name, arch, source_classes, preprocessing, variables = _read_source(source, model)
    if model is not None and model != name:
        raise UserError(f"weights {source} hold a {name!r} model, not {model!r}")
    classes = num_classes or source_classes
    module = models.build(name, arch, classes)
    if classes != source_classes:
        size = preprocessing.get("image_size", 32)
        shape = image_shape or (size, size, 3)
        fresh = init_variables(module, shape)
        variables = merge_lib.merge(fresh, variables, reset_head=True, source=source)
    return module, variables, preprocessing


def load_model(source, *, model=None, num_classes=None):
    module, variables, _ = load_model_with_meta(source, model=model, num_classes=num_classes)
    return module, variables

"""InceptionV3 (Szegedy et al. 2016), layout of keras.applications `inception_v3.py`; the
auxiliary classifier is not part of it (Keras' model has none).

Every convolution is Keras' conv2d_bn: conv without bias, BatchNorm without scale
(`scale=False`, eps 1e-3, Keras' default momentum 0.99), ReLU. "same" average pools exclude the
padding from their count, as Keras' AveragePooling2D does. Names: stem{0..4}/{conv,bn},
mixed{0..10}/{branch}_{j}/{conv,bn} (mixed9/10's split convs `{branch}_a`, `{branch}_b`), head.
ARCHITECTURE lists the blocks in the order the Keras code builds its layers, which is the order
a Keras file's convolutions are matched in (checkpoints, at the end: Keras files).
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.models import family, layers, names, peft as peft_lib
from tljax.formats import keras_files, source
from tljax.formats.convert import Detected, Layout

BN_EPS, BN_MOMENTUM = 1e-3, 0.99  # keras BatchNormalization defaults (conv2d_bn sets neither)


def _a(pool):  # mixed0-2: 35x35
    return [("b1x1", [(64, 1, 1)]), ("b5x5", [(48, 1, 1), (64, 5, 5)]),
            ("b3x3dbl", [(64, 1, 1), (96, 3, 3), (96, 3, 3)]), ("pool", "avg", [(pool, 1, 1)])]


def _c(width):  # mixed4-7: 17x17 with factorised 7x7s
    return [("b1x1", [(192, 1, 1)]), ("b7x7", [(width, 1, 1), (width, 1, 7), (192, 7, 1)]),
            ("b7x7dbl", [(width, 1, 1), (width, 7, 1), (width, 1, 7), (width, 7, 1), (192, 1, 7)]),
            ("pool", "avg", [(192, 1, 1)])]


_E = [("b1x1", [(320, 1, 1)]), ("b3x3", [(384, 1, 1)], [(384, 1, 3)], [(384, 3, 1)]),  # mixed9-10
      ("b3x3dbl", [(448, 1, 1), (384, 3, 3)], [(384, 1, 3)], [(384, 3, 1)]), ("pool", "avg", [(192, 1, 1)])]

# Blocks in Keras' build order. A branch is (name, convs) with convs (filters, kh, kw[, stride 2
# "valid"]); ("pool", "avg"|"max", convs) pools first; (name, convs, a, b) splits after convs
# into two parallel convs whose outputs are concatenated.
ARCHITECTURE = [
    ("mixed0", _a(32)), ("mixed1", _a(64)), ("mixed2", _a(64)),
    ("mixed3", [("b3x3", [(384, 3, 3, 2)]), ("b3x3dbl", [(64, 1, 1), (96, 3, 3), (96, 3, 3, 2)]),
                ("pool", "max", [])]),
    ("mixed4", _c(128)), ("mixed5", _c(160)), ("mixed6", _c(160)), ("mixed7", _c(192)),
    ("mixed8", [("b3x3", [(192, 1, 1), (320, 3, 3, 2)]),
                ("b7x7x3", [(192, 1, 1), (192, 1, 7), (192, 7, 1), (192, 3, 3, 2)]), ("pool", "max", [])]),
    ("mixed9", _E), ("mixed10", _E),
]
STEM = [(32, 3, 3, 2), (32, 3, 3, 1, "valid"), (64, 3, 3), "maxpool", (80, 1, 1, 1, "valid"),
        (192, 3, 3, 1, "valid"), "maxpool"]


def conv_paths():
    """Module paths of every conv2d_bn in Keras' build order."""
    paths = [f"stem{i}" for i in range(5)]
    for block, branches in ARCHITECTURE:
        for branch in branches:
            name, rest = branch[0], branch[1:]
            if rest and isinstance(rest[0], str):  # a pool branch
                paths += [f"{block}/{name}_{j}" for j in range(len(rest[1]))]
                continue
            paths += [f"{block}/{name}_{j}" for j in range(len(rest[0]))]
            paths += [f"{block}/{name}_{split}" for split in "ab"[:len(rest) - 1]]
    return paths


class ConvBN(nn.Module):
    """Keras' conv2d_bn: conv (no bias), BatchNorm without scale, ReLU."""

    filters: int
    kernel: Sequence[int]
    stride: int = 1
    padding: str = "SAME"
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        x = nn.Conv(self.filters, tuple(self.kernel), (self.stride, self.stride), padding=self.padding,
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        return nn.relu(layers.batch_norm(self, "bn", train, BN_MOMENTUM, BN_EPS, use_scale=False)(x))


def _conv(spec, name, bn, x, train):
    filters, kh, kw, *rest = spec
    stride = rest[0] if rest else 1
    padding = "VALID" if stride == 2 or (len(rest) > 1 and rest[1] == "valid") else "SAME"
    return ConvBN(filters, (kh, kw), stride, padding, *bn, name=name)(x, train)


class Mixed(nn.Module):
    """One Inception block of ARCHITECTURE: its branches side by side, concatenated."""

    branches: Sequence
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        bn = (self.frozen_norms, self.bn_axis_name, self.dtype)
        outputs = []
        for branch in self.branches:
            name, rest = branch[0], branch[1:]
            if rest and isinstance(rest[0], str):  # pool, then its convs
                if rest[0] == "avg":
                    y = nn.avg_pool(x, (3, 3), (1, 1), padding="SAME", count_include_pad=False)
                else:
                    y = nn.max_pool(x, (3, 3), (2, 2), padding="VALID")
                for j, spec in enumerate(rest[1]):
                    y = _conv(spec, f"{name}_{j}", bn, y, train)
                outputs.append(y)
                continue
            y = x
            for j, spec in enumerate(rest[0]):
                y = _conv(spec, f"{name}_{j}", bn, y, train)
            if len(rest) > 1:  # mixed9/10: two parallel convs, concatenated
                y = jnp.concatenate([_conv(convs[0], f"{name}_{split}", bn, y, train)
                                     for split, convs in zip("ab", rest[1:])], axis=-1)
            outputs.append(y)
        return jnp.concatenate(outputs, axis=-1)


class InceptionV3(nn.Module):
    num_classes: int
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = (tuple(self.frozen_norms), self.bn_axis_name, self.dtype)
        x = x.astype(self.dtype)
        # LoRA's default targets: the 1x1 convs (LoRA takes 1x1 convs and dense layers).
        with peft_lib.intercept(self.peft, train, units=Mixed, lora_default=r".*/conv"):
            conv = 0
            for spec in STEM:
                if spec == "maxpool":
                    x = nn.max_pool(x, (3, 3), (2, 2), padding="VALID")
                else:
                    x = _conv(spec, f"stem{conv}", bn, x, train)
                    conv += 1
            for block, branches in ARCHITECTURE:
                x = Mixed(tuple(map(_frozen, branches)), *bn, name=block)(x, train)
        return layers.classifier_head(self, x.mean(axis=(1, 2)), train, self.dropout)


def _frozen(value):
    """Nested lists as tuples: a linen field must be hashable."""
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


def _groups(module):
    """The stem, the eleven mixed blocks, the head."""
    return [("stem", r"stem\d/.*"), *[(block, rf"{block}/.*") for block, _ in ARCHITECTURE],
            (names.HEAD, f"{names.HEAD}/.*")]


# ------------------------------------------------------------------ checkpoints
# keras.applications InceptionV3 (formats/keras_files.py reads the file; layers matched by kind
# and build order), preprocessed as Keras' "tf" mode: [-1, 1], at 299 px.
def _keras_build_order(top, classes):
    """{kind: [layer names in model order]} of Keras' own InceptionV3: a bare Keras 3
    .weights.h5 numbers layers in that order and records no names."""
    import keras

    model = keras.applications.InceptionV3(weights=None, include_top=top, classes=classes or 1000,
                                           input_shape=(299, 299, 3))
    kinds = {"Conv2D": "conv2d", "BatchNormalization": keras_files.BN}
    layer_names = {}
    for layer in model.layers:
        if type(layer).__name__ in kinds:
            layer_names.setdefault(kinds[type(layer).__name__], []).append(layer.name)
    return layer_names


def _from_keras(raw, path, model):
    if (not keras_files.is_keras_model(raw, path) or keras_files.layer_count(raw, "conv2d") != 94
            or f"{keras_files.BN}:0/3" in raw):  # (no BatchNorm scale: 3 weights a layer)
        return None
    top = keras_files.layer_count(raw, "dense") == 1
    classes = raw["dense:0/0"].shape[1] if top else 0
    if keras_files.is_bare_keras3(path):
        raw = keras_files.in_build_order(raw, _keras_build_order(top, classes))
    keras_layers = [(f"{p}/{part}", kind) for p in conv_paths()
                    for part, kind in (("conv", "conv2d"), ("bn", keras_files.BN))]
    keras_layers += [(names.HEAD, "dense")] if top else []
    return Detected("inception_v3", {}, classes, {"normalization": source.MINUS_ONE_ONE, "image_size": 299},
                    source.Arrays(raw, path),
                    keras_files.slot_layout(keras_files.slots(keras_layers), keras_files.BN_NO_SCALE))


FAMILY = family.Family("inception_v3", InceptionV3, _groups,
                       layouts=(Layout(from_file=_from_keras, READS="Keras InceptionV3 (.h5, .keras)"),))

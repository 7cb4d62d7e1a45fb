"""MobileNetV2 (Sandler et al. 2018), layout of keras.applications `mobilenet_v2.py`.

Names: stem/{conv,bn}; block{i}/{expand,expand_bn,depthwise,depthwise_bn,project,project_bn}
for Keras' block_id i = 0..16 (block 0 has no expansion); top/{conv,bn} (the 1x1 conv to
1280 channels); head. ReLU6 after every BatchNorm except the projections; a residual where
stride 1 keeps the width. Keras' stride-2 3x3 convs ("same", and correct_pad + "valid" for the
depthwise ones) pad (0, 1) on even inputs and (1, 1) on odd ones, which is XLA's "SAME".
BatchNorm: eps 1e-3, Keras momentum 0.999. Checkpoints (at the end): Keras files.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import family, layers, names, peft as peft_lib
from tljax.formats import keras_files, source
from tljax.formats.convert import Detected, Layout

# (expansion, filters, repeats, first stride) per stage: keras mobilenet_v2.py's block list,
# the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))
BN_EPS, BN_MOMENTUM = 1e-3, 0.999


def make_divisible(v, divisor=8):
    """keras mobilenet_v2.py _make_divisible: nearest multiple of `divisor`, not < 90 % of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def relu6(x):
    return jnp.minimum(nn.relu(x), 6.0)


def block_plan(alpha):
    """[(block id, expansion, output filters, stride)] over the 17 inverted-residual blocks."""
    plan = []
    for expansion, filters, repeats, stride in STAGES:
        for r in range(repeats):
            plan.append((len(plan), expansion, make_divisible(int(filters * alpha)), stride if r == 0 else 1))
    return plan


class _Block(nn.Module):
    expansion: int
    filters: int
    stride: int
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32

    def _bn(self, name, train):
        return layers.batch_norm(self, name, train, BN_MOMENTUM, BN_EPS)

    @nn.compact
    def __call__(self, x, train):
        channels = x.shape[-1]
        y = x
        if self.expansion != 1:
            y = nn.Conv(self.expansion * channels, (1, 1), use_bias=False, dtype=self.dtype, name="expand")(y)
            y = relu6(self._bn("expand_bn", train)(y))
        width = y.shape[-1]
        y = nn.Conv(width, (3, 3), (self.stride, self.stride), padding="SAME", use_bias=False,
                    feature_group_count=width, dtype=self.dtype, name="depthwise")(y)
        y = relu6(self._bn("depthwise_bn", train)(y))
        y = nn.Conv(self.filters, (1, 1), use_bias=False, dtype=self.dtype, name="project")(y)
        y = self._bn("project_bn", train)(y)
        return x + y if channels == self.filters and self.stride == 1 else y


class _ConvBN(nn.Module):
    width: int
    kernel: int
    stride: int
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        x = nn.Conv(self.width, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        return relu6(layers.batch_norm(self, "bn", train, BN_MOMENTUM, BN_EPS)(x))


class MobileNetV2(nn.Module):
    num_classes: int
    alpha: float = 1.0                 # width multiplier (Keras: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    frozen_norms: Sequence[str] = ()
    bn_axis_name: Optional[str] = None
    dropout: float = 0.0               # on the head's input
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = (tuple(self.frozen_norms), self.bn_axis_name, self.dtype)
        x = x.astype(self.dtype)
        # LoRA's default targets: the 1x1 convs (expansions, projections, the last conv).
        with peft_lib.intercept(self.peft, train, units=_Block, lora_default=r".*(expand|project|top/conv)"):
            x = _ConvBN(make_divisible(32 * self.alpha), 3, 2, *bn, name="stem")(x, train)
            for block_id, expansion, filters, stride in block_plan(self.alpha):
                x = _Block(expansion, filters, stride, *bn, name=f"block{block_id}")(x, train)
            last = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
            x = _ConvBN(last, 1, 1, *bn, name="top")(x, train)
        return layers.classifier_head(self, x.mean(axis=(1, 2)), train, self.dropout)


def _groups(module):
    """Stem, the seven inverted-residual stages (blocks of one output width), the last 1x1
    conv ("top"), head."""
    groups, first = [("stem", "stem/.*")], 0
    for s, (_, _, repeats, _) in enumerate(STAGES):
        ids = "|".join(str(i) for i in range(first, first + repeats))
        groups.append((f"stage{s + 1}", rf"block({ids})/.*"))
        first += repeats
    return [*groups, ("top", "top/.*"), (names.HEAD, f"{names.HEAD}/.*")]


# ------------------------------------------------------------------ checkpoints
# keras.applications MobileNetV2 (formats/keras_files.py reads the file; layers matched by kind
# and build order), preprocessed as Keras' "tf" mode: [-1, 1].
def _keras_layers(alpha):
    """[(tljax module path, Keras layer kind)] in Keras' model order."""
    bn = keras_files.BN
    out = [("stem/conv", "conv2d"), ("stem/bn", bn)]
    for block_id, expansion, _, _ in block_plan(alpha):
        if expansion != 1:
            out += [(f"block{block_id}/expand", "conv2d"), (f"block{block_id}/expand_bn", bn)]
        out += [(f"block{block_id}/depthwise", "depthwise_conv2d"), (f"block{block_id}/depthwise_bn", bn),
                (f"block{block_id}/project", "conv2d"), (f"block{block_id}/project_bn", bn)]
    return out + [("top/conv", "conv2d"), ("top/bn", bn), (names.HEAD, "dense")]


def _from_keras(raw, path, model):
    if not keras_files.is_keras_model(raw, path) or keras_files.layer_count(raw, "depthwise_conv2d") != 17:
        return None
    project = raw[f"conv2d:{keras_files.layer_count(raw, 'conv2d') - 2}/0"].shape[-1]  # block 16's
    alpha = next((a for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
                  if make_divisible(int(320 * a)) == project), None)
    if alpha is None:
        raise UserError(f"{path}: a Keras MobileNetV2 whose last block has {project} filters, which "
                        f"no Keras width multiplier gives")
    keras_layers = _keras_layers(alpha)
    top = keras_files.layer_count(raw, "dense") == 1
    if not top:
        keras_layers = keras_layers[:-1]
    classes = raw["dense:0/0"].shape[1] if top else 0
    return Detected("mobilenet_v2", {"alpha": alpha}, classes,
                    {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                    source.Arrays(raw, path), keras_files.slot_layout(keras_files.slots(keras_layers)))


FAMILY = family.Family("mobilenet_v2", MobileNetV2, _groups,
                       layouts=(Layout(from_file=_from_keras, READS="Keras MobileNetV2 (.h5, .keras)"),))

"""BiT ResNetV2: pre-activation bottleneck ResNet with GroupNorm + weight standardization.

Numerics follow the official BiT JAX release (google-research/big_transfer):
weights standardized over (kh, kw, cin) with an epsilon added to the variance,
zero "fixed" padding before the 3x3 convs and before the stem max-pool, and a
final GroupNorm + ReLU before global average pooling. Epsilons are attributes
so converters can match other implementations (timm, Hugging Face) exactly.
Checkpoints: bit_weights.py.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.models import bit_weights, family, layers, names, peft as peft_lib

# Variance epsilons of the published BiT models. Weight standardisation: 1e-10
# (google-research/big_transfer bit_jax/models.py and bit_pytorch/models.py,
# `/ sqrt(var + 1e-10)`). GroupNorm: 1e-5 in every published implementation
# (big_transfer bit_jax/models.py, bit_pytorch/models.py via nn.GroupNorm's default,
# bit_tf2/normalization.py; big_vision big_vision/models/bit_paper.py).
BIT_WS_EPS = 1e-10
BIT_GN_EPS = 1e-5


def fixed_pad(x, kernel_size):
    """Zero-pads H and W so a VALID conv/pool of `kernel_size` behaves like BiT's."""
    total = kernel_size - 1
    begin = total // 2
    return jnp.pad(x, ((0, 0), (begin, total - begin), (begin, total - begin), (0, 0)))


class StdConv(nn.Conv):
    """Conv whose kernel is standardized (zero mean, unit variance per output)."""

    ws_eps: float = BIT_WS_EPS

    def standardized(self, kernel):
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
        return (kernel - mean) / jnp.sqrt(var + self.ws_eps)

    def param(self, name, init_fn, *args, **kwargs):
        value = super().param(name, init_fn, *args, **kwargs)
        return self.standardized(value) if name == "kernel" else value


class PreActBottleneck(nn.Module):
    """GN-ReLU-conv1x1, GN-ReLU-conv3x3(stride), GN-ReLU-conv1x1, plus shortcut."""

    width: int
    stride: int = 1
    gn_groups: int = 32
    gn_eps: float = BIT_GN_EPS
    ws_eps: float = BIT_WS_EPS
    dtype: jnp.dtype = jnp.float32
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        out_ch = self.width * 4
        conv = lambda feat, k, s, name: StdConv(  # noqa: E731
            feat, (k, k), (s, s), padding="VALID", use_bias=False, ws_eps=self.ws_eps,
            dtype=self.dtype, name=name)
        norm = lambda name: nn.GroupNorm(  # noqa: E731
            num_groups=self.gn_groups, epsilon=self.gn_eps, dtype=self.dtype, name=name)

        preact = nn.relu(norm("gn1")(x))
        shortcut = x
        if x.shape[-1] != out_ch or self.stride != 1:
            shortcut = conv(out_ch, 1, self.stride, "conv_proj")(preact)
        y = conv(self.width, 1, 1, "conv1")(preact)
        y = nn.relu(norm("gn2")(y))
        y = conv(self.width, 3, self.stride, "conv2")(fixed_pad(y, 3))
        y = nn.relu(norm("gn3")(y))
        y = conv(out_ch, 1, 1, "conv3")(y)
        return layers.DropPath(self.drop_path)(y, deterministic=not train) + shortcut


class Stem(nn.Module):
    """`kind='bit'`: 7x7/2 conv + 3x3/2 max-pool (ImageNet); `'small'`: one 3x3/1 conv."""

    width: int
    kind: str = "bit"
    ws_eps: float = BIT_WS_EPS
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.kind == "bit":
            x = StdConv(self.width, (7, 7), (2, 2), padding="VALID", use_bias=False,
                        ws_eps=self.ws_eps, dtype=self.dtype, name="conv")(fixed_pad(x, 7))
            return nn.max_pool(fixed_pad(x, 3), (3, 3), strides=(2, 2), padding="VALID")
        if self.kind == "small":
            return StdConv(self.width, (3, 3), padding="VALID", use_bias=False,
                           ws_eps=self.ws_eps, dtype=self.dtype, name="conv")(fixed_pad(x, 3))
        raise ValueError(f"unknown stem {self.kind!r}; use 'bit' or 'small'")


class Stage(nn.Module):
    """`count` bottleneck units named unit1..unitN; the first one carries the stride."""

    width: int
    count: int
    stride: int
    gn_groups: int = 32
    gn_eps: float = BIT_GN_EPS
    ws_eps: float = BIT_WS_EPS
    dtype: jnp.dtype = jnp.float32
    drop_path: Sequence[float] = ()  # per unit; () = none

    @nn.compact
    def __call__(self, x, train=False):
        for j in range(self.count):
            x = PreActBottleneck(self.width, self.stride if j == 0 else 1, self.gn_groups,
                                 self.gn_eps, self.ws_eps, self.dtype,
                                 drop_path=self.drop_path[j] if self.drop_path else 0.0,
                                 name=f"unit{j + 1}")(x, train)
        return x


class ResNetV2(nn.Module):
    """BiT ResNetV2 (R50x1 = block_counts (3, 4, 6, 3), width_factor 1).

    Parameter names: stem/conv, stage{i}/unit{j}/{gn1,conv1,gn2,conv2,gn3,conv3,conv_proj},
    norm, head (1-based stages and units, as in the BiT checkpoints). `stem='small'`
    suits tiny images (digits, CIFAR-size).
    """

    num_classes: int
    block_counts: Sequence[int] = (3, 4, 6, 3)
    width_factor: int = 1
    base_width: int = 64
    gn_groups: int = 32
    gn_eps: float = BIT_GN_EPS
    ws_eps: float = BIT_WS_EPS
    stem: str = "bit"
    dtype: jnp.dtype = jnp.float32
    drop_path: float = 0.0  # regularisation (config.model.drop_path etc.), not architecture
    dropout: float = 0.0    # on the head's input
    peft: peft_lib.Peft = peft_lib.NONE  # added parameter-efficient modules (models/peft.py)

    @nn.compact
    def __call__(self, x, train: bool = False):
        # (GroupNorm behaves the same in training and inference; `train` drives drop path
        # and dropout only.)
        x = x.astype(self.dtype)
        root_width = self.base_width * self.width_factor
        with peft_lib.intercept(self.peft, train, units=PreActBottleneck, lora_default="c"):
            x = Stem(root_width, self.stem, self.ws_eps, self.dtype, name="stem")(x)
            rates = layers.drop_path_rates(self.drop_path, sum(self.block_counts))
            for i, count in enumerate(self.block_counts):
                first = sum(self.block_counts[:i])
                x = Stage(width=root_width * 2**i, count=count, stride=1 if i == 0 else 2,
                          gn_groups=self.gn_groups, gn_eps=self.gn_eps, ws_eps=self.ws_eps,
                          dtype=self.dtype, drop_path=tuple(rates[first:first + count]),
                          name=f"stage{i + 1}")(x, train)
            x = nn.relu(nn.GroupNorm(num_groups=self.gn_groups, epsilon=self.gn_eps,
                                     dtype=self.dtype, name="norm")(x))
        return layers.classifier_head(self, jnp.mean(x, axis=(1, 2)), train, self.dropout)


def _groups(module):
    stages = [(f"stage{i + 1}", rf"stage{i + 1}/.*") for i in range(len(module.block_counts))]
    return [("stem", "stem/.*"), *stages, (names.FINAL_NORM, "norm/.*"),
            (names.HEAD, f"{names.HEAD}/.*")]


# LoRA stays unmerged on export: weight standardisation is not linear in the kernel, so
# W + ΔW cannot be folded into one stored kernel.
FAMILY = family.Family("bit", ResNetV2, _groups, mergeable_lora=False, layouts=(bit_weights,))

"""ResNet v1.5 with BatchNorm (torchvision / timm / HF `microsoft/resnet-*` layout).

v1.5: the stride of a bottleneck sits on the 3x3 conv. Padding matches PyTorch:
symmetric explicit padding for convs, -inf padding for the stem max-pool.
BatchNorm layers listed in `frozen_norms` (their '/'-joined module paths) run
on running statistics even in training, so a frozen group's statistics never move.
`bn_axis_name` (set under pmap) averages batch statistics over the devices, so each
device normalises with the statistics of the global batch, as under jit.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.models import family, layers, names, peft as peft_lib

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3))}


def _batch_norm(module, name, train):
    """torchvision models/resnet.py uses nn.BatchNorm2d's defaults: eps 1e-5 (`bn_eps`) and
    running-average momentum 0.1, which is flax's momentum 0.9 (flax keeps 0.9 of the old)."""
    return layers.batch_norm(module, name, train, momentum=0.9, epsilon=module.bn_eps)


def _pad(k):
    return ((k // 2, k // 2), (k // 2, k // 2))


class _Unit(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual unit, post-activation."""

    width: int
    stride: int
    kind: str
    frozen_norms: Sequence[str] = ()
    bn_eps: float = 1e-5
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32
    drop_path: float = 0.0

    def _bn(self, name, train):
        return _batch_norm(self, name, train)

    @nn.compact
    def __call__(self, x, train):
        conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding=_pad(k), use_bias=False,  # noqa: E731
                                             dtype=self.dtype, name=name)
        expansion = 4 if self.kind == "bottleneck" else 1
        out_ch = self.width * expansion
        shortcut = x
        if x.shape[-1] != out_ch or self.stride != 1:
            shortcut = conv(out_ch, 1, self.stride, "proj_conv")(x)
            shortcut = self._bn("proj_bn", train)(shortcut)
        if self.kind == "bottleneck":
            y = nn.relu(self._bn("bn1", train)(conv(self.width, 1, 1, "conv1")(x)))
            y = nn.relu(self._bn("bn2", train)(conv(self.width, 3, self.stride, "conv2")(y)))
            y = self._bn("bn3", train)(conv(out_ch, 1, 1, "conv3")(y))
        else:
            y = nn.relu(self._bn("bn1", train)(conv(self.width, 3, self.stride, "conv1")(x)))
            y = self._bn("bn2", train)(conv(out_ch, 3, 1, "conv2")(y))
        return nn.relu(layers.DropPath(self.drop_path)(y, deterministic=not train) + shortcut)


class _Stem(nn.Module):
    width: int
    kind: str
    frozen_norms: Sequence[str] = ()
    bn_eps: float = 1e-5
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        big = self.kind == "imagenet"
        if not big and self.kind != "small":
            raise ValueError(f"unknown stem {self.kind!r}; use 'imagenet' or 'small'")
        k = 7 if big else 3
        x = nn.Conv(self.width, (k, k), (2, 2) if big else (1, 1), padding=_pad(k),
                    use_bias=False, dtype=self.dtype, name="conv")(x)
        x = nn.relu(_batch_norm(self, "bn", train)(x))
        if big:  # PyTorch pads the max-pool with -inf, as flax's max_pool does.
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        return x


class _Stage(nn.Module):
    width: int
    count: int
    stride: int
    kind: str
    frozen_norms: Sequence[str] = ()
    bn_eps: float = 1e-5
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32
    drop_path: Sequence[float] = ()  # per unit; () = none

    @nn.compact
    def __call__(self, x, train):
        for j in range(self.count):
            x = _Unit(self.width, self.stride if j == 0 else 1, self.kind, self.frozen_norms,
                      self.bn_eps, self.bn_axis_name, self.dtype,
                      drop_path=self.drop_path[j] if self.drop_path else 0.0,
                      name=f"unit{j + 1}")(x, train)
        return x


class ResNet(nn.Module):
    """ResNet v1.5. Names: stem/{conv,bn}, stage{i}/unit{j}/{conv1,bn1,...,proj_conv,proj_bn}, head."""

    num_classes: int
    depth: int = 50
    base_width: int = 64
    stem: str = "imagenet"  # "imagenet": 7x7/2 conv + 3x3/2 max-pool; "small": 3x3/1 conv
    frozen_norms: Sequence[str] = ()
    bn_eps: float = 1e-5
    bn_axis_name: Optional[str] = None
    dtype: jnp.dtype = jnp.float32
    drop_path: float = 0.0  # regularisation (config.model.drop_path etc.), not architecture
    dropout: float = 0.0    # on the head's input
    peft: peft_lib.Peft = peft_lib.NONE  # added parameter-efficient modules (models/peft.py)

    @property
    def block_counts(self):
        return DEPTHS[self.depth][1]

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.depth not in DEPTHS:
            raise ValueError(f"ResNet depth {self.depth} not in {sorted(DEPTHS)}")
        kind, counts = DEPTHS[self.depth]
        x = x.astype(self.dtype)
        frozen = tuple(self.frozen_norms)
        bn = (frozen, self.bn_eps, self.bn_axis_name, self.dtype)
        with peft_lib.intercept(self.peft, train, units=_Unit, lora_default="c"):
            x = _Stem(self.base_width, self.stem, *bn, name="stem")(x, train)
            rates = layers.drop_path_rates(self.drop_path, sum(counts))
            for i, count in enumerate(counts):
                first = sum(counts[:i])
                x = _Stage(self.base_width * 2**i, count, 1 if i == 0 else 2, kind, *bn,
                           drop_path=tuple(rates[first:first + count]), name=f"stage{i + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        self.sow(names.INTERMEDIATES, names.HEAD_INPUT, x)  # the head's input, for feature probes
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        name="head")(x).astype(jnp.float32)


def _groups(module):
    stages = [(f"stage{i + 1}", rf"stage{i + 1}/.*") for i in range(len(module.block_counts))]
    return [("stem", "stem/.*"), *stages, (names.HEAD, "head/.*")]


FAMILY = family.Family("resnet", ResNet, _groups)

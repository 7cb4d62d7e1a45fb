"""ResNet v1.5 with BatchNorm (torchvision / timm / HF `microsoft/resnet-*` layout).

v1.5: the stride of a bottleneck sits on the 3x3 conv. Padding matches PyTorch:
symmetric explicit padding for convs, -inf padding for the stem max-pool.
BatchNorm layers listed in `frozen_norms` (their '/'-joined module paths) run
on running statistics even in training, so a frozen group's statistics never move.
`bn_axis_name` (set under pmap) averages batch statistics over the devices, so each
device normalises with the statistics of the global batch, as under jit. Checkpoints (at the
end): Hugging Face `resnet`, torchvision / timm `resnet*` state dicts.
"""
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import family, layers, names, peft as peft_lib
from tljax.formats import source
from tljax.formats.convert import Detected, Layout, hf_preprocessing, match, prefix_of, stage_counts

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
        return layers.classifier_head(self, jnp.mean(x, axis=(1, 2)), train, self.dropout)


def _groups(module):
    stages = [(f"stage{i + 1}", rf"stage{i + 1}/.*") for i in range(len(module.block_counts))]
    return [("stem", "stem/.*"), *stages, (names.HEAD, f"{names.HEAD}/.*")]


# ------------------------------------------------------------------ checkpoints
_IGNORE = ("num_batches_tracked",)
_RESNET_UNIT = r"(params|batch_stats)/stage(\d+)/unit(\d+)/(conv\d|bn\d|proj_conv|proj_bn)/(\w+)"
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_HEAD = rf"params/{names.HEAD}/(kernel|bias)"


def resnet_hf(path, prefix="resnet."):
    if m := match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        base = f"{prefix}embedder.embedder"
        if m[2] == "conv":
            return f"{base}.convolution.weight", "conv"
        return f"{base}.normalization.{_BN[m[3]]}", "id"
    if m := match(_HEAD, path):
        return f"classifier.1.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := match(_RESNET_UNIT, path):
        unit = f"{prefix}encoder.stages.{int(m[2]) - 1}.layers.{int(m[3]) - 1}"
        if m[4].startswith("proj"):
            module = f"{unit}.shortcut"
        else:
            module = f"{unit}.layer.{int(m[4][-1]) - 1}"
        if "conv" in m[4]:
            return f"{module}.convolution.weight", "conv"
        return f"{module}.normalization.{_BN[m[5]]}", "id"
    return None


def resnet_torchvision(path):
    """torchvision / timm `resnet*` state dicts (conv1, bn1, layer1.0..., fc)."""
    if m := match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        return ("conv1.weight", "conv") if m[2] == "conv" else (f"bn1.{_BN[m[3]]}", "id")
    if m := match(_HEAD, path):
        return f"fc.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := match(_RESNET_UNIT, path):
        unit = f"layer{m[2]}.{int(m[3]) - 1}"
        name = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(m[4], m[4])
        if "conv" in m[4]:
            return f"{unit}.{name}.weight", "conv"
        return f"{unit}.{name}.{_BN[m[5]]}", "id"
    return None


def _from_hf(folder, cfg, raw, path):
    depths = tuple(cfg["depths"])
    kind = cfg.get("layer_type", "bottleneck")
    depth = next((d for d, (k, c) in DEPTHS.items() if k == kind and c == depths), None)
    if depth is None or cfg.get("downsample_in_bottleneck") or cfg.get("downsample_in_first_stage"):
        raise UserError(f"{folder}: ResNet with depths {depths} ({kind}) is not a v1.5 ResNet-18..152")
    root = cfg.get("embedding_size", 64)
    expansion = 4 if kind == "bottleneck" else 1
    if list(cfg["hidden_sizes"]) != [expansion * root * 2**i for i in range(len(depths))]:
        raise UserError(f"{folder}: ResNet hidden_sizes {cfg['hidden_sizes']} are not "
                        f"{expansion} x {root} x 2^stage")
    arch = {"depth": depth, "base_width": root, "stem": "imagenet"}
    prefix = prefix_of(raw, "resnet.")
    has_head = "classifier.1.weight" in raw
    return Detected("resnet", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.IMAGENET_NORM, 224),
                    source.Arrays(raw, path, ignore=_IGNORE), lambda p: resnet_hf(p, prefix))


def _from_file(raw, path, model):
    keys = set(raw)
    if "conv1.weight" not in keys or "layer1.0.conv1.weight" not in keys:
        return None
    counts = stage_counts(keys, r"layer(\d+)\.(\d+)\.conv1\.weight")
    kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
    depth = next((d for d, (k, c) in DEPTHS.items() if k == kind and c == counts), None)
    if depth is None:
        raise UserError(f"{path}: ResNet stage counts {counts} ({kind}) match no ResNet-18..152")
    arch = {"depth": depth, "base_width": raw["conv1.weight"].shape[0], "stem": "imagenet"}
    return Detected("resnet", arch, raw["fc.weight"].shape[0],
                    {"normalization": source.IMAGENET_NORM, "image_size": 224},
                    source.Arrays(raw, path, _IGNORE), resnet_torchvision)


FAMILY = family.Family("resnet", ResNet, _groups,
                       layouts=(Layout(("resnet",), _from_hf, _from_file, "torchvision / timm resnet*"),))

"""ConvNeXt (Liu et al. 2022) and ConvNeXt V2 (Woo et al. 2023), layout of HF
`modeling_convnext.py` / `modeling_convnextv2.py` and timm `models/convnext.py`.

Names: stem/{conv,norm}, stage{s}/down/{norm,conv} (stages after the first),
stage{s}/block{i}/{dwconv, norm, mlp/{fc1, grn, fc2}, gamma}, norm (after global average
pooling), head. A block: depthwise 7x7 conv, channels-last LayerNorm, pointwise MLP (4x, GELU)
with V2's global response normalisation (GRN) inside, V1's LayerScale `gamma`, residual.
LayerNorms inside the network use eps 1e-6 (hard-coded in HF and timm); the final one's
epsilon is the checkpoint's (`ln_eps`; HF config `layer_norm_eps`, default 1e-12).
Checkpoints: convnext_weights.py.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.models import convnext_weights, family, layers, names, peft as peft_lib

INNER_EPS = 1e-6  # HF ConvNextLayerNorm default and timm convnext.py `norm_eps` default
SIZES = {"T": ((3, 3, 9, 3), (96, 192, 384, 768)), "S": ((3, 3, 27, 3), (96, 192, 384, 768)),
         "B": ((3, 3, 27, 3), (128, 256, 512, 1024)), "L": ((3, 3, 27, 3), (192, 384, 768, 1536))}


class GRN(nn.Module):
    """Global response normalisation: per channel the L2 norm over H, W, divided by its mean
    over channels (+1e-6), scales the input; gamma and beta start at 0 (identity)."""

    @nn.compact
    def __call__(self, x):
        gamma = self.param("gamma", nn.initializers.zeros, (x.shape[-1],))
        beta = self.param("beta", nn.initializers.zeros, (x.shape[-1],))
        norms = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(1, 2), keepdims=True))
        scale = (norms / (norms.mean(axis=-1, keepdims=True) + 1e-6)).astype(x.dtype)
        return gamma.astype(x.dtype) * (x * scale) + beta.astype(x.dtype) + x


class Block(nn.Module):
    width: int
    grn: bool = False
    layer_scale: bool = True
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        y = nn.Conv(self.width, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=self.width,
                    dtype=self.dtype, name="dwconv")(x)
        y = nn.LayerNorm(epsilon=INNER_EPS, dtype=self.dtype, name="norm")(y)
        y = _Mlp(self.width, self.grn, self.dtype, name="mlp")(y)
        if self.layer_scale:  # ConvNeXt's init 1e-6 (HF layer_scale_init_value)
            y = y * self.param("gamma", nn.initializers.constant(1e-6), (self.width,)).astype(y.dtype)
        return x + layers.DropPath(self.drop_path)(y, deterministic=not train)


class _Mlp(nn.Module):
    width: int
    grn: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(4 * self.width, dtype=self.dtype, name="fc1")(x), approximate=False)
        if self.grn:
            x = GRN(name="grn")(x)
        return nn.Dense(self.width, dtype=self.dtype, name="fc2")(x)


class ConvNeXt(nn.Module):
    num_classes: int
    size: str = "T"
    depths: Sequence[int] = ()   # overrides of the size preset, for tiny test models
    widths: Sequence[int] = ()
    patch: int = 4
    grn: bool = False            # ConvNeXt V2
    layer_scale: bool = True     # V1; V2 has none
    ln_eps: float = 1e-6         # the final LayerNorm's
    drop_path: float = 0.0       # regularisation (config.model.drop_path), not architecture
    dropout: float = 0.0         # on the head's input
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE

    def dims(self):
        depths, widths = SIZES[self.size]
        return tuple(self.depths or depths), tuple(self.widths or widths)

    @nn.compact
    def __call__(self, x, train: bool = False):
        depths, widths = self.dims()
        x = x.astype(self.dtype)
        rates = layers.drop_path_rates(self.drop_path, sum(depths))
        with peft_lib.intercept(self.peft, train, units=Block, lora_default="m"):
            x = _Stem(widths[0], self.patch, self.dtype, name="stem")(x)
            for s, (depth, width) in enumerate(zip(depths, widths)):
                first = sum(depths[:s])
                x = _Stage(width, depth, s > 0, self.grn, self.layer_scale,
                           tuple(rates[first:first + depth]), self.dtype, name=f"stage{s + 1}")(x, train)
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x.mean(axis=(1, 2)))
        return layers.classifier_head(self, x, train, self.dropout)


class _Stem(nn.Module):
    width: int
    patch: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch), padding="VALID",
                    dtype=self.dtype, name="conv")(x)
        return nn.LayerNorm(epsilon=INNER_EPS, dtype=self.dtype, name="norm")(x)


class _Stage(nn.Module):
    width: int
    depth: int
    downsample: bool
    grn: bool
    layer_scale: bool
    drop_path: Sequence[float]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        if self.downsample:
            x = _Down(self.width, self.dtype, name="down")(x)
        for i in range(self.depth):
            x = Block(self.width, self.grn, self.layer_scale, self.drop_path[i], self.dtype,
                      name=f"block{i}")(x, train)
        return x


class _Down(nn.Module):
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm(epsilon=INNER_EPS, dtype=self.dtype, name="norm")(x)
        return nn.Conv(self.width, (2, 2), (2, 2), padding="VALID", dtype=self.dtype, name="conv")(x)


def _groups(module):
    """Stem, stages (each with its downsampling), the final norm, head."""
    stages = [(f"stage{s + 1}", rf"stage{s + 1}/.*") for s in range(len(module.dims()[0]))]
    return [("stem", "stem/.*"), *stages, (names.FINAL_NORM, "norm/.*"),
            (names.HEAD, f"{names.HEAD}/.*")]


FAMILY = family.Family("convnext", ConvNeXt, _groups, layouts=(convnext_weights,))

"""Vision Transformer (Dosovitskiy et al. 2021), layout of the official vit_jax / big_vision code.

Names: embed/{patch,cls,pos_embedding}, encoder/block{i}/{norm1,attn,norm2,mlp/{fc1,fc2}},
encoder/norm, optional pre_logits (representation layer), head.
Epsilon and GELU flavour are attributes so converters can match other implementations.
"""
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models import attention as attention_lib
from tljax.models import family, layers, names, peft as peft_lib

# LayerNorm epsilon: flax's default 1e-6, as vit_jax/models_vit.py uses (HF/timm ports use
# other values; converters set `ln_eps` to match them).
# Size name -> (width, depth, mlp_dim, heads).
SIZES = {"Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6), "B": (768, 12, 3072, 12),
         "L": (1024, 24, 4096, 16), "H": (1280, 32, 5120, 16)}


class Mlp(nn.Module):
    mlp_dim: int
    gelu_approximate: bool = False
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train):
        width = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=self.gelu_approximate)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.Dense(width, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


class Block(nn.Module):
    """Pre-norm block; dropout placed as vit_jax models_vit.py Encoder1DBlock does (attention
    output, MLP hidden and output, attention probabilities), drop path on both branches."""

    heads: int
    mlp_dim: int
    ln_eps: float = 1e-6
    gelu_approximate: bool = False
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    adapter: Optional[peft_lib.Adapter] = None      # Houlsby adapters (see models/peft.py)
    adaptformer: Optional[peft_lib.Adapter] = None
    prompts: int = 0           # VPT tokens this block adds (first block) or replaces (deep)
    prompts_replace: bool = False
    prompt_bound: float = 0.0  # their uniform init range
    lead_tokens: int = 1       # tokens before the prompts: the class token, if any
    attention: str = "auto"    # implementation (models/attention.py)

    def _prompted(self, x):
        """VPT: `prompts` learned tokens right after the class token, inserted by the first
        block, and by each deeper block in place of the previous block's prompt outputs."""
        bound = self.prompt_bound
        init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
            key, shape, dtype, -bound, bound)
        prompts = self.param(peft_lib.PROMPTS, init, (self.prompts, x.shape[-1]))
        prompts = jnp.broadcast_to(prompts.astype(x.dtype), (x.shape[0], *prompts.shape))
        rest = x[:, self.lead_tokens + (self.prompts if self.prompts_replace else 0):]
        return jnp.concatenate([x[:, :self.lead_tokens], prompts, rest], axis=1)

    def _adapted(self, y, name, adapter):
        if adapter is None:
            return y
        return y + peft_lib.UnitAdapter(adapter.dim, "gelu", self.dtype, name=name)(y)

    @nn.compact
    def __call__(self, x, train):
        if self.prompts:
            x = self._prompted(x)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                            dropout_rate=self.attention_dropout,
                                            attention_fn=attention_lib.function(self.attention),
                                            name="attn")(y, y, deterministic=not train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        if self.adapter and self.adapter.where == "both":
            y = self._adapted(y, "adapter_attn", self.adapter)
        x = x + layers.DropPath(self.drop_path)(y, deterministic=not train)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        y = Mlp(self.mlp_dim, self.gelu_approximate, self.dtype, self.dropout, name="mlp")(y, train)
        y = self._adapted(y, "adapter_mlp", self.adapter)
        if self.adaptformer:  # parallel branch on the residual stream (AdaptFormer's "parallel")
            branch = peft_lib.UnitAdapter(self.adaptformer.dim, "relu", self.dtype,
                                          name=peft_lib.ADAPTFORMER_MODULE)(x)
            y = y + self.adaptformer.scale * branch
        return x + layers.DropPath(self.drop_path)(y, deterministic=not train)


class Embed(nn.Module):
    width: int
    patch: int
    classifier: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch),
                    padding="VALID", dtype=self.dtype, name="patch")(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        if self.classifier == "token":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
            x = jnp.concatenate([jnp.tile(cls.astype(x.dtype), (n, 1, 1)), x], axis=1)
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, x.shape[1], c))
        return x + pos.astype(x.dtype)


class Encoder(nn.Module):
    depth: int
    heads: int
    mlp_dim: int
    ln_eps: float = 1e-6
    gelu_approximate: bool = False
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    peft: peft_lib.Peft = peft_lib.NONE
    lead_tokens: int = 1
    prompt_bound: float = 0.0
    attention: str = "auto"

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dropout(self.dropout)(x, deterministic=not train)  # on the embeddings (vit_jax)
        prompts = self.peft.prompts
        for i, rate in enumerate(layers.drop_path_rates(self.drop_path, self.depth)):
            tokens = prompts.tokens if prompts and (i == 0 or prompts.deep) else 0
            x = Block(self.heads, self.mlp_dim, self.ln_eps, self.gelu_approximate, self.dtype,
                      self.dropout, self.attention_dropout, rate, adapter=self.peft.adapter,
                      adaptformer=self.peft.adaptformer, prompts=tokens, prompts_replace=i > 0,
                      prompt_bound=self.prompt_bound, lead_tokens=self.lead_tokens,
                      attention=self.attention, name=f"block{i}")(x, train)
        if prompts:  # The classifier reads the class token or the mean patch token.
            x = jnp.concatenate([x[:, :self.lead_tokens], x[:, self.lead_tokens + prompts.tokens:]], 1)
        return nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)


class ViT(nn.Module):
    """ViT with `classifier` 'token' (cls token) or 'gap' (mean of patch tokens)."""

    num_classes: int
    size: str = "B"
    patch: int = 16
    width: Optional[int] = None  # overrides of the size preset, for tiny test models
    depth: Optional[int] = None
    mlp_dim: Optional[int] = None
    heads: Optional[int] = None
    classifier: str = "token"
    representation_size: Optional[int] = None
    ln_eps: float = 1e-6
    gelu_approximate: bool = False
    dropout: float = 0.0  # regularisation (config.model.dropout etc.), not architecture
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE  # added parameter-efficient modules (models/peft.py)
    attention: str = "auto"  # implementation, not architecture (models/attention.py)

    def dims(self):
        width, depth, mlp_dim, heads = SIZES[self.size]
        return (self.width or width, self.depth or depth, self.mlp_dim or mlp_dim,
                self.heads or heads)

    @nn.compact
    def __call__(self, x, train: bool = False):
        width, depth, mlp_dim, heads = self.dims()
        # VPT's prompt init (KMnP/vpt src/models/vit_prompt/vit.py): uniform within
        # ±sqrt(6 / (3·patch² + width)), Xavier's range for the patch projection.
        bound = math.sqrt(6.0 / (3 * self.patch**2 + width))
        with peft_lib.intercept(self.peft, train):
            x = Embed(width, self.patch, self.classifier, self.dtype, name="embed")(x.astype(self.dtype))
            x = Encoder(depth, heads, mlp_dim, self.ln_eps, self.gelu_approximate, self.dtype,
                        self.dropout, self.attention_dropout, self.drop_path, self.peft,
                        lead_tokens=1 if self.classifier == "token" else 0, prompt_bound=bound,
                        attention=self.attention, name="encoder")(x, train)
            x = x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
            if self.representation_size:
                x = jnp.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x))
        self.sow(names.INTERMEDIATES, names.HEAD_INPUT, x)  # the head's input, for feature probes
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        name="head")(x).astype(jnp.float32)


def _groups(module):
    blocks = [(f"block{i}", rf"encoder/block{i}/.*") for i in range(module.dims()[1])]
    return [("embed", "embed/.*"), *blocks, (names.FINAL_NORM, "encoder/norm/.*"),
            (names.HEAD, "(pre_logits|head)/.*")]


def _pool(module, tokens):
    """A block's tokens as one vector: the class token and the mean of the patch tokens
    (DINOv2's linear-probe features), or the mean of all tokens without a class token."""
    if module.classifier == "token":
        return jnp.concatenate([tokens[:, 0], tokens[:, 1:].mean(1)], -1)
    return tokens.mean(1)


def _blocks(module):
    return [f"block{i}" for i in range(module.dims()[1])]


def _linear_input(module, params, blocks, avgpool):
    """DINOv2's linear-probe input (dinov2/eval/linear.py `create_linear_input` over
    `get_intermediate_layers(n, return_class_token=True, norm=True)`): the final LayerNorm
    applied to each given block's tokens, their class tokens concatenated, then with
    `avgpool` the mean patch token of the last block (VPT prompts, like DINOv2's registers,
    are not patch tokens)."""
    norm = nn.LayerNorm(epsilon=module.ln_eps, dtype=module.dtype)
    normed = [norm.apply({"params": params["encoder"]["norm"]}, x) for x in blocks]
    parts = [x[:, 0] for x in normed]
    if avgpool:
        prompts = module.peft.prompts.tokens if module.peft.prompts else 0
        parts.append(normed[-1][:, 1 + prompts:].mean(1))
    return jnp.concatenate(parts, -1)


FAMILY = family.Family("vit", ViT, _groups, pool=_pool, token_methods=True,
                       linear_input=_linear_input, blocks=_blocks)

"""The pre-norm transformer block ViT and GPT-2 share (LayerNorm, attention, residual; LayerNorm,
MLP, residual), with its options: LayerScale and SwiGLU (DINOv2), Houlsby adapters, AdaptFormer,
VPT prompts, and an attention mask (GPT-2's causal and padding mask)."""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models import attention as attention_lib
from tljax.models import layers, peft as peft_lib


def quick_gelu(x):
    """OpenAI CLIP's GELU approximation x·σ(1.702x) (HF activations.py QuickGELUActivation)."""
    return x * jax.nn.sigmoid(1.702 * x)


# model.arch activation -> function: exact GELU (vit_jax fine-tuning, HF ViT, DINOv2), tanh
# GELU (vit_jax/big_vision pretraining, SigLIP's gelu_pytorch_tanh), OpenAI CLIP's quick GELU.
ACTIVATIONS = {"gelu": lambda x: nn.gelu(x, approximate=False),
               "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
               "quick_gelu": quick_gelu}


class Mlp(nn.Module):
    """fc1 -> activation -> fc2; with `swiglu`, fc1 holds both halves [gate | value] of
    SwiGLU (Shazeer 2020) and the hidden is silu(gate)·value, as DINOv2's ViT-g packs it
    (HF Dinov2 `weights_in`, timm SwiGLUPacked)."""

    mlp_dim: int
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0
    swiglu: bool = False

    @nn.compact
    def __call__(self, x, train):
        width = x.shape[-1]
        x = nn.Dense(self.mlp_dim * (2 if self.swiglu else 1), dtype=self.dtype, name="fc1")(x)
        if self.swiglu:
            gate, value = jnp.split(x, 2, axis=-1)
            x = jax.nn.silu(gate) * value
        else:
            x = ACTIVATIONS[self.activation](x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.Dense(width, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.dropout)(x, deterministic=not train)


class LayerScale(nn.Module):
    """A learned per-channel scale of a residual branch (Touvron et al. 2021, CaiT; DINOv2).
    Initialised to 1.0, HF Dinov2Config's `layerscale_value` default; pretrained weights
    bring their own."""

    @nn.compact
    def __call__(self, x):
        gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],))
        return x * gamma.astype(x.dtype)


class Block(nn.Module):
    """Pre-norm block; dropout placed as vit_jax models_vit.py Encoder1DBlock does (attention
    output, MLP hidden and output, attention probabilities), drop path on both branches."""

    heads: int
    mlp_dim: int
    ln_eps: float = 1e-6
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    layer_scale: bool = False
    swiglu: bool = False
    adapter: Optional[peft_lib.Adapter] = None      # Houlsby adapters (see models/peft.py)
    adaptformer: Optional[peft_lib.Adapter] = None
    prompts: int = 0           # VPT tokens this block adds (first block) or replaces (deep)
    prompts_replace: bool = False
    prompt_bound: float = 0.0  # their uniform init range
    lead_tokens: int = 1       # tokens before the prompts: the class token and registers
    attention: str = "auto"    # implementation (models/attention.py)

    def _adapted(self, y, name, adapter):
        if adapter is None:
            return y
        return y + peft_lib.UnitAdapter(adapter.dim, "gelu", self.dtype, name=name)(y)

    @nn.compact
    def __call__(self, x, train, mask=None):
        """`mask`: which keys each query attends to, broadcastable to (batch, heads, queries,
        keys) with the prompts counted (GPT-2's causal and padding mask); None: all."""
        if self.prompts:  # VPT: after the class token, by the first block; deep: every block
            x = peft_lib.insert_prompts(self, x, self.prompts, self.prompts_replace,
                                        self.lead_tokens, self.prompt_bound)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm1")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                            dropout_rate=self.attention_dropout,
                                            attention_fn=attention_lib.function(self.attention),
                                            name="attn")(y, y, mask=mask, deterministic=not train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        if self.adapter and self.adapter.where == "both":
            y = self._adapted(y, "adapter_attn", self.adapter)
        if self.layer_scale:
            y = LayerScale(name="ls1")(y)
        x = x + layers.DropPath(self.drop_path)(y, deterministic=not train)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm2")(x)
        y = Mlp(self.mlp_dim, self.activation, self.dtype, self.dropout, self.swiglu, name="mlp")(y, train)
        y = self._adapted(y, "adapter_mlp", self.adapter)
        if self.layer_scale:
            y = LayerScale(name="ls2")(y)
        if self.adaptformer:  # parallel branch on the residual stream (AdaptFormer's "parallel")
            branch = peft_lib.UnitAdapter(self.adaptformer.dim, "relu", self.dtype,
                                          name=peft_lib.ADAPTFORMER_MODULE)(x)
            y = y + self.adaptformer.scale * branch
        return x + layers.DropPath(self.drop_path)(y, deterministic=not train)

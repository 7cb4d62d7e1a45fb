"""Vision Transformer (Dosovitskiy et al. 2021), layout of the official vit_jax / big_vision code,
with the options of the ViTs people transfer from today, each numerically equal to its reference
(tests/test_backbones.py): DINOv2 (LayerScale, SwiGLU, registers, class + mean-patch head), CLIP
(pre-norm, no patch bias, quick GELU; CLIPForImageClassification's mean patch token without the
final norm) and SigLIP (no class token, MAP head).

Names: embed/{patch,cls,registers,pos_embedding,pre_norm}, encoder/block{i}/{norm1,attn,ls1,
norm2,mlp/{fc1,fc2},ls2}, encoder/norm, optional map/ (attention-pooling head) and pre_logits
(representation layer), head. Epsilon and activation are attributes so converters can match
other implementations. Checkpoints: vit_weights.py.
"""
import math
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import family, layers, names, peft as peft_lib, vit_weights
from tljax.models.transformer import ACTIVATIONS, Block, Mlp

# LayerNorm epsilon: flax's default 1e-6, as vit_jax/models_vit.py uses (HF/timm ports use
# other values; converters set `ln_eps` to match them).
# Size name -> (width, depth, mlp_dim, heads).
SIZES = {"Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6), "B": (768, 12, 3072, 12),
         "L": (1024, 24, 4096, 16), "H": (1280, 32, 5120, 16),
         # DINOv2 ViT-g/14 (SwiGLU hidden 4096) and SigLIP So400m/14 (HF configs).
         "g": (1536, 40, 4096, 24), "So400m": (1152, 27, 4304, 16)}


CLASSIFIERS = ("token", "gap", "token_gap", "patch_gap", "map")  # what the head reads, see ViT
WITH_CLASS_TOKEN = ("token", "token_gap", "patch_gap")  # the classifiers of models with one
FFNS = ("mlp", "swiglu")
POS_RESIZE = ("zoom_linear", "bicubic", "bicubic_antialias")  # weights/merge.py RESAMPLERS


class Embed(nn.Module):
    """Patches, the class token, position embeddings, then the register tokens (DINOv2 with
    registers: after the class token, without a position embedding) and CLIP's pre-norm."""

    width: int
    patch: int
    class_token: bool
    dtype: jnp.dtype = jnp.float32
    registers: int = 0
    patch_bias: bool = True
    pre_norm: bool = False
    ln_eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch),
                    padding="VALID", use_bias=self.patch_bias, dtype=self.dtype, name="patch")(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        tile = lambda p: jnp.tile(p.astype(x.dtype), (n, 1, 1))  # noqa: E731
        if self.class_token:
            x = jnp.concatenate([tile(self.param("cls", nn.initializers.zeros, (1, 1, c))), x], axis=1)
        pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, x.shape[1], c))
        x = x + pos.astype(x.dtype)
        if self.registers:
            registers = self.param("registers", nn.initializers.zeros, (1, self.registers, c))
            x = jnp.concatenate([x[:, :1], tile(registers), x[:, 1:]], axis=1)
        if self.pre_norm:
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="pre_norm")(x)
        return x


class MAPHead(nn.Module):
    """Multihead attention pooling (Lee et al. 2019), SigLIP's pooled output: a learned probe
    token attends over all tokens, then a residual MLP on its LayerNormed output
    (big_vision models/vit.py MAPHead; HF SiglipMultiheadAttentionPoolingHead)."""

    heads: int
    mlp_dim: int
    ln_eps: float = 1e-6
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]))
        probe = jnp.tile(probe.astype(x.dtype), (x.shape[0], 1, 1))
        x = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                            name="attention")(probe, x)
        y = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)
        x = x + Mlp(self.mlp_dim, self.activation, self.dtype, name="mlp")(y, False)
        return x[:, 0]


class Encoder(nn.Module):
    depth: int
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
    peft: peft_lib.Peft = peft_lib.NONE
    lead_tokens: int = 1
    prompt_bound: float = 0.0
    attention: str = "auto"
    final_norm: bool = True

    @nn.compact
    def __call__(self, x, train):
        x = nn.Dropout(self.dropout)(x, deterministic=not train)  # on the embeddings (vit_jax)
        prompts = self.peft.prompts
        for i, rate in enumerate(layers.drop_path_rates(self.drop_path, self.depth)):
            tokens = prompts.tokens if prompts and (i == 0 or prompts.deep) else 0
            x = Block(self.heads, self.mlp_dim, self.ln_eps, self.activation, self.dtype,
                      self.dropout, self.attention_dropout, rate, self.layer_scale, self.swiglu,
                      adapter=self.peft.adapter,
                      adaptformer=self.peft.adaptformer, prompts=tokens, prompts_replace=i > 0,
                      prompt_bound=self.prompt_bound, lead_tokens=self.lead_tokens,
                      attention=self.attention, name=f"block{i}")(x, train)
        if prompts:  # The classifier reads the class token, patch tokens or all of them.
            x = jnp.concatenate([x[:, :self.lead_tokens], x[:, self.lead_tokens + prompts.tokens:]], 1)
        if not self.final_norm:
            return x
        return nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)


class ViT(nn.Module):
    """ViT; `classifier` says what the head reads after the final norm: 'token' the class
    token, 'gap' the mean of all tokens (no class token), 'token_gap' the class token beside
    the mean patch token (HF Dinov2ForImageClassification), 'patch_gap' the mean patch token
    alone (a class token the head does not read: HF CLIPForImageClassification), 'map' the
    attention-pooled output of the MAP head (SigLIP; no class token). `final_norm=False`
    leaves the final norm out (CLIPForImageClassification reads the tokens before it)."""

    num_classes: int
    size: str = "B"
    patch: int = 16
    width: Optional[int] = None  # overrides of the size preset, for tiny test models
    depth: Optional[int] = None
    mlp_dim: Optional[int] = None  # SwiGLU: the width of its gated hidden layer
    heads: Optional[int] = None
    classifier: str = "token"
    representation_size: Optional[int] = None
    ln_eps: float = 1e-6
    activation: str = "gelu"       # ACTIVATIONS
    layer_scale: bool = False      # DINOv2
    ffn: str = "mlp"               # or "swiglu" (DINOv2 ViT-g)
    registers: int = 0             # DINOv2 with registers
    pre_norm: bool = False         # CLIP: LayerNorm on the embeddings
    final_norm: bool = True        # CLIPForImageClassification: False
    patch_bias: bool = True        # CLIP: False
    # How pretrained position embeddings are resampled for another resolution, as the
    # checkpoint's own code does (weights/merge.py RESAMPLERS).
    pos_resize: str = "zoom_linear"
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

    def class_token(self):
        return self.classifier in WITH_CLASS_TOKEN

    def lead_tokens(self):
        """Tokens before the patch tokens (and VPT prompts): the class token and registers."""
        return int(self.class_token()) + self.registers

    def _check(self):
        for field, value, allowed in (("classifier", self.classifier, CLASSIFIERS),
                                      ("activation", self.activation, tuple(ACTIVATIONS)),
                                      ("ffn", self.ffn, FFNS),
                                      ("pos_resize", self.pos_resize, POS_RESIZE)):
            if value not in allowed:
                raise UserError(f"vit {field}={value!r} is not one of {', '.join(allowed)}")
        if self.registers and not self.class_token():
            raise UserError(f"vit registers need a class token (classifier "
                            f"{', '.join(WITH_CLASS_TOKEN)})")

    @nn.compact
    def __call__(self, x, train: bool = False):
        self._check()
        width, depth, mlp_dim, heads = self.dims()
        # VPT's prompt init (KMnP/vpt src/models/vit_prompt/vit.py): uniform within
        # ±sqrt(6 / (3·patch² + width)), Xavier's range for the patch projection.
        bound = math.sqrt(6.0 / (3 * self.patch**2 + width))
        lead = self.lead_tokens()
        with peft_lib.intercept(self.peft, train):
            x = Embed(width, self.patch, self.class_token(), self.dtype, self.registers,
                      self.patch_bias, self.pre_norm, self.ln_eps, name="embed")(x.astype(self.dtype))
            x = Encoder(depth, heads, mlp_dim, self.ln_eps, self.activation, self.dtype,
                        self.dropout, self.attention_dropout, self.drop_path, self.layer_scale,
                        self.ffn == "swiglu", self.peft, lead_tokens=lead, prompt_bound=bound,
                        attention=self.attention, final_norm=self.final_norm,
                        name="encoder")(x, train)
            if self.classifier == "token":
                x = x[:, 0]
            elif self.classifier == "token_gap":
                x = jnp.concatenate([x[:, 0], x[:, lead:].mean(axis=1)], axis=-1)
            elif self.classifier == "patch_gap":
                x = x[:, lead:].mean(axis=1)
            elif self.classifier == "map":
                x = MAPHead(heads, mlp_dim, self.ln_eps, self.activation, self.dtype, name="map")(x)
            else:
                x = jnp.mean(x, axis=1)
            if self.representation_size:
                x = jnp.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits")(x))
        return layers.classifier_head(self, x, train, self.dropout)


def _groups(module):
    """Embeddings, blocks, then the final norm with what pools after it (SigLIP's MAP head):
    both belong to the top depth unit, so last_k:1 trains the last block, norm, MAP and head.
    A model with neither (CLIPForImageClassification) has no such group."""
    blocks = [(f"block{i}", rf"encoder/block{i}/.*") for i in range(module.dims()[1])]
    final = module.final_norm or module.classifier == "map"
    return [("embed", "embed/.*"), *blocks,
            *([(names.FINAL_NORM, "(encoder/norm|map)/.*")] if final else []),
            (names.HEAD, f"(pre_logits|{names.HEAD})/.*")]


def _pool(module, tokens, attention_mask=None):
    """A block's tokens as one vector: the class token and the mean of the patch tokens
    (DINOv2's linear-probe features; registers and VPT prompts are not patch tokens), or the
    mean of the patch tokens without a class token."""
    patches = tokens[:, module.lead_tokens() + _prompt_tokens(module):]
    if module.class_token():
        return jnp.concatenate([tokens[:, 0], patches.mean(1)], -1)
    return patches.mean(1)


def _prompt_tokens(module):
    return module.peft.prompts.tokens if module.peft.prompts else 0


def _blocks(module):
    return [f"block{i}" for i in range(module.dims()[1])]


def _linear_input(module, params, blocks, avgpool):
    """DINOv2's linear-probe input (dinov2/eval/linear.py `create_linear_input` over
    `get_intermediate_layers(n, return_class_token=True, norm=True)`): the final LayerNorm
    applied to each given block's tokens, their class tokens concatenated, then with
    `avgpool` the mean patch token of the last block (registers and VPT prompts are not
    patch tokens). A ViT without a final norm gives its tokens as they are."""
    normed = blocks
    if module.final_norm:
        norm = nn.LayerNorm(epsilon=module.ln_eps, dtype=module.dtype)
        normed = [norm.apply({"params": params["encoder"]["norm"]}, x) for x in blocks]
    parts = [x[:, 0] for x in normed]
    if avgpool:
        parts.append(normed[-1][:, module.lead_tokens() + _prompt_tokens(module):].mean(1))
    return jnp.concatenate(parts, -1)


def _upgrade_arch(arch):
    """Exports and run records written before 2026-11-27 name the activation by the boolean
    `gelu_approximate` (True: tanh GELU)."""
    if "gelu_approximate" in arch:
        arch.setdefault("activation", "gelu_tanh" if arch.pop("gelu_approximate") else "gelu")
    return arch


FAMILY = family.Family("vit", ViT, _groups, pool=_pool, token_methods=True,
                       linear_input=_linear_input, blocks=_blocks, upgrade_arch=_upgrade_arch,
                       layouts=(vit_weights.layout(SIZES),))

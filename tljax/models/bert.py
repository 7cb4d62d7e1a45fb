"""BERT (Devlin et al. 2019) and the two layouts that share its post-norm encoder, RoBERTa (Liu
et al. 2019) and DistilBERT (Sanh et al. 2019), each numerically equal to HF transformers'
BertForSequenceClassification, RobertaForSequenceClassification and
DistilBertForSequenceClassification (tests/test_text_models.py).

Inputs: int32 token ids (batch, length), `attention_mask` (1 for tokens, 0 for padding;
None: no padding) and, for BERT sentence pairs, `token_type_ids`.

Names: embed/{word,position,token_type,norm}, layer{i}/{attn/{query,key,value,out}, attn_norm,
mlp/{fc1,fc2}, mlp_norm}, pooler (BERT), head (BERT: head/{kernel,bias}; RoBERTa and
DistilBERT: head/{dense,out}). Each option comes from the checkpoint's config.json
(bert_weights.py), never from a constant.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import attention as attention_lib
from tljax.models import bert_weights, family, layers, names, peft as peft_lib
from tljax.models.transformer import ACTIVATIONS

# What reads the first ([CLS] / <s>) token: BERT's tanh pooler then a linear classifier,
# RoBERTa's two-layer tanh head, DistilBERT's two-layer ReLU head (layers.TwoLayerHead).
CLASSIFIERS = ("pooler", "tanh", "relu")
# Position ids: 0..length-1 (BERT, DistilBERT), or RoBERTa's: pad_id + 1 onwards over the
# non-pad tokens, pad tokens at pad_id (HF modeling_roberta.py create_position_ids_from_input_ids).
POSITIONS = ("absolute", "after_padding")


class Embed(nn.Module):
    """Word + token type + position embeddings (HF's order of addition), then LayerNorm."""

    vocab_size: int
    width: int
    max_positions: int
    type_vocab_size: int
    positions: str
    pad_id: int
    ln_eps: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids):
        embed = lambda n, name: nn.Embed(n, self.width, embedding_init=layers.HF_TEXT_INIT,  # noqa: E731
                                         dtype=self.dtype, name=name)
        x = embed(self.vocab_size, "word")(input_ids)
        if self.type_vocab_size:
            types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + embed(self.type_vocab_size, "token_type")(types)
        if self.positions == "after_padding":
            real = (input_ids != self.pad_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + self.pad_id
        else:
            positions = jnp.arange(input_ids.shape[1])[None]
        x = x + embed(self.max_positions, "position")(positions)
        return nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="norm")(x)


class FeedForward(nn.Module):
    """fc1 -> activation -> fc2 (HF BertIntermediate + BertOutput.dense; DistilBERT's FFN)."""

    mlp_dim: int
    activation: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = ACTIVATIONS[self.activation](nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class Layer(nn.Module):
    """Post-norm: LayerNorm(x + attention(x)), then LayerNorm(x + MLP(x)), dropout on each
    branch's output (HF BertLayer, DistilBERT's TransformerBlock). Houlsby adapters sit where
    Houlsby et al. put them in BERT: on each branch's output, before the residual and norm."""

    heads: int
    mlp_dim: int
    ln_eps: float
    activation: str
    dtype: jnp.dtype = jnp.float32
    dropout: float = 0.0
    attention_dropout: float = 0.0
    adapter: Optional[peft_lib.Adapter] = None
    adaptformer: Optional[peft_lib.Adapter] = None
    prompts: int = 0
    prompts_replace: bool = False
    prompt_bound: float = 0.0
    attention: str = "auto"

    def _adapted(self, y, name):
        return y + peft_lib.UnitAdapter(self.adapter.dim, "gelu", self.dtype, name=name)(y)

    @nn.compact
    def __call__(self, x, mask, train):
        if self.prompts:  # after [CLS], like VPT's after the class token
            x = peft_lib.insert_prompts(self, x, self.prompts, self.prompts_replace, 1,
                                        self.prompt_bound)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                            dropout_rate=self.attention_dropout,
                                            attention_fn=attention_lib.function(self.attention),
                                            name="attn")(x, x, mask=mask, deterministic=not train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        if self.adapter and self.adapter.where == "both":
            y = self._adapted(y, "adapter_attn")
        x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="attn_norm")(x + y)
        y = nn.Dropout(self.dropout)(FeedForward(self.mlp_dim, self.activation, self.dtype,
                                                 name="mlp")(x), deterministic=not train)
        if self.adapter:
            y = self._adapted(y, "adapter_mlp")
        if self.adaptformer:  # parallel to the MLP, fed its input (AdaptFormer)
            y = y + self.adaptformer.scale * peft_lib.UnitAdapter(
                self.adaptformer.dim, "relu", self.dtype, name=peft_lib.ADAPTFORMER_MODULE)(x)
        return nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="mlp_norm")(x + y)


def key_mask(attention_mask):
    """flax's (batch, 1, 1, keys) attention mask from a (batch, length) 0/1 mask; None: all."""
    return None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]


class Bert(nn.Module):
    num_classes: int
    vocab_size: int = 30522
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2   # 0: no token types (DistilBERT)
    ln_eps: float = 1e-12      # HF BertConfig layer_norm_eps
    activation: str = "gelu"   # transformer.ACTIVATIONS
    positions: str = "absolute"
    pad_id: int = 0
    classifier: str = "pooler"
    dropout: float = 0.0  # regularisation (config.model.dropout etc.), not architecture
    attention_dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE
    attention: str = "auto"

    def _check(self):
        for field, value, allowed in (("classifier", self.classifier, CLASSIFIERS),
                                      ("positions", self.positions, POSITIONS),
                                      ("activation", self.activation, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise UserError(f"bert {field}={value!r} is not one of {', '.join(allowed)}")

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
        self._check()
        prompts = self.peft.prompts
        # Prompt tuning's init range: Xavier's for a (width, width) layer, as VPT's for ViT.
        bound = (6.0 / (2 * self.width)) ** 0.5
        with peft_lib.intercept(self.peft, train):
            x = Embed(self.vocab_size, self.width, self.max_positions, self.type_vocab_size,
                      self.positions, self.pad_id, self.ln_eps, self.dtype,
                      name="embed")(input_ids, token_type_ids)
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
            if prompts:
                attention_mask = peft_lib.prompted_mask(
                    jnp.ones(input_ids.shape, jnp.int32) if attention_mask is None
                    else attention_mask, prompts.tokens, 1)
            mask = key_mask(attention_mask)
            for i in range(self.depth):
                tokens = prompts.tokens if prompts and (i == 0 or prompts.deep) else 0
                x = Layer(self.heads, self.mlp_dim, self.ln_eps, self.activation, self.dtype,
                          self.dropout, self.attention_dropout, self.peft.adapter,
                          self.peft.adaptformer, tokens, i > 0, bound, self.attention,
                          name=f"layer{i}")(x, mask, train)
            first = x[:, 0]
            if self.classifier == "pooler":
                first = jnp.tanh(nn.Dense(self.width, dtype=self.dtype, name=names.POOLER)(first))
        if self.classifier == "pooler":
            return layers.classifier_head(self, first, train, self.dropout,
                                          kernel_init=layers.HF_TEXT_INIT)
        return layers.two_layer_head(self, first, train, self.classifier, self.dropout)


def _groups(module):
    """Embeddings, layer 0..N-1, BERT's pooler (part of the top depth unit), the head."""
    return [("embed", "embed/.*"), *[(f"layer{i}", rf"layer{i}/.*") for i in range(module.depth)],
            *([(names.POOLER, f"{names.POOLER}/.*")] if module.classifier == "pooler" else []),
            (names.HEAD, f"{names.HEAD}/.*")]


def _first_token(module, x, attention_mask=None):
    """A layer's output as one vector: its [CLS] token (the token the classifiers read)."""
    return x[:, 0]


FAMILY = family.Family("bert", Bert, _groups, pool=_first_token, token_methods=True,
                       blocks=lambda module: [f"layer{i}" for i in range(module.depth)],
                       layouts=(bert_weights.LAYOUT,), example_input=family.token_input)

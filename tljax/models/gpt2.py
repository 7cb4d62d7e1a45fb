"""GPT-2 (Radford et al. 2019) as a classifier, numerically equal to HF transformers'
GPT2ForSequenceClassification (tests/test_text_models.py): token + position embeddings, the
pre-norm causal transformer block ViT uses (models/transformer.py), a final LayerNorm, and a
linear classifier without bias on the last token of each text.

Inputs: int32 token ids (batch, length) padded on the right, `attention_mask` (1 for tokens,
0 for padding; None: no padding) and, for text pairs, `token_type_ids` (embedded with the word
table, as HF GPT2Model does). The classified token is the last one the mask keeps; HF
picks the last token whose id is not pad_token_id, the same token for right-padded texts.

Names: embed/{word,position}, block{i}/{norm1,attn/{query,key,value,out},norm2,mlp/{fc1,fc2}},
norm, head/kernel. Options come from the checkpoint's config.json (gpt2_weights.py). With
model.dropout > 0 the block drops as ViT's does, also after the MLP's activation (HF GPT-2
drops only after its output projection): training regularisation, not the function.
"""
import flax.linen as nn
import jax.numpy as jnp

from tljax.errors import UserError
from tljax.models import family, gpt2_weights, layers, names, peft as peft_lib
from tljax.models.transformer import ACTIVATIONS, Block



def causal_mask(attention_mask):
    """flax's (batch, 1, queries, keys) mask: each token sees itself and the real tokens
    before it."""
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return causal[None, None] & attention_mask.astype(bool)[:, None, None, :]


def last_token(attention_mask):
    """The index of each row's last kept token."""
    positions = jnp.arange(attention_mask.shape[1])
    return jnp.max(jnp.where(attention_mask.astype(bool), positions, 0), axis=1)


class Embed(nn.Module):
    """Token embeddings plus learned absolute position embeddings (HF GPT2Model wte + wpe)."""

    vocab_size: int
    max_positions: int
    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None):
        word = nn.Embed(self.vocab_size, self.width, embedding_init=layers.HF_TEXT_INIT,
                        dtype=self.dtype, name="word")
        positions = jnp.arange(input_ids.shape[1])[None]
        x = word(input_ids) + nn.Embed(self.max_positions, self.width, dtype=self.dtype,
                                       embedding_init=layers.HF_TEXT_INIT, name="position")(positions)
        if token_type_ids is not None:  # HF GPT2Model embeds token types with the word table
            x = x + word(token_type_ids)
        return x


class GPT2(nn.Module):
    num_classes: int
    vocab_size: int = 50257
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 1024
    ln_eps: float = 1e-5            # HF GPT2Config layer_norm_epsilon
    activation: str = "gelu_tanh"   # HF's "gelu_new"
    dropout: float = 0.0  # regularisation (config.model.dropout etc.), not architecture
    attention_dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE
    attention: str = "auto"

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
        if self.activation not in ACTIVATIONS:
            raise UserError(f"gpt2 activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        last = last_token(attention_mask)
        prompts = self.peft.prompts
        # Prompt tuning (Lester et al. 2021): soft tokens before the text; init range as ViT's.
        bound = (6.0 / (2 * self.width)) ** 0.5
        with peft_lib.intercept(self.peft, train):
            x = Embed(self.vocab_size, self.max_positions, self.width, self.dtype,
                      name="embed")(input_ids, token_type_ids)
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
            if prompts:
                attention_mask = peft_lib.prompted_mask(attention_mask, prompts.tokens, 0)
                last = last + prompts.tokens
            mask = causal_mask(attention_mask)
            for i in range(self.depth):
                tokens = prompts.tokens if prompts and (i == 0 or prompts.deep) else 0
                x = Block(self.heads, self.mlp_dim, self.ln_eps, self.activation, self.dtype,
                          self.dropout, self.attention_dropout, adapter=self.peft.adapter,
                          adaptformer=self.peft.adaptformer, prompts=tokens,
                          prompts_replace=i > 0, prompt_bound=bound, lead_tokens=0,
                          attention=self.attention, name=f"block{i}")(x, train, mask)
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name=names.FINAL_NORM)(x)
            features = x[jnp.arange(x.shape[0]), last]
        return layers.classifier_head(self, features, train, self.dropout, use_bias=False,
                                      kernel_init=layers.HF_TEXT_INIT)


def _groups(module):
    """Embeddings, block 0..N-1, the final norm (part of the top depth unit), the head."""
    return [("embed", "embed/.*"), *[(f"block{i}", rf"block{i}/.*") for i in range(module.depth)],
            (names.FINAL_NORM, f"{names.FINAL_NORM}/.*"), (names.HEAD, f"{names.HEAD}/.*")]


def _last_token(module, x, attention_mask=None):
    """A block's output as one vector: its last real token (the one the classifier reads),
    after any prompt tokens."""
    prompts = module.peft.prompts.tokens if module.peft.prompts else 0
    if attention_mask is None:
        return x[:, -1]
    return x[jnp.arange(x.shape[0]), last_token(attention_mask) + prompts]


FAMILY = family.Family("gpt2", GPT2, _groups, pool=_last_token, token_methods=True,
                       blocks=lambda module: [f"block{i}" for i in range(module.depth)],
                       layouts=(gpt2_weights.LAYOUT,), example_input=family.token_input)

"""Attention through `jax.nn.dot_product_attention`, the one entry point to XLA's and cuDNN's
fused kernels, as the `attention_fn` of flax's MultiHeadDotProductAttention (so parameter
names and the op-level PEFT methods see the same Dense layers as before).

Implementations (`model.attention`):
  "xla"   XLA's fusions. In float32 and float16 jax's reference path. In bfloat16
          `half_precision`: float32 logits and softmax, and only the bfloat16 probabilities
          kept for the backward pass (jax's path keeps the float32 softmax outputs too: 6 bytes
          a logit instead of 2). Logits rounded to bfloat16 as well were measured at twice
          jax's error (1 % against 0.5 % at 197 tokens) for no saving (they are not kept);
          float16 stays on jax's path, whose float32 logits cannot overflow;
  "cudnn" cuDNN's fused flash attention (GPU; bfloat16/float16; head dim a multiple of 8);
  "auto"  cudnn where it applies (GPU, half precision, head dim <= 128 and a multiple of 8)
          and cuDNN takes the shapes, else xla. jax decides the shapes when it traces.
On the cuDNN path the token axis is padded to a multiple of TOKEN_MULTIPLE and the pad keys
are masked with `key_value_seq_lengths` (the pad queries' rows are dropped after): a jax bug
refuses every odd length in training. `jax/_src/cudnn/fused_attention_stablehlo.py`
`dot_product_attention` replaces a missing bias by a placeholder array, so the backward
pass's `bias is not None` check is always true and `is_training and has_bias and odd length`
raises NotImplementedError "Unsupported sequence length" (seen on an H100, jax 0.11.2, at
ViT-B/16's 197 tokens: training fell back to xla). A boolean `mask=` would become a bias
(jax issue #28974), hence the sequence lengths. The padded attention equals the unpadded one,
values and gradients (tests/test_numerics.py, on the xla path that takes the same lengths).
Dropout on the attention probabilities (model.attention_dropout) has no fused kernel: while
it is active (training with a rate > 0) attention falls back to flax's unfused function,
softmax in float32.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.errors import UserError

IMPLEMENTATIONS = ("auto", "xla", "cudnn")
TOKEN_MULTIPLE = 8  # the cuDNN path's token count is padded to this (even, and aligned)
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def check(implementation):
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"model.attention={implementation!r} is not one of "
                        f"{', '.join(IMPLEMENTATIONS)}")
    return implementation


def cudnn_applies(dtype, head_dim):
    """Whether cuDNN's fused attention may take these inputs here (jax's
    cudnn/fused_attention_stablehlo.py check_is_flash_attention: half precision, head dim a
    multiple of 8, at most 128 before Hopper; tljax asks for at most 128 on every GPU)."""
    return (jax.default_backend() == "gpu" and jnp.dtype(dtype) in _HALF
            and head_dim % 8 == 0 and head_dim <= 128)


def resolve(implementation, dtype, head_dim):
    """The implementation jax.nn.dot_product_attention is asked for."""
    if implementation == "auto":
        return "cudnn" if cudnn_applies(dtype, head_dim) else "xla"
    if implementation == "cudnn" and not cudnn_applies(dtype, head_dim):
        raise UserError(f"model.attention=cudnn needs a GPU, model.dtype bfloat16 or float16 and "
                        f"a head dim <= 128 that is a multiple of 8 (here: "
                        f"{jax.default_backend()}, {jnp.dtype(dtype).name}, head dim {head_dim}); "
                        f"use model.attention=auto")
    return implementation


def padded(query, key, value, implementation):
    """jax.nn.dot_product_attention over the tokens padded to a multiple of TOKEN_MULTIPLE,
    the pad keys masked by their sequence length and the pad queries' outputs dropped: the
    attention of the real tokens, at a length cuDNN's backward pass takes."""
    tokens = query.shape[1]
    pad = -tokens % TOKEN_MULTIPLE
    if not pad or key.shape[1] != tokens:  # (self-attention only: one length to pad)
        return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    query, key, value = (jnp.pad(t, widths) for t in (query, key, value))
    lengths = jnp.full((query.shape[0],), tokens, jnp.int32)
    out = jax.nn.dot_product_attention(query, key, value, key_value_seq_lengths=lengths,
                                       implementation=implementation)
    return out[:, :tokens]


def _probs(query, key, mask):
    """softmax(q k^T / sqrt(d)) in float32 (masked as jax masks), rounded to the input dtype."""
    scores = jnp.einsum("BTNH,BSNH->BNTS", query, key, preferred_element_type=jnp.float32)
    scores = scores * query.shape[-1] ** -0.5
    if mask is not None:  # jax's own masking value (nn/functions.py _get_large_negative)
        scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
    return jax.nn.softmax(scores, axis=-1).astype(query.dtype)


@jax.custom_vjp
def half_precision(query, key, value, mask=None):
    """softmax(q k^T / sqrt(d)) v for bfloat16 (batch, tokens, heads, head dim) inputs; `mask`
    (broadcastable to (batch, heads, query tokens, key tokens), True = attend) as flax gives
    it. The backward pass recomputes nothing and reads the saved bfloat16 probabilities P:
    dS = P * (dP - rowsum(dP * P)) in float32, as the softmax derivative is; zero where the
    mask hides a key (also on a row that hides every key, where P is uniform but constant)."""
    return _half_precision_forward(query, key, value, mask)[0]


def _half_precision_forward(query, key, value, mask=None):
    probs = _probs(query, key, mask)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, value), (query, key, value, probs, mask)


def _half_precision_backward(residuals, d_out):
    query, key, value, probs, mask = residuals
    d_value = jnp.einsum("BNTS,BTNH->BSNH", probs, d_out)
    d_probs = jnp.einsum("BTNH,BSNH->BNTS", d_out, value, preferred_element_type=jnp.float32)
    p = probs.astype(jnp.float32)
    d_scores = p * (d_probs - jnp.sum(d_probs * p, axis=-1, keepdims=True))
    if mask is not None:
        d_scores = jnp.where(mask, d_scores, 0.0)
    d_scores = (d_scores * query.shape[-1] ** -0.5).astype(query.dtype)
    d_query = jnp.einsum("BNTS,BSNH->BTNH", d_scores, key)
    d_key = jnp.einsum("BNTS,BTNH->BSNH", d_scores, query)
    return d_query, d_key, d_value, None


half_precision.defvjp(_half_precision_forward, _half_precision_backward)


def function(implementation="auto"):
    """An `attention_fn` for nn.MultiHeadDotProductAttention; query/key/value are
    (batch, tokens, heads, head dim), the layout jax.nn.dot_product_attention takes."""
    check(implementation)

    def attend(query, key, value, mask=None, dropout_rng=None, dropout_rate=0.0,
               broadcast_dropout=True, deterministic=True, dtype=None):
        if dropout_rate > 0.0 and not deterministic:
            return nn.dot_product_attention(
                query, key, value, mask=mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
                broadcast_dropout=broadcast_dropout, deterministic=False, dtype=dtype,
                force_fp32_for_softmax=True)
        query, key, value = nn.dtypes.promote_dtype(query, key, value, dtype=dtype)
        if resolve(implementation, query.dtype, query.shape[-1]) == "cudnn":
            try:  # raised while tracing, also for the backward pass under jax.grad
                if mask is None:
                    return padded(query, key, value, "cudnn")
                return jax.nn.dot_product_attention(query, key, value, mask=mask,
                                                    implementation="cudnn")
            except NotImplementedError as e:
                if implementation == "cudnn":
                    raise UserError(f"model.attention=cudnn: cuDNN refuses these inputs "
                                    f"({str(e).splitlines()[0]}); use model.attention=auto "
                                    f"or xla") from None
        if query.dtype == jnp.bfloat16:
            return half_precision(query, key, value, mask)
        return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")

    return attend

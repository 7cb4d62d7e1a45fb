"""Attention through jax.nn.dot_product_attention and mixed precision: the same function as
before in float32, dropout still applied, bfloat16 training that tracks float32."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from sklearn.datasets import load_digits

from tljax import models
from tljax.training import steps
from tljax.training import state as state_lib
from tljax.errors import UserError
from tljax.models import attention, layers


def _mha(attention_fn=None, rate=0.0):
    kwargs = {"attention_fn": attention_fn} if attention_fn else {}
    return nn.MultiHeadDotProductAttention(num_heads=4, dropout_rate=rate, **kwargs)


def _tokens(seed=0, shape=(3, 17, 32)):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_xla_attention_equals_flax_attention_in_float32():
    """Flax's attention (scaled query, softmax of the logits) against jax's fused entry point
    (scaled logits, float32 softmax): one function, to float32 rounding."""
    x = _tokens()
    params = _mha().init(jax.random.PRNGKey(1), x, x)
    ref = _mha().apply(params, x, x)
    for implementation in ("xla", "auto"):  # auto is xla on a CPU
        out = _mha(attention.function(implementation)).apply(params, x, x)
        assert float(jnp.max(jnp.abs(out - ref))) <= 1e-5


def test_attention_dropout_still_drops_probabilities():
    """No fused kernel takes dropout: training with a rate falls back to flax's function (same
    random draws), evaluation uses the fused path."""
    x = _tokens()
    params = _mha(rate=0.5).init(jax.random.PRNGKey(1), x, x, deterministic=True)
    rngs = {"dropout": jax.random.PRNGKey(2)}
    ours = _mha(attention.function("auto"), rate=0.5)
    dropped = ours.apply(params, x, x, deterministic=False, rngs=rngs)
    ref = _mha(rate=0.5).apply(params, x, x, deterministic=False, rngs=rngs)
    kept = ours.apply(params, x, x, deterministic=True)
    assert float(jnp.max(jnp.abs(dropped - ref))) <= 1e-5
    assert float(jnp.max(jnp.abs(dropped - kept))) > 0.1


@pytest.mark.parametrize("tokens", [197, 17, 16])
def test_attention_padded_for_cudnn_equals_the_unpadded_one_values_and_gradients(tokens):
    """The cuDNN path's padding (attention.padded: tokens to a multiple of 8, pad keys masked by
    key_value_seq_lengths, pad queries dropped), run on jax's xla path, which takes the same
    lengths: ViT-B/16's 197 tokens, an odd count of a tiny ViT, and an aligned count (no pad)."""
    from tljax.models import attention

    q, k, v = jax.random.normal(jax.random.PRNGKey(tokens), (3, 2, tokens, 2, 8))
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, tokens, 2, 8))

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

    plain = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
    pad = lambda q, k, v: attention.padded(q, k, v, "xla")  # noqa: E731
    np.testing.assert_allclose(pad(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-6)
    for ours, reference in zip(jax.grad(loss(pad), argnums=(0, 1, 2))(q, k, v),
                               jax.grad(loss(plain), argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    # Without the lengths the pad keys would take part: the masking is what makes it equal.
    if tokens % attention.TOKEN_MULTIPLE:
        widths = ((0, 0), (0, -tokens % 8), (0, 0), (0, 0))
        unmasked = jax.nn.dot_product_attention(*(jnp.pad(t, widths) for t in (q, k, v)),
                                                implementation="xla")[:, :tokens]
        assert float(jnp.max(jnp.abs(unmasked - plain(q, k, v)))) > 1e-3


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="only a GPU has cuDNN attention")
def test_cudnn_attention_trains_at_an_odd_token_count():
    """On a GPU: the gradient of cuDNN attention at ViT-B/16's 197 tokens (refused by jax's
    check without the padding) equals xla's, in bfloat16."""
    from tljax.models import attention

    q, k, v = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 197, 12, 64), jnp.bfloat16)

    def loss(implementation):
        return lambda q: jnp.sum(attention.function(implementation)(q, k, v).astype(jnp.float32))

    ours, reference = jax.grad(loss("cudnn"))(q), jax.grad(loss("xla"))(q)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(reference, np.float32),
                               rtol=0.05, atol=0.05)


def _relative(got, want):
    return float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)) / jnp.max(jnp.abs(want)))


def test_half_precision_attention_backward_pass_is_autodiffs():
    """attention.half_precision's hand-written backward pass against jax.grad of the same
    forward pass (in float32, where rounding does not hide a wrong term): self-attention with
    a padding mask that hides every key of some rows, cross-attention to another length, and
    no mask."""
    def autodiff(q, k, v, mask=None):
        scores = jnp.einsum("BTNH,BSNH->BNTS", q, k) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
        return jnp.einsum("BNTS,BSNH->BTNH", jax.nn.softmax(scores, axis=-1), v)

    keys = jax.random.split(jax.random.PRNGKey(2), 5)
    q = jax.random.normal(keys[0], (2, 9, 2, 8))
    mask = jax.random.uniform(keys[3], (2, 1, 9, 9)) > 0.3
    mask = mask.at[1, :, 4:].set(False)  # rows that see no key (a fully padded sequence)
    for k_tokens, mask in ((9, mask), (5, None)):
        k, v = (jax.random.normal(key, (2, k_tokens, 2, 8)) for key in keys[1:3])
        weights = jax.random.normal(keys[4], (2, 9, 2, 8))
        for fn in (autodiff, attention.half_precision):
            np.testing.assert_allclose(fn(q, k, v, mask), autodiff(q, k, v, mask), atol=1e-6)
        got, want = (jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, mask) * weights),
                              argnums=(0, 1, 2))(q, k, v)
                     for fn in (attention.half_precision, autodiff))
        for name, a, b in zip("qkv", got, want):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"d{name}, {k_tokens} keys")


def _relative(got, want):
    return float(jnp.max(jnp.abs(got.astype(jnp.float32) - want)) / jnp.max(jnp.abs(want)))


def test_half_precision_xla_attention_tracks_float32_and_keeps_less_for_the_backward_pass():
    """The bfloat16 XLA path (attention.half_precision: float32 logits and softmax, only
    bfloat16 probabilities saved for the backward pass), as models call it: values and
    gradients within bfloat16 rounding of float32 attention, with a padding mask; and on CPU
    XLA's compiled temporary memory of the backward pass below jax's own bfloat16 path (which
    keeps the float32 softmax outputs too)."""
    batch, tokens, heads, head_dim = 4, 197, 4, 32  # ViT-B/16's odd token count
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v = (jax.random.normal(key, (batch, tokens, heads, head_dim)) for key in keys[:3])
    mask = jax.random.uniform(keys[3], (batch, 1, tokens, tokens)) > 0.2

    def loss(fn):
        weights = jnp.cos(jnp.arange(head_dim))
        return lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * weights)

    reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)  # noqa: E731
    ours = lambda q, k, v: attention.function("xla")(q, k, v, mask=mask)  # noqa: E731
    half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    np.testing.assert_array_equal(ours(*half), attention.half_precision(*half, mask))
    assert _relative(ours(*half), reference(q, k, v)) < 1e-2  # bfloat16: 2^-8 = 3.9e-3 an op
    grads = jax.grad(loss(ours), argnums=(0, 1, 2))(*half)
    for got, want in zip(grads, jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)):
        assert got.dtype == jnp.bfloat16 and _relative(got, want) < 1.5e-2
    if jax.default_backend() == "cpu":  # (what was measured; GPU rows: benchmarks/gpu_suite.sh)
        memory = {name: jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2))).lower(*half).compile()
                  .memory_analysis().temp_size_in_bytes
                  for name, fn in (("ours", ours), ("jax", reference))}
        assert memory["ours"] < 0.8 * memory["jax"], memory


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN attention exists there")
def test_unknown_or_unavailable_attention_is_one_line():
    module = models.build("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 1,
                                  "mlp_dim": 32, "heads": 2}, 3)
    with pytest.raises(UserError, match="model.attention='flash' is not one of auto, xla, cudnn"):
        models.with_numerics(module, "float32", "flash")
    cudnn = models.with_numerics(module, "bfloat16", "cudnn")
    with pytest.raises(UserError, match="model.attention=cudnn needs a GPU"):
        cudnn.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 3)))


def _digits(batch=64):
    digits = load_digits()
    images = np.repeat(digits.images[..., None] / 8.0 - 1.0, 3, -1).astype(np.float32)
    return images[:batch * 6], digits.target[:batch * 6].astype(np.int32)


def _train(dtype, param_dtype, steps_=30, batch=64):
    """Train losses of a small ViT on sklearn's digits with Adam, activations in `dtype`."""
    arch = {"size": "Ti", "patch": 2, "width": 32, "depth": 2, "mlp_dim": 64, "heads": 2}
    module = models.with_numerics(models.build("vit", arch, 10), dtype)
    variables = jax.jit(lambda r: module.init(r, jnp.ones((1, 8, 8, 3))))(jax.random.PRNGKey(0))
    # A non-zero head, so the first steps' gradients reach the whole model.
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    flat["head/kernel"] = 0.1 * jax.random.normal(jax.random.PRNGKey(3), flat["head/kernel"].shape)
    variables = {"params": traverse_util.unflatten_dict(flat, sep="/")}
    trainable = list(flat)
    tx = optax.adam(3e-3)
    step = jax.jit(steps.make_train_step(module, tx, trainable, param_dtype=param_dtype))
    state = state_lib.create(variables, tx, trainable, seed=0)
    images, labels = _digits(batch)
    losses = []
    for i in range(steps_):
        j = (i % 6) * batch
        state, metrics = step(state, {"image": images[j:j + batch], "label": labels[j:j + batch]})
        losses.append(float(metrics["loss"]))
    return np.array(losses), state


@pytest.fixture(scope="module")
def float32_run():
    return _train("float32", None)


@pytest.mark.parametrize("param_dtype", [None, "bfloat16"])
def test_bfloat16_training_tracks_float32(float32_run, param_dtype):
    """bfloat16 activations (and optionally bfloat16 parameters in the forward pass) keep the
    loss curve within 0.05 of float32's at every one of 30 steps (measured: 0.006 and 0.010;
    bfloat16 keeps 8 significant bits), and the master weights and optimizer state stay
    float32."""
    ref_losses, _ = float32_run
    losses, state = _train("bfloat16", param_dtype)
    assert ref_losses[-6:].mean() < 0.7 * ref_losses[0]  # it learns: the comparison means something
    assert np.max(np.abs(losses - ref_losses)) < 0.05, (losses, ref_losses)
    dtypes = {x.dtype for x in jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)
              if jnp.issubdtype(x.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_param_cast_reaches_the_forward_pass():
    """With forward_param_dtype, the train step computes with bfloat16-rounded weights: its
    loss equals a float32 model's given the rounded weights, and differs from unrounded ones."""
    arch = {"size": "Ti", "patch": 2, "width": 32, "depth": 1, "mlp_dim": 64, "heads": 2}
    module = models.build("vit", arch, 10)
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 3)))
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    flat["head/kernel"] = jax.random.normal(jax.random.PRNGKey(3), flat["head/kernel"].shape)
    params = traverse_util.unflatten_dict(flat, sep="/")
    rounded = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params)
    images, labels = _digits(8)
    batch = {"image": images[:8], "label": labels[:8]}
    tx, trainable = optax.sgd(0.0), list(flat)

    def loss(param_dtype, weights):
        step = steps.make_train_step(module, tx, trainable, param_dtype=param_dtype)
        state = state_lib.create({"params": weights}, tx, trainable, seed=0)
        _, metrics = jax.jit(step)(state, batch)
        return float(metrics["loss"])

    assert loss("bfloat16", params) == pytest.approx(loss(None, rounded), rel=1e-6)
    assert loss("bfloat16", params) != pytest.approx(loss(None, params), rel=1e-6)


# ------------------------------------------------------------------ one-pass BatchNorm
def _low_contrast(seed=0, shape=(8, 5, 5, 6)):
    """Channels with means 0..1e4 and spreads of 1e-2..1: a large mean against a small spread
    is where an unshifted one-pass variance loses every digit."""
    x = jax.random.normal(jax.random.PRNGKey(seed), shape)
    return x * jnp.logspace(-2, 0, shape[-1]) + jnp.array([0, 1, -30, 1e3, 1e4, 5e3])


def test_one_pass_batch_moments_keep_two_pass_precision_where_unshifted_fails():
    x = _low_contrast()
    exact = np.asarray(x, np.float64).reshape(-1, 6)
    exact_var = ((exact - exact.mean(0)) ** 2).mean(0)
    mean, var = layers.batch_moments(x)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, exact_var, rtol=1e-3)
    _, unshifted = nn.normalization._compute_stats(x, (0, 1, 2), None, use_fast_variance=True)
    assert np.max(np.abs(np.asarray(unshifted) / exact_var - 1)) > 0.5  # what the shift avoids


def test_one_pass_moments_over_four_devices_equal_the_global_batch():
    """Under pmap each device shifts by its own first example and the pairs are combined: the
    same statistics as one device holding the whole batch (vmap stands in for 4 devices)."""
    x = _low_contrast(1)
    whole = layers.batch_moments(x)
    shards = jax.vmap(lambda s: layers.batch_moments(s, "devices"), axis_name="devices")(
        x.reshape(4, 2, *x.shape[1:]))
    for ours, theirs in zip(shards, whole):
        np.testing.assert_allclose(ours, np.broadcast_to(theirs, ours.shape), rtol=1e-4)


def test_one_pass_batchnorm_equals_flax_two_pass_batchnorm_values_gradients_and_statistics():
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 5, 5, 6)) + jnp.arange(6.0)
    ours = layers.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5,
                           use_fast_variance=False)
    variables = flax_bn.init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(variables)
    variables = {"params": {"scale": jnp.linspace(0.5, 2, 6), "bias": jnp.linspace(-1, 1, 6)},
                 "batch_stats": {"mean": jnp.full(6, 3.0), "var": jnp.full(6, 2.0)}}
    weights = jax.random.normal(jax.random.PRNGKey(3), x.shape)

    def loss(module, params, x):
        y, stats = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y) * weights), stats

    (value, stats), grads = jax.value_and_grad(loss, (1, 2), has_aux=True)(
        ours, variables["params"], x)
    (their_value, their_stats), their_grads = jax.value_and_grad(loss, (1, 2), has_aux=True)(
        flax_bn, variables["params"], x)
    np.testing.assert_allclose(value, their_value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((stats, grads)), jax.tree.leaves((their_stats, their_grads))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)

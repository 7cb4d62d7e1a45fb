"""Layers the families share: the classifier head every family ends with, stochastic depth
(drop path) and BatchNorm as every BatchNorm family runs it (frozen on running statistics,
synchronised under pmap)."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models import names


# The text families' heads start as HF's `_init_weights` draws every Linear: normal(0.02)
# (initializer_range of BertConfig / GPT2Config). Vision heads start at zero (big_vision).
HF_TEXT_INIT = nn.initializers.normal(stddev=0.02)


def classifier_head(module, features, train, dropout=0.0, use_bias=True,
                    kernel_init=nn.initializers.zeros):
    """Logits from pooled `features` (batch, features), called in `module`'s compact __call__
    after its forward pass (outside peft.intercept: the head trains whole). Sows `features` as
    the head's input (names.INTERMEDIATES/HEAD_INPUT, for feature probes), applies dropout at
    rate `dropout` in training, then the Dense names.HEAD (module.num_classes outputs,
    module.dtype; zero-initialised unless `kernel_init` says otherwise; parameters
    head/kernel and head/bias, or no bias as GPT-2's `score`); logits in float32."""
    module.sow(names.INTERMEDIATES, names.HEAD_INPUT, features)
    features = nn.Dropout(dropout)(features, deterministic=not train)
    return nn.Dense(module.num_classes, kernel_init=kernel_init, use_bias=use_bias,
                    dtype=module.dtype, name=names.HEAD)(features).astype(jnp.float32)


HIDDEN_HEADS = ("tanh", "relu")  # TwoLayerHead activations


class TwoLayerHead(nn.Module):
    """A classifier with a hidden layer, trained (and reset on transfer) as a whole, named
    names.HEAD: head/dense -> activation -> head/out. "tanh" is HF's
    RobertaClassificationHead (dropout, dense, tanh, dropout, out_proj), "relu"
    DistilBertForSequenceClassification's (pre_classifier, ReLU, dropout, classifier).
    Both layers start as HF draws them (HF_TEXT_INIT): a zero hidden layer would give
    neither layer a gradient."""

    num_classes: int
    activation: str = "tanh"
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train):
        if self.activation == "tanh":
            x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.Dense(x.shape[-1], kernel_init=HF_TEXT_INIT, dtype=self.dtype, name="dense")(x)
        x = jnp.tanh(x) if self.activation == "tanh" else nn.relu(x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.Dense(self.num_classes, kernel_init=HF_TEXT_INIT, dtype=self.dtype, name="out")(x)


def two_layer_head(module, features, train, activation, dropout=0.0):
    """Logits from `features` through a TwoLayerHead, its input sown as classifier_head's."""
    module.sow(names.INTERMEDIATES, names.HEAD_INPUT, features)
    return TwoLayerHead(module.num_classes, activation, dropout, module.dtype,
                        name=names.HEAD)(features, train).astype(jnp.float32)


def drop_path_rates(rate, count):
    """Linear rule over depth (Huang et al. 2016; timm's `torch.linspace(0, rate, depth)`):
    0 for the first residual block, `rate` for the last."""
    if count <= 1:
        return [rate] * count
    return [rate * i / (count - 1) for i in range(count)]


class DropPath(nn.Module):
    """Drops a residual branch for whole examples with probability `rate` and scales the
    kept ones by 1/(1-rate), so the expectation is unchanged; the identity in eval."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic):
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def batch_moments(x, axis_name=None):
    """Per-channel mean and variance of `x` over every axis but the last (and over the
    devices of `axis_name` under pmap), in float32 at least, from one read of `x`.

    Shifted one-pass moments: with c the first example's per-channel mean (a constant to
    autodiff), E[x - c] and E[(x - c)^2] are two sums over the same elements, which XLA fuses
    into one pass, where the two-pass E[(x - E[x])^2] (PyTorch's and Keras' formula) must read
    every activation again. The shift keeps the two-pass precision: x - c is of the order of
    the spread between examples, so no channel loses its variance to a large mean as in
    flax's unshifted E[x^2] - E[x]^2 (`use_fast_variance`). Under pmap each device shifts by
    its own first example, so the devices' (mean, variance) pairs are gathered (one
    collective) and combined exactly: the mean of the means, and the mean of the variances
    plus the variance of the means (equal shards)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    axes = tuple(range(x.ndim - 1))
    shift = jax.lax.stop_gradient(x[0].mean(tuple(range(x.ndim - 2))))
    centred = x - shift
    first, second = centred.mean(axes), jnp.square(centred).mean(axes)
    mean, var = shift + first, jnp.maximum(second - jnp.square(first), 0.0)
    if axis_name is None:
        return mean, var
    means, variances = jax.lax.all_gather(jnp.stack([mean, var]), axis_name).swapaxes(0, 1)
    mean = means.mean(0)
    return mean, variances.mean(0) + jnp.square(means - mean).mean(0)


class BatchNorm(nn.BatchNorm):
    """flax's BatchNorm (same parameters, statistics and momentum convention) with the batch
    statistics of `batch_moments`: one pass over the activations instead of two."""

    @nn.compact
    def __call__(self, x, use_running_average=None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            initializing = self.is_initializing()
            mean, var = batch_moments(x, None if initializing else self.axis_name)
            if not initializing:
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        kept = [x]
        if self.use_scale:
            kept.append(self.param("scale", self.scale_init, features, self.param_dtype))
            y = y * kept[-1]
        if self.use_bias:
            kept.append(self.param("bias", self.bias_init, features, self.param_dtype))
            y = y + kept[-1]
        return y.astype(self.dtype or jnp.result_type(*kept))


def batch_norm(module, name, train, momentum, epsilon, use_scale=True):
    """BatchNorm `name` inside `module` (fields frozen_norms, bn_axis_name, dtype): on running
    statistics when not training or when listed in module.frozen_norms, so a frozen group's
    statistics never move; batch statistics averaged over `bn_axis_name` under pmap.
    `momentum` is flax's (the kept fraction of the old average: Keras' own convention;
    PyTorch's 0.1 is flax's 0.9). The batch variance is as exact as PyTorch's and Keras'
    two-pass E[(x - E[x])^2] from one pass (`batch_moments`)."""
    path = "/".join((*module.scope.path, name))
    return BatchNorm(use_running_average=not train or path in module.frozen_norms,
                     use_scale=use_scale, momentum=momentum, epsilon=epsilon,
                     dtype=module.dtype, axis_name=module.bn_axis_name, name=name)

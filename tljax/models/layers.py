"""Regularisation layers the families share: stochastic depth (drop path)."""
import flax.linen as nn
import jax
import jax.numpy as jnp


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

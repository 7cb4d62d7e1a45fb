"""Optimizers for the trainable parameters: per-label optax chains joined by optax.partition.

The optimizer only ever sees the trainable subtree of the parameters, so frozen
parameters hold no optimizer state and no transform (clipping, weight decay,
grad-norm logging) can touch or keep alive their gradients.
"""
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tljax.errors import UserError


def lr_schedule(cfg, total_steps):
    """Base learning rate per global step: linear warmup, then cosine/linear/step decay or constant."""
    warmup = min(cfg.warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "steps":
        # Boundaries are absolute steps (BiT-HyperRule); each divides the lr by 10.
        after = optax.piecewise_constant_schedule(
            cfg.lr, {int(b) - warmup: 0.1 for b in cfg.decay_boundaries})
    else:
        raise UserError(f"unknown optim.schedule {cfg.schedule!r}; use cosine, linear, steps or constant")
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def _decay_mask(params):
    """Weight decay applies to kernels and embeddings (ndim > 1), not biases or norm scales."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def base_transform(cfg, learning_rate):
    """One label's optimizer with its own learning-rate function."""
    decay = [optax.add_decayed_weights(cfg.weight_decay, _decay_mask)] if cfg.weight_decay else []
    mu_dtype = jnp.dtype(cfg.mu_dtype) if cfg.mu_dtype else None  # e.g. bfloat16 momentum
    if cfg.name == "sgd":
        return optax.chain(*decay, optax.sgd(learning_rate, momentum=cfg.momentum or None,
                                             nesterov=cfg.nesterov, accumulator_dtype=mu_dtype))
    if cfg.name == "adam":
        return optax.chain(*decay, optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, mu_dtype=mu_dtype))
    if cfg.name == "adamw":
        return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                           mask=_decay_mask, mu_dtype=mu_dtype)
    raise UserError(f"unknown optim.name {cfg.name!r}; use sgd, adam or adamw")


def _label_lr(schedule, mult, since):
    """A label's count starts at 0 when it starts training at step `since`."""
    return lambda count: mult * schedule(count + since)


def build(cfg, plan, phase_index, total_steps):
    """The optax transformation for one phase, over that phase's trainable subtree."""
    labels = plan.labels[phase_index]
    schedule = lr_schedule(cfg, total_steps)
    transforms = {label.key: base_transform(cfg, _label_lr(schedule, label.lr_mult, label.since))
                  for label in sorted(set(labels.values()))}
    label_tree = traverse_util.unflatten_dict({p: label.key for p, label in labels.items()}, sep="/")
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
    return optax.chain(*parts, optax.partition(transforms, label_tree))


def carry_over_state(old_state, fresh_state):
    """Opt-state surgery at a phase change: keep every leaf that exists, same shape, in both.

    Leaves are matched by key path (label name and parameter path), so labels that
    continue keep their moments and step count, and new labels start fresh.
    """
    old = {jax.tree_util.keystr(path): leaf
           for path, leaf in jax.tree_util.tree_flatten_with_path(old_state)[0]}

    def pick(path, leaf):
        previous = old.get(jax.tree_util.keystr(path))
        if previous is not None and jnp.shape(previous) == jnp.shape(leaf):
            return previous
        return leaf

    return jax.tree_util.tree_map_with_path(pick, fresh_state)

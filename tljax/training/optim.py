"""Optimizers for the trainable parameters: per-label optax chains joined by optax.partition.

The optimizer only ever sees the trainable subtree of the parameters, so frozen
parameters hold no optimizer state and no transform (clipping, weight decay,
grad-norm logging) can touch or keep alive their gradients.
"""
import re

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tljax.errors import UserError


def _schedule(kind, peak, warmup, total_steps, boundaries=()):
    """Linear warmup to `peak`, then cosine/linear decay to 0 at total_steps, constant, or /10
    after each of `boundaries` (steps from the start of this schedule). A boundary step itself
    keeps the old lr, as `tf.train.piecewise_constant` (task_adaptation trainer.py
    `get_train_op`: lr /10 from step b + 1) and big_transfer's bit_hyperrule.get_lr (`s < step`)."""
    warmup = min(warmup, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    if kind == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps)
    elif kind == "linear":
        after = optax.linear_schedule(peak, 0.0, decay_steps)
    elif kind == "constant":
        after = optax.constant_schedule(peak)
    elif kind == "steps":
        after = optax.piecewise_constant_schedule(peak, {int(b) + 1 - warmup: 0.1 for b in boundaries})
    else:
        raise UserError(f"unknown optim.schedule {kind!r}; use cosine, linear, steps or constant")
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def lr_schedule(cfg, total_steps):
    """Base learning rate per global step (decay_boundaries are absolute steps, as
    BiT-HyperRule gives them)."""
    return _schedule(cfg.schedule, cfg.lr, cfg.warmup_steps, total_steps, cfg.decay_boundaries)


def label_lr(cfg, total_steps, label):
    """A label's lr as a function of its own update count (0 at step `label.since`): the
    global schedule from that step on, or, for a restart, a schedule of its own over the
    remaining steps, or, for a label that freezes at `until`, one that reaches 0 there."""
    if label.until is not None:  # FreezeOut: the run's schedule, compressed to end at `until`,
        # without warmup: ajbrock/FreezeOut WRN.py starts each layer at lr/t_i and anneals it
        schedule = _schedule(cfg.schedule, cfg.lr, 0, label.until - label.since)
        return lambda count: label.lr_mult * schedule(count)
    if label.restart is None:
        schedule = lr_schedule(cfg, total_steps)
        return lambda count: label.lr_mult * schedule(count + label.since)
    warmup = cfg.warmup_steps if label.restart.warmup < 0 else label.restart.warmup
    peak = cfg.lr if label.restart.lr <= 0 else label.restart.lr
    boundaries = [int(b) - label.since for b in cfg.decay_boundaries if int(b) >= label.since]
    schedule = _schedule(cfg.schedule, peak, warmup, total_steps - label.since, boundaries)
    return lambda count: label.lr_mult * schedule(count)


def _path_of(key_path):
    return "/".join(str(getattr(k, "key", k)) for k in key_path)


def decay_rates(params, weight_decay, rules):
    """Per-parameter weight-decay rate: weight_decay x the multiplier of the first rule (regex,
    multiplier) whose regex fullmatches the '/'-joined path; 0 when none matches.

    The default rules decay kernels only, as big_vision does (`wd_mults`, `.*/kernel$`):
    biases, norm scales, ViT's cls token and position embeddings are never decayed."""
    compiled = [(re.compile(regex), float(mult)) for regex, mult in rules]

    def rate(key_path, _):
        path = _path_of(key_path)
        return weight_decay * next((m for r, m in compiled if r.fullmatch(path)), 0.0)

    return jax.tree_util.tree_map_with_path(rate, params)


def add_decayed_weights(weight_decay, rules):
    """updates + rate(path) * params, with rates from `decay_rates` (optax's own transform
    takes one rate for every parameter)."""
    def update(updates, state, params):
        rates = decay_rates(params, weight_decay, rules)
        return jax.tree.map(lambda u, p, r: u + r * p, updates, params, rates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def base_transform(cfg, learning_rate):
    """One label's optimizer with its own learning-rate function."""
    decay = ([add_decayed_weights(cfg.weight_decay, cfg.wd_rules)] if cfg.weight_decay else [])
    mu_dtype = jnp.dtype(cfg.mu_dtype) if cfg.mu_dtype else None  # e.g. bfloat16 momentum
    if cfg.name == "sgd":
        return optax.chain(*decay, optax.sgd(learning_rate, momentum=cfg.momentum or None,
                                             nesterov=cfg.nesterov, accumulator_dtype=mu_dtype))
    if cfg.name == "adam":
        return optax.chain(*decay, optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, mu_dtype=mu_dtype))
    if cfg.name == "adamw":  # Decoupled: decay added after Adam's scaling, before the lr.
        return optax.chain(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, mu_dtype=mu_dtype), *decay,
                           optax.scale_by_learning_rate(learning_rate))
    raise UserError(f"unknown optim.name {cfg.name!r}; use sgd, adam or adamw")


def build(cfg, plan, phase_index, total_steps):
    """The optax transformation for one phase, over that phase's trainable subtree."""
    labels = plan.labels[phase_index]
    transforms = {label.key: base_transform(cfg, label_lr(cfg, total_steps, label))
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

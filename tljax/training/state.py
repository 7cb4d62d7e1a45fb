"""The train state: one type for the loop, checkpoints, benchmarks and tests.

A state holds everything an uninterrupted run would carry from one step to the
next, so restoring it (plus the data position, which is the step) resumes exactly.
"""
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct, traverse_util

from tljax.training import optim


@struct.dataclass
class TrainState:
    step: jax.Array         # updates taken so far (int32 scalar)
    params: Any             # the whole parameter tree, frozen parts included
    batch_stats: Any        # BatchNorm running statistics ({} for models without)
    opt_state: Any          # optimizer state of the trainable subtree only
    rng: jax.Array          # base key; each step folds in its step number
    anchor: Any = None      # L2-SP reference weights (a copy of the initial params), or None
    ema: Any = None         # moving average of every parameter that has trained so far
    #                         (never-trained ones equal their value: no copy), or None
    ema_batch_stats: Any = None  # moving average of the BatchNorm statistics, with `ema`

    def to_checkpoint(self):
        """A dict for orbax (which saves dicts of arrays; None leaves are left out)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__
                if getattr(self, name) is not None}

    @classmethod
    def from_checkpoint(cls, tree):
        return cls(**tree)


def split_params(params, trainable_paths):
    """(trainable subtree, frozen flat dict) of a nested params dict."""
    flat = traverse_util.flatten_dict(params, sep="/")
    keep = set(trainable_paths)
    trainable = traverse_util.unflatten_dict({p: v for p, v in flat.items() if p in keep}, sep="/")
    frozen = {p: v for p, v in flat.items() if p not in keep}
    return trainable, frozen


def merge_params(trainable, frozen):
    flat = dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable, sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")


def init_opt_state(tx, params, trainable_paths):
    """Optimizer state for the trainable subtree of `params`."""
    trainable, _ = split_params(params, trainable_paths)
    return tx.init(trainable)


def create(variables, tx, trainable_paths, seed, with_anchor=False, with_ema=False,
           ema_paths=None):
    """The state at step 0: `variables` ({'params', optional 'batch_stats'}) and a fresh optimizer.
    The EMA covers `ema_paths` (default: the trainable ones; a restore template of a later
    phase names every parameter trained so far).

    The L2-SP anchor and the EMA are copies, not aliases, of the params: the train step
    donates the state, and one buffer cannot be donated twice.
    """
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=init_opt_state(tx, params, trainable_paths),
        rng=jax.random.PRNGKey(seed),
        anchor=jax.tree.map(jnp.array, params) if with_anchor else None,
        ema=ema_for(None, params, ema_paths or trainable_paths) if with_ema else None,
        ema_batch_stats=(jax.tree.map(jnp.array, variables.get("batch_stats", {}))
                         if with_ema else None))


def ema_for(ema, params, trainable_paths):
    """The EMA at the start of a phase: every average kept (a group that freezes goes on
    averaging toward its final weights, as timm's ModelEmaV2 averages every parameter, so
    the EMA model does not jump at the boundary), and averages started from the current
    weights for parameters that start training."""
    old = traverse_util.flatten_dict(ema, sep="/") if ema else {}
    flat = traverse_util.flatten_dict(params, sep="/")
    new = {p: jnp.array(flat[p]) for p in trainable_paths if p not in old}
    return traverse_util.unflatten_dict({**old, **new}, sep="/")


def update_ema(ema, ema_batch_stats, params, batch_stats, decay):
    """One EMA step toward the current parameters and BatchNorm statistics."""
    flat = traverse_util.flatten_dict(params, sep="/")
    averaged = {p: decay * e + (1 - decay) * flat[p]
                for p, e in traverse_util.flatten_dict(ema, sep="/").items()}
    stats = jax.tree.map(lambda e, b: decay * e + (1 - decay) * b, ema_batch_stats, batch_stats)
    return traverse_util.unflatten_dict(averaged, sep="/"), stats


def ema_params(state):
    """The full parameter tree with every averaged parameter replaced by its EMA."""
    flat = traverse_util.flatten_dict(state.params, sep="/")
    flat.update(traverse_util.flatten_dict(state.ema, sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")


def ema_variables(state):
    """{'params', 'batch_stats'} of the EMA model."""
    return {"params": ema_params(state), "batch_stats": state.ema_batch_stats}


def next_phase(state, tx, trainable_paths):
    """`state` with the optimizer state of the next phase: labels that continue keep their
    state (moments and step count), labels that start get fresh state.

    Pure and traceable: the caller jits it, so on sharded multi-process state the
    surgery runs on the devices and never fetches a global array to the host.
    """
    fresh = init_opt_state(tx, state.params, trainable_paths)
    ema = ema_for(state.ema, state.params, trainable_paths) if state.ema is not None else None
    return state.replace(opt_state=optim.carry_over_state(state.opt_state, fresh), ema=ema)


def is_finite(state):
    """True when params, batch statistics and optimizer state hold no NaN or Inf (traceable)."""
    leaves = [x for x in jax.tree.leaves((state.params, state.batch_stats, state.opt_state,
                                          state.ema, state.ema_batch_stats))
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

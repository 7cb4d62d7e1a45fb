"""The train state: one type for the loop, checkpoints, benchmarks and tests.

A state holds everything an uninterrupted run would carry from one step to the
next, so restoring it (plus the data position, which is the step) resumes exactly.
"""
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct, traverse_util

from tljax import optim


@struct.dataclass
class TrainState:
    step: jax.Array         # updates taken so far (int32 scalar)
    params: Any             # the whole parameter tree, frozen parts included
    batch_stats: Any        # BatchNorm running statistics ({} for models without)
    opt_state: Any          # optimizer state of the trainable subtree only
    rng: jax.Array          # base key; each step folds in its step number
    anchor: Any = None      # L2-SP reference weights (a copy of the initial params), or None
    ema: Any = None         # moving average of the trainable subtree (frozen params: none), or None

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


def create(variables, tx, trainable_paths, seed, with_anchor=False, with_ema=False):
    """The state at step 0: `variables` ({'params', optional 'batch_stats'}) and a fresh optimizer.

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
        ema=ema_for(None, params, trainable_paths) if with_ema else None)


def ema_for(ema, params, trainable_paths):
    """The EMA of a phase's trainable paths: kept where it exists, started from the current
    weights for parameters that start training; none for frozen ones."""
    old = traverse_util.flatten_dict(ema, sep="/") if ema else {}
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {p: old[p] if p in old else jnp.array(flat[p]) for p in trainable_paths}, sep="/")


def ema_params(state):
    """The full parameter tree with the trainable parameters replaced by their EMA."""
    flat = traverse_util.flatten_dict(state.params, sep="/")
    flat.update(traverse_util.flatten_dict(state.ema, sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")


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
    leaves = [x for x in jax.tree.leaves((state.params, state.batch_stats, state.opt_state, state.ema))
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

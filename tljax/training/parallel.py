"""The two compiled data-parallel paths, behind one small interface used by the train loop.

- `jit` (default): one SPMD program over a 1-D `Mesh` of every device of every process;
  the batch is sharded on the `data` axis, parameters and optimizer state replicated.
- `fsdp`: the same, with large parameters and optimizer state sharded over `data` too.
- `pmap`: per-device replicas of the state, gradients and BatchNorm statistics averaged
  over the device axis. One process only (for several hosts use `jit`).
"""
import math
import os

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from tljax import distributed
from tljax.training.state import is_finite
from tljax.errors import UserError


class Jit:
    """`fsdp=True` also shards parameters and optimizer state over the `data` axis (ZeRO-3
    style): each large tensor is split along its largest dimension divisible by the device
    count, and XLA gathers it where a step needs it whole."""

    axis_name = None
    FSDP_MIN_SIZE = 2**14  # smaller tensors stay replicated: sharding them costs more than it saves

    def __init__(self, fsdp=False):
        self.fsdp = fsdp
        # Auto axes: XLA propagates shardings (explicit-mode typing rejects e.g. ViT's
        # concatenation of a replicated class token with a sharded batch).
        mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
        self.replicated = NamedSharding(mesh, P())
        self.sharded = NamedSharding(mesh, P("data"))
        self._is_finite = jax.jit(is_finite, out_shardings=self.replicated)  # compiled once

    def _state_sharding(self, x):
        """Where a state leaf (an array or a ShapeDtypeStruct) lives."""
        n = jax.device_count()
        shape = tuple(x.shape)
        if not self.fsdp or n == 1 or math.prod(shape) < self.FSDP_MIN_SIZE:
            return self.replicated
        axes = [i for i in sorted(range(len(shape)), key=lambda i: -shape[i]) if shape[i] % n == 0]
        if not axes:
            return self.replicated
        spec = [None] * len(shape)
        spec[axes[0]] = "data"
        return NamedSharding(self.replicated.mesh, P(*spec))

    def put_state(self, state):
        """Host state -> global arrays, replicated (or FSDP-sharded)."""
        return distributed.place(state, self._state_sharding)

    def one_copy(self, state):
        """The state as one copy of global arrays (what is saved and exported)."""
        return state

    def map_state(self, fn, state):
        """fn(state) compiled over the global state (shardings kept), e.g. a phase change:
        it runs on the devices of every process, never through the host."""
        shardings = jax.tree.map(self._state_sharding, jax.eval_shape(fn, state))
        return jax.jit(fn, out_shardings=shardings, donate_argnums=(0,))(state)

    def build_state(self, fn, variables):
        """fn(variables) as one program whose outputs land where the state lives: the
        optimizer's zeros and the state's copies are made on the devices, not op by op."""
        variables = self.put_state(variables)
        shardings = jax.tree.map(self._state_sharding, jax.eval_shape(fn, variables))
        return jax.jit(fn, out_shardings=shardings)(variables)

    def restore_template(self, state):
        """Where the state (as build_state made it) is restored to: where it lives."""
        return state

    def from_restored(self, state):
        return state

    def all_finite(self, state):
        """Whether the whole (possibly sharded) state is finite: one reduction on the devices."""
        return bool(self._is_finite(state))

    def put_batch(self, batch):
        return {k: jax.make_array_from_process_local_data(self.sharded, v) for k, v in batch.items()}

    def compile_train(self, step):
        """An object with `.lower(state, batch)`; the state keeps the shardings it comes with."""
        parent = self

        class _Lowerable:
            def lower(self, state, batch):
                state_shardings = jax.tree.map(lambda x: x.sharding, state)
                return jax.jit(step, out_shardings=(state_shardings, parent.replicated),
                               donate_argnums=(0,)).lower(state, batch)

        return _Lowerable()

    def compile_eval(self, eval_step):
        return jax.jit(eval_step, out_shardings=self.replicated)

    def fetch(self, tree):
        return jax.device_get(tree)

    def to_host(self, tree):
        """Numpy copies of (possibly sharded, multi-process) global arrays."""
        if jax.process_count() == 1:
            return jax.device_get(tree)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)


class Pmap:
    axis_name = "batch"

    def __init__(self):
        if jax.process_count() > 1:
            raise UserError("parallelism='pmap' runs on one process; use parallelism='jit' "
                            "for multi-host runs")
        self.devices = jax.local_devices()
        # pmap takes arrays whose leading axis is split over the devices.
        mesh = jax.make_mesh((len(self.devices),), ("batch",), axis_types=(AxisType.Auto,))
        self.per_device = NamedSharding(mesh, P("batch"))
        self._is_finite = jax.jit(is_finite)
        # Whole trees in one program each: op by op, every leaf shape compiled a program of its
        # own (a tiny ResNet's state: ~140 programs, half the time of a short run).
        n = len(self.devices)
        self._replicate = jax.jit(
            lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree),
            out_shardings=self.per_device)
        self._first = jax.jit(lambda tree: jax.tree.map(lambda x: x[0], tree),
                              out_shardings=NamedSharding(mesh, P()))

    def put_state(self, state):
        return self._replicate(state)

    def one_copy(self, state):
        return self._first(state)

    def map_state(self, fn, state):
        return jax.pmap(fn, axis_name=self.axis_name, donate_argnums=(0,))(state)

    def build_state(self, fn, variables):
        return jax.pmap(fn, axis_name=self.axis_name)(self.put_state(variables))

    def all_finite(self, state):
        return bool(self._is_finite(state))

    def restore_template(self, state):
        """Where one copy of the (replicated) state is restored to: the first device."""
        first = jax.sharding.SingleDeviceSharding(self.devices[0])
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=first),
                            state)

    def from_restored(self, state):
        return self.put_state(state)

    def put_batch(self, batch):
        n = len(self.devices)
        return {k: jax.device_put(v.reshape(n, v.shape[0] // n, *v.shape[1:]), self.per_device)
                for k, v in batch.items()}

    def compile_train(self, step):
        return jax.pmap(step, axis_name=self.axis_name, donate_argnums=(0,))

    def compile_eval(self, eval_step):
        return jax.pmap(eval_step, axis_name=self.axis_name)

    def fetch(self, tree):
        return jax.device_get(self._first(tree))

    def to_host(self, tree):
        return jax.device_get(tree)


def build(name):
    if name in ("jit", "fsdp"):
        return Jit(fsdp=name == "fsdp")
    if name == "pmap":
        return Pmap()
    raise UserError(f"unknown parallelism {name!r}; use 'jit', 'fsdp' or 'pmap'")


def host_memory_bytes():
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_memory_bytes():
    """The memory one local device can allocate: the accelerator's own limit, or for CPU
    devices their share of the host's memory."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return host_memory_bytes() // jax.local_device_count()

"""The two compiled data-parallel paths, behind one small interface used by the train loop.

- `jit` (default): one SPMD program over a 1-D `Mesh` of every device of every process;
  the batch is sharded on the `data` axis, parameters and optimizer state replicated.
- `pmap`: per-device replicas of the state, gradients averaged with `pmean`. One
  process only (for several hosts use `jit`).
"""
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from tljax import distributed
from tljax.errors import UserError


class Jit:
    axis_name = None

    def __init__(self):
        # Auto axes: XLA propagates shardings (explicit-mode typing rejects e.g. ViT's
        # concatenation of a replicated class token with a sharded batch).
        mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
        self.replicated = NamedSharding(mesh, P())
        self.sharded = NamedSharding(mesh, P("data"))

    def put_state(self, state):
        """Host state -> replicated global arrays."""
        return distributed.replicate(state, self.replicated)

    def host_state(self, state):
        """The state as one copy (what is saved, exported and carried between phases)."""
        return state

    def restore_template(self, state):
        return self.put_state(state)

    def from_restored(self, state):
        return state

    def put_batch(self, batch):
        return {k: jax.make_array_from_process_local_data(self.sharded, v) for k, v in batch.items()}

    def compile_train(self, step):
        return jax.jit(step, in_shardings=(self.replicated, self.sharded),
                       out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

    def compile_eval(self, eval_step):
        return jax.jit(eval_step, in_shardings=(self.replicated, self.replicated, self.sharded),
                       out_shardings=self.replicated)

    def fetch(self, tree):
        return jax.device_get(tree)


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

    def put_state(self, state):
        n = len(self.devices)
        return jax.tree.map(
            lambda x: jax.device_put(jnp.broadcast_to(x, (n, *jnp.shape(x))), self.per_device), state)

    def host_state(self, state):
        return jax.tree.map(lambda x: x[0], state)

    def restore_template(self, state):
        return jax.device_put(state, self.devices[0])

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
        return jax.device_get(jax.tree.map(lambda x: x[0], tree))


def build(name):
    if name == "jit":
        return Jit()
    if name == "pmap":
        return Pmap()
    raise UserError(f"unknown parallelism {name!r}; use 'jit' or 'pmap'")

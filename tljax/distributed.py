"""Multi-process start-up on JAX's multi-controller runtime.

One process per host (or per GPU). `initialize` is a no-op for a single process;
on SLURM and TPU pods JAX detects the cluster itself; otherwise pass the
coordinator address, process count and id explicitly (as launch/local_multiprocess.sh does).
"""
import os

import jax
from absl import logging

CLUSTER_HINTS = ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address="", num_processes=0, process_id=-1, cpu_collectives=""):
    """Starts jax.distributed when launched as several processes; returns the process count."""
    if cpu_collectives:  # CPU-only multi-process runs (tests, laptops) need a collectives backend.
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or any(
            k in os.environ for k in CLUSTER_HINTS[1:]):
        jax.distributed.initialize()  # cluster auto-detection
    else:
        return 1
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count()


def place(tree, sharding_of):
    """Values identical on every process -> global arrays, leaf x placed with sharding_of(x)."""
    def put(x):
        x = jax.numpy.asarray(x) if not hasattr(x, "shape") else x
        sharding = sharding_of(x)
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = jax.device_get(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree)


def barrier(name):
    """Waits until every process reaches the barrier `name` (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_zero_failed(failed):
    """Every process learns whether process 0 failed a check only it can make (e.g. the lock)."""
    if jax.process_count() == 1:
        return failed
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))

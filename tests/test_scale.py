"""Scale-out mechanics: gradient accumulation and multi-process training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import common
from tljax import freezing, models, runs, weights
from tljax.training import optim, steps
from tljax.training import state as state_lib


def test_gradient_accumulation_gives_the_large_batch_update():
    module = models.build("bit", {"block_counts": (1, 1), "base_width": 4, "gn_groups": 4,
                                  "stem": "small"}, 5)
    variables = weights.init_variables(module, (8, 8, 3))
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    plan = freezing.make_plan("last_k:1", models.groups(module), paths)
    cfg = common.base().optim
    cfg.name, cfg.lr, cfg.schedule = "adam", 0.01, "constant"
    tx = optim.build(cfg, plan, 0, 10)
    state = state_lib.create(variables, tx, plan.phases[0].trainable_paths(), seed=0)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3)),
             "label": jnp.arange(16) % 5}
    results = {}
    for accum in (1, 4):
        step = jax.jit(steps.make_train_step(module, tx, plan.phases[0].trainable_paths(),
                                             accum_steps=accum))
        results[accum] = step(state, batch)
    (big, big_metrics), (acc, acc_metrics) = results[1], results[4]
    np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-6)
    assert acc_metrics["accuracy"] == big_metrics["accuracy"]
    for path, value in traverse_util.flatten_dict(big.params, sep="/").items():
        np.testing.assert_allclose(traverse_util.flatten_dict(acc.params, sep="/")[path], value,
                                   rtol=1e-5, atol=1e-7, err_msg=path)
    moved = traverse_util.flatten_dict(acc.params, sep="/")["head/kernel"]
    assert np.any(moved != 0)


_PROCESS_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if {num_processes} > 1:
    jax.distributed.initialize(coordinator_address={address!r}, num_processes={num_processes},
                               process_id={process_id})
assert jax.device_count() == 4, jax.devices()
from tests.conftest import tiny_config
from tljax import runs
from tljax.training import parallel
parallel.Jit.FSDP_MIN_SIZE = 1  # shard even the tiny model's tensors over both processes
for freeze, extra in SCHEDULES:
    runs.run(tiny_config({data_dir!r}, "", freeze=freeze, total_steps=6, export_weights=True,
                          checkpoint_every=3, parallelism="fsdp",
                          **{{"model.init": {init!r}, **extra}}), {workdir!r} + "/" + freeze)
# A feature probe: each process extracts its shard of every set, process 0 writes the cache.
runs.run(tiny_config({data_dir!r}, "", **{{"model.init": {init!r}, "probe.method": "ridge"}}),
          {workdir!r} + "/probe")
"""
# Multi-phase schedules change phase on state sharded across processes; gradual also runs
# every augmentation and regulariser: mixup/CutMix pairs examples across the two processes'
# halves of the batch, RandAugment, dropout and drop path draw random numbers, EMA is state.
EVERY_REGULARISER = {"data.mixup_alpha": 0.4, "data.cutmix_alpha": 1.0, "label_smoothing": 0.1,
                     "model.drop_path": 0.2, "model.dropout": 0.1, "ema.decay": 0.9,
                     "ema.warmup": True, "ema.export": True,
                     "data.pp_train": "resize(8)|gray_to_rgb|randaug(2, 9)|value_range(-1,1)"}
# lp_ft also trains LoRA (unmerged in BiT exports, so its factors are compared too).
SCHEDULES = [("lp_ft:lp_steps=3+lora:r=2", {}), ("gradual:every=2", EVERY_REGULARISER)]


def _launch(num_processes, workdir, data_dir, init):
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT, cpu_devices_flags

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=cpu_devices_flags(4 // num_processes))
    procs = [subprocess.Popen(
        [sys.executable, "-c", f"SCHEDULES = {SCHEDULES!r}\n" + _PROCESS_SCRIPT.format(
            root=ROOT, num_processes=num_processes, address=address, process_id=i,
            data_dir=data_dir, init=init, workdir=workdir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(num_processes)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_two_fsdp_processes_end_with_the_parameters_and_losses_of_one(tmp_path, data_dir,
                                                                   source_weights):
    from tests.helpers import exported_params, records

    _launch(1, str(tmp_path / "one"), data_dir, source_weights)
    _launch(2, str(tmp_path / "two"), data_dir, source_weights)
    for schedule, _ in SCHEDULES:
        one, two = str(tmp_path / "one" / schedule), str(tmp_path / "two" / schedule)
        np.testing.assert_allclose([r["loss"] for r in records(two)],
                                   [r["loss"] for r in records(one)], rtol=1e-5, err_msg=schedule)
        exported_one, exported_two = exported_params(one), exported_params(two)
        assert exported_one.keys() == exported_two.keys()
        for path, value in exported_one.items():
            np.testing.assert_allclose(exported_two[path], value, rtol=2e-5, atol=1e-6,
                                       err_msg=f"{schedule} {path}")
    for which in ("train", "validation", "test"):  # features gathered from both processes
        with np.load(tmp_path / "one" / "probe" / "features" / f"{which}.npz") as one, \
                np.load(tmp_path / "two" / "probe" / "features" / f"{which}.npz") as two:
            np.testing.assert_array_equal(two["y"], one["y"], err_msg=which)  # same order
            np.testing.assert_allclose(two["x"], one["x"], rtol=1e-5, atol=1e-6, err_msg=which)
    ema_one = exported_params(str(tmp_path / "one" / "gradual:every=2"), "ema.safetensors")
    ema_two = exported_params(str(tmp_path / "two" / "gradual:every=2"), "ema.safetensors")
    for path, value in ema_one.items():
        np.testing.assert_allclose(ema_two[path], value, rtol=2e-5, atol=1e-6, err_msg=path)


def test_accumulation_runs_with_frozen_batchnorm_or_when_microbatch_stats_are_accepted(
        make_config, tmp_path):
    arch = {"depth": 18, "base_width": 4, "stem": "small"}
    for name, overrides in (("frozen", {"freeze": "linear_probe"}),
                            ("accepted", {"accum_bn_microbatch_stats": True})):
        config = make_config(accum_steps=2, total_steps=2, **overrides,
                             **{"model.name": "resnet", "model.arch": arch})
        assert runs.run(config, str(tmp_path / name))["status"] == "done"

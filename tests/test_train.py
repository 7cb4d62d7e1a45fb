"""End-to-end training behaviour: resume, linear probe, multi-device, init weights."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers import exported_params, records
from tljax import train
from tljax.data import pipeline
from tljax.errors import UserError
from tljax.weights import tljax_format


class _Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch, batches):
    """Makes the train stream raise after `batches` batches, like a killed job."""
    real = pipeline.train_batches

    def limited(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == batches:
                raise _Interrupt()
            yield batch

    monkeypatch.setattr(train.data, "train_batches", limited)


@pytest.mark.parametrize("freeze", ["full", "lp_ft:lp_steps=6"])
def test_resume_ends_bit_identical_to_uninterrupted_run(make_config, tmp_path, monkeypatch,
                                                        source_weights, freeze):
    config = make_config("", freeze=freeze, export_weights=True, checkpoint_every=4,
                         **{"model.init": source_weights, "optim.name": "adam",
                            "optim.lr": 0.01})
    whole = str(tmp_path / "whole")
    train.run(config, whole)

    broken = str(tmp_path / "broken")
    with monkeypatch.context() as m:
        _interrupt_after(m, 7)  # Dies in step 8; the last checkpoint is step 4.
        with pytest.raises(_Interrupt):
            train.run(config, broken)
    assert sorted(os.listdir(os.path.join(broken, "checkpoints"))) == ["4"]
    summary = train.run(config, broken)

    a, b = exported_params(whole), exported_params(broken)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    assert summary["final_accuracy"] == json.load(open(os.path.join(whole, "summary.json")))["final_accuracy"]
    losses = {r["step"]: r["loss"] for r in records(whole)}
    resumed = {r["step"]: r["loss"] for r in records(broken) if r["step"] > 4}
    assert all(losses[s] == loss for s, loss in resumed.items())


def test_linear_probe_leaves_every_backbone_parameter_bit_identical(make_config, tmp_path,
                                                                    source_weights):
    config = make_config("", freeze="linear_probe", export_weights=True,
                         **{"model.init": source_weights, "optim.lr": 0.1})
    train.run(config, str(tmp_path))
    before = exported_params(os.path.dirname(source_weights))
    after = exported_params(str(tmp_path))
    for path, value in after.items():
        if path.startswith("head/"):
            assert np.abs(value).sum() > 0, "the head should have trained"
        else:
            np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_init_weights_are_loaded_and_head_reset(make_config, tmp_path, source_weights):
    config = make_config("", freeze="linear_probe", total_steps=1, export_weights=True,
                         **{"model.init": source_weights, "optim.lr": 0.0})
    train.run(config, str(tmp_path))
    before, after = exported_params(os.path.dirname(source_weights)), exported_params(str(tmp_path))
    assert np.any(before["head/kernel"] != 0)
    assert np.all(after["head/kernel"] == 0)
    np.testing.assert_array_equal(after["stage1/unit1/conv1/kernel"], before["stage1/unit1/conv1/kernel"])


def test_mismatched_init_weights_list_the_offending_keys(make_config, tmp_path, source_weights):
    config = make_config("", **{"model.init": source_weights,
                                "model.arch": {"block_counts": (1, 2), "base_width": 4,
                                               "gn_groups": 4, "stem": "small"}})
    with pytest.raises(UserError, match=r"missing params: stage2/unit2/"):
        train.run(config, str(tmp_path))
    config = make_config("", **{"model.init": source_weights, "data.pp_eval": "resize(8)|gray_to_rgb"})
    with pytest.raises(UserError, match=r"expect inputs normalised by 'value_range\(-1,1\)'"):
        train.run(config, str(tmp_path / "pp"))


def test_init_norm_takes_the_normalisation_of_the_weights(make_config, tmp_path, source_weights):
    config = make_config("", total_steps=2, export_weights=True,
                         **{"model.init": source_weights,
                            "data.pp_train": "resize(8)|gray_to_rgb|init_norm",
                            "data.pp_eval": "resize(8)|gray_to_rgb|init_norm"})
    train.run(config, str(tmp_path))
    assert tljax_format.load(str(tmp_path / "model.safetensors"))[3]["normalization"] == "value_range(-1,1)"
    scratch = make_config(total_steps=2, **{"data.pp_train": "resize(8)|gray_to_rgb|init_norm"})
    with pytest.raises(UserError, match="init_norm needs model.init weights"):
        train.run(scratch, str(tmp_path / "scratch"))


def test_nan_loss_stops_with_a_clear_error(make_config, tmp_path):
    config = make_config(**{"optim.lr": float("inf"), "optim.warmup_steps": 0})
    with pytest.raises(UserError, match="loss became nan"):
        train.run(config, str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "summary.json"))


_DEVICE_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import jax
from tests.conftest import tiny_config
from tljax import train
assert jax.device_count() == {devices}, jax.devices()
from tljax import parallel
parallel.Jit.FSDP_MIN_SIZE = 1  # shard even the tiny test model's tensors
if {parallelism!r} == "fsdp":
    import numpy as np
    assert tuple(parallel.Jit(fsdp=True)._state_sharding(np.zeros((3, 8))).spec) == (None, "data")
train.run(tiny_config({data_dir!r}, "", total_steps=6, log_every=1, export_weights=True,
                      freeze="lp_ft:lp_steps=3", parallelism={parallelism!r},
                      **{{"model.init": {init!r}}}), {workdir!r})
"""


def test_four_devices_jit_pmap_and_fsdp_give_the_same_run_as_one_device(data_dir, tmp_path,
                                                                    source_weights):
    losses, params = {}, {}
    for devices, parallelism in ((1, "jit"), (4, "jit"), (4, "pmap"), (4, "fsdp")):
        workdir = str(tmp_path / f"d{devices}{parallelism}")
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu")
        script = _DEVICE_SCRIPT.format(root=ROOT, devices=devices, data_dir=data_dir, workdir=workdir,
                                       parallelism=parallelism, init=source_weights)
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        losses[devices, parallelism] = [r["loss"] for r in records(workdir)]
        params[devices, parallelism] = exported_params(workdir)
    assert len(losses[1, "jit"]) == 6
    for key in ((4, "jit"), (4, "pmap"), (4, "fsdp")):
        np.testing.assert_allclose(losses[key], losses[1, "jit"], rtol=1e-5)
        for path, value in params[1, "jit"].items():
            np.testing.assert_allclose(params[key][path], value, rtol=1e-4, atol=1e-6, err_msg=path)


def test_exported_weights_carry_architecture_and_preprocessing(source_weights):
    name, arch, num_classes, pp, _ = tljax_format.load(source_weights)
    assert name == "bit" and num_classes == 5 and arch["stem"] == "small"
    assert pp == {"normalization": "value_range(-1,1)", "image_size": 8}


@pytest.mark.parametrize("parallelism", ["jit", "pmap"])
def test_a_tiny_vit_trains_with_both_parallelism_paths(make_config, tmp_path, parallelism):
    arch = {"size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4}
    config = make_config(total_steps=3, freeze="last_k:1", parallelism=parallelism,
                         **{"model.name": "vit", "model.arch": arch})
    summary = train.run(config, str(tmp_path))
    assert summary["final_accuracy"] is not None and len(records(str(tmp_path))) == 2

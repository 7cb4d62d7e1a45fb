"""End-to-end training behaviour: resume, linear probe, multi-device, init weights."""
import json
import os

import numpy as np
import pytest

from tests.helpers import exported_params, records
from tljax import runs
from tljax.training import loop, selection
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

    monkeypatch.setattr(loop.data, "train_batches", limited)


def test_resume_after_an_exception_ends_bit_identical_to_uninterrupted_run(
        make_config, tmp_path, monkeypatch, source_weights, freeze="full"):
    """An exception mid-run (in-flight checkpoint saves still complete); tests/test_resume.py
    covers SIGKILL and multi-phase schedules."""
    config = make_config("", freeze=freeze, export_weights=True, checkpoint_every=4,
                         **{"model.init": source_weights, "optim.name": "adam",
                            "optim.lr": 0.01})
    whole = str(tmp_path / "whole")
    runs.run(config, whole)

    broken = str(tmp_path / "broken")
    with monkeypatch.context() as m:
        _interrupt_after(m, 7)  # Dies in step 8; the last checkpoint is step 4.
        with pytest.raises(_Interrupt):
            runs.run(config, broken)
    assert sorted(os.listdir(os.path.join(broken, "checkpoints"))) == ["4"]
    summary = runs.run(config, broken)

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
    runs.run(config, str(tmp_path))
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
    runs.run(config, str(tmp_path))
    before, after = exported_params(os.path.dirname(source_weights)), exported_params(str(tmp_path))
    assert np.any(before["head/kernel"] != 0)
    assert np.all(after["head/kernel"] == 0)
    np.testing.assert_array_equal(after["stage1/unit1/conv1/kernel"], before["stage1/unit1/conv1/kernel"])


def test_mismatched_init_weights_list_the_offending_keys(make_config, tmp_path, source_weights):
    config = make_config("", **{"model.init": source_weights,
                                "model.arch": {"block_counts": (1, 2), "base_width": 4,
                                               "gn_groups": 4, "stem": "small"}})
    with pytest.raises(UserError, match=r"missing params: stage2/unit2/"):
        runs.run(config, str(tmp_path))
    config = make_config("", **{"model.init": source_weights, "data.pp_eval": "resize(8)|gray_to_rgb"})
    with pytest.raises(UserError, match=r"expect inputs normalised by 'value_range\(-1,1\)'"):
        runs.run(config, str(tmp_path / "pp"))


def test_init_norm_takes_the_normalisation_of_the_weights(make_config, tmp_path, source_weights):
    config = make_config("", total_steps=2, export_weights=True,
                         **{"model.init": source_weights,
                            "data.pp_train": "resize(8)|gray_to_rgb|init_norm",
                            "data.pp_eval": "resize(8)|gray_to_rgb|init_norm"})
    runs.run(config, str(tmp_path))
    assert tljax_format.load(str(tmp_path / "model.safetensors"))[3]["normalization"] == "value_range(-1,1)"
    scratch = make_config(total_steps=2, **{"data.pp_train": "resize(8)|gray_to_rgb|init_norm"})
    with pytest.raises(UserError, match="init_norm needs model.init weights"):
        runs.run(scratch, str(tmp_path / "scratch"))


def test_exported_weights_carry_architecture_and_preprocessing(source_weights):
    name, arch, num_classes, pp, _, class_names = tljax_format.load(source_weights)
    assert name == "bit" and num_classes == 5 and arch["stem"] == "small"
    assert pp == {"normalization": "value_range(-1,1)", "image_size": 8,
                  "pp_eval": "resize(8)|gray_to_rgb|value_range(-1,1)"}
    assert class_names == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("parallelism", ["jit", "pmap"])
def test_a_tiny_vit_trains_with_both_parallelism_paths(make_config, tmp_path, parallelism):
    arch = {"size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4}
    config = make_config(total_steps=3, freeze="last_k:1", parallelism=parallelism,
                         **{"model.name": "vit", "model.arch": arch})
    summary = runs.run(config, str(tmp_path))
    assert summary["final_accuracy"] is not None and len(records(str(tmp_path))) == 2


def test_workdir_urls_stay_urls_and_local_paths_become_absolute(tmp_path, monkeypatch):
    from tljax import paths

    assert str(paths.resolve("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
    monkeypatch.chdir(tmp_path)
    assert str(paths.resolve("run")) == str(tmp_path / "run")


def test_accumulation_must_divide_each_devices_share_of_the_batch(make_config, tmp_path):
    config = make_config(accum_steps=3)  # batch 8 on 1 device: 8 examples, not divisible by 3
    with pytest.raises(UserError, match="8 examples per device, which must be a multiple of "
                                        "accum_steps=3"):
        runs.run(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("keep", [False, True])
def test_vit_pre_logits_is_dropped_with_a_new_head_unless_kept(make_config, tmp_path, keep):
    """vit_jax (checkpoint.py: load_pretrained) drops an i21k representation layer when it
    fine-tunes with a new head."""
    from flax import traverse_util

    from tljax import models, weights

    arch = {"size": "Ti", "width": 16, "depth": 1, "mlp_dim": 32, "heads": 2, "patch": 4,
            "representation_size": 8}
    module = models.build("vit", arch, 7)
    source = tmp_path / "vit.safetensors"
    tljax_format.save(source, weights.init_variables(module, (8, 8, 3)), model="vit", arch=arch,
                      num_classes=7, preprocessing={"normalization": "value_range(-1,1)",
                                                    "image_size": 8})
    config = make_config(total_steps=1, export_weights=True,
                         **{"model.name": "vit", "model.arch": {}, "model.init": str(source),
                            "model.keep_pre_logits": keep})
    runs.run(config, str(tmp_path / "run"))
    params = traverse_util.flatten_dict(
        tljax_format.load(str(tmp_path / "run" / "model.safetensors"))[4]["params"], sep="/")
    assert ("pre_logits/kernel" in params) == keep
    assert params["head/kernel"].shape == ((8, 5) if keep else (16, 5))


def test_steps_between_log_steps_never_wait_for_the_device(make_config, tmp_path, monkeypatch):
    """No host sync per step: between log steps the loop only queues donated steps. Any read
    of a device array on the host (device_get, float(), np.asarray) fails in the loop outside
    logging, evaluation, phase changes and checkpoints (a `float(loss)` per step would raise),
    and logging (with the finite check) runs at log and checkpoint steps only. (JAX's
    transfer guards do not fire on the CPU backend, so the test guards jax.Array itself.)"""
    import threading

    from jax._src import array as jax_array

    guard = {"on": False}
    main_thread = threading.get_ident()

    def checked(read):
        def wrapper(self, *args, **kwargs):
            if guard["on"] and threading.get_ident() == main_thread:
                raise AssertionError("a device array was read on the host between log steps")
            return read(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(jax_array.ArrayImpl, "_value",
                        property(checked(jax_array.ArrayImpl._value.fget)))
    monkeypatch.setattr(jax_array.ArrayImpl, "__array__", checked(jax_array.ArrayImpl.__array__))

    def switched(fn, on):
        def wrapper(*args, **kwargs):
            before, guard["on"] = guard["on"], on
            try:
                return fn(*args, **kwargs)
            finally:
                guard["on"] = before
        return wrapper

    logged = []

    def counted(run_, pending, state, done, *rest):
        logged.append(done)
        return check_and_log(run_, pending, state, done, *rest)

    check_and_log = loop._check_and_log
    for module, name in ((selection, "validate"), (selection, "report_test"), (loop, "_save"),
                         (loop, "_next_phase")):
        monkeypatch.setattr(module, name, switched(getattr(module, name), False))
    monkeypatch.setattr(loop, "_check_and_log", switched(counted, False))
    monkeypatch.setattr(loop, "_train", switched(loop._train, True))
    config = make_config(total_steps=12, log_every=4, checkpoint_every=6,
                         freeze="lp_ft:lp_steps=5")
    runs.run(config, str(tmp_path / "run"))
    assert logged == [4, 6, 8, 12]  # log steps and checkpoint steps (whose state must be finite)

"""The same run on 1 device and on 4 devices under jit, pmap and fsdp: equal per-step losses.

Covers what differs between models: BatchNorm (ResNet v1.5, statistics of the global
batch on every path), GroupNorm + weight standardisation (BiT, with mixup pairing
examples across devices) and a ViT (auto-sharded attention). Every run has two phases
(LP-FT; for the ViT, a switch from adapters to LoRA), so the phase change on replicated,
per-device and sharded state is covered too.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT, cpu_devices_flags
from tests.helpers import exported_params, records
from tljax.training import steps

MODELS = {
    "resnet": ({"depth": 18, "base_width": 4, "stem": "small"}, {}),
    "bit": ({"block_counts": (1, 1), "base_width": 4, "gn_groups": 4, "stem": "small"},
            {"data.mixup_alpha": 0.4}),
    # The ViT switches parameter-efficient methods at the phase change (adapters, then
    # LoRA on every dense layer) with SSF throughout: interceptor-added parameters under
    # every parallelism.
    "vit": ({"size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4},
            {"freeze": "adapter:dim=4,stop=2+lora:r=2,targets=qkvom,start=2+ssf"}),
}

_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import jax
from tests.conftest import tiny_config
from tljax import runs
from tljax.training import parallel
assert jax.device_count() == {devices}, jax.devices()
parallel.Jit.FSDP_MIN_SIZE = 1  # shard even the tiny test models' tensors
for name, (arch, extra) in {models!r}.items():
    for parallelism in {modes!r}:
        overrides = {{"model.name": name, "model.arch": arch, "freeze": "lp_ft:lp_steps=2", **extra}}
        runs.run(tiny_config({data_dir!r}, "scratch", total_steps=8, log_every=1,
                              export_weights=True, parallelism=parallelism, **overrides),
                  {root_dir!r} + f"/{{name}}-{devices}-{{parallelism}}")
"""


def _run_on(devices, modes, data_dir, root_dir):
    env = dict(os.environ, XLA_FLAGS=cpu_devices_flags(devices),
               JAX_PLATFORMS="cpu")
    script = _SCRIPT.format(root=ROOT, devices=devices, models=MODELS, modes=modes,
                            data_dir=data_dir, root_dir=root_dir)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_jit_pmap_and_fsdp_on_four_devices_equal_one_device(data_dir, tmp_path):
    _run_on(1, ["jit"], data_dir, str(tmp_path))
    _run_on(4, ["jit", "pmap", "fsdp"], data_dir, str(tmp_path))
    for name in MODELS:
        reference = str(tmp_path / f"{name}-1-jit")
        losses = [r["loss"] for r in records(reference)]
        params = exported_params(reference)
        assert len(losses) == 8  # BatchNorm's variance differs by 1 vs 4 devices by step 5-8
        for mode in ("jit", "pmap", "fsdp"):
            other = str(tmp_path / f"{name}-4-{mode}")
            np.testing.assert_allclose([r["loss"] for r in records(other)], losses, rtol=1e-5,
                                       err_msg=f"{name} {mode}")
            for path, value in params.items():
                np.testing.assert_allclose(exported_params(other)[path], value, rtol=1e-4,
                                           atol=1e-6, err_msg=f"{name} {mode} {path}")


def test_mixup_mixes_each_example_with_its_mirror_in_the_global_batch():
    images = jax.random.uniform(jax.random.PRNGKey(1), (6, 4, 4, 3))
    batch = {"image": images, "label": jnp.array([0, 1, 2, 3, 4, 0])}
    out = steps.mixup(batch, jax.random.PRNGKey(3), 0.2, 5)
    labels = np.asarray(out["label"])
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
    weight = labels[1, 1]  # example 1 (class 1) is mixed with example 4 (class 4)
    assert 0.0 <= weight <= 1.0 and labels[1, 4] == pytest.approx(1 - weight)
    np.testing.assert_allclose(out["image"][1], weight * images[1] + (1 - weight) * images[4],
                               rtol=1e-5)
    assert labels[0, 0] == pytest.approx(1.0)  # examples 0 and 5 are both class 0

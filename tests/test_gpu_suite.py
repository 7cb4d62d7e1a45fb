"""benchmarks/gpu_suite.sh cannot rot between GPU sessions: its tljax half runs here on tiny
shapes, its table renders, and the script refuses a machine without its pieces in one line each."""
import json
import os
import subprocess
import sys
from unittest import mock

import jax
import pytest

from benchmarks import gpu_table, gpu_tljax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tljax_half_measures_each_kind_of_step_and_profiles_one(tmp_path):
    profile = str(tmp_path / "profile.md")
    rows = []
    for row in (gpu_tljax.Row("vit-ti16", "full", "base", param_dtype="bfloat16"),
                gpu_tljax.Row("vit-ti16", "forward", "base", attention="xla"),
                gpu_tljax.Row("tiny-bit", "lora", "base")):
        ms, peak, temp = gpu_tljax.measure(row, 4, 16, "bfloat16", 2,
                                           profile if row.mode == "full" else "")
        assert ms > 0 and peak > temp > 0
        rows.append({"side": "tljax", "model": row.model, "mode": row.mode, "batch": 4,
                     "variant": row.variant, "device": "cpu", "step_ms": ms,
                     "images_per_s": 4000 / ms, "peak_gib": peak / 2**30, "mfu": None})
    with open(profile) as f:
        lines = f.read().splitlines()
    assert lines[:3] == ["### vit-ti16 full step", "", "| op | shape | calls | ms | % |"]
    ops = [line.split(" | ") for line in lines[4:] if line.startswith("| `")]
    assert len(ops) > 3 and any("[" in cells[1] for cells in ops), lines  # shapes from the HLO
    assert any(line.startswith("busy ") and " % of the step's " in line for line in lines)
    rows[0].update(compile_s=41.6, cache_hits=3)
    rows.append(dict(rows[2], side="timm", images_per_s=rows[2]["images_per_s"] / 2))
    table = gpu_table.render(rows)
    assert len(table) == 2 + 3  # header, rule, one line per (model, mode, batch, variant)
    assert "params bfloat16" in table[2] and "attention=xla" in table[3]
    assert table[4].endswith("| 2.00× |")  # tljax over timm at the same batch
    assert "| params bfloat16 | 42 (3 cached) |" in table[2]


def test_two_pass_batchnorm_row_runs_the_two_pass_statistics():
    """The A/B row times the BatchNorm statistics tljax used before (models/layers.py's
    one-pass moments are the default): each BatchNorm of the step calls the two-pass ones."""
    calls, two_pass = [], gpu_tljax.two_pass_moments

    def counted(x, axis_name=None):
        calls.append(x.shape)
        return two_pass(x, axis_name)

    row = gpu_tljax.Row("tiny-resnet", "full", "base", batch_norm="two_pass")
    assert row.variant == "BatchNorm two_pass"
    with mock.patch.object(gpu_tljax, "two_pass_moments", counted):
        ms, _, _ = gpu_tljax.measure(row, 4, 16, "float32", 1)
    assert ms > 0 and len(calls) >= 20  # a ResNet-18's BatchNorms, traced once


def test_hlo_shapes_name_each_instruction_of_an_optimized_module():
    compiled = jax.jit(lambda x: jax.nn.relu(x @ x.T).sum(0)).lower(jax.numpy.ones((4, 3))).compile()
    shapes = gpu_tljax.hlo_shapes(compiled.as_text())
    assert "f32[4]" in shapes.values() and all("[" in shape for shape in shapes.values())


def test_busy_share_counts_overlapping_device_spans_once():
    assert gpu_tljax._busy([(0, 4), (2, 6), (10, 11)]) == 7


def test_a_variant_label_marks_every_row_of_an_ab_process(tmp_path):
    """gpu_suite.sh --ab runs one process per XLA flag; each labels its rows."""
    out = tmp_path / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_tljax", "--vit=vit-ti16", "--cnn=tiny-resnet",
         "--image_size=16", "--batch=4", "--steps=1", "--dtype=float32", "--rows=0,1",
         f"--out={out}", "--variant=XLA --xla_cpu_use_thunk_runtime=true"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == ["vit-ti16", "tiny-resnet"]
    assert all(r["variant"] == "XLA --xla_cpu_use_thunk_runtime=true" and r["step_ms"] > 0
               for r in rows)


def test_projected_batch_grows_with_free_memory():
    # 1 GiB fixed, 1 GiB of temporaries at batch 128, a 10 GiB pool: (10 - 1) · 128 = 1152.
    gib = 2**30
    assert gpu_tljax._projected_max(2 * gib, gib, 128, 10 * gib) == 1152
    assert gpu_tljax._projected_max(2 * gib, gib, 128, 20 * gib) == 19 * 128


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="a GPU machine may have every piece")
@pytest.mark.parametrize("args", [["1"], ["--ab", "1"]])
def test_suite_names_each_missing_piece_in_one_line(tmp_path, args):
    result = subprocess.run(["bash", "benchmarks/gpu_suite.sh", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith("gpu_suite: ") for line in lines), result.stdout
    assert any("no GPU" in line or "is missing" in line for line in lines)
    assert not (tmp_path / "rows.jsonl").exists()  # nothing ran

"""The sweep runner and the results report."""
import csv
import json
import os

import numpy as np
import pytest

from tljax.experiments import sweep
from tljax.experiments import sweep_report as report
from tljax.errors import UserError


def _write_run(root, schedule, seed, test, history, status="done", lr=0.1, flops=100.0, error=None,
               val=None):
    run_dir = os.path.join(root, schedule.replace(":", "-"), f"lr{lr}", f"seed{seed}")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"freeze": schedule, "seed": seed, "optim": {"lr": lr}}, f)
    if status == "done":
        summary = {"status": "done", "test_accuracy": test, "final_accuracy": test - 0.01,
                   "val_accuracy": val,
                   "val_history": history, "trainable_fraction": 0.5 if schedule != "full" else 1.0,
                   "mean_train_step_flops": flops, "wall_time_s": 10.0 + seed}
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f)
    elif status == "failed":
        with open(os.path.join(run_dir, "failed.json"), "w") as f:
            json.dump({"status": "failed", "error": error}, f)


def test_report_statistics_on_synthetic_runs(tmp_path):
    root = str(tmp_path)
    tests = [0.80, 0.84, 0.86]
    gaps = [0.20, 0.10, 0.15]  # linear_probe trails full by these, seed by seed
    for seed, (test, gap) in enumerate(zip(tests, gaps)):
        _write_run(root, "full", seed, test, [(10, test - 0.1), (20, test)], flops=300.0)
        _write_run(root, "linear_probe", seed, test - gap, [(10, 0.5), (20, test - gap)],
                   flops=100.0)
    _write_run(root, "last_k:1", 0, 0.83, [(10, 0.8), (20, 0.83)])
    _write_run(root, "bitfit", 0, None, [], status="failed", error="UserError: loss became nan by step 7")
    _write_run(root, "bitfit", 1, None, [], status="incomplete")
    table = report.write_report(root)

    ranked = report.summarize(report.load_runs(root))
    rows = {r["schedule"]: r for r in ranked}
    assert [r["schedule"] for r in ranked[:3]] == ["full", "last_k:1", "linear_probe"]
    full = rows["full"]
    assert full["test"]["n"] == 3
    assert full["test"]["mean"] == pytest.approx(np.mean(tests))
    assert full["test"]["std"] == pytest.approx(np.std(tests, ddof=1))
    # 95% t-interval half-width with 2 degrees of freedom: t = 4.3027.
    assert full["test"]["ci95"] == pytest.approx(4.302653 * np.std(tests, ddof=1) / np.sqrt(3), rel=1e-5)
    # Paired over seeds: mean -0.15, std 0.05 -> [-0.274, -0.026], excludes 0. Unpaired, the
    # two groups' intervals (±0.075 and ±0.13) overlap: pairing is what resolves it.
    paired = rows["linear_probe"]["paired"]
    assert paired["mean"] == pytest.approx(-0.15) and paired["n"] == 3
    assert paired["ci95"] == pytest.approx(4.302653 * 0.05 / np.sqrt(3), rel=1e-5)
    assert "| linear_probe | – | 3 | 68.3 ± 7.4 [±18.3] | -15.0 [-27.4, -2.6] * |" in table
    assert "+3.0 (1 seed: no interval)" in table  # last_k:1 seed 0 (83) vs full seed 0 (80)
    assert rows["linear_probe"]["flops_vs_full"] == pytest.approx(1 / 3)
    assert rows["bitfit"]["failed"] == 1 and rows["bitfit"]["incomplete"] == 1
    assert "| full | – | 3 | 83.3 ± 3.1" in table and "| baseline |" in table
    asked = ["linear_probe", "bitfit", "full", "last_k:1"]  # e.g. the sweep's --schedules
    assert [r["schedule"] for r in report.summarize(report.load_runs(root), order=asked)] == asked
    assert "loss became nan by step 7" in table
    with open(tmp_path / "results.csv") as f:
        csv_rows = {r["schedule"]: r for r in csv.DictReader(f)}
    assert float(csv_rows["linear_probe"]["test_mean"]) == pytest.approx(np.mean(tests) - 0.15)
    for name in ("accuracy_curves.png", "tradeoff.png"):
        assert os.path.getsize(tmp_path / name) > 10_000


def test_selecting_settings_on_validation_never_looks_at_test(tmp_path):
    """Per schedule, the lr with the best validation accuracy is kept, even where another lr
    has the better test accuracy; paired differences compare the chosen settings."""
    root = str(tmp_path)
    for seed in range(3):
        _write_run(root, "full", seed, 0.70 + seed / 100, [], lr=0.01, val=0.80)
        _write_run(root, "full", seed, 0.90, [], lr=0.1, val=0.60)    # best test, worse val
        _write_run(root, "lora:r=8", seed, 0.75 + seed / 100, [], lr=0.1, val=0.85, flops=50.0)
        _write_run(root, "lora:r=8", seed, 0.50, [], lr=0.01, val=0.50, flops=50.0)
    rows = report.summarize(report.load_runs(root), select=True)
    chosen = {r["schedule"]: r for r in rows}
    assert len(rows) == 2
    assert chosen["full"]["setting"] == "optim.lr=0.01 (chosen on validation)"
    assert chosen["full"]["test"]["mean"] == pytest.approx(0.71)
    assert chosen["lora:r=8"]["setting"].startswith("optim.lr=0.1 ")
    assert chosen["lora:r=8"]["paired"]["mean"] == pytest.approx(0.05)
    assert chosen["lora:r=8"]["flops_vs_full"] == pytest.approx(0.5)


def test_selecting_on_validation_refuses_runs_without_validation(tmp_path):
    """Without validation accuracies there is nothing to choose on: an error naming the
    runs, never the first grid point labelled "chosen on validation"."""
    root = str(tmp_path)
    for lr in (0.01, 0.1):
        _write_run(root, "full", 0, 0.7 + lr, [], lr=lr, val=None)
    _write_run(root, "last_k:1", 0, 0.6, [], lr=0.1, val=None)  # one setting: nothing to choose
    with pytest.raises(UserError, match=r"full has 2 settings to choose from, but 2 of its runs "
                                        r"have no validation accuracy \(.*seed0"):
        report.summarize(report.load_runs(root), select=True)
    assert len(report.summarize(report.load_runs(root))) == 3  # without selection: reported


def test_schedule_list_keeps_commas_inside_a_strategy():
    assert sweep.split_schedules("full,lp_ft:lp_steps=100,ft_warmup=20,last_k:2,"
                                 "surgical:groups=stem;stage1") == \
        ["full", "lp_ft:lp_steps=100,ft_warmup=20", "last_k:2", "surgical:groups=stem;stage1"]
    assert sweep.split_schedules("lora:r=8,targets=qv,dora=1+bitfit,ssf,freezeout:t0=0.5,spacing=linear") == \
        ["lora:r=8,targets=qv,dora=1+bitfit", "ssf", "freezeout:t0=0.5,spacing=linear"]


def test_emitted_commands_for_the_real_case(tmp_path):
    runs = sweep.plan_runs("configs/flowers.py:bit-m-r50x1", ["full", "lp_ft:lp_steps=100"], 2,
                           str(tmp_path), grid=["optim.lr=0.003,0.01"])
    assert len(runs) == 2 * 2 * 2
    command = sweep.command("python", "configs/flowers.py:bit-m-r50x1", *runs[-1])
    assert command.startswith("python -m tljax.main --config=configs/flowers.py:bit-m-r50x1 --workdir=")
    assert "--config.freeze=lp_ft:lp_steps=100 --config.seed=1 --config.optim.lr=0.01" in command


@pytest.mark.slow
def test_sweep_runs_schedules_and_seeds_then_skips_finished_runs(tmp_path, data_dir, monkeypatch):
    from tests.conftest import tiny_config
    from tljax import config_lib

    monkeypatch.setattr(config_lib, "load", lambda spec: tiny_config(data_dir, total_steps=4))
    root = str(tmp_path)
    runs = sweep.plan_runs("digits", ["full", "linear_probe"], 2, root)
    assert sweep.run_all("digits", runs) == [d for d, _ in runs]
    assert all(sweep.is_finished(d) for d, _ in runs)
    table = report.write_report(root)
    assert "| full |" in table and "| linear_probe |" in table

    os.remove(os.path.join(runs[1][0], "summary.json"))  # as if seed 1 had been interrupted
    assert sweep.run_all("digits", runs) == [runs[1][0]]
    with open(os.path.join(runs[2][0], "config.json")) as f:
        assert json.load(f)["freeze"] == "linear_probe"


def test_a_failing_schedule_is_recorded_not_fatal(tmp_path, data_dir, monkeypatch):
    from tests.conftest import tiny_config
    from tljax import config_lib

    monkeypatch.setattr(config_lib, "load", lambda spec: tiny_config(data_dir, total_steps=4))
    run_dir = str(tmp_path / "bad")
    assert not sweep.run_one("digits", run_dir, ["freeze=surgical:stage9", "seed=0"])
    with open(os.path.join(run_dir, "failed.json")) as f:
        assert "unknown model groups" in json.load(f)["error"]


def test_a_run_that_failed_before_its_workdir_existed_is_reported(tmp_path):
    root = str(tmp_path)
    _write_run(root, "full", 0, 0.8, [(10, 0.8)], lr=0.1)
    _write_run(root, "full", 0, 0.7, [(10, 0.7)], lr=0.2)
    failed_dir = os.path.join(root, "bitfit", "seed0")
    os.makedirs(failed_dir)
    with open(os.path.join(failed_dir, "failed.json"), "w") as f:
        json.dump({"status": "failed", "error": "UserError: data.name is not a TFDS name",
                   "overrides": ["freeze=bitfit", "seed=0"]}, f)
    rows = {(r["schedule"], r["setting"]): r for r in report.summarize(report.load_runs(root))}
    assert rows[("bitfit", "optim.lr=None")]["failed"] == 1
    assert {("full", "optim.lr=0.1"), ("full", "optim.lr=0.2")} <= set(rows)  # lr still varies


def test_report_plots_absolute_compute_when_no_full_run_finished(tmp_path):
    """A search's final re-run may hold no `full` (pruned early): costs relative to full
    fine-tuning do not exist, so the trade-off plot uses absolute train FLOPs."""
    root = str(tmp_path)
    for seed in range(2):
        _write_run(root, "linear_probe", seed, 0.6 + seed / 100, [(10, 0.5)], flops=100.0)
        _write_run(root, "bitfit", seed, 0.7, [(10, 0.6)], flops=200.0)
    for run_dir, _, files in os.walk(root):  # train FLOPs as runs record them
        if "summary.json" in files:
            path = os.path.join(run_dir, "summary.json")
            summary = json.load(open(path))
            summary["train_flops"] = summary["mean_train_step_flops"] * 20
            json.dump(summary, open(path, "w"))
    report.write_report(root, baseline="linear_probe")
    rows = report.summarize(report.load_runs(root), baseline="linear_probe")
    assert report.cost_axis([r for r in rows if r["test"]["n"]]) == "train_flops"
    assert os.path.getsize(os.path.join(root, "tradeoff.png")) > 10_000


def test_a_named_baseline_that_is_no_schedule_is_refused_before_anything_is_written(tmp_path):
    root = str(tmp_path)
    _write_run(root, "full", 0, 0.8, [(10, 0.8)])
    _write_run(root, "bitfit", 0, 0.7, [(10, 0.7)])
    with pytest.raises(UserError, match="--baseline=nosuch is not a schedule of .*: bitfit, full"):
        report.write_report(root, "nosuch", baseline_given=True)
    assert not os.path.exists(os.path.join(root, "results.md"))
    report.write_report(root, "nosuch")  # the default baseline, absent: no difference column
    assert os.path.exists(os.path.join(root, "results.md"))


def test_many_run_commands_count_failed_runs_after_their_report(tmp_path):
    root = str(tmp_path)
    _write_run(root, "full", 0, 0.8, [(10, 0.8)])
    sweep.check_none_failed(root, "of 1 runs")  # nothing failed: no error
    _write_run(root, "bitfit", 0, 0.7, [], status="failed", error="boom")
    diverged = os.path.join(root, "lp", "seed0")
    os.makedirs(diverged)
    with open(os.path.join(diverged, "summary.json"), "w") as f:
        json.dump({"status": "failed"}, f)
    assert sweep.failed_runs(root) == sorted([os.path.dirname(diverged) + "/seed0",
                                              os.path.join(root, "bitfit", "lr0.1", "seed0")])
    with pytest.raises(UserError, match="^2 of 3 runs failed"):
        sweep.check_none_failed(root, "of 3 runs")


def test_plots_keep_accuracy_within_0_to_100_and_legends_off_the_points(tmp_path, monkeypatch):
    """Two seeds far apart give a 95% interval wider than 100 points: the axis still reads
    0..100 %; no legend sits inside a panel, where it could cover a point or a curve."""
    from tljax.experiments import tables

    figures = {}
    save = tables.save_figure

    def keep(fig, path, **kwargs):
        figures[os.path.basename(str(path))] = (fig.axes, [ax.get_ylim() for ax in fig.axes],
                                                [ax.get_legend() for ax in fig.axes])
        return save(fig, path, **kwargs)

    monkeypatch.setattr(tables, "save_figure", keep)
    root = str(tmp_path)
    for seed, test in enumerate([0.99, 0.40]):
        _write_run(root, "full", seed, test, [(10, test - 0.1), (20, test)])
        _write_run(root, "linear_probe", seed, test - 0.05, [(10, 0.5), (20, test - 0.05)])
    report.write_report(root)
    assert set(figures) == {"tradeoff.png", "accuracy_curves.png"}
    for name, (axes, limits, legends) in figures.items():
        for low, high in limits:
            assert -0.5 <= low < high <= 100.5, (name, low, high)
        for legend in legends:
            if legend is not None:  # anchored right of the panels, outside them
                assert legend.get_bbox_to_anchor().x0 >= axes[-1].get_window_extent().x1
    assert not any(figures["accuracy_curves.png"][2])

"""Sweep results: many run workdirs -> results.md, results.csv and PNG plots.

    python -m tljax.cli.report /tmp/sweep [--baseline=full]

Runs are grouped by everything in their config except the seed; each group is one
row, ranked by test accuracy at the step validation selected (mean ± std over seeds,
95% t-interval), with the paired difference to the baseline schedule (same seeds,
hence the same init, few-shot subset and data order), the final-step test accuracy,
trainable-parameter fraction, train-step FLOPs relative to full fine-tuning, and wall
time. Failed or unfinished runs appear as such, with their error.
"""
import csv
import io
import json
import math

import numpy as np
from etils import epath

from tljax import config_lib, freezing, literals, paths
from tljax import workdir as workdir_lib
from tljax.experiments import tables
from tljax.errors import UserError

KEY_IGNORED = {"seed", *config_lib.NO_EFFECT_KEYS}  # runs differing only in these are one row


def load_runs(root):
    """One dict per run directory (a directory holding config.json) under `root` (local or URL)."""
    runs = []
    for run_dir, _, filenames in sorted(epath.Path(root).walk()):
        if workdir_lib.CONFIG in filenames:
            config = config_lib.flatten(paths.read_json(run_dir / workdir_lib.CONFIG))
        elif workdir_lib.FAILED in filenames:  # Failed before its workdir was claimed: the
            config = _config_of_overrides(paths.read_json(run_dir / workdir_lib.FAILED))  # sweep's overrides
        else:
            continue
        run = {"dir": str(run_dir), "config": config, "status": "incomplete",
               "partial_config": workdir_lib.CONFIG not in filenames}
        for name in (workdir_lib.SUMMARY, workdir_lib.FAILED):
            if (run_dir / name).exists():
                run.update(paths.read_json(run_dir / name))
        if run["status"] == "running":  # A summary a run writes at each checkpoint.
            run["status"] = "incomplete"
        runs.append(run)
    return runs


def _config_of_overrides(failed):
    """A flat config dict from a failed run's sweep overrides ("key=value"), enough to group it."""
    return {key: literals.value(text) for key, text in
            (literals.assignment(o) for o in failed.get("overrides", []))}


def _varying_keys(runs):
    """Config keys whose values differ between runs. A key that some runs lack (written
    before the key existed, or a failed run known only by its overrides) is not compared."""
    full = [r for r in runs if not r.get("partial_config")] or runs
    keys = set.intersection(*(set(r["config"]) for r in full)) - KEY_IGNORED
    return sorted(k for k in keys if len({json.dumps(r["config"].get(k)) for r in full}) > 1)


def _paired(row, base):
    """Stats of row - base test accuracy over the seeds both finished."""
    by_seed = {r["config"].get("seed"): r["test_accuracy"] for r in base["members"]}
    return tables.stats(r["test_accuracy"] - by_seed[r["config"].get("seed")] for r in row["members"]
                        if by_seed.get(r["config"].get("seed")) is not None
                        and r["test_accuracy"] is not None)


def select_on_validation(rows):
    """One row per schedule: the setting (grid point) with the best mean validation accuracy
    at the selected steps, so each schedule is compared at its own tuned hyperparameters
    without looking at test data. A schedule whose settings include runs without a
    validation accuracy cannot be chosen this way: refused, naming those runs."""
    by_schedule = {}
    for row in rows:
        by_schedule.setdefault(row["schedule"], []).append(row)
    for schedule, settings in by_schedule.items():
        blind = [m["dir"] for r in settings for m in r["members"] if m.get("val_accuracy") is None]
        if len(settings) > 1 and blind:
            raise UserError(f"select_on_validation: {schedule} has {len(settings)} settings to "
                            f"choose from, but {len(blind)} of its runs have no validation "
                            f"accuracy ({', '.join(blind[:3])}{', ...' if len(blind) > 3 else ''})"
                            f": run them with data.val_split set, or report without selection")
    best = {}
    for row in rows:
        score = row["val"]["mean"] if row["val"]["n"] else -math.inf
        if row["schedule"] not in best or score > best[row["schedule"]][0]:
            best[row["schedule"]] = (score, row)
    chosen = [row for _, row in best.values()]
    for row in chosen:
        row["setting"] = f"{row['setting'] or '–'} (chosen on validation)"
    return chosen


def summarize(runs, baseline="full", order=None, select=False):
    """Rows, one per group of runs that differ only in seed: in the order of the schedules
    in `order` when given (e.g. the sweep's --schedules), else best validation-selected
    test accuracy first. With `select`, one row per schedule: its grid point chosen on
    validation (select_on_validation), compared with the baseline's chosen one."""
    varying = [k for k in _varying_keys(runs) if k not in ("freeze", "freeze_phases", "probe.method")]
    groups = {}
    for run in runs:
        label = freezing.label_of(run["config"])
        extra = ", ".join(f"{k}={run['config'].get(k)}" for k in varying)
        groups.setdefault((label, extra), []).append(run)
    rows = []
    for (schedule, extra), members in groups.items():
        if schedule.startswith(freezing.PROBE + ":"):  # optim.* cannot act on a probe: not shown
            extra = ", ".join(e for e in extra.split(", ") if e and not e.startswith("optim."))
        done = [r for r in members if r["status"] == "done"]
        failed = [r for r in members if r["status"] == "failed"]
        rows.append({
            "schedule": schedule, "setting": extra, "runs": len(members), "done": len(done),
            "failed": len(failed), "incomplete": len(members) - len(done) - len(failed),
            "test": tables.stats(r["test_accuracy"] for r in done),
            "val": tables.stats(r.get("val_accuracy") for r in done),
            "final": tables.stats(r["final_accuracy"] for r in done),
            "trainable_fraction": tables.stats(r["trainable_fraction"] for r in done)["mean"],
            "flops": tables.stats(r.get("mean_train_step_flops") for r in done)["mean"],
            "train_flops": tables.stats(r.get("train_flops") for r in done)["mean"],
            "wall_time_s": tables.stats(r["wall_time_s"] for r in done)["mean"],
            "errors": sorted({r.get("error", "") for r in failed}),
            "histories": [r["val_history"] for r in done if r["val_history"]],
            "members": done,
        })
    if select:
        rows = select_on_validation(rows)
    for row in rows:  # FLOPs relative to full fine-tuning, difference to the baseline.
        comparable = [r for r in rows if select or r["setting"] == row["setting"]]
        full = [r for r in comparable if r["schedule"] == "full"]
        base = full[0]["flops"] if full else float("nan")
        row["flops_vs_full"] = row["flops"] / base if base and not math.isnan(base) else float("nan")
        total = full[0]["train_flops"] if full else float("nan")
        row["train_flops_vs_full"] = (row["train_flops"] / total if total and not math.isnan(total)
                                      else float("nan"))
        bases = [r for r in comparable if r["schedule"] == baseline]
        row["baseline"] = baseline
        row["paired"] = _paired(row, bases[0]) if bases and bases[0] is not row else None
    ranked = sorted(rows, key=lambda r: -r["test"]["mean"] if r["test"]["n"] else math.inf)
    if not order:
        return ranked
    position = {spec: i for i, spec in enumerate(order)}
    return sorted(ranked, key=lambda r: position.get(r["schedule"], len(position)))


def _fmt_paired(row):
    stat = row["paired"]
    if stat is None:
        return "baseline" if row["schedule"] == row["baseline"] else "–"
    if not stat["n"]:
        return "–"
    text = f"{100 * stat['mean']:+.1f}"
    if stat["n"] < 2:
        return text + " (1 seed: no interval)"
    low, high = stat["mean"] - stat["ci95"], stat["mean"] + stat["ci95"]
    return text + f" [{100 * low:+.1f}, {100 * high:+.1f}]" + (" *" if low > 0 or high < 0 else "")


def _fmt_ratio(value):
    return "–" if value is None or math.isnan(value) else (f"{value:.2f}" if value >= 0.01
                                                          else f"{value:.1e}")


def _fmt(stat, scale=100):
    if not stat["n"]:
        return "–"
    text = f"{scale * stat['mean']:.1f} ± {scale * stat['std']:.1f}"
    if stat["n"] > 1:
        text += f" [±{scale * stat['ci95']:.1f}]"
    return text


def markdown(rows):
    baseline = rows[0]["baseline"] if rows else "full"
    lines = ["| schedule | setting | seeds | test acc % (val-selected step) "
             f"| Δ vs {baseline} (paired) | final-step test acc % | trainable % "
             "| step FLOPs vs full | train FLOPs vs full | wall s | status |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        status = "ok" if r["done"] == r["runs"] else ", ".join(
            f"{n} {k}" for k, n in (("done", r["done"]), ("failed", r["failed"]),
                                    ("incomplete", r["incomplete"])) if n)
        if r["errors"]:
            status += ": " + "; ".join(e.splitlines()[0][:160] for e in r["errors"])
        lines.append(f"| {r['schedule']} | {r['setting'] or '–'} | {r['done']} | {_fmt(r['test'])} "
                     f"| {_fmt_paired(r)} | {_fmt(r['final'])} | {100 * r['trainable_fraction']:.1f} "
                     f"| {_fmt_ratio(r['flops_vs_full'])} | {_fmt_ratio(r['train_flops_vs_full'])} "
                     f"| {r['wall_time_s']:.0f} | {status} |")
    lines.append("")
    lines.append("Test accuracy of the state that validation selected (the final state for runs "
                 "without a validation split); test data never selects. mean ± std over seeds "
                 "[95% t-interval half-width]. Δ: mean paired difference to the baseline over "
                 "the same seeds [95% t-interval]; * = the interval excludes 0. Trainable % and "
                 "step FLOPs are step-weighted over the schedule's phases; train FLOPs are the "
                 "compute spent on the train set (all train steps; for probes: one forward pass "
                 "over it and the probe fit); evaluations are left out of both.")
    return "\n".join(lines)


def write_csv(rows, path):
    fields = ["schedule", "setting", "runs", "done", "failed", "test_mean", "test_std",
              "test_ci95", "paired_mean", "paired_ci95", "final_mean", "final_std", "final_ci95",
              "trainable_fraction", "flops", "flops_vs_full", "train_flops", "train_flops_vs_full",
              "wall_time_s", "errors"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({
            **{k: r[k] for k in ("schedule", "setting", "runs", "done", "failed",
                                 "trainable_fraction", "flops", "flops_vs_full", "train_flops",
                                 "train_flops_vs_full", "wall_time_s")},
            "test_mean": r["test"]["mean"], "test_std": r["test"]["std"],
            "test_ci95": r["test"]["ci95"],
            "paired_mean": r["paired"]["mean"] if r["paired"] else "",
            "paired_ci95": r["paired"]["ci95"] if r["paired"] else "",
            "final_mean": r["final"]["mean"], "final_std": r["final"]["std"],
            "final_ci95": r["final"]["ci95"],
            "errors": " | ".join(r["errors"])})
    paths.write_text_atomic(path, text.getvalue())


def _label(row):
    return row["schedule"] + (f" ({row['setting']})" if row["setting"] else "")


def plot(rows, root):
    """accuracy_curves.png (one panel per schedule, the baseline dashed in each) and
    tradeoff.png (accuracy against trainable fraction and training compute, 95% intervals)."""
    plt = tables.pyplot()

    written = []
    curves = [r for r in rows if r["histories"]]
    if curves:
        written.append(_plot_curves(plt, curves, root))
    done = [r for r in rows if r["test"]["n"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    cost = cost_axis(done)
    for ax, key, xlabel in ((axes[0], "trainable_fraction", "trainable parameters % (log)"),
                            (axes[1], cost, {
                                "train_flops_vs_full": "training compute vs full fine-tuning (log)",
                                "flops_vs_full": "train-step FLOPs vs full fine-tuning (log)",
                                "train_flops": "training compute, FLOPs (log)"}[cost])):
        for index, r in enumerate(done):
            if not _positive(r[key]):
                continue  # nothing to place on a log axis
            x = r[key] * (100 if key == "trainable_fraction" else 1)
            interval = 100 * r["test"]["ci95"] if r["test"]["n"] > 1 else None
            ax.errorbar(x, 100 * r["test"]["mean"], yerr=interval, capsize=3, linestyle="none",
                        ms=7, label=_label(r), **tables.style(index))
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[1].set_xscale("log")
    tables.percent_axis(axes[0])  # (shared by both)
    seeds = sorted({r["test"]["n"] for r in done})
    axes[0].set_ylabel("test accuracy % (val-selected step)")
    fig.suptitle("Accuracy against what trains and what it costs (mean over "
                 f"{'/'.join(map(str, seeds))} seeds; bars: 95% t-interval of the mean)")
    handles, labels = axes[0].get_legend_handles_labels()  # (every row is on axes[0])
    axes[1].legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5),
                   frameon=False)
    fig.tight_layout()
    written.append(tables.save_figure(fig, epath.Path(root) / "tradeoff.png"))
    return written


def cost_axis(rows):
    """The trade-off plot's compute key: relative to full fine-tuning, or absolute train
    FLOPs when no run of `full` finished (nothing to be relative to)."""
    keys = ("train_flops_vs_full", "flops_vs_full", "train_flops")
    return next((key for key in keys if any(_positive(r[key]) for r in rows)), "train_flops")


def _positive(value):
    return value is not None and not math.isnan(value) and value > 0


def _plot_curves(plt, rows, root):
    """Small multiples: each schedule's validation curve (mean, band = ±std over seeds) in
    its own panel, with the baseline's mean dashed in grey for reference."""
    def mean_std(row):
        steps = sorted(set.intersection(*(set(s for s, _ in h) for h in row["histories"])))
        acc = np.array([[dict(h)[s] for s in steps] for h in row["histories"]]) * 100
        return steps, acc.mean(0), acc.std(0)

    base = next((r for r in rows if r["schedule"] == r["baseline"]), None)
    columns = min(len(rows), 4)
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    for index, (ax, row) in enumerate(zip(axes.flat, rows)):
        style = tables.style(index)
        if base is not None and base is not row:  # (named in the title: no legend over a curve)
            steps, mean, _ = mean_std(base)
            ax.plot(steps, mean, color="0.55", linestyle="--", lw=1)
        steps, mean, std = mean_std(row)
        ax.plot(steps, mean, color=style["color"], marker=style["marker"], ms=3)
        ax.fill_between(steps, mean - std, mean + std, color=style["color"], alpha=0.18, lw=0)
        ax.set_title(_label(row), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("train step")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation acc %")
    tables.percent_axis(axes.flat[0])  # (shared by all)
    dashed = f"; dashed grey: {base['schedule']}, the baseline" if base is not None else ""
    fig.suptitle(f"Validation accuracy during training (mean, band ±std over seeds{dashed})",
                 fontsize=10)
    fig.tight_layout()
    path = tables.save_figure(fig, epath.Path(root) / "accuracy_curves.png")
    return path


def write_report(root, baseline="full", order=None, select=False, baseline_given=False):
    """Writes results.md, results.csv and plots into `root`; returns the markdown table.
    Rows follow `order` (schedule specs) when given, else rank by test accuracy; `select`
    keeps each schedule's grid point chosen on validation. A baseline the user named
    (`baseline_given`) must be one of the schedules: nothing is written otherwise."""
    runs = load_runs(root)
    if not runs:
        raise UserError(f"no runs (directories with config.json) under {root}")
    rows = summarize(runs, baseline, order, select)
    schedules = sorted({r["schedule"] for r in rows})
    if baseline_given and baseline not in schedules:
        raise UserError(f"--baseline={baseline} is not a schedule of {root}; its schedules: "
                        f"{', '.join(schedules)}")
    table = markdown(rows)
    paths.write_text_atomic(epath.Path(root) / "results.md", table + "\n")
    write_csv(rows, epath.Path(root) / "results.csv")
    plot(rows, root)
    return table

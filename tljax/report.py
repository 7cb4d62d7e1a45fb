"""Sweep results: many run workdirs -> results.md, results.csv and PNG plots.

    python -m tljax.report /tmp/sweep

Runs are grouped by everything in their config except the seed; each group is
one row: final and best test accuracy (mean ± std over seeds, 95% t-interval),
trainable-parameter fraction, train-step FLOPs relative to full fine-tuning,
and wall time. Failed or unfinished runs appear as such, with their error.
"""
import csv
import io
import json
import math
import sys

import numpy as np
from etils import epath

from tljax import config_lib, paths

KEY_IGNORED = {"seed", "data.data_dir", "data.manual_dir", "log_every", "checkpoint_every",
               "keep_checkpoints", "export_weights"}


def load_runs(root):
    """One dict per run directory (a directory holding config.json) under `root` (local or URL)."""
    runs = []
    for run_dir, _, filenames in sorted(epath.Path(root).walk()):
        if "config.json" not in filenames:
            continue
        run = {"dir": str(run_dir), "config": config_lib.flatten(paths.read_json(run_dir / "config.json")),
               "status": "incomplete"}
        for name in ("summary.json", "failed.json"):
            if (run_dir / name).exists():
                run.update(paths.read_json(run_dir / name))
        if run["status"] == "running":  # A summary a run writes at each checkpoint.
            run["status"] = "incomplete"
        runs.append(run)
    return runs


def _t_quantile(n):
    """Two-sided 95% Student-t quantile with n-1 degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def _stats(values):
    values = np.asarray([v for v in values if v is not None], float)
    n = len(values)
    if not n:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "ci95": float("nan")}
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {"n": n, "mean": float(values.mean()), "std": std,
            "ci95": _t_quantile(n) * std / math.sqrt(n) if n > 1 else float("nan")}


def _varying_keys(runs):
    keys = set().union(*(r["config"] for r in runs)) - KEY_IGNORED
    return sorted(k for k in keys if len({json.dumps(r["config"].get(k)) for r in runs}) > 1)


def summarize(runs):
    """Rows, one per group of runs that differ only in seed, in first-seen order."""
    varying = [k for k in _varying_keys(runs) if k != "freeze"]
    groups = {}
    for run in runs:
        label = run["config"].get("freeze", "?")
        extra = ", ".join(f"{k}={run['config'].get(k)}" for k in varying)
        groups.setdefault((label, extra), []).append(run)
    rows = []
    for (schedule, extra), members in groups.items():
        done = [r for r in members if r["status"] == "done"]
        failed = [r for r in members if r["status"] == "failed"]
        rows.append({
            "schedule": schedule, "setting": extra, "runs": len(members), "done": len(done),
            "failed": len(failed), "incomplete": len(members) - len(done) - len(failed),
            "final": _stats(r["final_accuracy"] for r in done),
            "best": _stats(r["best_accuracy"] for r in done),
            "trainable_fraction": _stats(r["trainable_fraction"] for r in done)["mean"],
            "flops": _stats(r.get("mean_train_step_flops") for r in done)["mean"],
            "wall_time_s": _stats(r["wall_time_s"] for r in done)["mean"],
            "errors": sorted({r.get("error", "") for r in failed}),
            "histories": [r["eval_history"] for r in done],
        })
    for row in rows:  # FLOPs relative to full fine-tuning in the same setting.
        full = [r for r in rows if r["schedule"] == "full" and r["setting"] == row["setting"]]
        base = full[0]["flops"] if full else float("nan")
        row["flops_vs_full"] = row["flops"] / base if base and not math.isnan(base) else float("nan")
    return rows


def _fmt(stat, scale=100):
    if not stat["n"]:
        return "–"
    text = f"{scale * stat['mean']:.1f} ± {scale * stat['std']:.1f}"
    if stat["n"] > 1:
        text += f" [±{scale * stat['ci95']:.1f}]"
    return text


def markdown(rows):
    lines = ["| schedule | setting | seeds | final test acc % | best test acc % | trainable % "
             "| step FLOPs vs full | wall s | status |",
             "|---|---|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        status = "ok" if r["done"] == r["runs"] else ", ".join(
            f"{n} {k}" for k, n in (("done", r["done"]), ("failed", r["failed"]),
                                    ("incomplete", r["incomplete"])) if n)
        if r["errors"]:
            status += ": " + "; ".join(e.splitlines()[0][:160] for e in r["errors"])
        lines.append(f"| {r['schedule']} | {r['setting'] or '–'} | {r['done']} | {_fmt(r['final'])} "
                     f"| {_fmt(r['best'])} | {100 * r['trainable_fraction']:.1f} "
                     f"| {r['flops_vs_full']:.2f} | {r['wall_time_s']:.0f} | {status} |")
    lines.append("")
    lines.append("mean ± std over seeds [95% t-interval half-width]; trainable % and FLOPs are "
                 "step-weighted over the schedule's phases.")
    return "\n".join(lines)


def write_csv(rows, path):
    fields = ["schedule", "setting", "runs", "done", "failed", "final_mean", "final_std",
              "final_ci95", "best_mean", "best_std", "best_ci95", "trainable_fraction",
              "flops", "flops_vs_full", "wall_time_s", "errors"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({
            **{k: r[k] for k in ("schedule", "setting", "runs", "done", "failed",
                                 "trainable_fraction", "flops", "flops_vs_full", "wall_time_s")},
            "final_mean": r["final"]["mean"], "final_std": r["final"]["std"],
            "final_ci95": r["final"]["ci95"], "best_mean": r["best"]["mean"],
            "best_std": r["best"]["std"], "best_ci95": r["best"]["ci95"],
            "errors": " | ".join(r["errors"])})
    paths.write_text_atomic(path, text.getvalue())


def plot(rows, root):
    """accuracy_curves.png (mean ± std band per schedule) and tradeoff.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if not r["histories"]:
            continue
        steps = sorted(set.intersection(*(set(s for s, _ in h) for h in r["histories"])))
        acc = np.array([[dict(h)[s] for s in steps] for h in r["histories"]]) * 100
        label = r["schedule"] + (f" ({r['setting']})" if r["setting"] else "")
        ax.plot(steps, acc.mean(0), marker="o", ms=3, label=label)
        ax.fill_between(steps, acc.mean(0) - acc.std(0), acc.mean(0) + acc.std(0), alpha=0.2)
    ax.set(xlabel="train step", ylabel="test accuracy %", title="Test accuracy (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save_figure(fig, epath.Path(root) / "accuracy_curves.png"))
    plt.close(fig)

    done = [r for r in rows if r["final"]["n"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, key, xlabel in ((axes[0], "trainable_fraction", "trainable parameters %"),
                            (axes[1], "flops_vs_full", "train-step FLOPs vs full fine-tuning")):
        for r in done:
            x = r[key] * (100 if key == "trainable_fraction" else 1)
            ax.errorbar(x, 100 * r["final"]["mean"], yerr=100 * r["final"]["std"], fmt="o", capsize=3)
            ax.annotate(r["schedule"], (x, 100 * r["final"]["mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final test accuracy %")
    fig.suptitle("Accuracy against what trains and what it costs")
    fig.tight_layout()
    written.append(_save_figure(fig, epath.Path(root) / "tradeoff.png"))
    plt.close(fig)
    return written


def _save_figure(fig, path):
    """Saves a PNG through epath (so a sweep directory may be a bucket); returns its path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    path.write_bytes(buffer.getvalue())
    return str(path)


def write_report(root):
    """Writes results.md, results.csv and plots into `root`; returns the markdown table."""
    runs = load_runs(root)
    if not runs:
        raise SystemExit(f"error: no runs (directories with config.json) under {root}")
    rows = summarize(runs)
    table = markdown(rows)
    paths.write_text_atomic(epath.Path(root) / "results.md", table + "\n")
    write_csv(rows, epath.Path(root) / "results.csv")
    plot(rows, root)
    return table


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m tljax.report SWEEP_DIR")
    print(write_report(argv[0]))


if __name__ == "__main__":
    main()

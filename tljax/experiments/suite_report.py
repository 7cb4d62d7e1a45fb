"""The report of a benchmark suite (tljax suite): WORKDIR/suite.md, suite.csv, suite.json and
suite.png.

Per task and method: test accuracy of the final runs (mean ± 95% t-interval over seeds),
failed or missing runs shown as such. Per method: the suite's means, each labelled (VTAB-1k:
the flat mean over the 19 tasks and the mean of the three group means, which papers often mix
up), None over an incomplete suite (the partial means over the finished tasks are shown
apart, labelled partial); trainable parameters and training FLOPs; the paired difference to
the baseline method per task and overall (same seeds). Published rows (tljax/experiments/published.py)
are printed beside ours, marked published, with both means computed from their per-task
numbers and the mean their source prints.
"""
import csv
import io
import math
import os

import numpy as np
from etils import epath

from tljax import paths
from tljax.errors import UserError
from tljax import workdir as workdir_lib
from tljax.workdir import Workdir
from tljax.experiments import published, tables

_STATUSES = ("done", "failed", "incomplete", "missing")


def outcome(run_dir):
    """A run's outcome: summary.json when "done" or "failed" (a diverged run writes it
    itself), else failed.json (written by an in-process suite or sweep); None while
    unfinished."""
    run = Workdir(run_dir)
    summary = run.read_summary()
    if summary is not None and summary["status"] in ("done", "failed"):
        return summary
    if run.file(workdir_lib.FAILED).exists():
        return paths.read_json(run.file(workdir_lib.FAILED))
    return None


def _final_runs(plan, task, schedule):
    """[(seed, outcome or None)] of the final runs of (task, schedule) (a tljax suite Plan);
    None while the select stage has not chosen (the runs are then missing)."""
    made = plan.choice(task, schedule)
    if made is None:
        return None
    if made[0] is None:  # every select run failed
        return [(0, {"status": "failed", "error": "every select run failed"})]
    out = []
    for seed, (run_dir, _) in enumerate(plan.final_runs(task, schedule, made[0])):
        summary = outcome(run_dir)
        if summary is None and Workdir(run_dir).file(workdir_lib.CONFIG).exists():
            summary = {"status": "incomplete"}
        out.append((seed, summary))
    return out


def collect(plan):
    """{schedule: {task: cell}}: cell = {"status", "test" (stats over seeds), "by_seed",
    "trainable", "train_flops", "error"}."""
    table = {}
    for schedule in plan.schedules:
        for task in plan.tasks:
            runs = _final_runs(plan, task, schedule)
            cell = {"status": "missing", "test": tables.stats([]), "by_seed": {}, "trainable": None,
                    "train_flops": None, "error": ""}
            if runs:
                done = [(s, r) for s, r in runs if r and r.get("status") == "done"]
                failed = [r for _, r in runs if r and r.get("status") == "failed"]
                cell["by_seed"] = {s: r["test_accuracy"] for s, r in done}
                cell["test"] = tables.stats(cell["by_seed"].values())
                started = [r for _, r in runs if r is not None]
                cell["status"] = ("done" if len(done) == len(runs) else "failed" if failed
                                  else "incomplete" if started else "missing")
                cell["error"] = failed[0].get("error", "") if failed else ""
                if done:
                    cell["trainable"] = float(np.mean([r["trainable_fraction"] * r["num_params"]
                                                       for _, r in done]))
                    flops = [r["train_flops"] for _, r in done if r.get("train_flops")]
                    cell["train_flops"] = float(np.mean(flops)) if flops else None
            table.setdefault(schedule, {})[task.name] = cell
    return table


def _complete(cell):
    return cell["status"] == "done"


def method_rows(plan, table, baseline):
    """One row per method: suite means (by seed-mean per task), cost, paired Δ to baseline."""
    rows = []
    base = table.get(baseline)
    for schedule, cells in table.items():
        accuracy = {t: (c["test"]["mean"] if _complete(c) else None) for t, c in cells.items()}
        means = plan.suite.means(accuracy)
        row = {"method": schedule, "means": means,
               "trainable": _mean([c["trainable"] for c in cells.values()]),
               "train_flops": _mean([c["train_flops"] for c in cells.values()]),
               "tasks_done": sum(_complete(c) for c in cells.values()),
               "paired_tasks": {}, "paired": None}
        if base is not None and schedule != baseline:
            row["paired_tasks"] = {t: _paired(c, base[t]) for t, c in cells.items()}
            row["paired"] = _paired_overall(plan, cells, base)
        rows.append(row)
    return rows


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _paired(cell, base):
    return tables.paired(cell["by_seed"], base["by_seed"])


def _paired_overall(plan, cells, base):
    """Stats over seeds of (method's suite mean - baseline's suite mean) with both computed
    from the same seed's runs: the suite's headline mean (VTAB: mean of group means and the
    flat mean, both given). None unless both methods finished every task for that seed."""
    seeds = set.intersection(*[set(c["by_seed"]) & set(base[t]["by_seed"])
                               for t, c in cells.items()]) if cells else set()
    diffs = {"flat_mean": [], "mean_of_group_means": []}
    for seed in sorted(seeds):
        ours = plan.suite.means({t: c["by_seed"][seed] for t, c in cells.items()})
        theirs = plan.suite.means({t: base[t]["by_seed"][seed] for t in cells})
        for key in diffs:
            if ours[key] is not None and theirs[key] is not None:
                diffs[key].append(ours[key] - theirs[key])
    return {key: tables.stats(values) for key, values in diffs.items()}


def _pct(value, digits=1):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{100 * value:.{digits}f}")


def _fmt_cell(cell):
    if cell["status"] != "done":
        n = cell["test"]["n"]
        return cell["status"] + (f" ({n} seeds done)" if n else "")
    stat = cell["test"]
    return _pct(stat["mean"]) + (f" ± {100 * stat['ci95']:.1f}" if stat["n"] > 1 else "")


def _fmt_delta(stat):
    if not stat or not stat["n"]:
        return "–"
    text = f"{100 * stat['mean']:+.1f}" + (" (1 seed)" if stat["n"] == 1 else "")
    if stat["n"] > 1:
        low, high = stat["mean"] - stat["ci95"], stat["mean"] + stat["ci95"]
        # (identical per-seed results give a zero-width interval: no claim either way)
        real = stat["std"] > 1e-9 and (low > 0 or high < 0)
        text += f" [{100 * low:+.1f}, {100 * high:+.1f}]" + ("*" if real else "")
    return text


def markdown(plan, table, rows, baseline):
    suite, groups = plan.suite, plan.suite.groups
    methods = list(table)
    lines = [f"# {suite.name}: {len(plan.tasks)} of {len(suite.tasks)} tasks, "
             f"{len(methods)} methods", "",
             f"Tasks as {suite.source}. Per task: hyper-parameters chosen on validation "
             "(test never read), then the final runs' test accuracy at the last step, "
             "% mean ± 95% t-interval half-width over seeds.", "",
             "| task | group | " + " | ".join(methods) + " |",
             "|---|---|" + "---:|" * len(methods)]
    for task in plan.tasks:
        lines.append(f"| {task.name} | {task.group} | "
                     + " | ".join(_fmt_cell(table[m][task.name]) for m in methods) + " |")
    lines += ["", "Chosen on validation (mean last-step accuracy of the select runs):", "",
              "| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task in plan.tasks:
        lines.append(f"| {task.name} | "
                     + " | ".join(_fmt_choice(plan, task, m) for m in methods) + " |")
    lines += ["", "## Suite means (each labelled; a mean over an incomplete suite is not computed)",
              "", _means_header(groups, baseline)]
    for row in rows:
        lines.append(_means_line(row, groups, baseline))
    incomplete = [row for row in rows if not row["means"]["complete"]]
    if incomplete:
        lines += ["", "Partial means over the tasks that finished (**not** suite means: "
                  "they leave out the missing tasks):", "",
                  "| method | tasks | flat mean over them | "
                  + " | ".join(f"{g} (finished)" for g in groups) + " |",
                  "|---|---:|---:|" + "---:|" * len(groups)]
        for row in incomplete:
            part = row["means"]["partial"]
            lines.append(f"| {row['method']} | {part['tasks']} of {len(suite.tasks)} | "
                         f"{_pct(part['flat_mean'])} | "
                         + " | ".join(_pct(part["group_means"].get(g)) for g in groups) + " |")
    if any(row["paired_tasks"] for row in rows):
        others = [row for row in rows if row["paired_tasks"]]
        lines += ["", f"## Paired difference to {baseline} per task (same seeds; points, "
                  "[95% t-interval], * = excludes 0)", "",
                  "| task | " + " | ".join(r["method"] for r in others) + " |",
                  "|---|" + "---:|" * len(others)]
        for task in plan.tasks:
            lines.append(f"| {task.name} | "
                         + " | ".join(_fmt_delta(r["paired_tasks"][task.name]) for r in others)
                         + " |")
    lines += ["", *_published_lines(plan.suite), *_like_for_like_lines(plan)]
    return "\n".join(lines) + "\n"


def _fmt_choice(plan, task, schedule):
    made = plan.choice(task, schedule)
    if made is None:
        return "select stage unfinished"
    point, record = made
    if point is None:
        return "every select run failed"
    if not record.get("scores"):
        return " ".join(point) or "–"
    return f"{' '.join(point)} ({100 * record['scores'][' '.join(point)]:.1f})"


def _means_header(groups, baseline):
    two = len(groups) > 1
    head = "| method | tasks | flat mean |" + (" mean of group means |" if two else "")
    head += "".join(f" {g} |" for g in groups) if two else ""
    head += f" Δ flat vs {baseline} |" + (f" Δ mean of groups vs {baseline} |" if two else "")
    head += " trainable params (M, with head) | train FLOPs per task |"
    columns = head.count("|") - 1
    return head + "\n|---|" + "---:|" * (columns - 1)


def _means_line(row, groups, baseline):
    means, two = row["means"], len(groups) > 1
    paired = row["paired"] or {}
    cells = [row["method"], str(row["tasks_done"]), _pct(means["flat_mean"])]
    if two:
        cells.append(_pct(means["mean_of_group_means"]))
        cells += [_pct(means["group_means"][g]) for g in groups]
    for key in ("flat_mean", "mean_of_group_means") if two else ("flat_mean",):
        cells.append("baseline" if row["method"] == baseline else _fmt_delta(paired.get(key)))
    cells.append("–" if row["trainable"] is None else f"{row['trainable'] / 1e6:.3f}")
    cells.append("–" if row["train_flops"] is None else f"{row['train_flops']:.3g}")
    return "| " + " | ".join(cells) + " |"


def _published_lines(suite):
    """The published table of the suite beside ours: both means recomputed from its per-task
    numbers, and the mean the source prints, named."""
    table = published.TABLES.get(suite.name)
    if not table:
        return []
    groups = suite.groups
    lines = [f"## Published: {table.source} ({table.backbone}; {table.protocol})", "",
             f"The source prints the {table.printed_mean}. Both conventions below are "
             "recomputed from its per-task numbers.", "",
             "| method (published) | flat mean | " + ("mean of group means | " if len(groups) > 1
                                                     else "")
             + f"printed mean ({table.printed_mean}) | trainable params (M) | recipe (the tljax "
             "config that runs it) |",
             "|---|---:|" + ("---:|" if len(groups) > 1 else "") + "---:|---:|---|"]
    for method, row in table.rows.items():
        means = suite.means({t: a / 100 for t, a in row["tasks"].items()})
        lines.append(f"| {method} | {_pct(means['flat_mean'], 2)} | "
                     + (f"{_pct(means['mean_of_group_means'], 2)} | " if len(groups) > 1 else "")
                     + f"{row['printed_mean']:.2f} | {row['params_m']:g} | "
                     f"`{table.recipe_of(method)}` |")
    notes = {}
    for method, (_, note) in table.other_recipes.items():
        notes.setdefault(note, []).append(method)
    lines += [f"\n{', '.join(methods)}: {note}." for note, methods in notes.items()]
    return lines


def recipe_differences(config_spec, fixed, recipe):
    """{key: (ours, theirs)} of the published.RECIPE_KEYS where the suite's config (with its
    --set overrides) differs from `recipe`, the config that runs a published row's recipe."""
    from tljax import config_lib

    ours = config_lib.load(config_spec)
    for override in fixed:
        config_lib.apply_override(ours, override)
    # The table's config is one of tljax's configs/, found from any working directory.
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    theirs = config_lib.load(os.path.join(repository, recipe))

    def value(config, key):
        node = config
        for part in key.split("."):
            node = node[part]
        return tuple(node) if isinstance(node, (list, tuple)) else node

    return {key: (value(ours, key), value(theirs, key)) for key in published.RECIPE_KEYS
            if value(ours, key) != value(theirs, key)}


def _like_for_like_lines(plan):
    """Whether this suite ran the recipe and backbone of each published row (a table may print
    rows of several recipes): the keys that differ from the config that runs each, and what
    of the table's own recipe no config can share."""
    table = published.TABLES.get(plan.suite.name)
    if not table or not table.config:
        return []
    rows = {}
    for method in table.rows:
        rows.setdefault(table.recipe_of(method), []).append(method)
    lines = ["", "**Like for like?** Ours against the recipe and backbone of each published row:"]
    for recipe, methods in rows.items():
        which = ", ".join(methods) if len(methods) <= 4 else f"{len(methods)} rows"
        try:
            differences = recipe_differences(plan.config_spec, plan.fixed, recipe)
        except UserError as e:  # (e.g. an installed tljax without its configs/ folder)
            lines.append(f"- `{recipe}` ({which}): cannot tell: {e}.")
            continue
        verdict = ("ours ran its backbone and recipe (the same "
                   f"{', '.join(published.RECIPE_KEYS)})" if not differences else
                   "ours differs in " + "; ".join(f"{key}: ours {ours!r}, theirs {theirs!r}"
                                                  for key, (ours, theirs) in differences.items()))
        lines.append(f"- `{recipe}` ({which}): {verdict}.")
    return lines + ["", f"Not shared by any tljax run of `{table.config}`: {table.unshared}."]


def write_csv(plan, table, path):
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["task", "group", "method", "status", "seeds_done", "test_mean", "test_ci95",
                     "test_by_seed", "trainable_params", "train_flops", "error"])
    for method, cells in table.items():
        for task in plan.tasks:
            c = cells[task.name]
            writer.writerow([task.name, task.group, method, c["status"], c["test"]["n"],
                             c["test"]["mean"], c["test"]["ci95"],
                             " ".join(f"{s}:{a}" for s, a in sorted(c["by_seed"].items())),
                             c["trainable"], c["train_flops"], c["error"].splitlines()[0]
                             if c["error"] else ""])
    paths.write_text_atomic(path, text.getvalue())


LABELLED = {"Full fine-tuning", "Linear probing", "BitFit", "VPT-Deep", "Adapter", "LoRA",
            "SSF", "FacT"}  # published rows named in the plot (the rest: unnamed grey circles)


def plot(plan, rows, path):
    """Flat suite mean against trainable parameters: ours (filled, methods that finished every
    task; an incomplete one has no suite mean and is not drawn) and the published rows (hollow
    grey, their flat mean recomputed from the per-task numbers)."""
    plt = tables.pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.8))
    table = published.TABLES.get(plan.suite.name)
    if table:
        for index, (method, row) in enumerate(table.rows.items()):
            mean = plan.suite.means({t: a / 100 for t, a in row["tasks"].items()})["flat_mean"]
            x = max(row["params_m"], 1e-3)
            ax.scatter(x, 100 * mean, facecolors="none", edgecolors="0.55", s=36,
                       label=f"published ({table.source.split(' (')[0]}, {table.backbone})"
                       if index == 0 else None)
            if method in LABELLED:
                ax.annotate(method, (x, 100 * mean), fontsize=7, color="0.4", xytext=(4, -3),
                            textcoords="offset points")
    left_out = []
    for index, row in enumerate(rows):
        if row["means"]["flat_mean"] is None or row["trainable"] is None:
            left_out.append(row["method"])
            continue
        style = tables.style(index)
        ax.scatter(max(row["trainable"] / 1e6, 1e-3), 100 * row["means"]["flat_mean"],
                   color=style["color"], marker=style["marker"], s=60, zorder=3,
                   label=row["method"])
    ax.set_xscale("log")
    note = f"\nnot drawn, incomplete suite: {', '.join(left_out)}" if left_out else ""
    ax.set(xlabel="trainable parameters, M (log; ours include the head; 0 drawn at 1e-3)",
           ylabel="test accuracy %, flat mean over the tasks",
           title=f"{plan.suite.name}: accuracy against trainable parameters{note}")
    ax.grid(alpha=0.3)
    tables.percent_axis(ax)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    written = tables.save_figure(fig, path)
    return written


def write_report(plan, baseline="full"):
    """suite.md, suite.csv, suite.json and suite.png in the plan's workdir; returns the
    markdown."""
    root = epath.Path(plan.workdir)
    root.mkdir(parents=True, exist_ok=True)
    table = collect(plan)
    rows = method_rows(plan, table, baseline)
    text = markdown(plan, table, rows, baseline)
    paths.write_text_atomic(root / "suite.md", text)
    write_csv(plan, table, root / "suite.csv")
    paths.write_json(root / "suite.json", {
        "suite": plan.suite.name, "tasks": [t.name for t in plan.tasks], "baseline": baseline,
        "methods": {r["method"]: {k: r[k] for k in ("means", "trainable", "train_flops",
                                                   "tasks_done", "paired")} for r in rows},
        "cells": {m: {t: {k: c[k] for k in ("status", "test", "by_seed", "trainable",
                                            "train_flops", "error")}
                      for t, c in cells.items()} for m, cells in table.items()}})
    plot(plan, rows, root / "suite.png")
    return text

"""What a budgeted search (tljax search) saved against the grid it replaces (tljax sweep).

    python -m benchmarks.search_vs_grid --grid_dir=/tmp/vit_grid --search_dir=/tmp/vit_search

Both are compared on validation accuracy at the last step (what the search ranks its trials
by) and on the train FLOPs they spent: the grid's runs in full, the search's trials to their
last rung (study.db; evaluations left out on both sides). Prints one markdown table: each
method's best in the grid and in the search, and the search's compute as a fraction of the
grid's.
"""
import json
import os

from absl import app, flags

flags.DEFINE_string("grid_dir", None, "a tljax sweep directory (one seed per grid point)")
flags.DEFINE_string("search_dir", None, "a tljax search directory")
FLAGS = flags.FLAGS


def grid_results(root):
    """{method: (best last-step validation accuracy, setting)} and the total train FLOPs."""
    from tljax.experiments import sweep_report as report

    best, flops = {}, 0.0
    for run in report.load_runs(root):
        if run["status"] != "done":
            continue
        flops += run.get("train_flops") or 0.0
        method = run["freeze"]
        value = run.get("final_val_accuracy")
        if value is None and run.get("val_history"):
            value = run["val_history"][-1][1]
        if value is None:
            value = run.get("val_accuracy")
        setting = f"optim.lr={run['config'].get('optim.lr')}" if not method.startswith("probe") else "–"
        if method not in best or value > best[method][0]:
            best[method] = (value, setting)
    return best, flops


def search_results(root):
    import optuna

    from tljax.experiments import search, search_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=search.STUDY,
                              storage=f"sqlite:///{os.path.abspath(os.path.join(root, 'study.db'))}")
    best = {m: (search.accuracy_of(t), ", ".join(f"{k}={v:.3g}" for k, v in t.params.items()
                                   if k != "method") or "–")
            for m, t in search_report.best_per_method(study).items()}
    return best, search.spent(study, "train_flops"), len(study.get_trials())


def main(argv):
    del argv
    grid, grid_flops = grid_results(FLAGS.grid_dir)
    found, spent, trials = search_results(FLAGS.search_dir)
    lines = ["| method | grid: best validation % (setting) | search: best validation % (setting) |",
             "|---|---|---|"]
    for method in sorted(grid, key=lambda m: -grid[m][0]):
        g = f"{100 * grid[method][0]:.0f} ({grid[method][1]})"
        s = (f"{100 * found[method][0]:.0f} ({found[method][1]})" if method in found
             else "no full-length trial")
        lines.append(f"| {method} | {g} | {s} |")
    top_grid = max(v for v, _ in grid.values())
    top_search = max((v for v, _ in found.values()), default=float("nan"))
    lines += ["", f"grid: {len(grid)} methods, best {100 * top_grid:.0f} %, "
                  f"{grid_flops:.3g} train FLOPs; search: {trials} trials, best "
                  f"{100 * top_search:.0f} %, {spent:.3g} train FLOPs = "
                  f"{spent / grid_flops:.2f}× the grid's"]
    print("\n".join(lines))
    print(json.dumps({"grid_flops": grid_flops, "search_flops": spent, "grid_best": top_grid,
                      "search_best": top_search}))


if __name__ == "__main__":
    app.run(main)

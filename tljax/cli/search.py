"""`tljax search` / `python -m tljax.cli.search`: a budgeted search over methods and
hyper-parameters, validation only (tljax/experiments/search.py)."""
import os

from tljax import logs  # noqa: I001  (first: sets TF's log level before TF loads)
from absl import flags, logging
from etils import epath

from tljax import config_lib
from tljax.cli import sweep as _sweep_flags  # noqa: F401  (defines the flags the search shares)
from tljax.cli.common import check_directory, run_main
from tljax.errors import UserError
from tljax.experiments import search_report, sweep
from tljax.experiments.search import (FULL_LENGTH_FLOPS, OBJECTIVES, Objective, backbone_of,
                                      budget_callback, exhausted, open_study, parse_space,
                                      progress_callback, resume_interrupted, warm_start)

# --config, --workdir, --set and --seeds (the final re-run's seeds) are tljax sweep's flags.
flags.DEFINE_string("methods", "full,linear_probe", "comma-separated freezing strategies, PEFT "
                    "methods and probe:ridge|logreg|knn")
flags.DEFINE_string("space", "", "';'-separated KEY=loguniform(a,b) | uniform(a,b) | v1,v2,...")
flags.DEFINE_integer("trials", 20, "trials this worker runs at most (a shared study may hold more)",
                     lower_bound=1)
flags.DEFINE_float("budget_flops", 0.0, "stop starting trials once the study's trials have "
                   "spent this many FLOPs: train steps and evaluations (0: no budget)", lower_bound=0)
flags.DEFINE_integer("budget_steps", 0, "... this many train steps (a probe counts none)",
                     lower_bound=0)
flags.DEFINE_float("budget_seconds", 0.0, "... this much wall time in trials (seconds)",
                   lower_bound=0)
flags.DEFINE_integer("eta", 3, "successive halving's reduction factor (a trial goes on while in "
                     "the top 1/eta)", lower_bound=2)
flags.DEFINE_float("min_fraction", 1 / 9, "first rung as a fraction of total_steps",
                   lower_bound=1e-6, upper_bound=1)
flags.DEFINE_string("storage", "", "Optuna storage: an RDB URL (default: "
                    "sqlite:///WORKDIR/study.db; postgresql://... for a cluster) or "
                    "journal:PATH, Optuna's journal file, for workers on a shared filesystem")
flags.DEFINE_integer("heartbeat_s", 60, "a running trial's worker writes a heartbeat this often "
                     "(RDB storages); a trial silent for 3x as long (its worker died, on any "
                     "host) is resumed by another worker; 0: off", lower_bound=0)
flags.DEFINE_enum("compare_rungs", "all", ["all", "method"], "which trials a rung value "
                  "competes with: all, or its own method's (each method's best reaches "
                  "total_steps, where methods are compared; --pruner=sha)")
flags.DEFINE_enum("pruner", "sha", ["sha", "hyperband"], "sha: successive halving from the "
                  "first rung; hyperband: brackets that start judging at later rungs too")
flags.DEFINE_enum("objective", "accuracy", list(OBJECTIVES), "accuracy: the most "
                  "accurate configuration on validation (trials judged at rungs); pareto: the "
                  "front of validation accuracy against full-length train FLOPs (every trial "
                  "trains to total_steps)")
flags.DEFINE_list("backbones", [], "model arguments of --config to choose among (e.g. "
                  "dinov2-b14,clip-b16,convnext-t: configs/flowers.py:dinov2-b14, ...); each is "
                  "screened by --screen first, and trials choose among the best --keep_backbones")
flags.DEFINE_string("screen", "probe:knn", "the feature probe that screens --backbones")
flags.DEFINE_integer("keep_backbones", 2, "backbones the trials choose among after screening",
                     lower_bound=1)
flags.DEFINE_list("warm_start", [], "earlier search workdirs whose best point per method is "
                  "tried first (where it lies in this --space)")
flags.DEFINE_integer("sampler_seed", 0, "seed of the TPE sampler")
flags.adopt_module_key_flags(_sweep_flags)  # listed by --help too
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import optuna

    if not FLAGS.config or not FLAGS.workdir:
        raise UserError("--config and --workdir are required")
    check_directory(FLAGS.workdir)
    methods = sweep.split_schedules(FLAGS.methods)
    space = parse_space(FLAGS.space)
    logs.setup()
    if FLAGS.backbones and not FLAGS.screen.startswith("probe:"):
        raise UserError(f"--screen={FLAGS.screen}: screening takes a feature probe "
                        f"(probe:knn, probe:ridge or probe:logreg)")
    objective = Objective(lambda backbone="": config_lib.load(config_lib.with_argument(FLAGS.config,
                                                                            backbone)),
                          FLAGS.workdir, methods, space, FLAGS.set, FLAGS.eta, FLAGS.min_fraction)
    study = open_study(FLAGS.storage, FLAGS.workdir, FLAGS.sampler_seed, FLAGS.eta,
                       objective.rungs[0], FLAGS.pruner, objective.total_steps,
                       FLAGS.heartbeat_s, FLAGS.compare_rungs, FLAGS.objective)
    if FLAGS.objective == "pareto":
        logging.info("search: every trial trains to step %d (--objective=pareto)",
                     objective.total_steps)
    else:
        logging.info("search: rungs at steps %s", objective.rungs)
    resume_interrupted(study)
    if FLAGS.warm_start:
        warm_start(study, FLAGS.warm_start, objective)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budgets = {"flops": FLAGS.budget_flops, "train_steps": FLAGS.budget_steps,
               "wall_time_s": FLAGS.budget_seconds}
    if FLAGS.backbones:
        objective.screen(study, FLAGS.backbones, FLAGS.screen, FLAGS.keep_backbones, budgets)
    objective.run_unsearched(study, budgets)
    if objective.searched and not exhausted(study, budgets):
        study.optimize(objective, n_trials=FLAGS.trials, catch=(UserError, FloatingPointError),
                       callbacks=[progress_callback(budgets), budget_callback(budgets)])

    def full_length(trial):
        """Its whole schedule's train FLOPs (recorded from its run; scaled from its last rung
        for a trial that recorded none)."""
        if FULL_LENGTH_FLOPS in trial.user_attrs:
            return trial.user_attrs[FULL_LENGTH_FLOPS]
        flops = trial.user_attrs.get("train_flops", 0.0)
        last = max(trial.intermediate_values) if trial.intermediate_values else 0
        return flops * objective.total_steps / last if last else 0.0

    print(search_report.write(study, FLAGS.workdir, full_length))
    if FLAGS.seeds:
        _final_stage(study, methods)


def _final_stage(study, methods):
    """Re-runs the best configuration of each method over --seeds into WORKDIR/final, once per
    study: while other workers still run trials it is theirs (the last to end runs it), and
    of workers ending together the one holding WORKDIR/final's lock runs it, the others add
    theirs after it (finished runs are skipped)."""
    import optuna

    from tljax import lock
    from tljax.experiments import sweep_report

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if running:
        who = ", ".join(f"trial {t.number} ({(t.user_attrs.get('worker') or {}).get('host')} pid "
                        f"{(t.user_attrs.get('worker') or {}).get('pid')})" for t in running)
        print(f"search: the final re-runs are left to the worker that ends last ({who} "
              f"still running)")
        return
    final = os.path.join(FLAGS.workdir, "final")
    epath.Path(final).mkdir(parents=True, exist_ok=True)
    # A worker ending while another runs the final stage adds its results after it.
    claim = lock.WorkdirLock(final).acquire_waiting(poll_seconds=10, on_wait=lambda: logging.info(
        "search: another worker runs the final re-runs in %s; waiting to add what this worker "
        "found", final))
    try:
        best = {m: t for m, t in search_report.best_per_method(study).items() if m in methods}
        if not best:
            raise UserError(f"no trial of --methods finished (see "
                            f"{os.path.join(FLAGS.workdir, 'search.md')}): nothing to re-run "
                            f"over --seeds")
        for method, trial in best.items():  # each on the backbone its best trial used
            # Its hyper-parameters name the folder (a one-point grid): a better trial found
            # later gets runs of its own, and the report takes each method at its best.
            hyper = trial.user_attrs["overrides"][1:]
            spec = config_lib.with_argument(FLAGS.config, backbone_of(trial))
            sweep.run_all(spec, sweep.plan_runs(spec, [method], FLAGS.seeds, final, grid=hyper,
                                                fixed=FLAGS.set))
        baseline = "full" if "full" in best else next((m for m in methods if m in best), "full")
        print(sweep_report.write_report(final, baseline, order=[m for m in methods if m in best],
                                        select=True))  # each method at its best, paired by seed
        sweep.check_none_failed(final, "of the final re-runs")
    finally:
        claim.release()


if __name__ == "__main__":
    run_main(main)

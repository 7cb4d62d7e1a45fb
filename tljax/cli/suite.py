"""`tljax suite` / `python -m tljax.cli.suite`: a benchmark suite (VTAB-1k, FGVC) with its
protocol, then its report (tljax/experiments/suite.py)."""
from tljax import logs  # noqa: I001  (first: sets TF's log level before TF loads)
from absl import flags, logging
from etils import epath

from tljax import config_lib, paths
from tljax.cli import sweep as _sweep_flags  # noqa: F401  (defines the flags the suite shares)
from tljax.cli.common import check_directory, run_main
from tljax.errors import UserError
from tljax.experiments import suites
from tljax.experiments.suite import Plan, check, next_commands, run_suite
from tljax.experiments.sweep import check_none_failed, split_schedules

# --config, --schedules, --seeds, --grid, --set, --workdir, --emit, --python and --baseline
# are tljax sweep's flags (the same meaning; --grid points are chosen per task and schedule).
flags.DEFINE_enum("suite", None, list(suites.SUITES), "the benchmark suite")
flags.DEFINE_integer("select_seeds", 1, "seeds of each select-stage run", lower_bound=1)
flags.DEFINE_string("tasks", "", "comma-separated subset of the suite's tasks (default: all); "
                    "the report marks the suite means incomplete")
flags.DEFINE_bool("check", False, "list which tasks' data is prepared, then stop")
flags.adopt_module_key_flags(_sweep_flags)  # listed by --help too
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.suite or not FLAGS.config or not FLAGS.workdir:
        raise UserError("--suite, --config and --workdir are required")
    check_directory(FLAGS.workdir)
    if FLAGS.seeds < 1:
        raise UserError(f"--seeds={FLAGS.seeds}: the final stage runs at least one seed")
    suite = suites.SUITES[FLAGS.suite]
    tasks = [t for t in FLAGS.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in suite.tasks]
    if unknown:
        raise UserError(f"--tasks: {', '.join(unknown)} not in {suite.name}; its tasks: "
                        f"{', '.join(suite.tasks)}")
    config = config_lib.load(FLAGS.config)  # Fails early on a bad config file,
    for override in [*FLAGS.set, *(axis.split(",")[0] for axis in FLAGS.grid)]:
        config_lib.apply_override(config, override)  # and on a mistyped key, once.
    plan = Plan(suite, FLAGS.config, split_schedules(FLAGS.schedules), FLAGS.workdir,
                grid=FLAGS.grid, fixed=FLAGS.set, tasks=tasks, seeds=FLAGS.seeds,
                select_seeds=FLAGS.select_seeds)
    if FLAGS.check:
        logging.set_verbosity(logging.WARNING)  # (TFDS logs every lookup it tries)
        rows = check(plan)
        for name, ready, why in rows:
            print(f"{name:22s} {'ready' if ready else 'NOT READY: ' + why}")
        print(f"{sum(r[1] for r in rows)} of {len(rows)} tasks ready")
        return
    if FLAGS.emit == "commands":
        logging.set_verbosity(logging.WARNING)  # (TFDS logs every lookup it tries)
        missing = [name for name, ready, _ in check(plan) if not ready]
        if missing:  # commands for runs that cannot read their data would only fail
            raise UserError(f"{len(missing)} of {len(plan.tasks)} tasks have no prepared data "
                            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): "
                            f"see --check for how to prepare them, or leave them out with --tasks")
        select, final = next_commands(plan, FLAGS.python)
        root = epath.Path(FLAGS.workdir)
        root.mkdir(parents=True, exist_ok=True)
        for name, lines in (("commands_select.txt", select), ("commands_final.txt", final)):
            paths.write_text_atomic(root / name, "".join(line + "\n" for line in lines))
        print("\n".join(select + final))
        if select:
            print(f"# {len(select)} select runs ({root / 'commands_select.txt'}); once they "
                  f"finish, run this again for the final runs they choose", flush=True)
        return
    logs.setup()
    run_suite(plan)
    from tljax.experiments import suite_report

    print(suite_report.write_report(plan, FLAGS.baseline))
    check_none_failed(FLAGS.workdir, "of the suite's runs")


if __name__ == "__main__":
    run_main(main)

"""`tljax sweep` / `python -m tljax.cli.sweep`: every schedule x seed x grid point, then the
report (tljax/experiments/sweep.py)."""
from tljax import logs  # noqa: I001  (first: sets TF's log level before TF loads)
from absl import flags
from etils import epath

from tljax import config_lib, paths
from tljax.cli.common import check_directory, run_main
from tljax.errors import UserError
from tljax.experiments.sweep import (check_none_failed, command, plan_runs, run_all,
                                     split_schedules)

flags.DEFINE_string("config", None, "config file, optionally path:arg")
flags.DEFINE_string("schedules", "full,linear_probe", "comma-separated freezing strategies")
flags.DEFINE_integer("seeds", 3, "number of seeds (0..N-1); the search's 0 skips its final "
                     "re-run", lower_bound=0)
flags.DEFINE_string("workdir", None, "sweep directory")
flags.DEFINE_multi_string("grid", [], "extra grid axis KEY=V1,V2,... (repeatable)")
flags.DEFINE_multi_string("set", [], "fixed override KEY=VALUE for every run (repeatable)")
flags.DEFINE_enum("emit", "", ["", "commands"], "'commands': print the commands instead of running")
flags.DEFINE_string("python", "python", "interpreter named in emitted commands")
flags.DEFINE_string("baseline", "full", "schedule the report's paired differences are taken to")
flags.DEFINE_bool("select_on_validation", False, "report one row per schedule: its --grid point "
                  "with the best validation accuracy")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.config or not FLAGS.workdir:
        raise UserError("--config and --workdir are required")
    check_directory(FLAGS.workdir)
    if FLAGS.seeds < 1:
        raise UserError(f"--seeds={FLAGS.seeds}: a sweep runs at least one seed")
    if FLAGS["baseline"].present and FLAGS.baseline not in split_schedules(FLAGS.schedules):
        raise UserError(f"--baseline={FLAGS.baseline} is not one of --schedules")
    config_lib.load(FLAGS.config)  # Fails early on a bad config file.
    runs = plan_runs(FLAGS.config, split_schedules(FLAGS.schedules), FLAGS.seeds,
                     FLAGS.workdir, FLAGS.grid, FLAGS.set)
    if FLAGS.emit == "commands":
        epath.Path(FLAGS.workdir).mkdir(parents=True, exist_ok=True)
        lines = [command(FLAGS.python, FLAGS.config, d, o) for d, o in runs]
        paths.write_text_atomic(epath.Path(FLAGS.workdir) / "commands.txt", "\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    logs.setup()
    run_all(FLAGS.config, runs)
    from tljax.experiments import sweep_report

    print(sweep_report.write_report(FLAGS.workdir, FLAGS.baseline,
                                    order=split_schedules(FLAGS.schedules),
                                    select=FLAGS.select_on_validation))
    check_none_failed(FLAGS.workdir, f"of the sweep's {len(runs)} runs")


if __name__ == "__main__":
    run_main(main)

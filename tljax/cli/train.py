"""The training command: python -m tljax.main --config=configs/digits.py[:arg] --workdir=DIR
[--config.a.b=v] (tljax/main.py runs this module's `entry`)."""
from tljax import logs  # noqa: F401  (first: sets TF's log level before TF loads)
from absl import flags
from ml_collections import config_flags

from tljax import config_lib
from tljax.cli.common import fail, run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, optionally path:arg.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (re-using it resumes the run).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for "
                                   "multi-process runs outside SLURM/TPU pods")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "with --coordinator_address")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "with --coordinator_address")
_CPU_COLLECTIVES = flags.DEFINE_string("cpu_collectives", "", "'gloo' for multi-process CPU runs")


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; overrides are --config.KEY=VALUE")
    if not _WORKDIR.value:
        fail("--workdir is required: the directory for checkpoints and metrics, "
             "e.g. --workdir=/tmp/tljax_run")
    if _CONFIG.value is None:
        fail("--config is required, e.g. --config=configs/digits.py")
    import jax  # Imported after flag parsing, like everything that pulls in jax and TF.

    from tljax import distributed, runs

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                           _CPU_COLLECTIVES.value)

    logs.setup()
    summary = runs.run(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        print(_result_line(summary))


def _result_line(summary):
    if summary["test_accuracy"] is None:  # data.test_split="": a selection run
        return (f"{summary['freeze']}: validation accuracy {summary['final_val_accuracy']:.4f} "
                f"at the last step, best {summary['val_accuracy']:.4f} (no test split: test "
                f"was not read; {summary['wall_time_s']:.0f}s)")
    if summary["freeze"].startswith("probe:"):
        return (f"{summary['freeze']}: test accuracy {summary['test_accuracy']:.4f} (its "
                f"hyperparameter chosen on validation, {summary['val_accuracy']:.4f}; "
                f"{summary['wall_time_s']:.0f}s)")
    how = ("selected by validation" if summary["val_accuracy"] is not None
           else "final step, no validation split")
    return (f"test accuracy {summary['test_accuracy']:.4f} at step {summary['selected_step']} "
            f"({how}; final step {summary['final_accuracy']:.4f}, {summary['wall_time_s']:.0f}s)")


def _parse_flags(argv):
    """absl flag parsing, with config override mistakes turned into one-line errors."""
    for arg, following in zip(argv[1:], argv[2:] + [""]):
        spec = following if arg in ("--config", "-config") else (
            arg.partition("=")[2] if arg.startswith(("--config=", "-config=")) else "")
        if spec:  # loaded once here: a missing or broken config file is one line
            config_lib.load(spec)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; see --helpfull")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        detail = " ".join(str(e).replace("\\n", " ").replace("\\", "").split())
        fail(f"bad config override among {overrides}: {detail}. Keys must exist in the "
              f"config file (see tljax/defaults.py for all of them)")


def entry():
    run_main(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry()

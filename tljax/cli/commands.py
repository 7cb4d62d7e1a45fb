"""The one command: `tljax SUBCOMMAND [flags]` runs `python -m tljax.cli.SUBCOMMAND [flags]`
(the same module, as __main__, with the same flags), so each subcommand and its `python -m`
form are one code path. `tljax SUBCOMMAND --help` lists that subcommand's flags."""
import runpy
import sys

# subcommand -> what it does (its module is tljax.cli.<subcommand>)
COMMANDS = {
    "train": "train or probe one run: --config=PATH[:ARG] --workdir=DIR [--config.KEY=VALUE]",
    "predict": "top-k classes of image files with a trained model",
    "evaluate": "accuracy, per-class accuracy and confusion of a trained model on a labelled set",
    "report": "the table and plots of a sweep directory",
    "catalog": "the known checkpoints; download one",
    "sweep": "schedules x seeds x grid points as runs, then their report",
    "suite": "a benchmark suite (VTAB-1k, FGVC) with its protocol, then its report",
    "search": "a budgeted search over methods and hyper-parameters, chosen on validation",
}


def usage():
    lines = ["usage: tljax SUBCOMMAND [flags]   (tljax SUBCOMMAND --help: its flags)", "",
             "subcommands:"]
    lines += [f"  {name:<9} {what}" for name, what in COMMANDS.items()]
    lines += ["", "Each is also `python -m tljax.cli.SUBCOMMAND`; `tljax train` is "
              "`python -m tljax.main`."]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv if argv is None else argv
    if len(argv) < 2:
        print(usage(), file=sys.stderr)
        return 2
    if argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[1]
    if name not in COMMANDS:
        print(f"error: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"tljax {name}", *argv[2:]]
    runpy.run_module(f"tljax.cli.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

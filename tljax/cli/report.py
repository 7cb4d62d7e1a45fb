"""Sweep results: tljax report SWEEP_DIR [--baseline=SCHEDULE]
[--order=SCHEDULE,...] [--select=validation] writes results.md, results.csv and plots
(tljax/experiments/sweep_report.py)."""
import sys

from tljax import freezing
from tljax.experiments import sweep_report
from tljax.cli.common import one_line_errors
from tljax.errors import UserError


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__.strip())
        return
    options = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--"))
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1 or set(options) - {"baseline", "order", "select"}:
        raise UserError("usage: python -m tljax.cli.report SWEEP_DIR [--baseline=SCHEDULE] "
                         "[--order=SCHEDULE,SCHEDULE,...] [--select=validation]")
    if options.get("select", "validation") != "validation":
        raise UserError("--select takes one value: validation (test data never selects)")
    order = None
    if options.get("order"):
        order = freezing.split_list(options["order"])
    print(sweep_report.write_report(positional[0], options.get("baseline", "full"), order,
                                    select="select" in options,
                                    baseline_given="baseline" in options))


if __name__ == "__main__":
    with one_line_errors():
        main()

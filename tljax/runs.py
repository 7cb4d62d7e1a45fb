"""The one entry to a run (the dispatcher): checks the config, parses its freezing spec once,
returns a finished run's summary at once, produces missing init weights with their recipe
(itself a run), builds the shared prologue (run_init.start), claims the workdir once and
hands it to a training run or a probe run. Neither kind of run imports the other.

    tljax.runs.run(config, workdir) -> summary dict (also workdir/summary.json)
"""

from absl import logging

from tljax import compilation, config_lib, freezing, recipes
from tljax.workdir import Workdir


def run(config, workdir):
    """Runs `config` in `workdir` (resuming what is there) and returns its summary."""
    config_lib.validate(config)
    spec = freezing.from_config(config)
    workdir = Workdir(workdir)
    finished = _finished_summary(config, workdir)
    if finished is not None:
        logging.info("the run in %s is finished already: its summary.json", workdir)
        return finished
    compilation.enable_cache(config.compilation_cache)
    before = compilation.stats()
    summary = _run(config, spec, workdir)
    logging.info("%s", compilation.stats().since(before))
    return summary


def _finished_summary(config, workdir):
    """The summary of the finished run of `config` in `workdir` (a Workdir), or None:
    re-running a finished run reads it back and builds no data, model or optimizer. A
    BiT-HyperRule run (whose config.json records the rule's choices) goes the full path."""
    if config.hyperrule:
        return None
    return workdir.finished_summary(config, exports=config.export_weights and not config.probe.method)


def _run(config, spec, workdir):
    # Imported here: a finished run's re-run (above) needs neither TensorFlow nor a model.
    from tljax import run_init
    from tljax.probe import run as probe_run
    from tljax.training import loop

    recipes.make(config, run)
    if config.probe.method:
        prepared, fit_or_train = probe_run.prepare(config, run_init.start(config, spec)), probe_run.fit
    else:
        if config.hyperrule:
            config = run_init.with_hyperrule(config)
        loop.check_batch_sizes(config)
        prepared, fit_or_train = loop.prepare(config, run_init.start(config, spec)), loop.train
    with workdir.claimed(config):  # after every check: a refused start writes nothing
        return fit_or_train(prepared, workdir)

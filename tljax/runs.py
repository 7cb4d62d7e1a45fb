"""The one entry to a run: checks the config, parses its freezing spec once, produces missing
init weights with their recipe (itself a run), then starts a training run or a probe run on
the shared prologue (run_init.start). Neither kind of run imports the other.

    tljax.runs.run(config, workdir) -> summary dict (also workdir/summary.json)
"""
import os

from absl import logging

from tljax import compilation, config_lib, freezing, paths
from tljax.errors import UserError


def run(config, workdir):
    """Runs `config` in `workdir` (resuming what is there) and returns its summary."""
    config_lib.validate(config)
    spec = freezing.from_config(config)
    finished = finished_summary(config, workdir)
    if finished is not None:
        logging.info("the run in %s is finished already: its summary.json", workdir)
        return finished
    compilation.enable_cache(config.compilation_cache)
    before = compilation.stats()
    summary = _run(config, spec, workdir)
    logging.info("%s", compilation.stats().since(before))
    return summary


def finished_summary(config, workdir):
    """The summary of the finished run of `config` in `workdir`, or None: re-running a
    finished run reads it back and builds no data, model or optimizer. A different config
    in the workdir is refused as on resume; a run that should now export weights it did
    not write, or a BiT-HyperRule run (whose config.json records the rule's choices),
    goes through the full path."""
    workdir = paths.resolve(workdir)
    summary_path, config_path = workdir / "summary.json", workdir / "config.json"
    if config.hyperrule or not (summary_path.exists() and config_path.exists()):
        return None
    summary = paths.read_json(summary_path)
    if summary.get("status") != "done":
        return None
    config_lib.check_same_run(paths.read_json(config_path), config_lib.to_dict(config))
    if (config.export_weights and not config.probe.method
            and not (workdir / "model.safetensors").exists()):
        return None
    return summary


def _run(config, spec, workdir):
    # Imported here: a finished run's re-run (above) needs neither TensorFlow nor a model.
    from tljax import run_init, train
    from tljax.probe import run as probe_run

    if config.probe.method:
        probe_run.check(config)
    recipe = run_init.init_recipe(config)
    if recipe is not None:
        run(*recipe)
        if not os.path.exists(config.model.init):
            raise UserError(f"init recipe {config.model.init_recipe} did not write "
                                       f"{config.model.init}")
    if config.probe.method:
        return probe_run.run(config, run_init.start(config, spec, workdir))
    if config.hyperrule:
        config = run_init.with_hyperrule(config)
    train.check_batch_sizes(config)
    return train.run(config, run_init.start(config, spec, workdir))

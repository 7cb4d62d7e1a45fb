"""The one entry to a run: checks the config, parses its freezing spec once, produces missing
init weights with their recipe (itself a run), then starts a training run or a probe run on
the shared prologue (run_init.start). Neither kind of run imports the other.

    tljax.runs.run(config, workdir) -> summary dict (also workdir/summary.json)
"""
import os

from tljax import config_lib, freezing, run_init, train
from tljax.errors import UserError
from tljax.probe import run as probe_run


def run(config, workdir):
    """Runs `config` in `workdir` (resuming what is there) and returns its summary."""
    config_lib.validate(config)
    spec = freezing.from_config(config)
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

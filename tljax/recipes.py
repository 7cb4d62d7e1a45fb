"""Init recipes: model.init names the weights a recipe run writes (model.init_recipe, a config
"path:arg"), and a run whose init weights are missing first makes them with that run, once
(cached in ~/.cache/tljax/recipes/<config>_<arg>/)."""
import os
import time

from absl import logging

from tljax import config_lib, lock, paths
from tljax import workdir as workdir_lib
from tljax.errors import UserError


def recipe_output(spec):
    """Where the init recipe "path/to/config.py:arg" writes its weights.

    A recipe only ever runs to produce this file, so a mistyped model.init can never
    start a recipe that writes into an unrelated directory.
    """
    path, _, arg = spec.partition(":")
    name = os.path.splitext(os.path.basename(path))[0] + (f"_{arg}" if arg else "")
    return os.path.join(paths.cache_root(), "recipes", name, workdir_lib.MODEL)


def pending(config):
    """(recipe config, output directory) when model.init is the missing output file of the
    init recipe model.init_recipe, else None. A recipe only ever writes its own output, so a
    mistyped model.init never starts a recipe that writes somewhere else."""
    init, recipe = config.model.init, config.model.init_recipe
    if not init or os.path.exists(init) or not recipe or ":" in init.split("/")[0]:
        return None  # (a name such as hf:ORG/NAME or catalog:NAME is no recipe's output)
    output = recipe_output(recipe)
    if os.path.abspath(os.path.expanduser(init)) != output:
        raise UserError(f"model.init {init} does not exist; the init recipe {recipe} would "
                        f"write {output}. Fix model.init, or set model.init_recipe=''")
    logging.info("model.init %s does not exist: producing it with %s", init, recipe)
    recipe_config = config_lib.load(recipe)
    with recipe_config.unlocked():
        recipe_config.data.data_dir = config.data.data_dir
        recipe_config.export_weights = True
    return recipe_config, os.path.dirname(output)


def make(config, run, poll_seconds=5.0):
    """Makes config.model.init with its recipe when it is missing. `run` is the dispatcher
    (tljax.runs.run). When another process is making it (a second terminal, two sweep or
    search workers), waits for that one and uses its weights instead of failing."""
    recipe = pending(config)
    if recipe is None:
        return
    waiting = False
    while True:
        try:
            run(*recipe)  # once the other process is done: its finished summary, at once
            break
        except lock.WorkdirInUse:
            if not waiting:
                logging.info("init recipe %s: another process is making %s; waiting for it",
                             config.model.init_recipe, config.model.init)
            waiting = True
            time.sleep(poll_seconds)
    if not os.path.exists(config.model.init):
        raise UserError(f"init recipe {config.model.init_recipe} did not write {config.model.init}")

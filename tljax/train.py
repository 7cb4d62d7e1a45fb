"""The training loop: wires data, model, weights, freezing plan, optimizer, steps,
checkpoints and metrics together. It owns no math."""
import collections
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from tljax import (checkpoint, config_lib, data, freeze, hyperrule, metrics, models, optim,
                   parallel, steps, weights)
from tljax.data import preprocess
from tljax.errors import UserError
from tljax.weights import merge as merge_lib
from tljax.weights import tljax_format


def _prefetch_to_device(batches, par, depth=2):
    """Device batches, `depth` transfers ahead of the step that consumes them."""
    queue = collections.deque()
    for batch in batches:
        queue.append(par.put_batch(batch))
        if len(queue) == depth:
            yield queue.popleft()


def _with_hyperrule(config):
    """A copy of `config` with BiT-HyperRule choices, from the train-set size and image area."""
    _, count = data.pipeline.examples(config.data, "train", config.seed)
    shape = data.get_builder(config.data).info.features["image"].shape
    area = shape[0] * shape[1] if shape[0] and shape[1] else None
    config = config_lib.copy(config)
    with config.unlocked():
        hyperrule.apply(config, count, area)
    logging.info("BiT-HyperRule for %d train examples, image area %s: %d steps, lr %g, %s",
                 count, area, config.total_steps, config.optim.lr, config.data.pp_train)
    return config


def _prepare_init(config):
    """Runs the init recipe when model.init is missing and a recipe is configured."""
    init = config.model.init
    if not init or os.path.exists(init) or not config.model.init_recipe:
        return
    recipe_workdir = os.path.dirname(os.path.abspath(init))
    logging.info("model.init %s does not exist: producing it with %s in %s",
                 init, config.model.init_recipe, recipe_workdir)
    recipe = config_lib.load(config.model.init_recipe)
    with recipe.unlocked():
        recipe.data.data_dir = config.data.data_dir
    run(recipe, recipe_workdir)
    if not os.path.exists(init):
        raise UserError(f"init recipe {config.model.init_recipe} did not write {init}")


def _build_and_init(config, num_classes):
    """(module, variables, normalisation op the weights expect or "").

    The architecture comes from model.arch, or from the init weights when it is empty.
    """
    size = config.data.image_size
    if not config.model.init:
        module = models.build(config.model.name, config.model.arch, num_classes, config.model.dtype)
        return module, weights.init_variables(module, (size, size, 3), seed=config.seed), ""
    if config.model.init_head not in ("reset", "keep"):
        raise UserError(f"model.init_head must be 'reset' or 'keep', not {config.model.init_head!r}")
    source_module, loaded, preprocessing = weights.load_model_with_meta(
        config.model.init, model=config.model.name)
    if config.model.arch:
        module = models.build(config.model.name, config.model.arch, num_classes, config.model.dtype)
    else:
        module = source_module.clone(num_classes=num_classes, dtype=jnp.dtype(config.model.dtype))
    expected = preprocessing.get("normalization", "")
    if config.model.check_preprocessing and expected:
        for key in ("pp_train", "pp_eval"):
            got = preprocess.normalization_op(config.data[key])
            if got != "init_norm" and got.replace(" ", "") != expected.replace(" ", ""):
                raise UserError(f"weights {config.model.init} expect inputs normalised by "
                                f"{expected!r} but data.{key} uses {got or 'nothing'!r}; fix "
                                f"data.{key} or set model.check_preprocessing=False")
    variables = weights.init_variables(module, (size, size, 3), seed=config.seed)
    variables = merge_lib.merge(variables, loaded, reset_head=config.model.init_head == "reset",
                                source=config.model.init)
    return module, variables, expected


def _data_config(config, normalization):
    """config.data with the init_norm placeholder replaced by the weights' normalisation."""
    data_cfg = config_lib.copy(config).data
    with data_cfg.unlocked():
        for key in ("pp_train", "pp_eval"):
            data_cfg[key] = preprocess.with_init_norm(data_cfg[key], normalization)
    return data_cfg


def _log_plan(plan, group_list, param_sizes):
    header = "group        params  " + "  ".join(f"phase@{p.start_step}" for p in plan.phases)
    lines = [header]
    for name, count, cells in freeze.summary_rows(plan, group_list, param_sizes):
        lines.append(f"{name:<10} {count:>8}  " + "  ".join(f"{c:>{len(f'phase@{p.start_step}')}}"
                                                           for c, p in zip(cells, plan.phases)))
    logging.info("freezing plan (%s):\n%s", "lr multipliers", "\n".join(lines))


class _PhaseRunner:
    """Optimizer, compiled step and step cost for one phase of the plan."""

    def __init__(self, config, module, plan, index, par):
        self.index = index
        self.phase = plan.phases[index]
        self.trainable = self.phase.trainable_paths()
        self.tx = optim.build(config.optim, plan, index, config.total_steps)
        frozen = [p for p, mult in self.phase.mults.items() if mult is None]
        step = steps.make_train_step(models.with_frozen_norms(module, frozen), self.tx,
                                     self.trainable, plan.l2sp, config.accum_steps, par.axis_name)
        self._jitted = par.compile_train(step)
        self._compiled = None
        self.flops = None

    def init_opt_state(self, params):
        trainable, _ = steps.split_params(params, self.trainable)
        return self.tx.init(trainable)

    def __call__(self, state, batch):
        if self._compiled is None:
            self._compiled = self._jitted.lower(state, batch).compile()
            cost = self._compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            self.flops = float(cost.get("flops", 0.0)) if cost else None
        return self._compiled(state, batch)


def _evaluate(eval_data, state, eval_step, par):
    """Accuracy and loss over the whole test split (padded batches, masked)."""
    batches, count = eval_data
    totals = None
    for batch in batches:
        sums = eval_step(state["params"], state["batch_stats"], par.put_batch(batch))
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = par.fetch(totals)
    if int(totals["count"]) != count:
        raise RuntimeError(f"eval counted {totals['count']} examples, the split has {count}")
    return {"accuracy": float(totals["correct"] / count), "loss": float(totals["loss"] / count),
            "count": int(totals["count"])}


def run(config, workdir):
    """Trains and evaluates `config` in `workdir` (resuming if it holds checkpoints).

    Returns the run summary (also written to workdir/summary.json).
    """
    start_time = time.time()
    _prepare_init(config)
    if config.hyperrule:
        config = _with_hyperrule(config)
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    config_path = os.path.join(workdir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            config_lib.check_same_run(json.load(f), config_lib.to_dict(config))
    if is_main:
        with open(config_path, "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    if config.accum_steps < 1 or config.data.batch_size % config.accum_steps:
        raise UserError(f"data.batch_size={config.data.batch_size} must be a multiple of "
                        f"accum_steps={config.accum_steps}")
    for key in ("batch_size", "eval_batch_size"):
        if config.data[key] % jax.device_count():
            raise UserError(f"data.{key}={config.data[key]} must be a multiple of the "
                            f"{jax.device_count()} devices")
    par = parallel.build(config.parallelism)
    num_classes = config.model.num_classes
    if num_classes <= 0:
        num_classes = data.num_classes(config.data)
    module, variables, normalization = _build_and_init(config, num_classes)
    data_cfg = _data_config(config, normalization)
    params = variables["params"]
    flat_params = traverse_util.flatten_dict(params, sep="/")
    param_sizes = {p: int(np.prod(v.shape)) for p, v in flat_params.items()}
    group_list = models.groups(module)
    plan = freeze.make_plan(config.freeze, group_list, list(flat_params), config.total_steps)
    _log_plan(plan, group_list, param_sizes)

    ckpt = checkpoint.Checkpoints(workdir, config.checkpoint_every, config.keep_checkpoints)
    start_step = ckpt.latest_step() or 0
    phase_index = plan.phase_index(start_step)
    runner = _PhaseRunner(config, module, plan, phase_index, par)
    state = {
        "step": np.int32(0), "params": params, "batch_stats": variables.get("batch_stats", {}),
        "rng": jax.random.PRNGKey(config.seed),
        "opt_state": runner.init_opt_state(params),
    }
    if plan.l2sp:
        state["anchor"] = params
    if start_step:
        meta = ckpt.restore_meta(start_step)
        if meta.get("phase") != phase_index:
            raise UserError(f"checkpoint step {start_step} was saved in phase {meta.get('phase')} "
                            f"but the plan puts it in phase {phase_index}: the freeze config changed")
        state = par.from_restored(ckpt.restore_state(start_step, par.restore_template(state)))
        logging.info("resumed from step %d (phase %d)", start_step, phase_index)
    else:
        state = par.put_state(state)

    writer = metrics.MetricWriter(workdir, enabled=is_main)
    eval_step = par.compile_eval(steps.make_eval_step(module, par.axis_name))
    train_iter = _prefetch_to_device(data.train_batches(
        data_cfg, seed=config.seed, global_batch=config.data.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=start_step), par)
    eval_data = data.eval_batches(  # Re-iterable: built once, read at every evaluation.
        data_cfg, seed=config.seed, global_batch=config.data.eval_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    progress = metrics.Progress(start_step, config.total_steps, config.data.batch_size)
    phase_flops = {}
    pending = []
    eval_history = []
    fraction = freeze.trainable_fraction(runner.phase, param_sizes)

    try:  # On any failure, in-flight checkpoint saves (of finite states) still complete.
        for step in range(start_step, config.total_steps):
            batch = next(train_iter)
            state, step_metrics = runner(state, batch)
            phase_flops[runner.index] = runner.flops
            pending.append(step_metrics)
            done = step + 1
            last = done == config.total_steps
            log_now = done % config.log_every == 0 or last
            save_now = done % config.checkpoint_every == 0 or last
            eval_now = (config.eval_every and done % config.eval_every == 0) or last
            if log_now or save_now or eval_now:
                fetched = par.fetch(pending)
                pending = []
                losses = [float(m["loss"]) for m in fetched]
                if not np.all(np.isfinite(losses)):
                    raise UserError(f"training loss became {losses[-1]} by step {done}; lower optim.lr "
                                    f"(now {config.optim.lr}) or set optim.clip_norm. Checkpoints up to "
                                    f"step {ckpt.latest_step()} are intact")
                if log_now:
                    record = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                    record.update(progress.line(done, record["loss"]))
                    record.update(phase=runner.index, trainable_fraction=fraction,
                                  lr=float(optim.lr_schedule(config.optim, config.total_steps)(step)))
                    writer.write(done, record)
            if eval_now:
                result = _evaluate(eval_data, state, eval_step, par)
                eval_history.append((done, result["accuracy"]))
                logging.info("eval at step %d: accuracy %.4f  loss %.4f  (%d examples)",
                             done, result["accuracy"], result["loss"], result["count"])
                writer.write(done, result, kind="eval")
            if not last and plan.phase_index(done) != runner.index:
                runner = _PhaseRunner(config, module, plan, plan.phase_index(done), par)
                one = par.host_state(state)
                fresh = runner.init_opt_state(one["params"])
                opt_state = optim.carry_over_state(one["opt_state"], fresh)
                state = par.put_state(dict(one, opt_state=opt_state))
                fraction = freeze.trainable_fraction(runner.phase, param_sizes)
                logging.info("step %d: phase %d starts, %d trainable tensors (%.1f%% of parameters)",
                             done, runner.index, len(runner.trainable), 100 * fraction)
            if save_now:
                ckpt.save(done, par.host_state(state), {"phase": runner.index, "step": done},
                          force=last)
    finally:
        ckpt.close()

    summary = _summarize(config, workdir, plan, param_sizes, phase_flops, eval_history, start_time)
    if is_main and config.export_weights:
        final = par.to_host(par.host_state(state))
        out = {"params": final["params"]}
        if final["batch_stats"]:
            out["batch_stats"] = final["batch_stats"]
        tljax_format.save(os.path.join(workdir, "model.safetensors"), out,
                          model=config.model.name, arch=_arch_of(module),
                          num_classes=num_classes,
                          preprocessing={"normalization": preprocess.normalization_op(data_cfg.pp_eval),
                                         "image_size": config.data.image_size})
    writer.write(config.total_steps, summary, kind="summary")
    writer.close()
    return summary


def _arch_of(module):
    """The architecture kwargs of a built module (what tljax_format stores)."""
    skip = {"num_classes", "dtype", "parent", "name", "frozen_norms"}
    return {k: getattr(module, k) for k in module.__dataclass_fields__ if k not in skip}


def _summarize(config, workdir, plan, param_sizes, phase_flops, eval_history, start_time):
    """Final numbers of a run: what the sweep report compares."""
    previous = {}
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):  # A resumed run adds to the earlier wall time and keeps FLOPs known then.
        with open(path) as f:
            previous = json.load(f)
    history = [tuple(h) for h in previous.get("eval_history", [])]
    history = sorted(dict(history + eval_history).items())
    flops = {str(k): v for k, v in previous.get("train_step_flops", {}).items()}
    flops.update({str(k): v for k, v in phase_flops.items() if v is not None})
    weights_per_phase = [(p.start_step, (plan.phases[i + 1].start_step if i + 1 < len(plan.phases)
                                         else config.total_steps)) for i, p in enumerate(plan.phases)]
    mean_flops = None
    if all(str(i) in flops for i in range(len(plan.phases))):
        mean_flops = sum(flops[str(i)] * (end - start) for i, (start, end)
                         in enumerate(weights_per_phase)) / config.total_steps
    summary = {
        "status": "done",
        "freeze": config.freeze if isinstance(config.freeze, str) else "explicit",
        "seed": config.seed,
        "final_accuracy": history[-1][1] if history else None,
        "best_accuracy": max(a for _, a in history) if history else None,
        "eval_history": history,
        "trainable_fraction": sum(freeze.trainable_fraction(p, param_sizes) * (end - start)
                                  for p, (start, end) in zip(plan.phases, weights_per_phase))
                              / config.total_steps,
        "train_step_flops": flops,
        "mean_train_step_flops": mean_flops,
        "num_params": int(sum(param_sizes.values())),
        "wall_time_s": previous.get("wall_time_s", 0.0) + (time.time() - start_time),
        "total_steps": config.total_steps,
    }
    if jax.process_index() == 0:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)
        os.replace(tmp, path)
    logging.info("final test accuracy %.4f (best %.4f) after %d steps",
                 summary["final_accuracy"] or 0.0, summary["best_accuracy"] or 0.0, config.total_steps)
    return summary

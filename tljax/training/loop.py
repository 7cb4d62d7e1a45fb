"""The training loop: wires data, model, weights, freezing plan, optimizer, steps,
checkpoints and metrics together. It owns no math."""
import collections
import dataclasses
import functools
import time

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from tljax import config_lib, data, freezing, metrics, models
from tljax import workdir as workdir_lib
from tljax.training import checkpoint, export, optim, parallel, selection, steps
from tljax.training import state as state_lib
from tljax import summary as summary_lib
from tljax.errors import UserError


def _log_plan(plan, group_list, param_sizes):
    header = "group        params  " + "  ".join(f"phase@{p.start_step}" for p in plan.phases)
    lines = [header]
    for name, count, cells in freezing.summary_rows(plan, group_list, param_sizes):
        lines.append(f"{name:<10} {count:>8}  " + "  ".join(f"{c:>{len(f'phase@{p.start_step}')}}"
                                                           for c, p in zip(cells, plan.phases)))
    logging.info("freezing plan (%s):\n%s", "lr multipliers", "\n".join(lines))


def check_batch_sizes(config):
    """The batch sizes against the device count (their ranges, and accum_steps >= 1, are the
    config table's checks, run by config_lib.validate before this)."""
    devices = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if config.data[key] % devices:
            raise UserError(f"data.{key}={config.data[key]} must be a multiple of the "
                            f"{devices} devices")
    per_device = config.data.batch_size // devices
    if per_device % config.accum_steps:
        raise UserError(f"data.batch_size={config.data.batch_size} gives {per_device} examples per "
                        f"device, which must be a multiple of accum_steps={config.accum_steps}")


def _check_batch_fits(config, data_cfg, train_count):
    """A batch larger than the train set is a normal few-shot setting (BiT-HyperRule trains
    5-shot transfers at batch 512): the train stream repeats, so examples repeat within a
    batch. Refused only when this process's images alone cannot fit in the host's memory;
    the compiled step's own memory is checked against the device when it compiles."""
    batch = config.data.batch_size
    images = batch // jax.process_count() * data_cfg.image_size ** 2 * 3 * 4  # float32 RGB
    if not data.is_text(data_cfg) and images > parallel.host_memory_bytes():
        raise UserError(
            f"data.batch_size={batch} needs {images / 2**30:.0f} GiB for its "
            f"{data_cfg.image_size}x{data_cfg.image_size} float32 images alone but this "
            f"machine has {parallel.host_memory_bytes() / 2**30:.0f} GiB: lower data.batch_size")
    if batch > train_count:
        logging.warning("data.batch_size=%d is larger than the %d train examples of %s: "
                        "the train stream repeats, so examples repeat within a batch",
                        batch, train_count, config.data.name)


def _check_accumulation(config, variables, plan):
    """Accumulation equals the full-batch update only without training BatchNorm: refuse
    unless the user accepts microbatch statistics."""
    if config.accum_steps == 1 or config.accum_bn_microbatch_stats:
        return
    norms = sorted({p.rsplit("/", 1)[0] for p in traverse_util.flatten_dict(
        variables.get("batch_stats", {}), sep="/")})
    training = [m for m in norms if any(ph.mults.get(f"{m}/scale") is not None for ph in plan.phases)]
    if training:
        raise UserError(f"accum_steps={config.accum_steps} while BatchNorm trains ({training[0]} "
                        f"and {len(training) - 1} more) is not the full-batch update: each "
                        f"microbatch is normalised with its own statistics. Use accum_steps=1, "
                        f"freeze those layers, or set accum_bn_microbatch_stats=True to accept it")


class _PhaseRunner:
    """Optimizer, compiled step and step cost for one phase of the plan."""

    def __init__(self, config, module, plan, index, par):
        self.index = index
        self.phase = plan.phases[index]
        self.trainable = self.phase.trainable_paths()
        self.tx = optim.build(config.optim, plan, index, config.total_steps)
        frozen = [p for p, mult in self.phase.mults.items() if mult is None]
        step = steps.make_train_step(
            models.with_frozen_norms(module, frozen), self.tx, self.trainable,
            l2sp=tuple(config.optim.l2sp) or None,
            accum_steps=config.accum_steps, axis_name=par.axis_name,
            mixing=steps.Mixing(config.data.mixup_alpha, config.data.cutmix_alpha,
                                config.data.mix_prob, config.data.mix_switch_prob),
            label_smoothing=config.label_smoothing,
            ema_decay=config.ema.decay, ema_warmup=config.ema.warmup,
            param_dtype=config.model.forward_param_dtype or None)
        self._jitted = par.compile_train(step)
        self._batch_size = config.data.batch_size
        self._compiled = {}  # batch shapes -> executable: one, or one per text length bucket
        self._flops = {}     # batch shapes -> XLA's FLOPs of one step

    def compiled_for(self, batch):
        return _shape_of(batch) in self._compiled

    def flops_for(self, batch):
        """XLA's FLOPs of one step on `batch` (None when unknown); compiled first."""
        return self._flops.get(_shape_of(batch))

    def compile(self, state, batch):
        logging.info("compiling the train step of phase %d%s...", self.index,
                     f" for {_shape_of(batch)}" if "input_ids" in batch else "")
        begin = time.monotonic()
        compiled = self._jitted.lower(state, batch).compile()
        self._compiled[_shape_of(batch)] = compiled
        flops = self._flops[_shape_of(batch)] = metrics.compiled_cost(compiled).get("flops")
        self._check_memory(compiled)
        logging.info("compiled in %.1fs (%s per step)", time.monotonic() - begin,
                     f"{flops / 1e9:.3g} GFLOP" if flops else "FLOPs unknown")

    def _check_memory(self, compiled):
        """An impossible batch is one line before its first step, not an allocation failure
        inside it: XLA's compiled memory of the step against one device's memory."""
        need, have = metrics.compiled_memory(compiled), parallel.device_memory_bytes()
        if need and need > have:
            raise UserError(
                f"the train step at data.batch_size={self._batch_size} needs "
                f"{need / 2**30:.1f} GiB per device (XLA's compiled memory) but a device has "
                f"{have / 2**30:.1f} GiB: lower data.batch_size or raise accum_steps")

    def __call__(self, state, batch):
        if not self.compiled_for(batch):
            self.compile(state, batch)
        return self._compiled[_shape_of(batch)](state, batch)


def _shape_of(batch):
    """The shape of a batch's token ids (text batches come in length buckets), else None."""
    return tuple(batch["input_ids"].shape) if "input_ids" in batch else None


@dataclasses.dataclass
class _Run:
    """What the loop needs, fixed for the whole run (prepare builds it; run adds the workdir)."""
    config: object
    model: object               # run_init.Model
    data_cfg: object
    par: object
    module: object
    spec: freezing.Spec
    plan: freezing.Plan
    phases: list                # the plan compiled to explicit phases (summary.json)
    param_sizes: dict
    workdir: object = None      # the claimed Workdir
    ckpt: checkpoint.Checkpoints = None
    writer: metrics.MetricWriter = None
    eval_step: object = None
    eval_data: dict = None      # split ("validation", "test") -> (batches, count)
    best: checkpoint.Checkpoints = None  # the best-by-validation state (None: no validation)
    fewshot: object = None      # FewShotMonitor, or None

    def runner(self, index):
        return _PhaseRunner(self.config, self.module, self.plan, index, self.par)

    @functools.cached_property
    def lr_at(self):
        """The base lr at a step: the schedule compiled once (eagerly it is a program per op)."""
        return jax.jit(optim.lr_schedule(self.config.optim, self.config.total_steps))


def _start(run_, model):
    """(phase runner, state, run record, start step): fresh, or restored from the newest checkpoint."""
    config, plan, par = run_.config, run_.plan, run_.par
    start_step = run_.ckpt.latest_step() or 0
    runner = run_.runner(plan.phase_index(start_step))
    # The EMA averages every parameter trained in any phase so far (state.ema_for).
    ema_paths = sorted({p for phase in plan.phases[:runner.index + 1]
                        for p in phase.trainable_paths()})
    initial = par.build_state(functools.partial(
        state_lib.create, tx=runner.tx, trainable_paths=runner.trainable, seed=config.seed,
        with_anchor=bool(config.optim.l2sp), with_ema=config.ema.decay > 0,
        ema_paths=ema_paths), model.variables)
    if not start_step:
        return runner, initial, summary_lib.RunRecord(), 0
    meta = run_.ckpt.restore_meta(start_step)
    if meta.get("phase") != runner.index:
        raise UserError(f"checkpoint step {start_step} was saved in phase {meta.get('phase')} "
                        f"but the plan puts it in phase {runner.index}: the freeze config changed")
    state = par.from_restored(run_.ckpt.restore_state(start_step, par.restore_template(initial)))
    record = summary_lib.RunRecord.from_json(meta["record"]) if "record" in meta else (
        summary_lib.RunRecord())
    logging.info("resumed from step %d (phase %d)", start_step, runner.index)
    return runner, state, record, start_step


def _check_and_log(run_, pending, state, done, runner, progress, record):
    """Stops on a non-finite train state (before it is saved), and writes the train record
    when it is time. The only place the loop waits for the device between evaluations:
    `pending` holds the metrics of the steps since the last call, still on the device."""
    config = run_.config
    fetched = run_.par.fetch(pending)
    if not run_.par.all_finite(state):
        latest = run_.ckpt.latest_step()
        _write_summary(run_, record, status="failed")
        raise UserError(
            f"the train state became NaN/Inf by step {done} (loss {float(fetched[-1]['loss']):.3g}, "
            f"grad_norm {float(fetched[-1]['grad_norm']):.3g}) and was not saved; "
            + (f"checkpoints up to step {latest} are finite. " if latest else "")
            + f"Use a lower optim.lr (now {config.optim.lr:g}) or set optim.clip_norm, in a new "
            f"--workdir")
    if done % config.log_every and done != config.total_steps:
        return
    values = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    values.update(progress.line(done, values["loss"]))
    values.update(phase=runner.index,
                  trainable_fraction=freezing.trainable_fraction(runner.phase, run_.param_sizes),
                  lr=float(run_.lr_at(done - 1)))
    run_.writer.write(done, values)


def _next_phase(run_, state, done):
    """The runner of the phase that starts at step `done`, and the state moved to it (on device)."""
    runner = run_.runner(run_.plan.phase_index(done))
    state = run_.par.map_state(functools.partial(
        state_lib.next_phase, tx=runner.tx, trainable_paths=runner.trainable), state)
    logging.info("step %d: phase %d starts, %d trainable tensors (%.1f%% of parameters)",
                 done, runner.index, len(runner.trainable),
                 100 * freezing.trainable_fraction(runner.phase, run_.param_sizes))
    return runner, state


def _save(run_, done, state, runner, record, last, pause=False):
    """A checkpoint at `done`; at the end and at a stop_at_step pause even off the interval."""
    run_.ckpt.save(done, run_.par.one_copy(state),
                   {"phase": runner.index, "step": done, "record": record.to_json()},
                   force=last or pause)
    if not last:  # Lets a sweep see how far a running (or killed) run got.
        _write_summary(run_, record, status="running")


def _train(run_, runner, state, record, start_step, train_iter):
    """Steps start_step..total_steps: train, log, evaluate, change phase, checkpoint."""
    config = run_.config
    progress = metrics.Progress(start_step, config.total_steps, config.data.batch_size)
    pending = []
    for step in range(start_step, _stop_step(config)):
        batch = next(train_iter)
        if not runner.compiled_for(batch):  # (text: once per length bucket)
            with progress.paused():
                runner.compile(state, batch)
        state, step_metrics = runner(state, batch)
        record.add_step_flops(runner.index, runner.flops_for(batch))
        pending.append(step_metrics)
        done = step + 1
        last = done == config.total_steps
        pause = done == _stop_step(config) and not last  # stop_at_step: resumable later
        save_now = done % config.checkpoint_every == 0 or last or pause
        eval_now = (config.eval_every and done % config.eval_every == 0) or last or pause
        if done % config.log_every == 0 or save_now or eval_now:
            _check_and_log(run_, pending, state, done, runner, progress, record)
            pending = []
        with progress.paused():  # Evaluation and checkpoints are not train throughput.
            if eval_now and run_.best is not None:
                selection.validate(run_, state, done, record)
            if eval_now and run_.fewshot is not None:
                run_.writer.write(done, dict(run_.fewshot(state), dataset=config.fewshot.name),
                                  kind="fewshot")
            if last and "test" in run_.eval_data:  # data.test_split="": never read
                selection.report_test(run_, state, done, record)
            if not last and run_.plan.phase_index(done) != runner.index:
                runner, state = _next_phase(run_, state, done)
            if save_now:
                _save(run_, done, state, runner, record, last, pause)
    return state


def _stop_step(config):
    """The step this start trains up to: total_steps, or an earlier stop_at_step."""
    return config.stop_at_step or config.total_steps


def _prefetch_to_device(batches, par, depth=2):
    """Device batches, `depth` transfers ahead of the step that consumes them."""
    queue = collections.deque()
    for batch in batches:
        queue.append(par.put_batch(batch))
        if len(queue) == depth:
            yield queue.popleft()


def prepare(config, start):
    """The run of `config` from `start` (run_init.Start), built and checked: plan, data,
    batch sizes. Nothing is written; `train` then trains it in a claimed workdir."""
    model, data_cfg = start.model, start.data_cfg
    par = parallel.build(config.parallelism)
    flat_params = traverse_util.flatten_dict(model.variables["params"], sep="/")
    param_sizes = {p: int(np.prod(v.shape)) for p, v in flat_params.items()}
    group_list = models.groups(model.module)
    plan = freezing.make_plan(start.spec, group_list, list(flat_params), config.total_steps)
    _log_plan(plan, group_list, param_sizes)
    _check_accumulation(config, model.variables, plan)
    # A missing split fails here, before the workdir is touched.
    train_count = data.count(data_cfg, "train", config.seed)
    _check_batch_fits(config, data_cfg, train_count)
    evaluated = [w for w, key in (("validation", "val_split"), ("test", "test_split"))
                 if config.data[key]]
    if not evaluated:
        raise UserError("data.val_split and data.test_split are both empty: a run evaluates on "
                        "at least one of them")
    eval_data = {  # Re-iterable: read at every evaluation.
        which: data.eval_batches(data_cfg, seed=config.seed, which=which,
                                 global_batch=config.data.eval_batch_size,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
        for which in evaluated}
    run_ = _Run(config, model, data_cfg, par, model.module, start.spec, plan,
                freezing.compiled_phases(plan, group_list), param_sizes, eval_data=eval_data)
    if config.fewshot.name:  # (reads its dataset's info: a missing one fails here)
        from tljax.probe import monitor

        run_.fewshot = monitor.FewShotMonitor(config, data_cfg, model.module, par)
    return run_


def train(run_, workdir):
    """Trains and evaluates the prepared run in `workdir` (a Workdir claimed by tljax.runs),
    resuming if it holds checkpoints. Returns the run summary (also workdir/summary.json)."""
    config, model, data_cfg = run_.config, run_.model, run_.data_cfg
    run_.workdir = workdir
    try:  # On any failure, in-flight checkpoint saves (of finite states) still complete.
        run_.ckpt = checkpoint.Checkpoints(workdir.file(workdir_lib.CHECKPOINTS),
                                           config.checkpoint_every, config.keep_checkpoints)
        if config.data.val_split:
            run_.best = checkpoint.Checkpoints(workdir.file(workdir_lib.BEST_CHECKPOINT), 1, 1)
        export.write_record(workdir.path, model.module, config.model.name, model.num_classes, data_cfg)
        runner, state, record, start_step = _start(run_, model)
        if start_step == config.total_steps:
            return _finished(run_, state, record, model.num_classes, data_cfg)
        if start_step >= _stop_step(config):  # paused there already
            return _write_summary(run_, record, status="running")
        run_.writer = metrics.MetricWriter(workdir.path, jax.process_index() == 0, start_step,
                                           hparams=config_lib.flatten(config_lib.to_dict(config)))
        run_.eval_step = selection.CompiledEval(run_.par.compile_eval(
            steps.make_eval_step(model.module, run_.par.axis_name)))
        train_iter = _prefetch_to_device(data.train_batches(
            data_cfg, seed=config.seed, global_batch=config.data.batch_size,
            process_index=jax.process_index(), process_count=jax.process_count(),
            start_step=start_step), run_.par)
        state = _train(run_, runner, state, record, start_step, train_iter)
        if _stop_step(config) < config.total_steps:
            run_.writer.close()
            return _write_summary(run_, record, status="running")
        summary = _write_summary(run_, record, status="done")
        if config.export_weights:
            _export(run_, state, model.num_classes, data_cfg)
        run_.writer.write(config.total_steps, summary, kind="summary")
        run_.writer.close()
        return summary
    finally:
        for manager in (run_.ckpt, run_.best):
            if manager is not None:
                manager.close()


def _finished(run_, state, record, num_classes, data_cfg):
    """A re-run of a finished run: the summary it had, and the export if it is asked for now."""
    logging.info("the run in %s is finished already (step %d)", run_.workdir,
                 run_.config.total_steps)
    if run_.config.export_weights and not run_.workdir.file(workdir_lib.MODEL).exists():
        _export(run_, state, num_classes, data_cfg)
    if run_.workdir.is_done():
        return run_.workdir.read_summary()
    return _write_summary(run_, record, status="done")


def _write_summary(run_, record, status):
    summary = summary_lib.summarize(run_.config, run_.spec, run_.plan, run_.phases,
                                    run_.param_sizes, record, status)
    run_.workdir.write_summary(summary)
    if status == "done" and summary["test_accuracy"] is None:
        logging.info("validation accuracy %.4f at the last step, best %.4f (no test split: "
                     "test was not read)", summary["final_val_accuracy"], summary["val_accuracy"])
    elif status == "done":
        logging.info("test accuracy %.4f at step %d (selected by validation: %s); final step "
                     "%.4f", summary["test_accuracy"], summary["selected_step"],
                     "yes" if summary["val_accuracy"] is not None else "no validation split",
                     summary["final_accuracy"])
    return summary


def _export(run_, state, num_classes, data_cfg):
    exports = export.gather(run_.par, state, run_.best, run_.config.ema.export)
    export.write(run_.workdir.path, exports, run_.module, run_.config.model.name, num_classes, data_cfg)

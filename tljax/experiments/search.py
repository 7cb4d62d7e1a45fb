"""Which method, at which hyper-parameters, for this dataset and budget: a search over
adaptation methods chosen on validation, with compute cut where a trial is clearly behind.

    tljax search --config=configs/digits.py --workdir=/tmp/search \\
        --methods=full,linear_probe,lp_ft:lp_steps=50,bitfit,probe:ridge \\
        --space="optim.lr=loguniform(1e-3,1e-1);optim.weight_decay=0,1e-4" \\
        --trials=24 --budget_flops=2e14 --seeds=3

Each trial is an ordinary tljax run in WORKDIR/trials/NNNN: a method and hyper-parameters
(and, with --backbones, a backbone) drawn by Optuna's TPE sampler (seeded per trial number:
`trial_seeded_tpe`), trained on its full-length schedule but stopped at rungs (`stop_at_step`:
min_fraction·total_steps·eta^k, then total_steps), where its validation accuracy goes to
Optuna's SuccessiveHalvingPruner (a trial goes on only while it is in the top 1/eta of the
trials that reached that rung) or HyperbandPruner (--pruner=hyperband: brackets that start
judging at later rungs). A trial that goes on resumes from its checkpoint, so stopping costs
nothing. --objective=pareto asks instead for the front of validation accuracy against
full-length train FLOPs: a two-objective study whose trials all train to total_steps.
Optuna's storage (SQLite in the workdir by default, an RDB URL, or a journal file on a
shared filesystem) lets many workers (a SLURM array, one per GPU) run one search; a
re-started search continues it.

The budget counts FLOPs of train steps and evaluations, each once per time it ran (`charges`:
a LoRA step costs less than a full one; a failed trial is counted to the last step its metrics
record; a trial a killed worker left resumes from its checkpoint and charges the steps it
trains again), or train steps (--budget_steps), or wall time (--budget_seconds). --space
keys probe.* are sampled for the probe methods only, the others for the trained methods
only; a method with nothing to sample runs once, outside the sampler (`run_once`), as does
each --backbones candidate's screening probe (`screen`, cheapest fidelity first). At the end
the best configuration of each method is re-run over --seeds at full length into
WORKDIR/final (by the last worker to end) and reported with paired differences
(tljax/experiments/sweep_report.py). Test data never chooses anything: trials run without a
test split. Optuna is used for the sampler, the pruners and the shared storage: maintained
implementations of exactly the logic this needs.
"""
import dataclasses
import os
import re
import socket
import time
import warnings

from absl import logging
from etils import epath

from tljax.experiments import sweep
from tljax import config_lib, freezing, metrics
from tljax import workdir as workdir_lib
from tljax.errors import UserError

STUDY = "search"
UNSEARCHED = "unsearched_method"  # user_attrs key: the method of a run with nothing sampled


BACKBONE = "backbone"  # param / user_attrs key: the model argument of --config a trial used


# --objective: a trial's values are its validation accuracy; with "pareto", and its train
# FLOPs at full length (the Pareto front of the two is the search's answer).
OBJECTIVES = {"accuracy": ("maximize",), "pareto": ("maximize", "minimize")}


def is_pareto(study):
    """Whether `study` was created with --objective=pareto (two values per trial)."""
    return len(study.directions) > 1


def accuracy_of(trial):
    """A finished trial's validation accuracy (its first value under either objective)."""
    return trial.values[0]


def method_of(trial):
    return trial.params.get("method") or trial.user_attrs.get(UNSEARCHED)


def best_per_method(study):
    """{method: FrozenTrial} of the complete trials with the highest validation accuracy."""
    import optuna

    best = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        method = method_of(trial)
        if method not in best or accuracy_of(trial) > accuracy_of(best[method]):
            best[method] = trial
    return best


def backbone_of(trial):
    """The model argument of --config the trial ran ("" = the config's own model)."""
    return trial.params.get(BACKBONE) or trial.user_attrs.get(BACKBONE, "")




@dataclasses.dataclass(frozen=True)
class Param:
    key: str
    kind: str            # "loguniform" | "uniform" | "choice"
    values: tuple

    def suggest(self, trial):
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        low, high = self.values
        return trial.suggest_float(self.key, low, high, log=self.kind == "loguniform")

    def contains(self, value):
        """Whether `value` is a point of this dimension (a warm start's point may not be)."""
        if self.kind == "choice":
            return value in self.values
        return isinstance(value, (int, float)) and self.values[0] <= value <= self.values[1]


def parse_space(text):
    """[Param] of "optim.lr=loguniform(1e-4,1e-1);optim.weight_decay=0,1e-4"."""
    params = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        match = re.fullmatch(r"(loguniform|uniform)\(([^,]+),([^,]+)\)", value.replace(" ", ""))
        try:
            if not sep or not key or not value:
                raise ValueError
            if not match and re.fullmatch(r"\w+\(.*\)", value.replace(" ", "")):
                raise ValueError  # a distribution written wrong is no categorical value
            if match:
                low, high = float(match.group(2)), float(match.group(3))
                if not low < high or (match.group(1) == "loguniform" and low <= 0):
                    raise ValueError
                params.append(Param(key, match.group(1), (low, high)))
            else:
                params.append(Param(key, "choice", tuple(_number(v) for v in value.split(","))))
        except ValueError:
            raise UserError(f"--space item {item!r}: write KEY=loguniform(LOW,HIGH) with "
                            f"0 < LOW < HIGH, KEY=uniform(LOW,HIGH), or KEY=V1,V2,...") from None
    return params


def _number(text):
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def rungs(total_steps, eta, min_fraction):
    """Steps where trials are compared: r0·eta^k below total_steps, then total_steps."""
    first = max(1, round(total_steps * min_fraction))
    steps = []
    while first < total_steps:
        steps.append(first)
        first *= eta
    return steps + [total_steps]


def flops_spent(summary, step):
    """Train FLOPs of a run's first `step` steps, from its summary (phases and their step
    FLOPs); a probe's whole cost."""
    if summary.get("probe"):
        return summary["train_flops"] or 0.0
    starts = [phase[0] for phase in summary["phases"]] + [summary["total_steps"]]
    per_phase = summary["train_step_flops"] or {}
    return sum(per_phase.get(str(i), 0.0) * max(0, min(starts[i + 1], step) - starts[i])
               for i in range(len(starts) - 1))


def validation_at(summary, step):
    for at, accuracy in summary.get("val_history") or []:
        if at == step:
            return accuracy
    raise UserError(f"the run has no validation at step {step}: the search needs a validation "
                    f"split (data.val_split)")


CHARGED_FROM = "charged_from"  # user_attrs: the step this trial's charges count from
CHARGED_TO = "charged_to"      # user_attrs: the step its charges reach (its last rung so far)
FULL_LENGTH_FLOPS = "full_length_flops"  # user_attrs: its train FLOPs at total_steps
RETRAINED = "retrained"        # user_attrs: [[from, to]] steps trained twice (a killed attempt)


def checkpoint_step(workdir):
    """The newest checkpoint's step in a run directory (0 without one): where a run restarts."""
    from tljax.training import checkpoint

    return checkpoint.newest_step(epath.Path(workdir) / workdir_lib.CHECKPOINTS)


def last_logged_step(workdir):
    """The last step a run directory's metrics.jsonl records (0 without one): how far a run
    that was killed or failed had trained, to within log_every."""
    return max((record.get("step", 0) for record in metrics.read_records(workdir)), default=0)


def full_length_flops(summary, total_steps):
    """Train FLOPs of the run's whole schedule, once (what the report's cost axis shows)."""
    if summary.get("probe"):
        return summary["train_flops"] or 0.0
    return flops_spent(summary, total_steps)


def evaluation_flops(summary, since, to):
    """XLA's FLOPs of a run's evaluations at steps in (since, to], from its summary."""
    return sum(flops for step, flops in summary.get("eval_flops") or [] if since < step <= to)


def charges(summary, since, to, retrained=()):
    """{charge key: spent} of a trial that trained from step `since` to `to`, plus the
    `retrained` [from, to] segments a killed attempt trained and its successor trained again:
    each trained step and each evaluation charged once per time it ran. "flops" (what
    --budget_flops counts) is train plus evaluation FLOPs; a probe's is its feature pass and
    fit (evaluating a fitted probe costs next to nothing)."""
    if summary.get("probe"):
        train = summary["train_flops"] or 0.0
        return {"flops": train, "train_flops": train, "eval_flops": 0.0, "train_steps": 0,
                "wall_time_s": summary["wall_time_s"]}
    segments = [(since, to), *retrained]
    train = sum(flops_spent(summary, b) - flops_spent(summary, a) for a, b in segments)
    evaluations = sum(evaluation_flops(summary, a, b) for a, b in segments)
    return {"flops": train + evaluations, "train_flops": train, "eval_flops": evaluations,
            "train_steps": sum(b - a for a, b in segments),
            "wall_time_s": summary["wall_time_s"]}


CHARGE_KEYS = ("flops", "train_flops", "eval_flops", "train_steps", "wall_time_s")


class Objective:
    """One trial: a method and hyper-parameters, trained rung by rung in its own workdir."""

    def __init__(self, load_config, workdir, methods, space, fixed, eta, min_fraction):
        """`load_config(backbone)` gives a fresh config (e.g. config_lib.load of --config
        with that model argument; `load_config()` the config's own model). In a "pareto"
        study (`is_pareto`) every trial trains to total_steps, unjudged at rungs: Optuna's
        pruners judge one value, and halving on accuracy alone would cut the cheap trials
        the front is made of."""
        self.load_config, self.workdir, self.methods = load_config, workdir, methods
        self.space, self.fixed = space, fixed
        self.backbones = [""]  # the model arguments trials choose among (screen sets them)
        base = self._config([])
        self.total_steps = base.total_steps
        self.rungs = rungs(base.total_steps, eta, min_fraction)

    def _backbone(self, trial):
        if len(self.backbones) > 1:
            return trial.suggest_categorical(BACKBONE, self.backbones)
        trial.set_user_attr(BACKBONE, self.backbones[0])
        return self.backbones[0]

    def _config(self, overrides, backbone=""):
        config = self.load_config(backbone) if backbone else self.load_config()
        for override in [*self.fixed, *overrides]:
            config_lib.apply_override(config, override)
        return config

    def __call__(self, trial):
        import optuna

        backbone = self._backbone(trial)
        method = trial.suggest_categorical("method", self.searched)
        overrides = [sweep.how(method)] + [f"{p.key}={p.suggest(trial)}"
                                           for p in self.space_of(method)]
        workdir = trial.user_attrs.get("workdir") or os.path.join(
            self.workdir, "trials", f"{trial.number:04d}")
        trial.set_user_attr("workdir", workdir)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        pareto = is_pareto(trial.study)
        probe = method.startswith(freezing.PROBE + ":")
        steps = [self.total_steps] if probe or pareto else self.rungs
        resumed_at = checkpoint_step(workdir)  # trained that far before this attempt
        since = trial.user_attrs.get(CHARGED_FROM, resumed_at)
        trial.set_user_attr(CHARGED_FROM, since)
        retrained = trial.user_attrs.get(RETRAINED, [])
        for step in steps:
            try:
                summary = self._run_to(overrides, workdir, step, backbone)
            except (UserError, FloatingPointError):  # charged up to where it failed
                failed = workdir_lib.Workdir(workdir).read_summary()
                if failed is not None:
                    self._charge(trial, charges(failed, since, max(resumed_at, last_logged_step(
                        workdir)), retrained))
                raise
            # (A resumed trial reports its earlier rungs again without training to them.)
            self._charge(trial, charges(summary, since, max(step, resumed_at), retrained))
            trial.set_user_attr(CHARGED_TO, max(step, resumed_at))
            trial.set_user_attr(FULL_LENGTH_FLOPS, full_length_flops(summary, self.total_steps))
            value = summary["val_accuracy"] if summary.get("probe") else validation_at(summary,
                                                                                      step)
            if not pareto:  # (a multi-objective study takes no intermediate values)
                trial.report(value, step)
            logging.info("search: trial %d (%s) step %d of %d: validation %.4f", trial.number,
                         " ".join(([f"backbone {backbone}"] if backbone else []) + overrides),
                         step, self.total_steps, value)
            if step < self.total_steps and trial.should_prune():
                raise optuna.TrialPruned()
        return (value, trial.user_attrs[FULL_LENGTH_FLOPS]) if pareto else value

    def _run_to(self, overrides, workdir, step, backbone=""):
        """The summary of the run in `workdir`, trained (or resumed) up to `step`. A trial
        never reads test (test_split="")."""
        from tljax import runs

        config = self._config(overrides + [
            "data.test_split=", f"stop_at_step={0 if step == self.total_steps else step}"],
            backbone)
        return runs.run(config, workdir)

    @staticmethod
    def _charge(trial, costs):
        for key, amount in costs.items():
            trial.set_user_attr(key, amount)

    def space_of(self, method):
        """The --space params that act on `method`: probe.* keys on the probes, the others on
        trained methods (TPE handles such a conditional space)."""
        probe = method.startswith(freezing.PROBE + ":")
        return [p for p in self.space if p.key.startswith("probe.") == probe]

    @property
    def searched(self):
        """The methods the sampler chooses among: those with something to sample."""
        return [m for m in self.methods if self.space_of(m)]

    @property
    def unsearched(self):
        """Methods with nothing to sample (a probe without probe.* keys, any method without
        --space) have one configuration: run once at full length (run_unsearched), not
        again each time a sampler would pick them."""
        return [m for m in self.methods if not self.space_of(m)]

    def run_unsearched(self, study, budgets=None):
        """Runs each unsearched method the study lacks on each backbone, while no budget is
        spent, and adds it as a finished trial without sampled params (its method in
        user_attrs UNSEARCHED), so the sampler's "method" choices hold the searched methods
        only. A run another worker is running (its workdir is locked) is left to that worker."""
        for backbone in self.backbones:
            for method in self.unsearched:
                if self.run_once(study, method, backbone, budgets) == "spent":
                    return

    def run_once(self, study, method, backbone="", budgets=None):
        """The study's finished trial of `method` on `backbone`, run now at full length if
        the study lacks it; "spent" when a budget is, None when another worker runs it."""
        import optuna

        from tljax import lock

        def existing():
            return next((t for t in study.get_trials(deepcopy=False) if method_of(t) == method
                         and backbone_of(t) == backbone), None)

        if existing():
            return existing()
        if exhausted(study, budgets or {}):
            return "spent"
        name = sweep.slug(method) + (f"-{sweep.slug(backbone)}" if backbone else "")
        workdir = os.path.join(self.workdir, "trials", name)
        overrides = [sweep.how(method)]
        on = f" on {backbone}" if backbone else ""
        attrs = {UNSEARCHED: method, BACKBONE: backbone, "workdir": workdir,
                 "overrides": overrides}
        try:
            summary = self._run_to(overrides, workdir, self.total_steps, backbone)
        except lock.WorkdirInUse:
            logging.info("search: %s%s is running in another worker", method, on)
            return None
        except (UserError, FloatingPointError) as e:  # a failed trial, charged as one
            failed = workdir_lib.Workdir(workdir).read_summary()
            costs = charges(failed, 0, last_logged_step(workdir)) if failed else {}
            if not existing():
                study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.FAIL, user_attrs={**attrs, **costs}))
            logging.error("search: %s%s failed: %s", method, on, e)
            return existing()
        value = summary["val_accuracy"] if summary.get("probe") else validation_at(
            summary, self.total_steps)
        if not existing():  # (another worker may have added it meanwhile: the same run)
            full_length = full_length_flops(summary, self.total_steps)
            pareto = is_pareto(study)
            study.add_trial(optuna.trial.create_trial(
                params={}, distributions={}, values=[value, full_length] if pareto else [value],
                intermediate_values={} if pareto else {self.total_steps: value},
                user_attrs={**attrs, **charges(summary, 0, self.total_steps),
                            CHARGED_TO: self.total_steps, FULL_LENGTH_FLOPS: full_length}))
            logging.info("search: %s%s (nothing to sample) ran once: validation %.4f", method,
                         on, value)
        return existing()

    def screen(self, study, candidates, method, keep, budgets=None, wait_s=5.0):
        """The cheapest fidelity first: `method` (a feature probe) on each candidate backbone
        (once per study, a finished trial each), then trials choose among the `keep` with
        the best validation accuracy (self.backbones). Returns {backbone: accuracy}; a
        candidate another worker is screening is waited for."""
        import optuna

        for backbone in candidates:  # the rungs are the config's own model's
            steps = self._config([], backbone).total_steps
            if steps != self.total_steps:
                raise UserError(f"--backbones: {backbone} trains {steps} steps where the "
                                f"config's own model trains {self.total_steps}; set "
                                f"--set=total_steps=N so that every backbone trains alike")
        scores = {}
        for backbone in candidates:
            trial = self.run_once(study, method, backbone, budgets)
            while trial is None:  # another worker is screening it
                time.sleep(wait_s)
                trial = self.run_once(study, method, backbone, budgets)
            if trial == "spent":
                break
            if trial.state != optuna.trial.TrialState.COMPLETE:
                logging.error("search: backbone %s is out: its screening run failed", backbone)
                continue
            scores[backbone] = accuracy_of(trial)
        ranked = sorted(scores, key=lambda b: -scores[b])  # (stable: ties keep the given order)
        self.backbones = ranked[:keep] or [""]
        logging.info("search: backbones screened by %s on validation: %s; trials use %s",
                     method, ", ".join(f"{b} {scores[b]:.4f}" for b in ranked),
                     ", ".join(self.backbones))
        return scores


BUDGETS = {"flops": "FLOPs (train steps and evaluations)", "train_steps": "train steps",
           "wall_time_s": "seconds of trial wall time"}  # what a budget may count


def spent(study, what="flops"):
    """The study's trials' total of `what` (a CHARGE_KEYS key), each to its last rung."""
    return sum(t.user_attrs.get(what, 0.0) for t in study.get_trials(deepcopy=False))


def exhausted(study, budgets):
    """The first {what: limit} budget (limit 0: none) the study has spent, or None."""
    return next((what for what, limit in budgets.items()
                 if limit and spent(study, what) >= limit), None)


def budget_callback(budgets):
    """Stops the study (no new trials; running ones finish) once a budget is spent."""
    def stop_when_spent(study, trial):
        del trial
        what = exhausted(study, budgets)
        if what:
            logging.info("search: %.3g of %.3g %s spent: no new trials", spent(study, what),
                         budgets[what], BUDGETS[what])
            study.stop()
    return stop_when_spent


def progress_callback(budgets):
    """One line per ended trial: how it ended, the best so far and what the study spent."""
    def log_trial(study, trial):
        import optuna

        state = trial.state
        if state == optuna.trial.TrialState.COMPLETE:
            ended = f"finished: validation {accuracy_of(trial):.4f}"
        elif state == optuna.trial.TrialState.PRUNED:
            last = max(trial.intermediate_values, default=0)
            ended = f"stopped at step {last} (not in the top 1/eta)"
        else:
            ended = "failed (see the log above)"
        done = [t for t in study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(done, key=accuracy_of, default=None)
        spending = "; ".join(
            f"{spent(study, what):.3g}{f' of {limit:.3g}' if limit else ''} {BUDGETS[what]}"
            for what, limit in budgets.items() if limit or what == "flops")
        logging.info("search: trial %d %s; best %s; %d trials, %s spent", trial.number, ended,
                     f"{accuracy_of(best):.4f} (trial {best.number})" if best else "none yet",
                     len(study.trials), spending)
    return log_trial


def trial_seeded_tpe(seed):
    """Optuna's TPE, its random draws for trial N seeded by (seed, N) alone.

    One TPESampler(seed) per worker would make workers sharing a study draw the same points
    during TPE's random start-up, and a restarted worker replay the points it drew before it
    was killed. Seeded per trial number (unique in a study), every trial draws its own points,
    and the same study run again draws the same ones. constant_liar makes TPE count running
    trials as poor ones, Optuna's advice for parallel workers."""
    import numpy as np
    import optuna

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self):
            self._by_trial = {}

        def _sampler(self, trial):
            if trial.number not in self._by_trial:
                trial_seed = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
                self._by_trial[trial.number] = optuna.samplers.TPESampler(
                    seed=trial_seed, constant_liar=True)
            return self._by_trial[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._sampler(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._sampler(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._sampler(trial).sample_independent(study, trial, param_name,
                                                           param_distribution)

        def before_trial(self, study, trial):
            self._sampler(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._by_trial.pop(trial.number, self._sampler(trial)).after_trial(
                study, trial, state, values)

    return TrialSeededTPE()


PRUNERS = ("sha", "hyperband")
JOURNAL = "journal:"  # --storage=journal:PATH: Optuna's journal file, made for NFS
COMPARE = ("all", "method")  # which trials a rung value competes with


def make_pruner(kind, eta, min_resource, max_resource, compare="all"):
    """Successive halving (one bracket: every trial judged from the first rung), or Hyperband
    (brackets that start judging at later rungs, r0·eta^s: a method that starts slowly, such
    as full fine-tuning against a probe, is not cut by its early ranks in every bracket). The
    rungs trials report at, r0·eta^k, hold every bracket's. compare="method": a trial's rung
    value competes only with the trials of its own method (`PerMethodPruner`)."""
    import optuna

    if kind not in PRUNERS:
        raise UserError(f"--pruner={kind!r}: use one of {', '.join(PRUNERS)}")
    if compare not in COMPARE:
        raise UserError(f"--compare_rungs={compare!r}: use one of {', '.join(COMPARE)}")
    if kind == "hyperband":
        if compare == "method":  # (its brackets re-read the whole study)
            raise UserError("--compare_rungs=method works with --pruner=sha; Hyperband's "
                            "brackets already hedge against early ranks")
        return optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                              max_resource=max_resource, reduction_factor=eta)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                    reduction_factor=eta)
    return PerMethodPruner(pruner) if compare == "method" else pruner


class PerMethodPruner:
    """Successive halving within each method: a trial's rung value competes only with the
    values its own method's trials reported at that rung, so a method that starts slowly
    (full fine-tuning) is never cut by a fast starter's early ranks (a probe); each method's
    best configuration reaches total_steps, where methods are compared at a fair step. Costs
    more compute than comparing all trials: a method's first trial always reaches the end.
    (Optuna calls a pruner's `prune(study, trial)`; it need not subclass BasePruner.)"""

    def __init__(self, pruner):
        self._pruner = pruner

    def prune(self, study, trial):
        return self._pruner.prune(_OneMethod(study, method_of(trial)), trial)


class _OneMethod:
    """The study as a pruner reads it (trials, storage, direction), holding only the trials
    of one method."""

    def __init__(self, study, method):
        self._study, self._method = study, method

    def get_trials(self, deepcopy=True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if method_of(t) == self._method]

    def __getattr__(self, name):
        return getattr(self._study, name)


def _storage(storage, workdir, heartbeat_s=0):
    """Optuna's storage for --storage: a journal file, an RDB URL, or WORKDIR/study.db. An
    RDB storage with `heartbeat_s` > 0 keeps a heartbeat of every running trial; a trial whose
    heartbeat is older than 3 x heartbeat_s (its worker died, on any host) is failed and
    resumed (`requeue`) by the next worker that starts a trial. (Optuna's journal storage has
    no heartbeat: restart a dead worker on its host, which resumes its trial at once.)"""
    import optuna

    if storage.startswith(JOURNAL):
        path = os.path.abspath(storage[len(JOURNAL):])
        if not os.path.isdir(os.path.dirname(path)):
            raise UserError(f"--storage={storage}: folder {os.path.dirname(path)} does not "
                            f"exist; create it or name a journal file in an existing folder")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    url = storage or f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"
    if not storage:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    heartbeat = ({"heartbeat_interval": heartbeat_s, "grace_period": 3 * heartbeat_s,
                  "heartbeat_stale_trial_callback": requeue} if heartbeat_s else {})
    with warnings.catch_warnings():  # (Optuna marks the heartbeat experimental)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)


def open_study(storage, workdir, sampler_seed, eta, min_resource, pruner="sha",
               max_resource="auto", heartbeat_s=0, compare="all", objective="accuracy"):
    """The search's Optuna study (created, or loaded as other workers left it). objective
    "pareto" makes it a two-objective study (validation accuracy up, full-length train
    FLOPs down: TPE then samples for the front) that judges no trial at rungs."""
    import optuna

    import sqlalchemy.exc

    url = storage or f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"
    if objective not in OBJECTIVES:
        raise UserError(f"--objective={objective!r}: use one of {', '.join(OBJECTIVES)}")
    if objective == "pareto":
        judging = [f"--pruner={pruner}"] * (pruner != "sha") + [
            f"--compare_rungs={compare}"] * (compare != "all")
        if judging:
            raise UserError(f"--objective=pareto trains every trial to total_steps (rungs "
                            f"judge accuracy alone and would cut the cheap trials the front "
                            f"is made of): drop {' '.join(judging)}")
        pruner = optuna.pruners.NopPruner()
    else:
        pruner = make_pruner(pruner, eta, min_resource, max_resource, compare)
    for attempt in range(10):  # workers starting together race to create the tables
        try:
            study = optuna.create_study(
                study_name=STUDY, storage=_storage(storage, workdir, heartbeat_s),
                load_if_exists=True, directions=list(OBJECTIVES[objective]),
                sampler=trial_seeded_tpe(sampler_seed), pruner=pruner)
            epath.Path(workdir).mkdir(parents=True, exist_ok=True)
            _check_objective(study, url, objective)
            return study
        except sqlalchemy.exc.ArgumentError:
            raise UserError(f"--storage={url} is not a database URL; use e.g. "
                            f"sqlite:////path/to/study.db or postgresql://user@host/db") from None
        except ImportError as e:  # a database whose driver is not installed
            raise UserError(f"--storage={url}: {e} (postgresql: install tljax's postgres "
                            f"extra, pip install -e '.[postgres]', which brings psycopg)"
                            ) from None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError,  # PostgreSQL: "relation ... already exists"
                optuna.exceptions.DuplicatedStudyError) as e:
            if "unable to open database file" in str(e):
                raise UserError(f"--storage={url}: cannot open the database file; check that "
                                f"its folder exists and is writable") from None
            if not _creation_race(e):  # an unreachable server, wrong credentials, ...
                reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
                raise UserError(f"--storage={url}: cannot connect ({reason}); check the host, "
                                f"port, database name and credentials") from None
            if attempt == 9:
                raise UserError(f"--storage={url}: the study could not be created after 10 "
                                f"tries ({type(e).__name__}); start the workers again") from None
            time.sleep(0.5 + attempt)


def _check_objective(study, url, objective):
    """A study keeps the objective it was created with (Optuna loads it whatever the
    directions asked): one line when a worker asks for another one."""
    directions = tuple(d.name.lower() for d in study.directions)
    if directions != OBJECTIVES[objective]:
        had = next((k for k, v in OBJECTIVES.items() if v == directions), directions)
        raise UserError(f"--storage={url}: its study was created with --objective={had}, not "
                        f"{objective}; use that objective or another --workdir/--storage")


def _creation_race(error):
    """Whether `error` is what workers starting together raise while creating the study's
    tables (retried), rather than a database that cannot be reached (one line at once)."""
    import optuna
    import sqlalchemy.exc

    if isinstance(error, (sqlalchemy.exc.IntegrityError, optuna.exceptions.DuplicatedStudyError)):
        return True
    return any(sign in str(error) for sign in ("already exists", "database is locked"))


def warm_start(study, earlier_workdirs, objective):
    """Enqueues, once, the best point of each method of earlier searches (their
    WORKDIR/study.db: another dataset, a smaller budget) that lies in this search's space,
    so the sampler starts from them (under a lock: workers starting together enqueue each
    point once). Returns how many it enqueued."""
    from tljax import lock

    guard = os.path.join(objective.workdir, "warm_start")  # workers starting together: once
    epath.Path(guard).mkdir(parents=True, exist_ok=True)
    claim = lock.WorkdirLock(guard).acquire_waiting(poll_seconds=1.0)
    try:
        return _enqueue_best(study, earlier_workdirs, objective)
    finally:
        claim.release()


def _enqueue_best(study, earlier_workdirs, objective):
    import optuna

    enqueued = 0
    for folder in earlier_workdirs:
        path = os.path.join(folder, "study.db")
        if not os.path.exists(path):
            raise UserError(f"--warm_start={folder}: no study.db there (a search's --workdir "
                            f"with the default storage)")
        earlier = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{os.path.abspath(path)}")
        for method, trial in best_per_method(earlier).items():
            space = {p.key: p for p in objective.space_of(method)}
            params = {"method": method, **{k: v for k, v in trial.params.items() if k in space}}
            if (method not in objective.searched or set(params) != {"method", *space}
                    or not all(space[k].contains(v) for k, v in params.items() if k != "method")):
                continue  # outside this search's space
            before = len(study.get_trials(deepcopy=False))
            study.enqueue_trial(params, skip_if_exists=True)  # once, across restarts too
            if len(study.get_trials(deepcopy=False)) == before:
                continue
            enqueued += 1
            logging.info("search: warm start from %s: %s (validation %.4f there)", folder,
                         params, accuracy_of(trial))
    return enqueued


def pareto_front(points):
    """The indices of the (accuracy, cost) points no other point beats in both: as accurate
    or more for as little or less, better in one (ties in both are all kept)."""
    front = []
    for i, (accuracy, cost) in enumerate(points):
        if not any(a >= accuracy and c <= cost and (a > accuracy or c < cost)
                   for j, (a, c) in enumerate(points) if j != i):
            front.append(i)
    return front


def resume_interrupted(study):
    """Trials that a killed worker of this host left RUNNING (its process is gone): failed
    and resumed at once (`requeue`). Other hosts' dead workers' trials are found by Optuna's
    heartbeat (`--heartbeat_s`), which calls `requeue` from any worker."""
    import optuna

    from tljax import lock

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host or lock.process_alive(worker.get("pid", 0)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        requeue(study, trial)


def requeue(study, trial):
    """Enqueues a trial whose worker died (now FAIL) with the same parameters and workdir,
    so that it resumes from its checkpoints. The dead attempt keeps what it was charged (to
    its last rung); the successor charges from there, plus the steps between the checkpoint
    it resumes from and the last step the dead attempt logged (trained twice). Optuna's
    heartbeat calls this as the storage's heartbeat_stale_trial_callback."""
    workdir = trial.user_attrs.get("workdir")
    charged_to = trial.user_attrs.get(CHARGED_TO, trial.user_attrs.get(CHARGED_FROM, 0))
    retrained = []
    if workdir:
        resumed_from, reached = checkpoint_step(workdir), last_logged_step(workdir)
        if reached > resumed_from:
            retrained.append([resumed_from, reached])
    study.enqueue_trial(trial.params, user_attrs={"workdir": workdir, CHARGED_FROM: charged_to,
                                                  RETRAINED: retrained})
    logging.info("search: trial %d was interrupted; enqueued to resume", trial.number)

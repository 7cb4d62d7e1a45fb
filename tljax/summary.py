"""The run record (saved in every checkpoint), the summary derived from it, and the one
schema of summary.json that training runs and probe runs share (so sweeps mix both).

Everything summary.json reports is in the record, so a run killed at any step and
resumed from its newest checkpoint reports what an uninterrupted run reports
(wall time aside: the time lost after the checkpoint is not counted).
"""
import dataclasses
import time

from tljax import freezing

# summary.json: every run writes every key (None where it does not apply).
FIELDS = (
    "status",                 # "running" | "done" | "failed"
    "freeze",                 # the schedule's label (spec string, explicit phases, probe:METHOD)
    "seed",
    "test_accuracy",          # at the step (or probe hyperparameter) validation selected;
    #                           None when data.test_split is empty (test never read)
    "selected_step", "val_accuracy",  # the best validation accuracy and its step
    "final_val_accuracy",     # validation accuracy at the last step (what a fixed-length run
    #                           is chosen by: the VTAB protocol, tljax suite)
    "final_accuracy", "val_history",
    "trainable_fraction",     # step-weighted over phases
    "phases",                 # what trained: [(start, [(regex, lr_mult or None)])] (training runs)
    "train_step_flops", "mean_train_step_flops", "train_flops",
    "eval_flops",             # [[step, XLA's FLOPs of that step's evaluations]] (all splits)
    "ema_val_accuracy", "ema_test_accuracy",
    "num_params", "wall_time_s", "total_steps",
    "forward_flops", "probe_fit_flops", "probe",  # probe runs
)


def new(**fields):
    """A summary dict with every FIELDS key, in that order."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"not summary.json fields: {sorted(unknown)}")
    return {key: fields.get(key) for key in FIELDS}


@dataclasses.dataclass
class RunRecord:
    evals: list = dataclasses.field(default_factory=list)  # [[step, split, {accuracy, loss, count, flops}]]
    selected: list = None      # [step, test result] of the state validation selected
    # "phase index" -> XLA's FLOPs of its train step, the mean over the steps run (text steps
    # cost more or less by their length bucket; image steps all cost the same)
    step_flops: dict = dataclasses.field(default_factory=dict)
    step_counts: dict = dataclasses.field(default_factory=dict)  # "phase index" -> steps in that mean
    wall_time_s: float = 0.0   # accumulated over earlier sessions, up to their last checkpoint
    _session_start: float = dataclasses.field(default_factory=time.monotonic, repr=False)

    def add_eval(self, step, split, result):
        self.evals.append([int(step), split, dict(result)])

    def history(self, split):
        """[[step, accuracy]] of one split."""
        return [[step, result["accuracy"]] for step, name, result in self.evals if name == split]

    def best(self, split):
        """(step, accuracy) of the first evaluation with the highest accuracy, or None."""
        history = self.history(split)
        return tuple(max(history, key=lambda h: (h[1], -h[0]))) if history else None

    def eval_flops(self):
        """[[step, FLOPs]] of the evaluations at each step, every split summed (an evaluation
        whose FLOPs are unknown counts 0)."""
        per_step = {}
        for step, _, result in self.evals:
            per_step[step] = per_step.get(step, 0.0) + (result.get("flops") or 0.0)
        return [[step, flops] for step, flops in sorted(per_step.items())]

    def add_step_flops(self, phase_index, flops):
        """One step of phase `phase_index` costing `flops` (None: unknown, not counted)."""
        if flops is None:
            return
        key, flops = str(phase_index), float(flops)
        count, mean = self.step_counts.get(key, 0), self.step_flops.get(key)
        if mean != flops:  # (equal steps leave the mean exact)
            self.step_flops[key] = flops if not count else (mean * count + flops) / (count + 1)
        self.step_counts[key] = count + 1

    def elapsed(self):
        """Wall time of the run: earlier sessions plus this one so far."""
        return self.wall_time_s + time.monotonic() - self._session_start

    def to_json(self):
        return {"evals": self.evals, "selected": self.selected, "step_flops": self.step_flops,
                "step_counts": self.step_counts, "wall_time_s": self.elapsed()}

    @classmethod
    def from_json(cls, value):
        return cls(evals=[[int(s), split, dict(r)] for s, split, r in value["evals"]],
                   selected=value.get("selected"), step_flops=dict(value["step_flops"]),
                   step_counts=dict(value.get("step_counts", {})),  # (records before 2026-12-07)
                   wall_time_s=float(value["wall_time_s"]))


def _phase_spans(plan, total_steps):
    """[(start, end)] of each phase's steps."""
    starts = [p.start_step for p in plan.phases]
    return list(zip(starts, starts[1:] + [total_steps]))


def _last(history):
    return history[-1][1] if history else None


def summarize(config, spec, plan, phases, param_sizes, record, status="done"):
    """The numbers the sweep report compares, from the run record alone; `phases` is the
    plan in compiled form (freezing.compiled_phases).

    `test_accuracy` is the test accuracy of the state validation selected (the final state
    without a validation split): the number to compare. Test never selects anything.
    """
    spans = _phase_spans(plan, config.total_steps)
    tests = record.history("test")
    best_val = record.best("validation")
    flops = record.step_flops
    mean_flops = None
    if all(str(i) in flops for i in range(len(spans))):
        mean_flops = sum(flops[str(i)] * (end - start)
                         for i, (start, end) in enumerate(spans)) / config.total_steps
    return new(
        status=status, freeze=spec.label, seed=config.seed,
        test_accuracy=record.selected[1]["accuracy"] if record.selected else None,
        selected_step=record.selected[0] if record.selected else None,
        val_accuracy=best_val[1] if best_val else None,
        final_val_accuracy=_last(record.history("validation")),
        final_accuracy=tests[-1][1] if tests else None,
        val_history=record.history("validation"),
        trainable_fraction=sum(freezing.trainable_fraction(p, param_sizes) * (end - start)
                               for p, (start, end) in zip(plan.phases, spans)) / config.total_steps,
        phases=phases,
        train_step_flops=dict(flops), mean_train_step_flops=mean_flops,
        train_flops=mean_flops * config.total_steps if mean_flops else None,
        eval_flops=record.eval_flops(),
        ema_val_accuracy=_last(record.history("validation_ema")),
        ema_test_accuracy=_last(record.history("test_ema")),
        num_params=int(sum(param_sizes.values())), wall_time_s=record.elapsed(),
        total_steps=config.total_steps)

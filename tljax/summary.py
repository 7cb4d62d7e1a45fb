"""The run record (saved in every checkpoint) and the summary derived from it.

Everything summary.json reports is in the record, so a run killed at any step and
resumed from its newest checkpoint reports what an uninterrupted run reports
(wall time aside: the time lost after the checkpoint is not counted).
"""
import dataclasses
import time

from tljax import freeze


@dataclasses.dataclass
class RunRecord:
    evals: list = dataclasses.field(default_factory=list)   # [[step, {accuracy, loss, count}]]
    step_flops: dict = dataclasses.field(default_factory=dict)  # "phase index" -> compiled FLOPs
    wall_time_s: float = 0.0   # accumulated over earlier sessions, up to their last checkpoint
    _session_start: float = dataclasses.field(default_factory=time.monotonic, repr=False)

    def add_eval(self, step, result):
        self.evals.append([int(step), dict(result)])

    def set_flops(self, phase_index, flops):
        if flops is not None:
            self.step_flops[str(phase_index)] = float(flops)

    def elapsed(self):
        """Wall time of the run: earlier sessions plus this one so far."""
        return self.wall_time_s + time.monotonic() - self._session_start

    def to_json(self):
        return {"evals": self.evals, "step_flops": self.step_flops, "wall_time_s": self.elapsed()}

    @classmethod
    def from_json(cls, value):
        return cls(evals=[[int(s), dict(r)] for s, r in value["evals"]],
                   step_flops=dict(value["step_flops"]), wall_time_s=float(value["wall_time_s"]))


def _phase_spans(plan, total_steps):
    """[(start, end)] of each phase's steps."""
    starts = [p.start_step for p in plan.phases]
    return list(zip(starts, starts[1:] + [total_steps]))


def summarize(config, plan, param_sizes, record, status="done"):
    """The numbers the sweep report compares, from the run record alone."""
    spans = _phase_spans(plan, config.total_steps)
    history = [[step, result["accuracy"]] for step, result in record.evals]
    flops = record.step_flops
    mean_flops = None
    if all(str(i) in flops for i in range(len(spans))):
        mean_flops = sum(flops[str(i)] * (end - start)
                         for i, (start, end) in enumerate(spans)) / config.total_steps
    return {
        "status": status,
        "freeze": config.freeze if isinstance(config.freeze, str) else "explicit",
        "seed": config.seed,
        "final_accuracy": history[-1][1] if history else None,
        "best_accuracy": max(a for _, a in history) if history else None,
        "eval_history": history,
        "trainable_fraction": sum(freeze.trainable_fraction(p, param_sizes) * (end - start)
                                  for p, (start, end) in zip(plan.phases, spans))
                              / config.total_steps,
        "train_step_flops": dict(flops),
        "mean_train_step_flops": mean_flops,
        "num_params": int(sum(param_sizes.values())),
        "wall_time_s": record.elapsed(),
        "total_steps": config.total_steps,
    }

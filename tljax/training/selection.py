"""Evaluation and selection on validation: every evaluation of the validation split keeps the
state when it is the best so far (the `best` checkpoint); at the end the test split is read
once, for the final state and for the state validation selected. Test never chooses."""
import time

import jax
import numpy as np
from absl import logging

from tljax import metrics
from tljax.training import state as state_lib

_EVAL_LOG_SECONDS = 30  # a long evaluation logs how far it got this often


class CompiledEval:
    """An eval step (jitted or pmapped) compiled once per batch shape, with XLA's FLOPs of
    each shape, so that a run can say what its evaluations cost (the search's budget)."""

    def __init__(self, jitted):
        self._jitted, self._compiled, self._flops = jitted, {}, {}

    def __call__(self, params, batch_stats, batch):
        """(sums of the batch, its FLOPs or None when XLA does not say)."""
        shape = tuple(sorted((key, tuple(value.shape)) for key, value in batch.items()))
        if shape not in self._compiled:
            compiled = self._jitted.lower(params, batch_stats, batch).compile()
            self._compiled[shape] = compiled
            self._flops[shape] = metrics.compiled_cost(compiled).get("flops")
        return self._compiled[shape](params, batch_stats, batch), self._flops[shape]


def evaluate(run_, state, which, step, label=None):
    """Accuracy and loss over the whole `which` split (padded batches, masked), and the
    FLOPs of the pass (None when unknown)."""
    batches, count = run_.eval_data[which]
    sums, flops, last_log = [], [], time.monotonic()
    for index, batch in enumerate(batches):
        batch_sums, batch_flops = run_.eval_step(state.params, state.batch_stats,
                                                 run_.par.put_batch(batch))
        sums.append(batch_sums)
        flops.append(batch_flops)
        if time.monotonic() - last_log > _EVAL_LOG_SECONDS:
            last_log = time.monotonic()
            logging.info("evaluating %s at step %d: %d batches done", which, step, index + 1)
    # Summed on the host, once: no device program of its own.
    totals = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *run_.par.fetch(sums))
    if int(totals["count"]) != count:
        raise RuntimeError(f"eval counted {totals['count']} examples, the split has {count}")
    result = {"accuracy": float(totals["correct"] / count), "loss": float(totals["loss"] / count),
              "count": int(totals["count"]),
              "flops": None if None in flops else float(sum(flops))}
    logging.info("%s at step %d: accuracy %.4f  loss %.4f  (%d examples)", label or which, step,
                 result["accuracy"], result["loss"], count)
    return result


def evaluate_ema(run_, state, which, step, record):
    """The EMA weights on `which`, recorded as split "<which>_ema" next to the raw weights."""
    if state.ema is None:
        return
    result = evaluate(run_, state.replace(**state_lib.ema_variables(state)), which, step,
                       label=f"{which} (EMA weights)")
    record.add_eval(step, f"{which}_ema", result)
    run_.writer.write(step, dict(result, split=which, weights="ema"), kind="eval")


def validate(run_, state, done, record):
    """Evaluates the validation split; keeps the state when it is the best so far."""
    evaluate_ema(run_, state, "validation", done, record)
    result = evaluate(run_, state, "validation", done)
    best = record.best("validation")
    record.add_eval(done, "validation", result)
    run_.writer.write(done, dict(result, split="validation"), kind="eval")
    newest_best = run_.best.latest_step()
    if (best is None or result["accuracy"] > best[1]) and not (newest_best or 0) >= done:
        # (A resumed run redoes the same steps: a best saved then at this step or later stands.)
        one = run_.par.one_copy(state)
        run_.best.save_variables(done, {"params": one.params, "batch_stats": one.batch_stats},
                                 {"step": done, "validation": result})


def report_test(run_, state, done, record):
    """The test split, evaluated only now, at the end: for the final state and for the state
    validation selected. Test never chooses anything."""
    evaluate_ema(run_, state, "test", done, record)
    final = evaluate(run_, state, "test", done)
    record.add_eval(done, "test", final)
    run_.writer.write(done, dict(final, split="test"), kind="eval")
    best = record.best("validation")
    if best is None or best[0] == done:
        record.selected = [done, final]
        return
    run_.best.wait()
    one = run_.par.one_copy(state)
    variables = run_.best.restore_variables(
        best[0], {"params": one.params, "batch_stats": one.batch_stats})
    selected = state.replace(**run_.par.from_restored(variables))
    record.selected = [best[0], evaluate(run_, selected, "test", best[0])]
    run_.writer.write(best[0], dict(record.selected[1], split="test", selected=True), kind="eval")

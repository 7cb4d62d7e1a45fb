"""Benchmark suites as tljax suite runs them: each task's data overrides for the two stages
of the protocol, its group, and the suite's means.

Stage "select" trains on the selection train split and evaluates the validation split only
(data.test_split is empty: test is never read); stage "final" trains at the chosen
hyper-parameters and reports test. VTAB-1k: train800 -> val200, then train800val200 -> test
(tljax/data/vtab.py); VTAB-full: train -> val, then trainval -> test; FGVC, as VPT: train -> val, then train -> test (tljax/experiments/fgvc.py).
"""
import dataclasses

import numpy as np

from tljax.data import vtab
from tljax.experiments import fgvc

STAGES = ("select", "final")


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    name: str
    group: str
    data_name: str          # data.name
    select: tuple           # (train, validation) splits of the select stage
    final_train: str        # the final stage trains here ...
    test: str               # ... and reports here
    note: str = ""          # how to get data TFDS cannot download (shown by --check)

    def overrides(self, stage, probe=False):
        """The data.* overrides ("key=value") of a stage. A probe chooses its regularisation on
        validation inside its run, so its final stage keeps the validation split and refits
        on train + validation (probe.refit; VTAB's train800val200) before reading test when
        the final stage trains on more than the select stage (FGVC's does not)."""
        train, val = self.select
        if stage == "select":
            splits = (train, val, "")
        elif probe:
            splits = (train, val, self.test)
        else:
            splits = (self.final_train, "", self.test)
        out = [f"data.name={self.data_name}", f"data.train_split={splits[0]}",
               f"data.val_split={splits[1]}", f"data.test_split={splits[2]}"]
        refit = probe and stage == "final" and self.final_train != train
        return out + (["probe.refit=True"] if refit else [])


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    tasks: dict             # name -> SuiteTask, in the order tables list them
    groups: tuple           # group names in order
    source: str             # what defines the tasks

    def means(self, accuracy):
        """{task: accuracy or None} -> the suite's means, each labelled:
        flat (over all tasks), each group's, and the mean of the group means. A mean that needs
        a missing or failed task is None, never computed over fewer tasks (`complete` False;
        `missing` names them). `partial` holds the flat and group means over the tasks that
        finished, for a look at an incomplete suite; tables label it as such."""
        unknown = set(accuracy) - set(self.tasks)
        if unknown:
            raise ValueError(f"not {self.name} tasks: {sorted(unknown)}")
        done = {t: a for t, a in accuracy.items() if a is not None}
        members = {g: [t for t in self.tasks.values() if t.group == g] for g in self.groups}
        groups = {g: (float(np.mean([done[t.name] for t in ts]))
                      if all(t.name in done for t in ts) else None) for g, ts in members.items()}
        complete = len(done) == len(self.tasks)
        partial_groups = {g: float(np.mean([done[t.name] for t in ts if t.name in done]))
                          for g, ts in members.items() if any(t.name in done for t in ts)}
        return {"flat_mean": float(np.mean(list(done.values()))) if complete else None,
                "group_means": groups,
                "mean_of_group_means": float(np.mean(list(groups.values()))) if complete else None,
                "complete": complete, "missing": [t for t in self.tasks if t not in done],
                "partial": {"tasks": len(done),
                            "flat_mean": float(np.mean(list(done.values()))) if done else None,
                            "group_means": partial_groups}}


def _vtab_task(task, full=False):
    """VTAB-1k's splits, or VTAB-full's (the same tasks and labels on the full train split)."""
    select, final = (("train", "val"), "trainval") if full else (("train800", "val200"),
                                                                   "train800val200")
    return SuiteTask(task.name, task.group, f"{vtab.PREFIX}{task.name}", select, final, "test")


def _fgvc_task(task):
    return SuiteTask(task.name, "fgvc", task.data_name, (task.train, task.val), task.final_train,
                     task.test, task.note)


SUITES = {
    "vtab1k": Suite("vtab1k", {n: _vtab_task(t) for n, t in vtab.TASKS.items()}, vtab.GROUPS,
                    "google-research/task_adaptation task_adaptation/data/*.py"),
    "vtab_full": Suite("vtab_full", {n: _vtab_task(t, full=True) for n, t in vtab.TASKS.items()},
                       vtab.GROUPS, "google-research/task_adaptation task_adaptation/data/*.py "
                       "(the train, val, trainval and test splits)"),
    "fgvc": Suite("fgvc", {n: _fgvc_task(t) for n, t in fgvc.TASKS.items()}, ("fgvc",),
                  fgvc.SOURCE),
}

"""A benchmark suite (VTAB-1k or FGVC) in one command, with its protocol, then its report.

    tljax suite --suite=vtab1k --config=configs/vtab.py:vit-b16 \\
        --schedules=full,linear_probe,bitfit,lora:r=8,probe:ridge \\
        --grid=optim.lr=0.001,0.01 --seeds=3 --workdir=/tmp/vtab
    tljax suite ... --check            # which tasks' data is ready, and how to prepare the rest
    tljax suite ... --emit=commands    # the next stage's commands, for launch/slurm_array.sh

Per task and schedule (tljax/experiments/suites.py):
  select  one run per --grid point and --select_seeds seed, train -> validation (VTAB:
          train800 -> val200), test never read; the point with the best mean validation
          accuracy at the last step is chosen (select/<schedule>/choice.json). With one grid
          point there is nothing to choose and no select stage.
  final   the chosen point over --seeds seeds, trained on train + validation (VTAB:
          train800val200) and reported on test at the last step. A probe keeps validation
          to choose its regularisation and refits on train + validation (probe.refit).
Every run is an ordinary tljax run in WORKDIR/<task>/<stage>/<schedule>/<grid>/seed<N>; a
finished run is skipped, so re-running the command resumes the suite; a failed run writes
failed.json and the report shows the task as failed. The report: WORKDIR/suite.md (+ .csv,
.json, .png), tljax/experiments/suite_report.py.
"""
import itertools
import os

from absl import logging
from etils import epath

from tljax.experiments import sweep
from tljax import config_lib, freezing, paths
from tljax.experiments.suite_report import outcome
from tljax.errors import UserError


def is_probe(schedule):
    return schedule.startswith(freezing.PROBE + ":")


class Plan:
    """The runs of a suite: select-stage runs up front, final runs once their choice is made."""

    def __init__(self, suite, config_spec, schedules, workdir, *, grid=(), fixed=(), tasks=None,
                 seeds=3, select_seeds=1):
        self.suite, self.config_spec, self.schedules = suite, config_spec, list(schedules)
        self.workdir, self.grid, self.fixed = str(workdir), list(grid), list(fixed)
        self.tasks = [suite.tasks[t] for t in (tasks or suite.tasks)]
        self.seeds, self.select_seeds = seeds, select_seeds
        self._specs = {}  # task name -> its config spec (spec_for)

    def spec_for(self, task):
        """The config a task's runs load: --config with the task as one more argument where
        the config takes one (configs/fgvc.py:finetune -> configs/fgvc.py:finetune,cub200, so
        each task gets its own recipe values: lr, epochs as steps), else --config itself."""
        from tljax import config_lib
        from tljax.errors import ConfigArgumentError

        if task.name not in self._specs:
            spec = config_lib.with_argument(self.config_spec, task.name)
            try:
                config_lib.load(spec)
            except ConfigArgumentError:
                spec = self.config_spec
            self._specs[task.name] = spec
        return self._specs[task.name]

    def grid_of(self, schedule):
        """The --grid axes that act on `schedule`: probe.* axes for a feature probe (it
        trains nothing, so optim.* would only repeat its run), the others for the rest."""
        return [axis for axis in self.grid if axis.startswith("probe.") == is_probe(schedule)]

    def points(self, schedule):
        return [list(p) for p in itertools.product(*sweep.grid_axes(self.grid_of(schedule)))]

    def _dir(self, task, stage, schedule=None):
        parts = [self.workdir, task.name, stage] + ([sweep.slug(schedule)] if schedule else [])
        return os.path.join(*parts)

    def select_runs(self, task, schedule):
        """[(run_dir, overrides)]; none when there is a single grid point to take."""
        if len(self.points(schedule)) < 2:
            return []
        fixed = [*self.fixed, *task.overrides("select", is_probe(schedule))]
        return sweep.plan_runs(self.config_spec, [schedule], self.select_seeds,
                               self._dir(task, "select"), self.grid_of(schedule), fixed)

    def choice(self, task, schedule):
        """(grid point overrides, choice record) or None while select runs are unfinished.
        The point with the best mean last-step validation accuracy over its select runs (the
        first on ties); a point with a failed run (e.g. a diverging lr) is out. The point is
        None when every point is out."""
        points = self.points(schedule)
        runs = self.select_runs(task, schedule)
        if not runs:
            return points[0], {"chosen": points[0], "selected_by": "single grid point"}
        scores, failed = {}, []
        for point in points:
            members = [d for d, o in runs if o[-len(point):] == point]
            summaries = [outcome(d) for d in members]
            if any(s is None for s in summaries):
                return None  # still to run
            failed += [d for d, s in zip(members, summaries) if s.get("status") != "done"]
            if all(s.get("status") == "done" for s in summaries):
                scores[" ".join(point)] = (sum(s["final_val_accuracy"] for s in summaries)
                                           / len(summaries))
        record = {"scores": scores, "failed_runs": failed, "seeds": self.select_seeds,
                  "selected_by": "mean last-step validation accuracy (test not read); "
                                 "points with a failed run are out"}
        if not scores:
            return None, dict(record, chosen=None)
        best = max(scores, key=lambda k: (scores[k], -list(scores).index(k)))
        chosen = next(p for p in points if " ".join(p) == best)
        return chosen, dict(record, chosen=chosen)

    def final_runs(self, task, schedule, point):
        """The final runs of `point`, in a directory named after it (a different choice, e.g.
        after a failed select run is retried, gets runs of its own)."""
        fixed = [*self.fixed, *task.overrides("final", is_probe(schedule))]
        return sweep.plan_runs(self.config_spec, [schedule], self.seeds,
                               self._dir(task, "final"), point, fixed)

    def write_choice(self, task, schedule, record):
        path = epath.Path(self._dir(task, "select", schedule)) / "choice.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.write_json(path, record)


def run_suite(plan):
    """Runs every stage in order, skipping finished runs; writes each choice as it is made."""
    for index, task in enumerate(plan.tasks):
        for schedule in plan.schedules:
            logging.info("suite %s: task %d/%d %s, %s", plan.suite.name, index + 1,
                         len(plan.tasks), task.name, schedule)
            sweep.run_all(plan.spec_for(task), plan.select_runs(task, schedule))
            point, record = plan.choice(task, schedule) or (None, {"chosen": None})
            plan.write_choice(task, schedule, record)
            if point is None:
                logging.error("suite: every select run of %s on %s failed; no final run",
                              schedule, task.name)
                continue
            logging.info("suite: %s on %s: chose %s", schedule, task.name,
                         " ".join(point) or "(no grid)")
            sweep.run_all(plan.spec_for(task), plan.final_runs(task, schedule, point))


def next_commands(plan, python):
    """(select commands, final commands) not yet finished (failed ones again, as a re-run
    suite retries them): final ones for the (task, schedule) pairs whose select stage has
    ended. Choices are written as they are made."""
    select, final = [], []
    for task in plan.tasks:
        for schedule in plan.schedules:
            spec, runs = plan.spec_for(task), plan.select_runs(task, schedule)
            select += [sweep.command(python, spec, d, o) for d, o in runs
                       if not sweep.is_finished(d)]
            made = plan.choice(task, schedule)
            if made is None or made[0] is None:
                continue
            plan.write_choice(task, schedule, made[1])
            final += [sweep.command(python, spec, d, o)
                      for d, o in plan.final_runs(task, schedule, made[0])
                      if not sweep.is_finished(d)]
    return select, final


def check(plan):
    """[(task, ready, what to do)] for the data of every task of the plan."""
    from tljax.data import pipeline

    rows = []
    for task in plan.tasks:
        config = config_lib.load(plan.config_spec)
        for override in [*plan.fixed, *task.overrides("final")]:
            config_lib.apply_override(config, override)
        try:
            pipeline.examples(config.data, "test", 0)
            rows.append((task.name, True, ""))
        except UserError as e:
            rows.append((task.name, False, f"{e}" + (f" ({task.note})" if task.note else "")))
    return rows

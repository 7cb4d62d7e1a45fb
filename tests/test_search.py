"""tljax/experiments/search.py: successive halving on validation at rungs, FLOPs accounting, failed
trials, bad spaces, and two workers on one study."""
import json
import os
import subprocess
import sys

import optuna
import pytest

from tljax.experiments import search, search_report
from tests.conftest import ROOT, tiny_config
from tests.helpers import records
from tljax import config_lib
from tljax import lock
from tljax.errors import UserError


def test_space_rungs_and_flops_arithmetic():
    space = search.parse_space("optim.lr=loguniform(1e-4,1e-1); optim.weight_decay=0,1e-4")
    assert [(p.key, p.kind, p.values) for p in space] == [
        ("optim.lr", "loguniform", (1e-4, 1e-1)), ("optim.weight_decay", "choice", (0, 1e-4))]
    for bad in ("optim.lr=loguniform(0,1)", "optim.lr=uniform(2,1)", "optim.lr", "=3"):
        with pytest.raises(UserError, match="--space item .* write KEY=loguniform"):
            search.parse_space(bad)
    assert search.rungs(150, 3, 1 / 9) == [17, 51, 150]
    assert search.rungs(12, 3, 0.25) == [3, 9, 12]
    summary = {"phases": [[0, []], [5, []]], "train_step_flops": {"0": 10.0, "1": 4.0},
               "total_steps": 12}
    assert search.flops_spent(summary, 8) == 10 * 5 + 4 * 3  # phase 1 from step 5
    assert search.flops_spent(summary, 3) == 30


def test_workers_and_restarts_draw_their_own_points_and_a_rerun_draws_the_same():
    """Per-trial seeding (search.trial_seeded_tpe): two workers sharing a study draw different
    start-up points, and a worker restarted after trial 1 draws for trials 2 and 3 what a worker
    never stopped draws, not a replay of trials 0 and 1 (which TPESampler(seed) per worker
    gives: the same lr twice)."""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)

    def draw(trial):
        return (trial.suggest_float("optim.lr", 1e-3, 1e-1, log=True),
                trial.suggest_categorical("method", ["full", "linear_probe", "bitfit"]))

    def run(samplers_per_trial):
        """Trials 0..3, each asked through the sampler given for it, told value = its number."""
        storage = optuna.storages.InMemoryStorage()
        name = optuna.create_study(storage=storage, direction="maximize").study_name
        points = []
        for number, sampler in enumerate(samplers_per_trial):
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            trial = study.ask()
            points.append(draw(trial))
            study.tell(trial, float(number))
        return points

    one = search.trial_seeded_tpe(0)
    uninterrupted = run([one] * 4)
    restarted = run([search.trial_seeded_tpe(0)] * 2 + [search.trial_seeded_tpe(0)] * 2)
    assert restarted == uninterrupted and len(set(uninterrupted)) == 4
    a, b = search.trial_seeded_tpe(0), search.trial_seeded_tpe(0)  # two workers, alternating
    assert len(set(run([a, b, a, b]))) == 4
    replayed = run([optuna.samplers.TPESampler(seed=0) for _ in range(4)])  # the old way
    assert len(set(replayed)) == 1


def test_the_trial_seeded_sampler_drives_a_pareto_study_past_its_random_start():
    """--objective=pareto's study (two directions) through trial_seeded_tpe beyond TPE's 10
    random start-up trials, with a running trial (constant_liar): TPE's multi-objective path
    samples, and a rerun draws the same points."""
    def run():
        study = optuna.create_study(directions=list(search.OBJECTIVES["pareto"]),
                                    sampler=search.trial_seeded_tpe(0))
        running = study.ask()  # a worker's trial still running while others ask
        running.suggest_float("optim.lr", 1e-3, 1e-1, log=True)
        points = []
        for _ in range(14):
            trial = study.ask()
            lr = trial.suggest_float("optim.lr", 1e-3, 1e-1, log=True)
            study.tell(trial, [1 - abs(lr - 0.01), lr])  # accurate near 0.01, cost grows with lr
            points.append(lr)
        return points, study

    points, study = run()
    assert len(set(points)) == 14 and run()[0] == points
    assert all(len(t.values) == 2 for t in study.best_trials)


def test_pareto_front_pruners_journal_storage_and_warm_start(tmp_path):
    """The report's Pareto front; --pruner; --storage=journal:PATH; --warm_start enqueues
    each method's best earlier point once, only where it lies in this search's space."""
    import types
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # (accuracy, cost): 1 beats 0 in both; 2 is dearer but more accurate; 3 ties 2 exactly.
    assert search.pareto_front([(0.5, 10), (0.6, 5), (0.9, 50), (0.9, 50), (0.8, 60)]) == [1, 2, 3]
    hyperband = search.make_pruner("hyperband", 3, 2, 54)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert isinstance(search.make_pruner("sha", 3, 2, 54), optuna.pruners.SuccessiveHalvingPruner)

    journal = f"journal:{tmp_path / 'shared' / 'search.log'}"
    with pytest.raises(UserError, match="folder .*shared does not exist"):
        search.open_study(journal, str(tmp_path / "w"), 0, 3, 1)
    (tmp_path / "shared").mkdir()
    first = search.open_study(journal, str(tmp_path / "w"), 0, 3, 1, "hyperband", 54)
    first.enqueue_trial({"method": "full"})
    again = search.open_study(journal, str(tmp_path / "w2"), 0, 3, 1, "hyperband", 54)
    assert len(again.get_trials()) == 1 and isinstance(again.pruner, optuna.pruners.HyperbandPruner)

    earlier = search.open_study("", str(tmp_path / "earlier"), 0, 3, 1)
    lr = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    methods = optuna.distributions.CategoricalDistribution(["full", "lora:r=8", "bitfit"])
    for method, value, accuracy in [("full", 0.03, 0.7), ("full", 0.3, 0.9),
                                    ("lora:r=8", 0.5, 0.8), ("bitfit", 0.01, 0.6)]:
        earlier.add_trial(optuna.trial.create_trial(
            params={"method": method, "optim.lr": value}, value=accuracy,
            distributions={"method": methods, "optim.lr": lr}))
    space = search.parse_space("optim.lr=loguniform(0.001,0.4)")
    objective = types.SimpleNamespace(searched=["full", "lora:r=8"], workdir=str(tmp_path / "now"),
                                      space_of=lambda method: space)
    study = search.open_study("", str(tmp_path / "now"), 0, 3, 1)
    assert search.warm_start(study, [str(tmp_path / "earlier")], objective) == 1
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"method": "full", "optim.lr": 0.3}]
    # (lora's best, lr 0.5, lies outside this space; bitfit is not searched here.)
    assert search.warm_start(study, [str(tmp_path / "earlier")], objective) == 0  # once
    with pytest.raises(UserError, match="--warm_start=.*nowhere: no study.db there"):
        search.warm_start(study, [str(tmp_path / "nowhere")], objective)


def test_an_unreachable_database_is_one_line_at_once_and_a_creation_race_is_retried(
        tmp_path, monkeypatch):
    """What the PostgreSQL driver raises for a host that does not answer is not retried ten times and then
    a traceback; a table-creation race between workers starting together is retried."""
    import sqlalchemy.exc

    calls, real = [], optuna.storages.RDBStorage

    refused = ('connection to server at "db.example" (10.0.0.9), port 5432 failed: '
               "Connection refused\n\tIs the server running on that host?")

    def storage(raise_first, message=refused):
        class Storage(real):  # (optuna checks isinstance on it)
            def __init__(self, url, engine_kwargs=None):
                calls.append(url)
                if len(calls) == 1 or raise_first is sqlalchemy.exc.OperationalError:
                    raise raise_first("CREATE TABLE studies", {}, Exception(message))
                super().__init__(f"sqlite:///{tmp_path / 'study.db'}")
        return Storage

    url = "postgresql://me@db.example/study"
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage(sqlalchemy.exc.OperationalError))
    with pytest.raises(UserError) as error:
        search.open_study(url, str(tmp_path / "w"), 0, 3, 1)
    assert str(error.value) == (
        f'--storage={url}: cannot connect (connection to server at "db.example" (10.0.0.9), '
        f"port 5432 failed: Connection refused); check the host, port, database name and "
        f"credentials")
    assert len(calls) == 1 and not (tmp_path / "w").exists()
    calls.clear()
    monkeypatch.setattr(search.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage(sqlalchemy.exc.IntegrityError))
    assert search.open_study(url, str(tmp_path / "w"), 0, 3, 1).study_name == search.STUDY
    assert len(calls) == 2
    calls.clear()  # PostgreSQL's form of the race (seen with two workers starting together)
    monkeypatch.setattr(optuna.storages, "RDBStorage", storage(
        sqlalchemy.exc.ProgrammingError, 'relation "studies" already exists'))
    assert search.open_study(url, str(tmp_path / "w"), 0, 3, 1).study_name == search.STUDY
    assert len(calls) == 2


def _promoted_by_hand(trials, rung_steps, eta):
    """Asynchronous successive halving as Optuna's pruner states it: at rung k a trial goes
    on iff its value is among the top max(1, n // eta) of the n values reported at rung k so
    far (its own included), trials in the order they reached the rung."""
    expected = {}
    for k, step in enumerate(rung_steps[:-1]):
        seen = []
        for trial in sorted(trials, key=lambda t: t.number):
            if step not in trial.intermediate_values:
                continue
            value = trial.intermediate_values[step]
            seen.append(value)
            keep = max(1, len(seen) // eta)
            expected[(trial.number, k)] = value >= sorted(seen)[-keep]
    return expected


def test_rungs_compared_within_each_method_never_let_a_fast_starter_cut_a_slow_one():
    """A probe-like method leads at every early rung, full fine-tuning starts slowly: compared
    across methods, full never gets past its first rung; compared within each method, each
    method's promotions equal successive halving run on that method's trials alone, and
    full's best configuration reaches the end."""
    rung_steps = search.rungs(27, 3, 1 / 9)  # 3, 9, 27

    def objective(trial):
        method = trial.suggest_categorical("method", ["probe_like", "full"])
        lr = trial.suggest_float("lr", 0.0, 1.0)
        start = 0.8 if method == "probe_like" else 0.1
        for step in rung_steps:
            value = start + (0.9 - start) * step / 27 * lr
            trial.report(value, step)
            if step < 27 and trial.should_prune():
                raise optuna.TrialPruned()
        return value

    ended = {}
    for compare in search.COMPARE:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0),
                                    pruner=search.make_pruner("sha", 3, 3, 27, compare))
        study.optimize(objective, n_trials=24)
        ended[compare] = study.get_trials()
    full = [t for t in ended["all"] if t.params["method"] == "full"]
    assert len(full) > 3 and all(max(t.intermediate_values) == 3 for t in full[1:])
    for method in ("probe_like", "full"):
        mine = [t for t in ended["method"] if t.params["method"] == method]
        for (number, k), promoted in _promoted_by_hand(mine, rung_steps, 3).items():
            trial = ended["method"][number]
            assert (rung_steps[k + 1] in trial.intermediate_values) == promoted, (method, number, k)
        assert any(27 in t.intermediate_values for t in mine)
    with pytest.raises(UserError, match="--compare_rungs=method works with --pruner=sha"):
        search.make_pruner("hyperband", 3, 3, 27, "method")


def test_search_halves_on_validation_accounts_flops_and_fails_nan_trials(data_dir, tmp_path,
                                                                         caplog):
    workdir = str(tmp_path / "search")
    methods = ["full", "linear_probe", "bitfit", "last_k:1"]
    objective = search.Objective(lambda: tiny_config(data_dir), workdir, methods,
                                 search.parse_space("optim.lr=loguniform(0.01,0.3)"), [], 3, 0.25)
    study = search.open_study("", workdir, 0, 3, objective.rungs[0])
    study.enqueue_trial({"method": "full", "optim.lr": 1e8})  # diverges: a failed trial
    with caplog.at_level("INFO"):
        study.optimize(objective, n_trials=6, catch=(UserError,),
                       callbacks=[search.progress_callback({"flops": 0})])
    trials = study.get_trials()
    # Every rung and every ended trial is a line in the log, as it happens.
    assert "search: trial 0 failed" in caplog.text
    for trial in trials[1:]:
        for step in trial.intermediate_values:
            assert f"search: trial {trial.number} (" in caplog.text
            assert f"step {step} of 12: validation" in caplog.text
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert f"search: trial {trial.number} stopped at step " in caplog.text
        else:
            assert f"search: trial {trial.number} finished: validation {trial.value:.4f}" in caplog.text
    # It diverged after its first rung: failed, never past it, and never a best.
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert max(trials[0].intermediate_values, default=0) < 12
    for (number, k), promoted in _promoted_by_hand(trials, objective.rungs, 3).items():
        if trials[number].state == optuna.trial.TrialState.FAIL:
            continue  # (its rung values still competed)
        reached_next = objective.rungs[k + 1] in trials[number].intermediate_values
        assert reached_next == promoted, (number, k, trials[number].intermediate_values)
    assert any(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    # Budget: each trial's step FLOPs (one phase each) x the steps to its last rung, read
    # from its run; the failed trial's up to the last step its metrics record (past its rung);
    # plus every validation pass up to there, from the run's evaluation records.
    by_hand, evaluating, steps = 0.0, 0.0, 0
    for trial in trials:
        with open(os.path.join(trial.user_attrs["workdir"], "summary.json")) as f:
            summary = json.load(f)
        reached = max(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.FAIL:
            reached = max(r["step"] for r in records(trial.user_attrs["workdir"], "train"))
            assert reached > max(trial.intermediate_values)
        passes = [r for r in records(trial.user_attrs["workdir"], "eval")
                  if r["split"] == "validation" and r["step"] <= reached]
        assert passes and len({r["flops"] for r in passes}) == 1  # one split, one model
        # A pass is a forward over the padded validation split: per example, at most a
        # train step's FLOPs (batch 8) and at least a quarter of them (full fine-tuning's
        # backward pass is about twice its forward; a probe's is next to nothing).
        padded = -(-passes[0]["count"] // 64) * 64
        ratio = passes[0]["flops"] / padded / (summary["train_step_flops"]["0"] / 8)
        assert 0.25 < ratio <= 1.0, (trial.params, ratio)
        by_hand += summary["train_step_flops"]["0"] * reached
        evaluating += sum(r["flops"] for r in passes)
        steps += reached
    assert search.spent(study, "train_flops") == pytest.approx(by_hand, rel=1e-9)
    assert search.spent(study, "eval_flops") == pytest.approx(evaluating, rel=1e-9)
    assert search.spent(study) == pytest.approx(by_hand + evaluating, rel=1e-9)
    assert search.spent(study, "train_steps") == steps
    # The choice is the validation accuracy at the last rung; test never enters it.
    best = search_report.best_per_method(study)
    assert best and all(t.number != 0 for t in best.values())
    for method, trial in best.items():
        with open(os.path.join(trial.user_attrs["workdir"], "summary.json")) as f:
            summary = json.load(f)
        assert trial.value == dict(map(tuple, summary["val_history"]))[12]
        assert summary["test_accuracy"] is None  # trials run without a test split
    text = search_report.write(study, workdir, lambda t: 1.0)
    assert "| method | best trial |" in text and os.path.exists(os.path.join(workdir, "search.png"))
    # With equal costs the Pareto front is the most accurate finished trial(s) alone.
    front = text.split("the Pareto front")[1]
    top = max(t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert f"| {100 * top:.1f} | 1 |" in front


def test_backbones_are_screened_by_a_probe_then_the_trials_choose_among_the_best(data_dir,
                                                                                 tmp_path):
    """--backbones: a kNN probe on each candidate (one finished trial each, charged like any),
    then sampled trials use only the best --keep_backbones; the report has a row per backbone.
    The config's model argument carries the backbone (config_lib.with_argument)."""
    with_argument = config_lib.with_argument
    assert with_argument("configs/flowers.py", "dinov2-b14") == "configs/flowers.py:dinov2-b14"
    assert with_argument("configs/vtab.py:dtd", "clip-b16") == "configs/vtab.py:dtd,clip-b16"
    assert with_argument("configs/vtab.py:dtd", "") == "configs/vtab.py:dtd"
    archs = {"bit": {}, "vit": {"model.name": "vit", "model.arch": {
        "size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4}}}
    workdir = str(tmp_path / "search")
    objective = search.Objective(
        lambda backbone="bit": tiny_config(data_dir, total_steps=6, **archs[backbone]), workdir,
        ["full"], search.parse_space("optim.lr=0.01,0.05"), [], 3, 0.5)
    study = search.open_study("", workdir, 0, 3, objective.rungs[0])
    scores = objective.screen(study, ["bit", "vit"], "probe:knn", keep=1)
    assert set(scores) == {"bit", "vit"} and all(0 <= v <= 1 for v in scores.values())
    winner = max(scores, key=scores.get)
    assert objective.backbones == [winner]
    assert objective.screen(study, ["bit", "vit"], "probe:knn", keep=1) == scores  # read back
    study.optimize(objective, n_trials=1)
    trials = study.get_trials()
    assert [(search.method_of(t), search.backbone_of(t)) for t in trials[:2]] == [
        ("probe:knn", "bit"), ("probe:knn", "vit")]
    assert all(t.user_attrs["train_flops"] > 0 for t in trials)  # the probes' cost counts too
    assert search.backbone_of(trials[2]) == winner and search.method_of(trials[2]) == "full"
    text = search_report.write(study, workdir, lambda t: 1.0)
    rows = [line for line in text.splitlines() if line.startswith(("| bit |", "| vit |"))]
    assert len(rows) == 2 and all(f"| {100 * scores[r[2:5]]:.1f} |" in r for r in rows)


def test_methods_sample_their_own_space_and_one_with_nothing_to_sample_runs_once(data_dir, tmp_path):
    """probe.* keys act on probes, the others on trained methods; a method with nothing to
    sample runs once outside the sampler; a steps budget stops the study."""
    workdir = str(tmp_path / "search")
    both = search.Objective(lambda: tiny_config(data_dir), workdir, ["probe:ridge", "linear_probe"],
                            search.parse_space("optim.lr=loguniform(0.01,0.3);probe.few_shot_l2=1,1024"),
                            [], 3, 0.25)
    assert [p.key for p in both.space_of("probe:ridge")] == ["probe.few_shot_l2"]
    assert [p.key for p in both.space_of("linear_probe")] == ["optim.lr"]
    objective = search.Objective(lambda: tiny_config(data_dir), workdir,
                                 ["probe:ridge", "linear_probe"],
                                 search.parse_space("optim.lr=loguniform(0.01,0.3)"), [], 3, 0.25)
    assert (objective.searched, objective.unsearched) == (["linear_probe"], ["probe:ridge"])
    study = search.open_study("", workdir, 0, 3, objective.rungs[0])
    real_run_to = objective._run_to

    def busy(*args):
        raise lock.WorkdirInUse("in use by another worker")
    objective._run_to = busy
    objective.run_unsearched(study)  # another worker holds its workdir: left to it
    assert not study.get_trials()
    objective._run_to = real_run_to
    budgets = {"flops": 0, "train_steps": 12}
    objective.run_unsearched(study, budgets)
    objective.run_unsearched(study, budgets)  # (a restarted worker: nothing to add)
    study.optimize(objective, n_trials=5, callbacks=[search.budget_callback(budgets)])
    trials = study.get_trials()
    # The probe counts no train steps, the linear probe its 12: the budget is spent after
    # one sampled trial, and the sampler never picked the probe again.
    assert [search.method_of(t) for t in trials] == ["probe:ridge", "linear_probe"]
    assert [set(t.params) for t in trials] == [set(), {"method", "optim.lr"}]
    assert search.spent(study, "train_steps") == 12 and search.spent(study, "wall_time_s") > 0
    assert search.exhausted(study, budgets) == "train_steps"
    with open(os.path.join(trials[0].user_attrs["workdir"], "summary.json")) as f:
        probe = json.load(f)
    assert trials[0].value == probe["val_accuracy"] and probe["test_accuracy"] is None
    assert search_report.best_per_method(study)["probe:ridge"].number == 0


@pytest.fixture
def postgres_url(tmp_path):
    """A real PostgreSQL server for the test (pgserver: PostgreSQL 16 binaries in a wheel,
    installed by the test extra), stopped afterwards."""
    import pgserver

    server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_two_workers_share_one_study_and_run_each_trial_once(data_dir, tmp_path, storage,
                                                             request):
    """Two workers on one study (the default SQLite file, or a PostgreSQL server as a cluster
    would use) run distinct trials and the final stage once."""
    url = (request.getfixturevalue("postgres_url") if storage == "postgresql"
           else f"sqlite:///{tmp_path / 'shared' / 'study.db'}")
    workdir = str(tmp_path / "shared")
    fixed = [f"--set=data.data_dir={data_dir}",
             "--set=model.arch={'block_counts': (1, 1), 'base_width': 4, 'gn_groups': 4, "
             "'stem': 'small'}", "--set=data.image_size=8",
             "--set=data.pp_train=resize(8)|gray_to_rgb|value_range(-1,1)",
             "--set=data.pp_eval=resize(8)|gray_to_rgb|value_range(-1,1)",
             "--set=data.batch_size=8", "--set=total_steps=6", "--set=optim.warmup_steps=1",
             "--set=model.init_recipe=", "--set=model.init=", "--set=data.few_shot_k=5",
             "--set=data.few_shot_val_k=5", "--set=export_weights=False"]
    command = [sys.executable, "-m", "tljax.cli.search", "--config=configs/digits.py",
               f"--workdir={workdir}", "--methods=full,linear_probe", "--trials=2", "--seeds=1",
               "--space=optim.lr=0.01,0.05", "--min_fraction=0.34", *fixed]
    if storage == "postgresql":
        command.append(f"--storage={url}")
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name=search.STUDY, storage=url)
    trials = study.get_trials()
    assert len(trials) == 4 and len({t.user_attrs["workdir"] for t in trials}) == 4
    assert os.path.exists(os.path.join(workdir, "study.db")) == (storage == "sqlite")
    for trial in trials:  # every trial's run directory was trained by one run
        assert os.path.exists(os.path.join(trial.user_attrs["workdir"], "config.json"))
    # The final re-runs ran once per chosen configuration (by the last worker to end, or in
    # turn under their lock): a finished run for each method, none refused, no lock left.
    finals = sorted(os.path.relpath(d, workdir) for d, _, files in os.walk(workdir)
                    if "summary.json" in files and f"{os.sep}final{os.sep}" in d)
    assert {f.split(os.sep)[1] for f in finals} == {"full", "linear_probe"}, finals
    assert not any("in use" in out for out in outputs), outputs
    assert not os.path.exists(os.path.join(workdir, "final", "lock.json"))
    assert sum("search: the final re-runs are left" in out or "another worker runs the final"
               in out for out in outputs) <= 1


def test_a_pareto_search_trains_every_trial_to_the_end_and_reports_optunas_front(data_dir,
                                                                                tmp_path):
    """--objective=pareto: each trial's values are its validation accuracy and full-length
    train FLOPs, read from its run; no trial is judged at rungs; the report's front equals
    Optuna's own non-dominated trials; a study keeps the objective it was created with."""
    workdir = str(tmp_path / "search")
    objective = search.Objective(lambda: tiny_config(data_dir), workdir,
                                 ["probe:ridge", "linear_probe", "full"],
                                 search.parse_space("optim.lr=loguniform(0.01,0.3)"), [], 3, 0.25)
    with pytest.raises(UserError, match="to total_steps .* drop --pruner=hyperband$"):
        search.open_study("", workdir, 0, 3, objective.rungs[0], pruner="hyperband",
                          objective="pareto")
    study = search.open_study("", workdir, 0, 3, objective.rungs[0], objective="pareto")
    objective.run_unsearched(study)
    study.optimize(objective, n_trials=3)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for trial in trials:
        with open(os.path.join(trial.user_attrs["workdir"], "summary.json")) as f:
            summary = json.load(f)
        accuracy = (summary["val_accuracy"] if summary.get("probe")
                    else dict(map(tuple, summary["val_history"]))[12])
        assert trial.values == [accuracy, search.full_length_flops(summary, 12)]
        assert trial.user_attrs["train_steps"] == (0 if summary.get("probe") else 12)
        assert summary["test_accuracy"] is None
    text = search_report.write(study, workdir, lambda t: t.user_attrs[search.FULL_LENGTH_FLOPS])
    front = text.split("the Pareto front")[1].split("\n\n")[1]
    reported = {int(line.split("|")[1]) for line in front.splitlines()[2:]}
    assert reported == {t.number for t in study.best_trials} and reported
    cheapest = min(trials, key=lambda t: t.values[1])
    assert cheapest.number in reported and search.method_of(cheapest) == "probe:ridge"
    assert all(f"| {t.number} | " in text.split("the Pareto front")[0] for t in trials)
    with pytest.raises(UserError, match="created with --objective=pareto, not accuracy"):
        search.open_study("", workdir, 0, 3, objective.rungs[0])


def _search_command(data_dir, workdir, *extra):
    fixed = [f"--set=data.data_dir={data_dir}",
             "--set=model.arch={'block_counts': (1, 1), 'base_width': 4, 'gn_groups': 4, "
             "'stem': 'small'}", "--set=data.image_size=8",
             "--set=data.pp_train=resize(8)|gray_to_rgb|value_range(-1,1)",
             "--set=data.pp_eval=resize(8)|gray_to_rgb|value_range(-1,1)",
             "--set=data.batch_size=8", "--set=optim.warmup_steps=1",
             "--set=model.init_recipe=", "--set=model.init=", "--set=data.few_shot_k=5",
             "--set=data.few_shot_val_k=5"]
    return [sys.executable, "-m", "tljax.cli.search", "--config=configs/digits.py",
            f"--workdir={workdir}", "--seeds=0", *fixed, *extra]


_KILLED_SEARCH = ["--methods=full", "--space=optim.lr=0.05", "--trials=1", "--min_fraction=0.25",
                  "--set=total_steps=24", "--set=checkpoint_every=4",
                  "--set=export_weights=True", "--set=log_every=1", "--heartbeat_s=1"]


@pytest.fixture(scope="module")
def never_killed_search(data_dir, tmp_path_factory):
    """The workdir of the killed searches' search run whole, once for both of them."""
    workdir = str(tmp_path_factory.mktemp("never_killed"))
    done = subprocess.run(_search_command(data_dir, workdir, *_KILLED_SEARCH), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("dead_worker_host", ["this host", "another host"])
def test_a_killed_search_resumes_its_interrupted_trial_bit_identically(data_dir, tmp_path,
                                                                       dead_worker_host,
                                                                       never_killed_search):
    """SIGKILL a worker inside a trial; a restarted worker finds the trial of the dead process
    (on this host: at once, by its pid; on another host: by its stale heartbeat), enqueues it
    again on the same workdir, and it ends with the weights of a search never killed."""
    import signal
    import time

    from tests.helpers import assert_same_params, exported_params

    extra = _KILLED_SEARCH
    killed, whole = str(tmp_path / "killed"), never_killed_search
    worker = subprocess.Popen(_search_command(data_dir, killed, *extra), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = os.path.join(killed, "trials", "0000", "checkpoints")
    deadline = time.monotonic() + 300
    while not (os.path.isdir(checkpoints) and any(
            name.isdigit() and int(name) >= 12 for name in os.listdir(checkpoints))):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker ended early"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    if dead_worker_host == "another host":  # its pid says nothing here: only the heartbeat
        storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.join(killed, 'study.db')}")
        running = storage.get_all_trials(storage.get_study_id_from_name(search.STUDY))[0]
        storage.set_trial_user_attr(running._trial_id, "worker", {"host": "elsewhere", "pid": 1})
        time.sleep(3.5)  # past the grace period (3 x --heartbeat_s)
    done = subprocess.run(_search_command(data_dir, killed, *extra), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    study = optuna.load_study(study_name=search.STUDY,
                              storage=f"sqlite:///{os.path.join(killed, 'study.db')}")
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE], log[-3000:]
    assert study.get_trials()[1].user_attrs["workdir"].endswith(os.path.join("trials", "0000"))
    # Charged once per trained step: the killed attempt nothing, its successor the 24 steps
    # plus those between the checkpoint it resumed from and the last step the killed one
    # logged (trained twice); the search never killed charges 24.
    killed_attempt, resumed = study.get_trials()
    # The killed attempt keeps its charges to its last rung (6 or 12), its successor charges
    # from there; the steps between the checkpoint it resumed from and the last step the
    # killed attempt logged were trained twice.
    charged_to = killed_attempt.user_attrs[search.CHARGED_TO]
    assert charged_to in (6, 12) and resumed.user_attrs[search.CHARGED_FROM] == charged_to
    assert killed_attempt.user_attrs["train_steps"] == charged_to
    segments = resumed.user_attrs[search.RETRAINED]  # none when it was killed at a checkpoint
    assert len(segments) <= 1 and all(12 <= a < b <= 24 for a, b in segments), segments
    twice = sum(b - a for a, b in segments)
    assert resumed.user_attrs["train_steps"] == 24 - charged_to + twice
    if dead_worker_host == "another host":
        assert "was interrupted; enqueued to resume" in log
    never_killed = optuna.load_study(study_name=search.STUDY,
                                     storage=f"sqlite:///{os.path.join(whole, 'study.db')}")
    once = never_killed.get_trials()[0].user_attrs
    assert once["train_steps"] == 24
    both = {key: killed_attempt.user_attrs[key] + resumed.user_attrs[key]
            for key in ("train_flops", "eval_flops", "flops")}
    assert both["train_flops"] == pytest.approx(once["train_flops"] * (24 + twice) / 24, rel=1e-9)
    # Evaluations too: each validation once per time it ran, none lost to the kill.
    assert once["eval_flops"] > 0 and once["flops"] == once["train_flops"] + once["eval_flops"]
    assert both["eval_flops"] >= once["eval_flops"]
    assert_same_params(exported_params(os.path.join(killed, "trials", "0000")),
                       exported_params(os.path.join(whole, "trials", "0000")), "killed trial")

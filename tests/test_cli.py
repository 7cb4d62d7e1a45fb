"""The command line: one-line errors for the mistakes users make."""
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _main(*args, env=None):
    result = subprocess.run([sys.executable, "-m", "tljax.main", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, **(env or {})))
    return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/digits.py", "--workdir=/tmp/x", "--config.optim.lrr=1"],
     'Did you mean "lr"'),
    (["--config=configs/digits.py"], "--workdir is required"),
    (["--config=configs/digits.py", "--workdir=/tmp/x", "--config.model.init=/no/such.safetensors",
      "--config.model.init_recipe="], "weights '/no/such.safetensors' do not exist"),
    # A mistyped init path never starts the recipe (which would write next to the typo).
    (["--config=configs/digits.py", "--workdir=/tmp/x", "--config.model.init=/no/such.safetensors"],
     "model.init /no/such.safetensors does not exist; the init recipe"),
    (["--config=configs/digits.py", "--workdir=/tmp/x", "--config.freeze=last_k:x"],
     "last_k:x: k must be an integer, not 'x'"),
])
def test_user_mistakes_get_one_line_errors(args, expected, tmp_path):
    args = [a.replace("/tmp/x", str(tmp_path)) for a in args]
    code, lines = _main(*args)
    assert code != 0
    assert lines[-1].startswith("error: ") and expected in lines[-1], lines[-5:]
    assert not any(line.startswith("Traceback") for line in lines)
    assert not os.path.exists(tmp_path / "checkpoints")
    assert not os.path.exists(tmp_path / "config.json")
    assert not os.path.exists("/no")


def test_resuming_with_a_config_that_changes_the_computation_is_refused():
    from tljax import config_lib
    from tljax.errors import UserError

    saved = {"total_steps": 10, "log_every": 5, "optim": {"lr": 0.1}}
    config_lib.check_same_run(saved, {"total_steps": 10, "log_every": 1, "optim": {"lr": 0.1}})
    with pytest.raises(UserError, match=r"optim.lr: 0.1 -> 0.2, total_steps: 10 -> 20"):
        config_lib.check_same_run(saved, {"total_steps": 20, "log_every": 5, "optim": {"lr": 0.2}})


_COMPILED = re.compile(r"(\d+) XLA programs compiled, (\d+) loaded from the compilation cache")


def _compiled(lines):
    """(programs compiled, programs loaded from the cache) of a run's last log line of them."""
    found = [m.groups() for m in map(_COMPILED.search, lines) if m]
    return tuple(map(int, found[-1]))


def _summary(workdir):
    summary = json.loads((workdir / "summary.json").read_text())
    summary.pop("wall_time_s")
    return summary


@pytest.mark.slow
def test_runs_log_what_they_do_and_share_compiled_programs_through_the_cache(data_dir,
                                                                               tmp_path):
    """Three processes on one fresh compilation cache: the first compiles, the second (the
    next run of a sweep) loads every program and gives the same model, a changed lr (a
    changed HLO) compiles again; a re-run of the finished run compiles nothing."""
    args = ["--config=configs/digits.py:scratch", f"--config.data.data_dir={data_dir}",
            "--config.total_steps=4", "--config.log_every=2", "--config.eval_every=0",
            "--config.model.arch.block_counts=(1,)", "--config.data.batch_size=4"]
    env = {"TLJAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    code, lines = _main(*args, f"--workdir={tmp_path}/a", env=env)
    assert code == 0, lines[-5:]
    text = "\n".join(lines)
    assert "compiling the train step of phase 0" in text and "step 4/4" in text
    for chatter in ("oneDNN", "orbax", "dataset_info.py", "reader.py", "libtpu", "\x1b["):
        assert chatter not in text, chatter
    assert len(lines) < 30, text
    compiled, loaded = _compiled(lines)
    # One program each: init, train state, train step, finite check, lr, eval step.
    assert compiled + loaded <= 6 and compiled >= 1, lines[-3:]

    code, again = _main(*args, f"--workdir={tmp_path}/b", env=env)
    assert code == 0, again[-5:]
    assert _compiled(again) == (0, compiled + loaded), again[-3:]
    assert _summary(tmp_path / "b") == _summary(tmp_path / "a")
    a, b = (open(tmp_path / d / "model.safetensors", "rb").read() for d in ("a", "b"))
    assert a == b  # executables from the cache compute what the compiled ones did

    code, changed = _main(*args, f"--workdir={tmp_path}/c", "--config.optim.lr=0.0123", env=env)
    assert code == 0 and _compiled(changed)[0] >= 1, changed[-3:]

    code, finished = _main(*args, f"--workdir={tmp_path}/b", env=env)
    assert code == 0 and "is finished already" in "\n".join(finished)
    assert not any(_COMPILED.search(line) for line in finished), finished


# ------------------------------------------------------------------ the `tljax` command
def _run(*command):
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    return result.returncode, result.stdout, result.stderr.strip().splitlines()


def test_the_tljax_command_lists_its_subcommands_and_is_the_installed_script():
    from importlib import metadata

    from tljax.cli import commands

    code, out, _ = _run("-m", "tljax", "--help")
    assert code == 0
    for name in ("train", "predict", "evaluate", "report", "catalog", "sweep", "suite", "search"):
        assert re.search(rf"^  {name} ", out, re.M), out
        assert name in commands.COMMANDS
    scripts = metadata.entry_points(group="console_scripts", name="tljax")
    assert [s.value for s in scripts] == ["tljax.cli.commands:main"]


def test_each_subcommand_runs_its_python_m_module_as_main(monkeypatch):
    """`tljax X args` is `python -m tljax.cli.X args`: the same module, run as __main__."""
    import runpy

    from tljax.cli import commands

    ran = []
    monkeypatch.setattr(runpy, "run_module", lambda name, run_name, alter_sys: ran.append(
        (name, run_name, list(sys.argv[1:]))))
    for name in commands.COMMANDS:
        assert commands.main(["tljax", name, "--flag=1", "pos"]) == 0
        assert ran[-1] == (f"tljax.cli.{name}", "__main__", ["--flag=1", "pos"])
        source = open(os.path.join(ROOT, "tljax", "cli", f"{name}.py")).read()
        assert 'if __name__ == "__main__":' in source, name
    assert commands.main(["tljax", "nosuch"]) == 2


@pytest.mark.parametrize("subcommand,module,args", [
    ("train", "tljax.main", ["--config=configs/digits.py"]),
    ("report", "tljax.cli.report", []),
    ("sweep", "tljax.cli.sweep", ["--schedules=full,lroa", "--config=configs/digits.py",
                                  "--workdir=/nonexistent/x"]),
])
def test_a_subcommand_and_its_python_m_form_answer_alike(subcommand, module, args):
    one = _run("-m", "tljax", subcommand, *args)
    other = _run("-m", module, *args)
    assert one[0] == other[0] != 0
    assert one[2][-1] == other[2][-1] and one[2][-1].startswith("error: "), (one[2][-3:], other[2][-3:])


def test_config_files_import_their_siblings_from_any_working_directory(tmp_path):
    """configs/ is not installed: a config file loaded by path still finds its sibling
    modules (configs/flowers.py imports configs/transfer.py), wherever the command runs."""
    flowers = os.path.join(ROOT, "configs", "flowers.py")
    code = ("import sys; from tljax import config_lib; "
            f"print(config_lib.load({flowers!r}).data.name)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHONPATH=""))
    assert result.returncode == 0 and result.stdout.strip() == "oxford_flowers102", result.stderr[-500:]


def test_tensorflow_loads_without_keras_which_still_loads_on_first_use():
    """tljax.data imports TensorFlow through logs.import_tensorflow: without the import of
    Keras' optimizers that tensorflow/__init__.py makes (1.5 s of every start), nothing left
    behind in sys.modules, and tf.keras working when first asked for."""
    code = ("import sys; import tljax.data; "
            "print('keras.src' in sys.modules, 'keras.src.optimizers' in sys.modules); "
            "import tensorflow as tf; print(tf.keras.layers.Dense(2)(tf.ones([1, 3])).shape)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stdout.split("\n")[:2] == ["False False", "(1, 2)"], result.stdout


@pytest.mark.parametrize("subcommand,flag", [
    ("train", "--workdir"), ("predict", "--top_k"), ("evaluate", "--which"),
    ("report", "--baseline"), ("catalog", "BiT-M-R50x1"), ("sweep", "--schedules"),
    ("suite", "--schedules"), ("search", "--budget_flops")])
def test_each_subcommand_help_lists_its_flags(subcommand, flag):
    code, out, err = _run("-m", "tljax", subcommand, "--help")
    # (absl's --help exits with status 1, as `python -m tljax.main --help` always has)
    assert code in (0, 1) and flag in out, (out[-500:], err[-5:])
    assert not any(line.startswith("Traceback") for line in err)


def test_the_train_command_loads_configs_from_another_directory_in_both_flag_forms(tmp_path):
    """`--config PATH` and `--config=PATH`, run outside the checkout: the config (which
    imports its siblings) loads, and the run reaches the config checks; a config file of the
    user's own that imports `configs` is refused in one line."""
    flowers = os.path.join(ROOT, "configs", "flowers.py")
    for form in (["--config", flowers], [f"--config={flowers}"]):
        result = subprocess.run([sys.executable, "-m", "tljax", "train", *form,
                                 f"--workdir={tmp_path / 'run'}", "--config.total_steps=0"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and lines[-1] == (
            "error: config.total_steps must be a whole number >= 1, not 0"), lines[-3:]
    own = tmp_path / "mine.py"
    own.write_text("from configs import common\n\ndef get_config():\n    return common.base()\n")
    result = subprocess.run([sys.executable, "-m", "tljax", "train", f"--config={own}",
                             f"--workdir={tmp_path / 'run'}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: config file {own} could not import 'configs'"), lines[-3:]
    assert not any(line.startswith("Traceback") for line in lines)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ bad inputs, every command
_WD = "--workdir=WD"
_BAD_COMMANDS = [
    (["train", "--config=configs/nosuch.py", _WD], "config file 'configs/nosuch.py' does not exist"),
    (["train", "--config=SYNTAX", _WD], "has a syntax error at line 1"),
    (["train", "--config=configs/folder.py", _WD], "give the image folder"),
    (["train", "--config=configs/digits.py:nosuch", _WD], "unknown digits config argument 'nosuch'"),
    (["train", "--config=configs/digits.py", _WD, "--config.probe.method=knn",
      "--config.probe.knn_ks=(0,)"], "config.probe.knn_ks must be a non-empty tuple of whole"),
    (["search", "--config=configs/digits.py", _WD, "--eta=0"], "flag --eta=0"),
    (["search", "--config=configs/digits.py", _WD, "--eta=1"], "flag --eta=1"),
    (["search", "--config=configs/digits.py", _WD, "--trials=0"], "flag --trials=0"),
    (["search", "--config=configs/digits.py", _WD, "--budget_flops=-1"], "flag --budget_flops=-1"),
    (["search", "--config=configs/digits.py", _WD, "--seeds=-1"], "flag --seeds=-1"),
    (["sweep", "--config=configs/digits.py", _WD, "--seeds=0"], "a sweep runs at least one seed"),
    (["sweep", "--config=configs/digits.py", _WD, "--schedules=full,bitfit", "--baseline=nosuch"],
     "--baseline=nosuch is not one of --schedules"),
    (["suite", "--suite=vtab1k", "--config=configs/vtab.py", _WD, "--seeds=0"],
     "the final stage runs at least one seed"),
    (["predict", "--model=WD", "x.png", "--top_k=0"], "flag --top_k=0"),
    (["predict", "--model=WD", "x.png", "--top_k=-2"], "flag --top_k=-2"),
    (["evaluate", "--model=WD", "--batch_size=0"], "flag --batch_size=0"),
    (["sweep", "--config=configs/digits.py", "--workdir=FILE"], "is a file, not a directory"),
    (["suite", "--suite=vtab1k", "--config=configs/vtab.py", "--workdir=FILE"],
     "is a file, not a directory"),
    (["search", "--config=configs/digits.py", "--workdir=FILE"], "is a file, not a directory"),
    (["sweep", "--config=configs/digits.py", _WD, "--schedules=full,lroa"],
     "unknown freezing strategy 'lroa' in 'lroa'"),
    (["search", "--config=configs/digits.py", _WD, "--space=optim.lr=loguniform(0.3)"],
     "--space item 'optim.lr=loguniform(0.3)'"),
    (["predict", "--model=RUN", "--output=RUN/summary.json", "x.png"], "is a run's own record"),
    (["search", "--config=configs/digits.py", _WD, "--storage=sqlite:////no/such/dir/s.db"],
     "cannot open the database file"),
    (["search", "--config=configs/digits.py", _WD, "--storage=notaurl"],
     "--storage=notaurl is not a database URL"),
    (["search", "--config=configs/digits.py", _WD, "--storage=mysql://me@db.example/study"],
     "(postgresql: install tljax's postgres extra"),  # no MySQL driver installed
    (["suite", "--suite=vtab1k", "--config=configs/vtab.py", _WD, "--emit=commands",
      "--set=data.data_dir=EMPTY"], "19 of 19 tasks have no prepared data"),
]


@pytest.mark.parametrize("args,expected", _BAD_COMMANDS, ids=lambda a: " ".join(a)[:60]
                         if isinstance(a, list) else None)
def test_bad_inputs_of_every_command_are_one_line_and_write_nothing(args, expected, tmp_path):
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def get_config(:\n")
    a_file, run = tmp_path / "a_file", tmp_path / "run"
    a_file.write_text("mine")
    run.mkdir()
    record = {"config.json": "{}", "summary.json": '{"status": "done"}'}
    for name, text in record.items():
        (run / name).write_text(text)
    workdir = tmp_path / "wd"
    args = [a.replace("WD", str(workdir)).replace("SYNTAX", str(syntax))
            .replace("FILE", str(a_file)).replace("RUN", str(run))
            .replace("EMPTY", str(tmp_path / "no_data")) for a in args]
    code, _, lines = _run("-m", "tljax", *args)
    assert code != 0 and lines and lines[-1].startswith("error: ") and expected in lines[-1], lines[-4:]
    assert not any(line.startswith("Traceback") for line in lines)
    assert not workdir.exists() and a_file.read_text() == "mine"
    assert sorted(os.listdir(run)) == sorted(record)
    assert all((run / name).read_text() == text for name, text in record.items())


def test_python_m_tljax_main_help_lists_the_train_flags():
    code, out, _ = _run("-m", "tljax.main", "--help")
    assert code in (0, 1) and "--workdir:" in out and "--config:" in out, out[-500:]

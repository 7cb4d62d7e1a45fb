"""Shared fixtures: a prepared digits dataset and tiny configs that train in seconds."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The tests' models are tiny: compiling them takes far longer than running them, and XLA's
# backend optimisations (LLVM -O2) are most of the compile time. The tests compare runs
# compiled alike (resume vs uninterrupted, 1 vs 4 devices) or against other libraries
# within tolerances, so they run at -O0 (about a third less wall time) and with XLA's older
# CPU fusion emitter: the MLIR fusion emitters take twice as long to compile a tiny train step
# (ResNet-18 step: 2.2 -> 1.1 s here; the 4-device equivalence runs 160 -> 120 s).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def cpu_devices_flags(count):
    """XLA_FLAGS for a subprocess with `count` CPU devices. On a loaded 2-core machine a
    device thread may wait long for a core, and XLA's CPU collectives give up after 40 s
    ("system can be overloaded"): allow 10 minutes."""
    return (f"{TEST_XLA_FLAGS} --xla_force_host_platform_device_count={count} "
            "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120 "
            "--xla_cpu_collective_call_terminate_timeout_seconds=600")


if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    """One XLA compilation cache for the session, shared with the tests' subprocesses (they
    inherit the environment): a program compiled once is loaded by every later process.
    A TLJAX_COMPILATION_CACHE set by the caller (a folder kept between sessions) wins."""
    import tempfile

    from tljax import compilation

    if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts its backend
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
    if compilation.ENV not in os.environ:
        os.environ[compilation.ENV] = tempfile.mkdtemp(prefix="tljax_xla_cache_")
        config._tljax_own_cache = os.environ[compilation.ENV]
    compilation.enable_cache()


def pytest_collection_modifyitems(config, items):
    """The slow scenarios first: with several workers (pytest-xdist, `-n` in pytest.ini)
    they start at once and the short tests fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# The skips a full run expects, by reason, each with why it cannot run here. Any other skip
# fails the session: a dependency bump that breaks an import must not silently skip a parity
# file (`importorskip`) and leave the suite green.
EXPECTED_SKIPS = {
    "could not import 'timm'": "timm imports torchvision, which does not load with the pinned "
                               "CPU torch: these run on the GPU machine, which has timm",
    "a GPU machine may have every piece": "only on a GPU machine",
    "cuDNN attention exists there": "only on a GPU machine",
    "only a GPU has cuDNN attention": "only on a GPU machine",
}


def _skip_reason(report):
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionfinish(session, exitstatus):
    """Fails a passing session that skipped a test for a reason not in EXPECTED_SKIPS."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or hasattr(session.config, "workerinput") or exitstatus != 0:
        return
    unexpected = [r for r in reporter.stats.get("skipped", [])
                  if not any(reason in _skip_reason(r) for reason in EXPECTED_SKIPS)]
    if unexpected:
        reporter.write_line(f"{len(unexpected)} tests skipped for a reason not in "
                            f"tests/conftest.py EXPECTED_SKIPS (the session fails):", red=True)
        for report in unexpected:
            reporter.write_line(f"  {report.nodeid}: {_skip_reason(report)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config):
    import shutil

    if getattr(config, "_tljax_own_cache", None):
        shutil.rmtree(config._tljax_own_cache, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data_dir with tljax_digits prepared once per test session."""
    from tljax.data import digits

    path = str(tmp_path_factory.mktemp("tfds"))
    digits.TljaxDigits(data_dir=path).download_and_prepare()
    return path


def tiny_config(data_dir, arg="scratch", **overrides):
    """The digits config with a tiny model, short schedule and small batches."""
    from configs import digits

    config = digits.get_config(arg)
    config.model.arch = {"block_counts": (1, 1), "base_width": 4, "gn_groups": 4, "stem": "small"}
    config.data.data_dir = data_dir
    config.data.image_size = 8
    config.data.pp_train = "resize(8)|gray_to_rgb|value_range(-1,1)"
    config.data.pp_eval = "resize(8)|gray_to_rgb|value_range(-1,1)"
    config.data.batch_size = 8
    config.data.eval_batch_size = 64
    config.total_steps = 12
    config.log_every = 2
    config.eval_every = 0
    config.checkpoint_every = 6
    config.optim.warmup_steps = 2
    config.model.init_recipe = ""
    if config.data.few_shot_k:
        config.data.few_shot_k = 5
        config.data.few_shot_val_k = 5
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    config.lock()
    return config


@pytest.fixture
def make_config(data_dir):
    return lambda arg="scratch", **overrides: tiny_config(data_dir, arg, **overrides)


@pytest.fixture(scope="session")
def source_weights(tmp_path_factory, data_dir):
    """A tiny source model pretrained on digits 0-4 and exported as .safetensors."""
    from tljax import runs

    workdir = str(tmp_path_factory.mktemp("source"))
    runs.run(tiny_config(data_dir, "pretrain", total_steps=30), workdir)
    return os.path.join(workdir, "model.safetensors")

"""The shape of the code: an import graph without cycles that never reaches up into launch/,
configs/, benchmarks/ or tests/; the freezing grammar defined once and parsed once per run;
and a model family added by registering it, with no other module touched."""
import ast
import glob
import json
import os
import re

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.conftest import ROOT
from tests.helpers import assert_trained_only, checkpoint_params, exported_params
from tljax import data, freezing, models, runs, weights
from tljax.errors import UserError
from tljax.models import family, names
from tljax.models import peft as peft_lib
from tljax.formats import source
from tljax.formats.convert import Detected, Layout


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path, modules):
    """Every module `path` imports, at module level or inside functions."""
    tree = ast.parse(open(path).read())
    package = _module_name(path) if path.endswith("__init__.py") else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return found


def _graph():
    files = glob.glob(os.path.join(ROOT, "tljax", "**", "*.py"), recursive=True)
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}, modules


def test_the_library_never_imports_launchers_configs_benchmarks_or_tests():
    graph, _ = _graph()
    upward = sorted((m, i) for m, imports in graph.items() for i in imports
                    if i.split(".")[0] in ("launch", "configs", "benchmarks", "tests"))
    assert not upward, upward


def test_the_import_graph_has_no_cycles():
    graph, modules = _graph()
    edges = {m: {i for i in imports if i in modules and i != m} for m, imports in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


# ------------------------------------------------------------------ the wings
def _string_constants(path):
    return {node.value for node in ast.walk(ast.parse(open(path).read()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_only_the_workdir_module_names_a_run_directorys_files():
    """tljax/workdir.py names them once; a file name spelled elsewhere is a second definition.
    config.json and model.safetensors are also Hugging Face's own names, defined once in
    formats/convert.py (HF_CONFIG, HF_WEIGHTS); a Keras archive has its own config.json."""
    from tljax import workdir

    names = {workdir.CONFIG, workdir.SUMMARY, workdir.METRICS, workdir.MODEL_RECORD,
             workdir.MODEL, workdir.BEST, workdir.EMA, workdir.FAILED, workdir.LOCK}
    allowed = {"tljax/workdir.py": names, "tljax/lock.py": {workdir.LOCK},
               "tljax/formats/convert.py": {workdir.CONFIG, workdir.MODEL},
               "tljax/formats/keras_files.py": {workdir.CONFIG}}
    spelled = []
    for path in glob.glob(os.path.join(ROOT, "tljax", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        spelled += [(rel, s) for s in _string_constants(path) & names - allowed.get(rel, set())]
    assert not spelled, spelled


def test_the_training_wing_never_imports_the_prologue_or_the_dispatcher():
    graph, _ = _graph()
    reaching = sorted((m, i) for m, imports in graph.items() if m.startswith("tljax.training")
                      for i in imports if i in ("tljax.run_init", "tljax.runs", "tljax.probe.run"))
    assert not reaching, reaching
    assert any(m.startswith("tljax.training.") for m in graph)


def test_the_experiments_wing_imports_no_private_name_across_modules():
    private = []
    for path in glob.glob(os.path.join(ROOT, "tljax", "experiments", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tljax"):
                private += [(os.path.basename(path), node.module, a.name) for a in node.names
                            if a.name.startswith("_")]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                  and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                  and node.value.id in _module_aliases(path)):
                private.append((os.path.basename(path), node.value.id, node.attr))
    assert not private, private


def _module_aliases(path):
    """Names under which `path` imports other tljax modules."""
    aliases = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tljax"):
            aliases.update(a.asname or a.name for a in node.names)
    return aliases


# ------------------------------------------------------------------ the grammar
def _documented_specs():
    """Every freezing spec the README and docs/ show in a command: --config.freeze=...,
    freeze=... in sweep --set, and each item of --schedules=... lists."""
    texts = [open(p).read() for p in [os.path.join(ROOT, "README.md"),
                                      *glob.glob(os.path.join(ROOT, "docs", "*.md"))]]
    specs = []
    for text in texts:
        for value in re.findall(r"--config\.freeze=([^\s`'\"\\]+)", text):
            specs.append(value)
        for value in re.findall(r"--schedules=([^\s`'\"\\]+)", text):
            specs += [s for s in freezing.split_list(value) if not s.startswith("probe:")]
    return [s.replace(":K", ":1").replace("=N", "=3").replace(":D", ":0.7") for s in specs]


def test_every_documented_spec_parses():
    specs = _documented_specs()
    assert len(specs) >= 5, specs
    for spec in specs:
        parsed = freezing.parse(spec)
        assert parsed.strategies or parsed.methods, spec
        assert parsed.label == spec


def test_the_sweep_splits_a_mixed_list_on_the_grammars_names():
    from tljax.experiments import sweep

    text = ("full,lp_ft:lp_steps=9,ft_warmup=3,lora:r=8,targets=qv+bitfit,probe:ridge,"
            "adapter:dim=8,stop=200+lora:r=8,start=200,layer_decay:0.7")
    assert sweep.split_schedules(text) == [
        "full", "lp_ft:lp_steps=9,ft_warmup=3", "lora:r=8,targets=qv+bitfit", "probe:ridge",
        "adapter:dim=8,stop=200+lora:r=8,start=200", "layer_decay:0.7"]
    with pytest.raises(UserError, match="unknown freezing strategy .*nosuch"):
        sweep.split_schedules("full,nosuch")  # refused before any run starts


def test_a_run_parses_its_spec_once_and_records_the_compiled_phases(make_config, tmp_path,
                                                                   monkeypatch):
    calls = []
    real = freezing.spec.parse
    monkeypatch.setattr(freezing.spec, "parse", lambda s: calls.append(s) or real(s))
    summary = runs.run(make_config(freeze="gradual:every=4", total_steps=8, checkpoint_every=8,
                                   export_weights=False), str(tmp_path))
    assert calls == ["gradual:every=4"]
    # The compiled phases, given back as explicit phases, are the same plan.
    module = models.build("bit", make_config().model.arch, 10)
    variables = weights.init_variables(module, (8, 8, 3))
    flat = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    plan = freezing.make_plan("gradual:every=4", models.groups(module), flat, 8)
    again = freezing.make_plan([(s, [tuple(r) for r in rules]) for s, rules in summary["phases"]],
                               models.groups(module), flat, 8)
    assert [p.mults for p in again.phases] == [p.mults for p in plan.phases]
    assert [p.start_step for p in plan.phases] == [0, 4]


@pytest.mark.parametrize("spec", ["lora:r=4+bitfit", "freezeout:t0=0.5", "layer_decay:0.5",
                                  "adapter:dim=4,stop=3+lora:r=2,start=3"])
def test_compiled_phases_give_back_the_same_plan(spec):
    module = models.build("bit", {"block_counts": (1, 1), "base_width": 4, "gn_groups": 4,
                                  "stem": "small"}, 10)
    parsed = freezing.parse(spec)
    module, variables = peft_lib.add(module, weights.init_variables(module, (8, 8, 3)),
                                 models.with_peft(module, parsed.peft),
                                 models.example_input(module, (8, 8, 3)))
    flat = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    group_list = models.groups(module)
    plan = freezing.make_plan(parsed, group_list, flat, 10)
    compiled = freezing.compiled_phases(plan, group_list)
    again = freezing.make_plan(compiled, group_list, flat, 10)
    assert [(p.start_step, p.mults) for p in again.phases] == [
        (p.start_step, p.mults) for p in plan.phases]


# ------------------------------------------------------------------ a new family
class _Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(self.width, name="dense")(x))


class TinyNet(nn.Module):
    """A family that exists only in this test: conv embedding, two dense blocks, a head."""
    num_classes: int
    width: int = 8
    dtype: jnp.dtype = jnp.float32
    peft: peft_lib.Peft = peft_lib.NONE

    @nn.compact
    def __call__(self, x, train: bool = False):
        with peft_lib.intercept(self.peft, train, lora_default=r".*dense"):
            x = nn.Conv(self.width, (3, 3), name="embed")(x.astype(self.dtype))
            x = _Block(self.width, name="block1")(x)
            x = _Block(self.width, name="block2")(x)
            x = x.mean(axis=(1, 2))
        self.sow(names.INTERMEDIATES, names.HEAD_INPUT, x)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                        name=names.HEAD)(x).astype(jnp.float32)


def _tiny_groups(module):
    return [("embed", "embed/.*"), ("block1", "block1/.*"), ("block2", "block2/.*"),
            (names.HEAD, "head/.*")]


# Its checkpoints, in a format only this test knows: PyTorch-like names and layouts
# ("tinynet.<module>.weight", conv kernels OIHW, dense kernels (out, in)) in an .npz, or in a
# Hugging Face-style folder whose config.json says model_type "tiny_test".
_TINY_KEYS = {"embed": "tinynet.embed", "block1/dense": "tinynet.blocks.0.fc",
              "block2/dense": "tinynet.blocks.1.fc", names.HEAD: "tinynet.classifier"}


def _tiny_key_layout(path):
    m = re.fullmatch(r"params/(.+)/(kernel|bias)", path)
    if not m or m[1] not in _TINY_KEYS:
        return None
    kind = ("conv" if m[1] == "embed" else "dense") if m[2] == "kernel" else "id"
    return f"{_TINY_KEYS[m[1]]}.{'weight' if m[2] == 'kernel' else 'bias'}", kind


def _tiny_detected(raw, path):
    return Detected("tiny_test", {"width": raw["tinynet.embed.weight"].shape[0]},
                    raw["tinynet.classifier.weight"].shape[0],
                    {"normalization": source.MINUS_ONE_ONE, "image_size": 8},
                    source.Arrays(raw, path), _tiny_key_layout)


TINY_LAYOUT = Layout(("tiny_test",), lambda folder, cfg, raw, path: _tiny_detected(raw, path),
                     lambda raw, path, model: _tiny_detected(raw, path) if "tinynet.embed.weight" in raw else None,
                     "the tiny_test family's .npz")


@pytest.fixture
def tiny_family():
    family.register(family.Family("tiny_test", TinyNet, _tiny_groups, layouts=(TINY_LAYOUT,)))
    yield
    family.unregister("tiny_test")


def test_a_family_registered_here_trains_freezes_by_depth_takes_lora_and_a_probe(
        tiny_family, make_config, tmp_path):
    def config(**overrides):
        return make_config(**{"model.name": "tiny_test", "model.arch": {"width": 8},
                              "total_steps": 4, "checkpoint_every": 4, **overrides})

    last_k = runs.run(config(freeze="last_k:1"), str(tmp_path / "last_k"))
    assert last_k["status"] == "done" and np.isfinite(last_k["test_accuracy"])
    trained = {regex for regex, mult in last_k["phases"][0][1] if mult is not None}
    assert trained == {"block2/.*", "head/.*"}
    # Frozen by depth means bit-identical to the init the run started from.
    init = weights.init_variables(TinyNet(10, 8), (8, 8, 3), seed=0)
    start = traverse_util.flatten_dict(init["params"], sep="/")
    final = exported_params(str(tmp_path / "last_k"))
    for path in start:
        same = np.array_equal(start[path], final[path])
        assert same == (path.split("/")[0] in ("embed", "block1")), path
    assert_trained_only(last_k, start, final, [p for p in start if p.startswith(("block2/", "head/"))])

    lora = runs.run(config(freeze="lora:r=2"), str(tmp_path / "lora"))
    trained = {regex for regex, mult in lora["phases"][0][1] if mult is not None}
    assert any("lora_a" in r for r in trained) and "head/.*" in trained
    assert not any(r in trained for r in ("embed/.*", "block1/.*"))
    # LoRA alone trains its A and B (on the family's `.*dense` default) and the head: the
    # backbone ends bit-identical to the init, and the summary counts exactly those.
    final = checkpoint_params(str(tmp_path / "lora"))
    added = sorted(set(final) - set(start))
    assert added == [f"{b}/dense/lora_{m}" for b in ("block1", "block2") for m in "ab"]
    assert_trained_only(lora, start, final, added + ["head/bias", "head/kernel"])

    probe = runs.run(config(**{"probe.method": "ridge"}), str(tmp_path / "probe"))
    assert probe["freeze"] == "probe:ridge" and 0 <= probe["test_accuracy"] <= 1
    # A probe fits the head alone, on features of the initial backbone (nothing trained it).
    # (counted on the last_k run's model: the dataset's 5 classes, where `start` has 10)
    sizes = {p: v.size for p, v in exported_params(str(tmp_path / "last_k")).items()}
    head = sum(size for p, size in sizes.items() if p.startswith("head/"))
    assert probe["num_params"] == sum(sizes.values())
    assert probe["trainable_fraction"] == pytest.approx(head / probe["num_params"], rel=1e-12)
    batches, _ = data.eval_batches(config().data, seed=0, global_batch=64, which="validation")
    batch = next(iter(batches))
    _, sown = TinyNet(10, 8).apply(init, batch["image"], mutable=[names.INTERMEDIATES])
    want = np.asarray(sown[names.INTERMEDIATES][names.HEAD_INPUT][0])[batch["mask"] > 0]
    cached = np.load(tmp_path / "probe" / "features" / "validation.npz")["x"][:len(want)]
    np.testing.assert_allclose(cached, want, rtol=1e-5, atol=1e-6)


def test_a_family_registered_here_reads_its_own_checkpoints(tiny_family, tmp_path):
    rng = np.random.default_rng(0)
    width, classes = 8, 3
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    arrays = {"tinynet.embed.weight": normal(width, 3, 3, 3), "tinynet.embed.bias": normal(width),
              "tinynet.blocks.0.fc.weight": normal(width, width), "tinynet.blocks.0.fc.bias": normal(width),
              "tinynet.blocks.1.fc.weight": normal(width, width), "tinynet.blocks.1.fc.bias": normal(width),
              "tinynet.classifier.weight": normal(classes, width), "tinynet.classifier.bias": normal(classes)}
    npz = str(tmp_path / "tiny.npz")
    np.savez(npz, **arrays)
    folder = tmp_path / "hf"
    folder.mkdir()
    from safetensors.numpy import save_file

    save_file(arrays, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny_test",
                                                    "id2label": {"0": "a", "1": "b", "2": "c"}}))
    # The parameters those arrays are, mapped here: OIHW -> HWIO, (out, in) -> (in, out).
    dense = lambda key: {"kernel": arrays[f"{key}.weight"].T, "bias": arrays[f"{key}.bias"]}  # noqa: E731
    expected = {"embed": {"kernel": arrays["tinynet.embed.weight"].transpose(2, 3, 1, 0),
                          "bias": arrays["tinynet.embed.bias"]},
                "block1": {"dense": dense("tinynet.blocks.0.fc")},
                "block2": {"dense": dense("tinynet.blocks.1.fc")}, names.HEAD: dense("tinynet.classifier")}
    images = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    reference = np.asarray(TinyNet(classes, width).apply({"params": expected}, images))

    for path in (npz, str(folder)):
        loaded = weights.load_model(path)
        assert type(loaded.module) is TinyNet and (loaded.module.num_classes, loaded.module.width) == (classes, width)
        got = traverse_util.flatten_dict(loaded.variables["params"], sep="/")
        want = traverse_util.flatten_dict(expected, sep="/")
        assert got.keys() == want.keys() and all(np.array_equal(got[p], want[p]) for p in want)
        np.testing.assert_array_equal(np.asarray(loaded.module.apply(loaded.variables, images)), reference)
    assert loaded.class_names == ["a", "b", "c"]
    assert weights.read(npz, model="tiny_test").model == "tiny_test"  # as runs read model.init

    family.unregister("tiny_test")
    with pytest.raises(UserError, match="not a known weights layout"):
        weights.load_model(npz)
    with pytest.raises(UserError, match="model_type 'tiny_test' is not supported"):
        weights.load_model(str(folder))

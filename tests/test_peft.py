"""Parameter-efficient methods: identity at init, merged exports, published parameter counts,
their place in freezing plans, and frozen backbones that stay frozen and cost no backward."""
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.helpers import assert_trained_only, checkpoint_params, record_initial_params
from tljax import evaluation, freezing, inference, models, runs, weights
from tljax.training import optim, steps
from tljax.training import state as state_lib
from tljax.errors import UserError
from tljax.models import peft
from tljax.weights import tljax_format
from configs import common

ARCH = {
    "vit": {"size": "Ti", "patch": 4, "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2},
    "bit": {"block_counts": (1, 1), "base_width": 8, "gn_groups": 4, "stem": "small"},
    "resnet": {"depth": 18, "base_width": 4, "stem": "small"},  # 1x1 convs: the projections
    "convnext": {"depths": (1, 1), "widths": (4, 8)},
    "vgg": {"widths": (2, 2, 4, 4, 4), "fc_width": 8},
    "mobilenet_v2": {"alpha": 0.35},
}
CNNS = ("convnext", "vgg", "mobilenet_v2")
# The ViT options of the backbones people transfer from today (models/vit.py), as variants
# "vit-NAME": every method must start at and merge into these too.
VIT_VARIANTS = {
    "vit-dinov2": {"layer_scale": True, "registers": 2, "ffn": "swiglu", "classifier": "token_gap"},
    "vit-clip": {"pre_norm": True, "patch_bias": False, "activation": "quick_gelu"},
    "vit-siglip": {"classifier": "map", "activation": "gelu_tanh"},
}
ARCH.update({name: {**ARCH["vit"], **options} for name, options in VIT_VARIANTS.items()})
SHAPE = (16, 16, 3)
SHAPES = {"vgg": (32, 32, 3)}  # five 2x2 max-pools need 32 px
METHODS = {  # spec -> families it applies to
    "lora:r=4": ("vit", "bit", "resnet"),
    "lora:r=4,targets=qkvom,dora=1": ("vit",),
    "lora:r=4,dora=1": ("bit", "resnet"),
    "adapter:dim=4": ("vit", "bit", "resnet"),
    "adapter:dim=4,where=mlp": ("vit",),
    "adaptformer:dim=4": ("vit",),
    "ssf": ("vit", "bit", "resnet"),
    "lora:r=4+adapter:dim=4+ssf": CNNS,  # one compile per new CNN family
    "lora:r=4,targets=qkvom,dora=1+adapter:dim=4+ssf": ("vit", *VIT_VARIANTS),
    "adaptformer:dim=4+ssf": tuple(VIT_VARIANTS),
}
CASES = [(family, spec) for spec, families in METHODS.items() for family in families]


def _apply(module, variables, images):
    return jax.jit(module.apply)(variables, images)


@functools.lru_cache(maxsize=None)
def _pretrained(family):
    """A model with random, non-trivial weights everywhere (head and BN statistics too)."""
    module = models.build(family.split("-")[0], ARCH[family], 5)
    variables = weights.init_variables(module, SHAPES.get(family, SHAPE))
    leaves, tree = jax.tree.flatten(variables)
    variables = jax.tree.unflatten(tree, _plus_noise(leaves, 7, 0.1))
    if "batch_stats" in variables:  # positive running variances
        variables["batch_stats"] = jax.tree_util.tree_map_with_path(
            lambda p, x: np.abs(x) + 0.5 if "var" in jax.tree_util.keystr(p) else x,
            variables["batch_stats"])
    return module, variables


def _plus_noise(arrays, seed, scale):
    """[array + scale·N(0, 1)] as numpy arrays, from one draw of normal noise cut to the
    arrays' sizes (an eager random op per array would compile a program per shape: hundreds
    for a MobileNetV2)."""
    arrays = [np.asarray(x) for x in arrays]
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (sum(x.size for x in arrays),)))
    cuts = np.cumsum([0] + [x.size for x in arrays])
    return [x + scale * noise[a:b].reshape(x.shape).astype(x.dtype)
            for x, a, b in zip(arrays, cuts[:-1], cuts[1:])]


def _images(seed=1, family=""):
    return jax.random.normal(jax.random.PRNGKey(seed), (4, *SHAPES.get(family, SHAPE)))


def _with(family, spec):
    module, variables = _pretrained(family)
    return peft.add(module, variables, models.with_peft(module, freezing.parse(spec).peft),
                    models.example_input(module, SHAPES.get(family, SHAPE)))


def _added(variables):
    return sorted(p for p in traverse_util.flatten_dict(variables["params"], sep="/") if peft.is_added(p))


def _perturbed(variables, scale=0.3):
    """Added parameters moved off their identity init, as training would."""
    flat = traverse_util.flatten_dict(variables["params"], sep="/")
    added = sorted(p for p in flat if peft.is_added(p))
    flat.update(zip(added, _plus_noise([flat[p] for p in added], 3, scale)))
    return {**variables, "params": traverse_util.unflatten_dict(flat, sep="/")}


@pytest.mark.parametrize("family,spec", CASES)
def test_added_modules_start_as_the_pretrained_model_and_merge_into_it(family, spec):
    module, variables = _pretrained(family)
    images = _images(family=family)
    pretrained = _apply(module, variables, images)
    adapted, adapted_vars = _with(family, spec)
    assert _added(adapted_vars), "no parameters were added"
    base = traverse_util.flatten_dict(variables["params"], sep="/")
    flat = traverse_util.flatten_dict(adapted_vars["params"], sep="/")
    assert all(np.array_equal(flat[p], v) for p, v in base.items())  # base weights untouched
    at_init = _apply(adapted, adapted_vars, images)
    if "dora" in spec:  # magnitude / ||W|| is 1 up to rounding
        np.testing.assert_allclose(at_init, pretrained, rtol=1e-5, atol=1e-5)
    else:  # The same function; the two programs may round a few ulps apart: with the CPU
        # fusion emitter the tests compile with (conftest.TEST_XLA_FLAGS), a ResNet's BatchNorm
        # fuses differently once an identity module follows it (2.4e-7, 4 ulps, on logits of
        # ~0.6). A module that does not start as the identity moves logits by 1e-3 or more.
        np.testing.assert_allclose(at_init, pretrained, rtol=1e-6, atol=5e-7)

    # Trained (perturbed) modules fold into the weights: the same logits from the plain model.
    trained = _perturbed(adapted_vars)
    expected = _apply(adapted, trained, images)
    assert not np.allclose(expected, pretrained)
    merged_module, merged = peft.merged(adapted, trained, models.mergeable_lora(adapted))
    # float32 rounding, relative to the logits' scale (deep CNNs reach |logits| ~ 15)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(_apply(merged_module, merged, images), expected, atol=1e-5 * scale, rtol=1e-5)
    if family != "bit":  # LoRA and SSF leave nothing behind
        assert not merged_module.peft.lora and not merged_module.peft.ssf
    else:  # BiT: weight standardisation keeps LoRA unmerged; SSF (on GroupNorm) merges
        assert not merged_module.peft.ssf and bool(merged_module.peft.lora) == ("lora" in spec)
    kept = [p for p in _added(trained) if re.search("adapt|prompts", p)
            or (family == "bit" and re.search("lora_|dora_", p))]
    assert _added(merged) == kept


def _head_input(module, variables):
    _, state = jax.jit(lambda v, x: module.apply(v, x, capture_intermediates=True,
                                                 mutable=["intermediates"]))(variables, _images())
    return state["intermediates"]


def test_vpt_adds_the_configured_prompts_shallow_or_deep():
    for deep, blocks in ((False, ["block0"]), (True, ["block0", "block1"])):
        for classifier in ("token", "gap"):
            module = models.build("vit", {**ARCH["vit"], "classifier": classifier}, 5)
            variables = weights.init_variables(module, SHAPE)
            spec = f"vpt:tokens=3,deep={int(deep)}"
            adapted, adapted_vars = peft.add(module, variables, freezing.parse(spec).peft,
                                             models.example_input(module, SHAPE))
            assert _added(adapted_vars) == [f"encoder/{b}/prompts" for b in blocks]
            for path in _added(adapted_vars):
                prompts = traverse_util.flatten_dict(adapted_vars["params"], sep="/")[path]
                bound = np.sqrt(6 / (3 * 4**2 + 16))  # VPT's init range for 4x4 patches, width 16
                assert prompts.shape == (3, 16) and np.abs(prompts).max() <= bound
            features = _head_input(adapted, adapted_vars)
            tokens = features["encoder"]["block1"]["__call__"][0].shape[1]
            assert tokens == 16 + 3 + (classifier == "token")  # patches + prompts + class token
            assert features["head_input"][0].shape == (4, 16)
            # The prompts change the features: they are attended to.
            moved = _head_input(adapted, _perturbed(adapted_vars))["head_input"][0]
            assert not np.allclose(moved, features["head_input"][0])


def test_vpt_and_adaptformer_need_a_vit():
    module, _ = _pretrained("bit")
    for spec in ("vpt:tokens=4", "adaptformer:dim=4"):
        with pytest.raises(UserError, match="need a ViT"):
            models.with_peft(module, freezing.parse(spec).peft)


# V-PETL-Bench README (ViT-B/16, VTAB-1k): trainable parameters without the head, in M.
PUBLISHED = {"lora:r=8,targets=qv": 0.29, "adapter:dim=8,where=mlp": 0.16,
             "adaptformer:dim=8": 0.16, "ssf": 0.21, "bitfit": 0.10}


def test_trainable_parameter_counts_of_vit_b16_match_the_published_ones():
    module = models.build("vit", {"size": "B", "patch": 16}, 100)
    dummy = jnp.zeros((1, 224, 224, 3))
    counts = {}
    for spec in list(PUBLISHED) + ["vpt:tokens=10,deep=1", "adapter:dim=8"]:
        adapted = module.clone(peft=freezing.parse(spec).peft)
        shapes = jax.eval_shape(adapted.init, jax.random.PRNGKey(0), dummy)["params"]
        sizes = {p: int(np.prod(s.shape)) for p, s in traverse_util.flatten_dict(shapes, sep="/").items()}
        plan = freezing.make_plan(spec, models.groups(adapted), list(sizes))
        counts[spec] = sum(sizes[p] for p in plan.phases[0].trainable_paths()
                           if not models.is_classifier(p)) / 1e6
    for spec, published in PUBLISHED.items():
        assert abs(counts[spec] - published) <= 0.05 * published, (spec, counts[spec], published)
    # VPT-deep: depth x tokens x width exactly (V-PETL's 0.56M averages per-task prompt
    # lengths, not 10 tokens); Houlsby's two adapters per block are twice the one after the MLP.
    assert counts["vpt:tokens=10,deep=1"] == 12 * 10 * 768 / 1e6
    assert counts["adapter:dim=8"] == pytest.approx(2 * counts["adapter:dim=8,where=mlp"])


def _plan(spec, family="vit"):
    module, variables = _with(family, spec)
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    return freezing.make_plan(spec, models.groups(module), paths), paths


@pytest.mark.parametrize("spec,trains", [
    ("lora:r=4", lambda p: "lora_" in p),
    ("lora:r=4+bitfit", lambda p: "lora_" in p or p.endswith("/bias")),
    ("lora:r=4+full", lambda p: True),
    ("adapter:dim=4+ssf", lambda p: "adapter" in p or "ssf_" in p),
    ("vpt:tokens=2", lambda p: p.endswith("/prompts")),
])
def test_methods_train_their_modules_and_the_head_and_compose_with_strategies(spec, trains):
    plan, paths = _plan(spec)
    expected = sorted(p for p in paths if trains(p) or models.is_classifier(p))
    assert plan.phases[0].trainable_paths() == expected


def test_a_run_can_switch_methods_at_a_step():
    spec = "adapter:dim=4,stop=5+lora:r=4,start=5"
    plan, paths = _plan(spec)
    assert [p.start_step for p in plan.phases] == [0, 5]
    first, second = (set(p.trainable_paths()) for p in plan.phases)
    assert {p for p in first if not models.is_classifier(p)} == {p for p in paths if "adapter" in p}
    assert {p for p in second if not models.is_classifier(p)} == {p for p in paths if "lora_" in p}


@pytest.mark.parametrize("spec,message", [
    ("lora:rank=4", "has no argument 'rank'"),
    ("lora:r=4,targets=zz", "adds no parameters"),
    ("adapter:where=top", "use both"),
    ("lora:r=4,start=6,stop=3", "need 0 <= start < stop"),
    ("lora:r=4+lora:r=8", "configured twice"),
    ("adapter:dim=0", "must be >= 1"),
    ("vpt:tokens=0", "must be >= 1"),
])
def test_bad_method_specs_are_one_clear_error(spec, message):
    with pytest.raises(UserError, match=message):
        _plan(spec)


def test_frozen_backbone_holds_no_optimizer_state_and_costs_no_weight_gradients():
    module, variables = _with("vit", "lora:r=4")
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    batch = {"image": _images(), "label": jnp.arange(4) % 5}
    cfg = common.base().optim
    flops = {}
    for spec in ("linear_probe", "lora:r=4", "full"):
        plan = freezing.make_plan(spec, models.groups(module), paths)
        trainable = plan.phases[0].trainable_paths()
        tx = optim.build(cfg, plan, 0, 100)
        state = state_lib.create(variables, tx, trainable, seed=0)
        step = jax.jit(steps.make_train_step(module, tx, trainable))
        flops[spec] = step.lower(state, batch).compile().cost_analysis()
        flops[spec] = (flops[spec][0] if isinstance(flops[spec], list) else flops[spec])["flops"]
        if spec == "lora:r=4":
            suffixes = tuple("".join(f"['{k}']" for k in p.split("/")) for p in trainable)
            opt_leaves = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_flatten_with_path(
                state.opt_state)[0] if x.ndim]
            assert opt_leaves and all(p.endswith(suffixes) for p in opt_leaves)
            new_state, _ = step(state, batch)
            before = traverse_util.flatten_dict(state.params, sep="/")
            after = traverse_util.flatten_dict(new_state.params, sep="/")
            assert all(np.array_equal(before[p], after[p]) for p in before if p not in trainable)
            assert any(not np.array_equal(before[p], after[p]) for p in trainable if "lora_b" in p)
    # LoRA backpropagates through the blocks (activations) but computes no weight gradients
    # of the frozen matrices: well under full fine-tuning.
    assert flops["linear_probe"] < flops["lora:r=4"] < 0.8 * flops["full"], flops


def test_a_peft_run_keeps_the_batchnorm_backbone_bit_identical_and_exports_merged(make_config, tmp_path):
    arch = ARCH["resnet"]  # ResNet-18: its 1x1 convs are the projections LoRA targets
    config = make_config(freeze="lora:r=4+ssf", total_steps=6, export_weights=True,
                         **{"model.name": "resnet", "model.arch": arch})
    summary = runs.run(config, str(tmp_path))
    assert summary["status"] == "done"
    module = models.build("resnet", arch, 5)
    start = traverse_util.flatten_dict(weights.init_variables(module, (8, 8, 3)), sep="/")
    export = tljax_format.load(str(tmp_path / "model.safetensors"))
    assert "peft" not in export.arch  # LoRA and SSF were merged
    end = traverse_util.flatten_dict(export.variables, sep="/")
    assert set(end) == set(start)
    stats = [p for p in start if p.startswith("batch_stats")]
    assert stats and all(np.array_equal(start[p], end[p]) for p in stats)  # frozen BN
    untouched = [p for p in start if p.endswith("/kernel") and "proj_conv" not in p and "head" not in p]
    assert untouched and all(np.array_equal(start[p], end[p]) for p in untouched)  # 3x3 convs
    merged_into = [p for p in start if "proj_conv/kernel" in p or re.search(r"bn\d?/(scale|bias)", p)]
    assert merged_into and all(not np.array_equal(start[p], end[p]) for p in merged_into)
    assert weights.load_model(str(tmp_path / "model.safetensors")).module.peft == peft.NONE
    _assert_export_reproduces_the_final_accuracy(tmp_path, summary)


def test_unmergeable_methods_export_their_modules_and_load_back(make_config, tmp_path):
    config = make_config(freeze="adapter:dim=4+vpt:tokens=2+lora:r=2", total_steps=4,
                         export_weights=True, **{"model.name": "vit", "model.arch": ARCH["vit"]})
    summary = runs.run(config, str(tmp_path))
    loaded = weights.load_model(str(tmp_path / "model.safetensors"))
    assert loaded.module.peft.adapter and loaded.module.peft.prompts and not loaded.module.peft.lora
    assert any(p.endswith("/prompts") for p in _added(loaded.variables))
    _assert_export_reproduces_the_final_accuracy(tmp_path, summary)


def _assert_export_reproduces_the_final_accuracy(workdir, summary):
    """The exported (merged where possible) model, through the run's eval pipeline, scores
    the run's own final test accuracy."""
    predictor = inference.Predictor.load(str(workdir), "final")
    cfg, split, seed = evaluation.data_config(str(workdir), "", "test")
    result = evaluation.evaluate(predictor, cfg, split, seed, batch_size=64)
    assert result["accuracy"] == pytest.approx(summary["final_accuracy"], abs=1e-6)


def _docs_methods():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "docs", "peft.md")) as f:
        text = f.read()
    table = text.split("# Parameter-efficient methods", 1)[1].split("\n\n")[2]
    return [re.findall(r"`([^`]+)`", row.split("|")[1])[0] for row in table.splitlines()[2:]]


@pytest.mark.slow
def test_docs_list_every_method_and_each_runs_end_to_end_under_jit(make_config, tmp_path,
                                                                      monkeypatch):
    """Each documented method runs and, alone, trains what it adds to the model and the head:
    the ViT's own parameters end bit-identical to those the run started from, and the summary
    counts the added ones and the head as trainable."""
    specs = _docs_methods()
    assert {spec.split(":")[0] for spec in specs} == set(freezing.METHODS)
    plain = jax.eval_shape(lambda: weights.init_variables(models.build("vit", ARCH["vit"], 10),
                                                          (8, 8, 3)))
    plain = set(traverse_util.flatten_dict(plain["params"], sep="/"))
    starts = record_initial_params(monkeypatch)
    for index, spec in enumerate(specs):
        summary = runs.run(make_config(freeze=spec, total_steps=3, parallelism="jit",
                                        checkpoint_every=3, export_weights=False,
                                        **{"model.name": "vit", "model.arch": ARCH["vit"],
                                           "data.val_split": ""}),
                            str(tmp_path / str(index)))
        assert summary["status"] == "done" and np.isfinite(summary["test_accuracy"]), spec
        initial = starts[-1]
        added = set(initial) - plain
        assert added and plain <= set(initial), spec
        assert_trained_only(summary, initial, checkpoint_params(str(tmp_path / str(index))),
                            added | {p for p in plain if p.startswith("head/")})


def test_lora_dropout_acts_in_training_only():
    module, variables = _with("vit", "lora:r=4,dropout=0.5")
    trained = _perturbed(variables)
    run = jax.jit(lambda v, key, train: module.apply(v, _images(), train=train, rngs={"dropout": key}),
                  static_argnums=2)
    eval_out = run(trained, jax.random.PRNGKey(0), False)
    np.testing.assert_array_equal(eval_out, run(trained, jax.random.PRNGKey(1), False))
    assert not np.allclose(run(trained, jax.random.PRNGKey(0), True), eval_out)


def test_explicit_phases_train_modules_that_model_peft_adds(make_config, tmp_path):
    """freeze_phases name no method, so model.peft adds LoRA; the rules then train it."""
    phases = ((0, ((r".*/lora_(a|b)", 1.0), ("head/.*", 1.0), (".*", None))),)
    config = make_config(freeze_phases=phases, total_steps=3, export_weights=True,
                         **{"model.peft": "lora:r=2"})
    runs.run(config, str(tmp_path))
    export = tljax_format.load(str(tmp_path / "model.safetensors"))
    assert export.arch["peft"]["lora"]["rank"] == 2  # BiT: LoRA stays unmerged
    flat = traverse_util.flatten_dict(export.variables["params"], sep="/")
    assert any(p.endswith("lora_b") and np.any(v != 0) for p, v in flat.items())


@pytest.mark.parametrize("family,spec", [("vit", "lora:r=4,dora=1+adapter:dim=4+vpt:tokens=2+ssf"),
                                         ("vit", "adaptformer:dim=4"), ("resnet", "lora:r=4+ssf")])
def test_weight_decay_treats_every_added_matrix_like_a_kernel(family, spec):
    """The default wd_rules decay LoRA's A and B, adapter kernels and VPT prompts as they decay
    the backbone's kernels (HF peft under the Trainer decays all but biases and norms); SSF's
    vectors, DoRA's magnitude and added biases are not decayed."""
    module, variables = _with(family, spec)
    params = jax.tree.map(lambda x: x + 1.0, variables["params"])  # decay shows on every weight
    plan, _ = _plan(f"{spec}+full", family)
    cfg = common.base().optim
    cfg.weight_decay, cfg.momentum = 1.0, 0.0
    tx = optim.build(cfg, plan, 0, 100)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    flat = traverse_util.flatten_dict(updates, sep="/")
    added = [p for p in flat if peft.is_added(p)]
    decayed = {p for p in added if np.any(flat[p] != 0)}
    matrices = {p for p in added if p.rsplit("/", 1)[-1] in ("kernel", "lora_a", "lora_b", "prompts")}
    assert decayed == matrices and matrices


def test_l2sp_leaves_added_parameters_alone():
    """Li et al. 2018 give the alpha term to pretrained weights only: a LoRA factor that moved
    from its init adds nothing, a pretrained kernel that moved does."""
    trainable = {"blk": {"attn": {"kernel": jnp.array([1.0]), "lora_b": jnp.array([2.0])}}}
    anchor = {"blk": {"attn": {"kernel": jnp.array([0.0]), "lora_b": jnp.array([0.0])}}}
    assert float(steps.l2sp_penalty(trainable, anchor, 0.1, 0.0)) == pytest.approx(0.05)

"""Freezing schedules: plans, optimizer state, cost, fresh state on unfreezing, frozen BN."""
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from tests.helpers import assert_trained_only, checkpoint_params, record_initial_params
from tljax import freezing, models, runs, weights
from tljax.training import loop, optim, steps
from tljax.training import state as state_lib
from tljax.errors import UserError
from tljax.weights import tljax_format
from configs import common


@functools.lru_cache(maxsize=None)
def _tiny(name="bit"):
    arch = ({"block_counts": (1, 1, 1), "base_width": 4, "gn_groups": 4, "stem": "small"}
            if name == "bit" else {"depth": 18, "base_width": 4, "stem": "small"})
    module = models.build(name, arch, num_classes=5)
    variables = weights.init_variables(module, (16, 16, 3))
    return module, variables


def _plan(spec, name="bit", total_steps=None):
    module, variables = _tiny(name)
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    return freezing.make_plan(spec, models.groups(module), paths, total_steps), paths


_FAMILIES = {
    "bit": ({"block_counts": (1, 1), "base_width": 4, "gn_groups": 4, "stem": "small"},
            ["norm", "stage2"], ["stage1", "stem"]),
    "resnet": ({"depth": 18, "base_width": 4, "stem": "small"},
               ["stage4"], ["stage1", "stage2", "stage3", "stem"]),
    "vit": ({"size": "Ti", "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2, "patch": 4},
            ["encoder/block1", "encoder/norm"], ["embed", "encoder/block0"]),
    "convnext": ({"depths": (1, 1), "widths": (4, 8)}, ["stage2", "norm"], ["stage1", "stem"]),
    # VGG's last unit is its classifier block (fc1, fc2): "retrain the final layers".
    "vgg": ({"widths": (2, 2, 4, 4, 4), "fc_width": 8}, ["classifier"],
            [f"block{b}" for b in range(1, 6)]),
    "mobilenet_v2": ({"alpha": 0.35}, ["top"], ["stem", *(f"block{i}" for i in range(17))]),
}


def _init_shape(family):
    return (32, 32, 3) if family == "vgg" else (8, 8, 3)  # VGG's five 2x2 max-pools need 32 px


def _trainable_groups(plan, index=0):
    return sorted({p.split("/")[0] for p in plan.phases[index].trainable_paths()})


@pytest.mark.parametrize("spec,expected", [
    ("full", ["head", "norm", "stage1", "stage2", "stage3", "stem"]),
    ("linear_probe", ["head"]),
    ("last_k:1", ["head", "norm", "stage3"]),
    ("last_k:2", ["head", "norm", "stage2", "stage3"]),
    ("surgical:stage1", ["head", "stage1"]),
    ("surgical:groups=stem;stage2", ["head", "stage2", "stem"]),
])
def test_strategies_train_the_expected_groups(spec, expected):
    plan, _ = _plan(spec)
    assert _trainable_groups(plan) == expected


def test_bitfit_and_norm_only_select_parameter_kinds():
    plan, paths = _plan("bitfit")
    trainable = plan.phases[0].trainable_paths()
    assert all(p.endswith("/bias") or p.startswith("head/") for p in trainable)
    assert "stage1/unit1/gn1/bias" in trainable and "stage1/unit1/conv1/kernel" not in trainable
    plan, paths = _plan("norm_only")
    trainable = set(plan.phases[0].trainable_paths())
    assert {"stage2/unit1/gn2/scale", "stage2/unit1/gn2/bias", "norm/scale", "head/kernel"} <= trainable
    assert not any("conv" in p for p in trainable)


def test_gradual_unfreezes_one_group_from_the_top_every_n_steps():
    plan, _ = _plan("gradual:every=10")
    assert [p.start_step for p in plan.phases] == [0, 10, 20, 30, 40]
    assert _trainable_groups(plan, 0) == ["head"]
    assert _trainable_groups(plan, 1) == ["head", "norm", "stage3"]
    assert _trainable_groups(plan, 2) == ["head", "norm", "stage2", "stage3"]
    assert _trainable_groups(plan, 4) == ["head", "norm", "stage1", "stage2", "stage3", "stem"]
    assert plan.phase_index(0) == 0 and plan.phase_index(19) == 1 and plan.phase_index(99) == 4


def test_labels_keep_continuing_parameters_and_start_new_ones_fresh():
    plan, _ = _plan("gradual:every=7")
    assert plan.labels[0]["head/kernel"] == plan.labels[1]["head/kernel"] == freezing.Label("head", 1.0, 0)
    assert plan.labels[1]["stage3/unit1/conv1/kernel"] == freezing.Label("stage3", 1.0, 7)


def test_lp_ft_fine_tunes_as_a_new_run_with_its_own_warmup_and_peak():
    """Kumar et al. 2022: after the probe, fine-tuning starts afresh on the probed weights,
    with its own warmup (not the tail of the global schedule: 0.28x peak at step 100 of 150
    on digits before)."""
    plan, _ = _plan("lp_ft:lp_steps=10,ft_warmup=4,ft_lr=0.02")
    restart = freezing.Restart(4, 0.02)
    assert plan.labels[0]["head/kernel"] == freezing.Label("head", 1.0, 0)
    assert plan.labels[1]["head/kernel"] == freezing.Label("head", 1.0, 10, restart)
    assert plan.labels[1]["stem/conv/kernel"] == freezing.Label("stem", 1.0, 10, restart)
    cfg = _optim_cfg("sgd", schedule="cosine", warmup_steps=2)
    backbone = optim.label_lr(cfg, 30, plan.labels[1]["stem/conv/kernel"])
    np.testing.assert_allclose([float(backbone(c)) for c in (0, 1, 2, 4)], [0, 0.005, 0.01, 0.02],
                               rtol=1e-6)
    assert float(backbone(19)) < 0.001  # cosine to zero at the run's last step
    head = optim.label_lr(cfg, 30, plan.labels[0]["head/kernel"])  # the probe: global schedule
    np.testing.assert_allclose(float(head(1)), 0.05, rtol=1e-6)
    defaults = _plan("lp_ft:lp_steps=10")[0].labels[1]["stem/conv/kernel"].restart
    assert defaults == freezing.Restart(-1, 0.0)  # optim.warmup_steps and optim.lr
    np.testing.assert_allclose(float(optim.label_lr(cfg, 30, _plan("lp_ft:lp_steps=10")[0]
                                                    .labels[1]["stem/conv/kernel"])(1)), 0.05)


def test_layer_decay_depth_map_has_no_off_by_one():
    module, _ = _tiny()
    depths = freezing.layer_decay_depths(models.groups(module))
    assert depths == {"head": 0, "norm": 1, "stage3": 1, "stage2": 2, "stage1": 3, "stem": 4}
    plan, _ = _plan("layer_decay:0.5")
    mults = plan.phases[0].mults
    assert mults["head/kernel"] == 1.0 and mults["norm/scale"] == 0.5
    assert mults["stage3/unit1/conv1/kernel"] == 0.5 and mults["stem/conv/kernel"] == 0.5 ** 4


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_depth_strategies_agree_on_every_family(family):
    """last_k:1 = the last block with its final norm + the head; gradual unfreezes that same
    unit first; layer_decay gives it depth 1 (the head depth 0)."""
    arch, top_unit, rest = _FAMILIES[family]
    module = models.build(family, arch, 5)
    variables = weights.init_variables(module, _init_shape(family))
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    group_list = models.groups(module)

    def unit_of(path):
        parts = path.split("/")
        return "/".join(parts[:2]) if parts[0] == "encoder" else parts[0]

    last_k = freezing.make_plan("last_k:1", group_list, paths)
    assert {unit_of(p) for p in last_k.phases[0].trainable_paths()} == {"head", *top_unit}
    gradual = freezing.make_plan("gradual:every=5", group_list, paths)
    assert gradual.phases[1].trainable_paths() == last_k.phases[0].trainable_paths()
    decay = freezing.make_plan("layer_decay:0.5", group_list, paths).phases[0].mults
    for path, mult in decay.items():
        unit = unit_of(path)
        expected = 1.0 if unit == "head" else 0.5 if unit in top_unit else None
        if expected is not None:
            assert mult == expected, path
        else:
            assert unit in rest and mult <= 0.25, path


def test_strategies_combine_with_plus():
    plan, _ = _plan("last_k:2+layer_decay:0.5")
    mults = plan.phases[0].mults
    assert mults["stage3/unit1/conv1/kernel"] == 0.5 and mults["stage2/unit1/conv1/kernel"] == 0.25
    assert mults["stage1/unit1/conv1/kernel"] is None


def test_explicit_phases_and_uncovered_parameters():
    plan, _ = _plan([(0, [("head/.*", 1.0), (".*", None)]), (5, [("stem/.*", None), (".*", 0.1)])])
    assert _trainable_groups(plan, 1) == ["head", "norm", "stage1", "stage2", "stage3"]
    assert plan.phases[1].mults["head/bias"] == 0.1
    with pytest.raises(UserError, match=r"match no rule for parameters \['norm/bias'"):
        _plan([(0, [("head/.*", 1.0), ("st.*", None)])])
    with pytest.raises(UserError, match="unknown freezing strategy 'last_kk'"):
        _plan("last_kk:2")
    with pytest.raises(UserError, match="unknown model groups"):
        _plan("surgical:stage9")
    assert len(_plan("gradual:every=10", total_steps=25)[0].phases) == 3


def _optim_cfg(name="adam", **kw):
    cfg = common.base().optim
    cfg.name, cfg.lr, cfg.schedule = name, 0.1, "constant"
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_frozen_parameters_hold_no_optimizer_state():
    plan, paths = _plan("last_k:1")  # stage3 + norm + head train
    _, variables = _tiny()
    trainable, _ = state_lib.split_params(variables["params"], plan.phases[0].trainable_paths())
    state = optim.build(_optim_cfg(), plan, 0, 100).init(trainable)
    state_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert not any("'stem'" in p or "'stage1'" in p or "'stage2'" in p for p in state_paths)
    assert any("'stage3'" in p for p in state_paths)
    n_params = sum(x.size for x in jax.tree.leaves(trainable))
    n_state = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    assert n_state == 2 * n_params  # Adam: mu and nu of the trainable parameters only.


def test_bfloat16_momentum_option():
    plan, _ = _plan("full")
    _, variables = _tiny()
    state = optim.build(_optim_cfg(mu_dtype="bfloat16"), plan, 0, 100).init(variables["params"])
    mu_leaves = [x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
                 if ".mu" in jax.tree_util.keystr(p)]
    assert mu_leaves and all(x.dtype == jnp.bfloat16 for x in mu_leaves)


@pytest.mark.parametrize("family", sorted(_FAMILIES))
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_reaches_exactly_the_kernels(family, name):
    """Default rules, as big_vision's `.*/kernel$`: ViT q/k/v biases (2-D), cls and
    pos_embedding, norm scales and every bias are never decayed; every kernel is."""
    module = models.build(family, _FAMILIES[family][0], 5)
    params = weights.init_variables(module, _init_shape(family))["params"]
    params = jax.tree.map(lambda x: x + 1.0, params)  # no zero weights: decay shows everywhere
    plan = freezing.make_plan("full", models.groups(module), list(
        traverse_util.flatten_dict(params, sep="/")))
    tx = optim.build(_optim_cfg(name, momentum=0.0, weight_decay=1.0), plan, 0, 100)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    decayed = {p for p, u in traverse_util.flatten_dict(updates, sep="/").items() if np.any(u != 0)}
    kernels = {p for p in traverse_util.flatten_dict(params, sep="/") if p.endswith("/kernel")}
    assert decayed == kernels
    if family == "vit":
        assert {"encoder/block0/attn/query/bias", "embed/cls", "embed/pos_embedding"}.isdisjoint(
            decayed) and "encoder/block0/attn/query/kernel" in decayed


def _cost(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def test_frozen_groups_cost_no_backward_pass():
    module, variables = _tiny()
    batch = {"image": jnp.ones((8, 16, 16, 3)), "label": jnp.zeros((8,), jnp.int32)}
    forward = _cost(lambda v, x: module.apply(v, x), variables, batch["image"])
    flops = {}
    for spec in ["linear_probe", "last_k:1", "last_k:2", "last_k:3", "full"]:
        plan, _ = _plan(spec)
        tx = optim.build(_optim_cfg(clip_norm=1.0), plan, 0, 100)
        state = state_lib.create(variables, tx, plan.phases[0].trainable_paths(), seed=0)
        step = steps.make_train_step(module, tx, plan.phases[0].trainable_paths())
        flops[spec] = _cost(step, state, batch)
    assert flops["linear_probe"] <= 1.10 * forward, (flops, forward)
    order = ["linear_probe", "last_k:1", "last_k:2", "last_k:3", "full"]
    assert all(flops[a] < flops[b] for a, b in zip(order, order[1:])), flops
    assert flops["full"] > 2 * forward


def test_unfrozen_group_starts_with_a_fresh_adam_and_others_keep_state():
    module, variables = _tiny()
    plan, _ = _plan("gradual:every=2")
    cfg = _optim_cfg()
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (8, 16, 16, 3)),
             "label": jnp.arange(8) % 5}
    runners = []
    for index in (0, 1):
        tx = optim.build(cfg, plan, index, 100)
        runners.append((tx, jax.jit(steps.make_train_step(module, tx, plan.phases[index].trainable_paths()))))
    tx0, step0 = runners[0]
    state = state_lib.create(variables, tx0, plan.phases[0].trainable_paths(), seed=0)
    for _ in range(2):
        state, _ = step0(state, batch)
    tx1, step1 = runners[1]
    state = jax.jit(lambda s: state_lib.next_phase(s, tx1, plan.phases[1].trainable_paths()))(state)
    inner = state.opt_state[-1].inner_states
    counts = {label: [int(x) for path, x in jax.tree_util.tree_flatten_with_path(s)[0]
                      if "count" in jax.tree_util.keystr(path)][0] for label, s in inner.items()}
    assert counts["head|lr1|from0"] == 2 and counts["stage3|lr1|from2"] == 0

    # The backbone's first update equals a fresh Adam's first update on the same gradient.
    def loss(params):
        return steps.cross_entropy(module.apply({"params": params}, batch["image"]), batch["label"])

    grads = jax.jit(jax.grad(loss))(state.params)
    new_state, _ = step1(state, batch)
    path = ("stage3", "unit1", "conv2", "kernel")
    g = traverse_util.flatten_dict(grads)[path]
    expected, _ = optax.adam(cfg.lr).update(g, optax.adam(cfg.lr).init(g))
    before = traverse_util.flatten_dict(state.params)[path]
    after = traverse_util.flatten_dict(new_state.params)[path]
    np.testing.assert_allclose(after - before, expected, rtol=1e-4, atol=1e-7)


def test_each_phase_compiles_once(make_config, tmp_path, monkeypatch):
    compiled = []
    real_init = loop._PhaseRunner.__init__

    def counting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        lower = self._jitted.lower
        self._jitted = type("J", (), {"lower": lambda _, *a: (compiled.append(self.index), lower(*a))[1]})()

    monkeypatch.setattr(loop._PhaseRunner, "__init__", counting_init)
    runs.run(make_config(freeze="gradual:every=3", total_steps=12), str(tmp_path))
    assert compiled == [0, 1, 2, 3]


@pytest.mark.parametrize("name,arch,top", [
    ("resnet", {"depth": 18, "base_width": 4, "stem": "small"}, ("stage4",)),
    # Keras' BatchNorm family (eps 1e-3, momentum 0.999): last_k:1 is its last 1x1 conv
    ("mobilenet_v2", {"alpha": 0.35}, ("top",)),
])
def test_frozen_batchnorm_statistics_and_weights_stay_bit_identical(make_config, tmp_path, name, arch, top):
    config = make_config(freeze="last_k:1", export_weights=True,
                         **{"model.name": name, "model.arch": arch})
    runs.run(config, str(tmp_path))
    module = models.build(name, arch, 5)
    start = traverse_util.flatten_dict(weights.init_variables(module, (8, 8, 3)), sep="/")
    end = traverse_util.flatten_dict(tljax_format.load(str(tmp_path / "model.safetensors"))[4], sep="/")
    moved = {p for p in start if not np.array_equal(start[p], end[p])}
    assert moved and all(p.split("/")[1] in (*top, "head") for p in moved), sorted(moved)[:5]
    assert any(p.startswith(f"batch_stats/{top[0]}") for p in moved)


def test_l2sp_pulls_towards_the_pretrained_weights_and_the_head_towards_zero():
    trainable = {"stage1": {"w": jnp.array([1.0, 2.0])}, "head": {"kernel": jnp.array([3.0])}}
    anchor = {"stage1": {"w": jnp.array([0.0, 2.0])}, "head": {"kernel": jnp.array([5.0])}}
    assert float(steps.l2sp_penalty(trainable, anchor, 0.1, 0.01)) == pytest.approx(
        0.5 * 0.1 * 1.0 + 0.5 * 0.01 * 9.0)
    with pytest.raises(UserError, match=r"set optim.l2sp=\(alpha, beta\)"):
        _plan("l2sp:0.1,0.01")


@pytest.mark.parametrize("parallelism", ["jit", "fsdp"])
def test_l2sp_combines_with_a_freezing_schedule(make_config, tmp_path, source_weights, parallelism):
    """L2-SP on top of last_k:1: frozen groups stay put, the trained block is pulled towards
    its pretrained value (less movement than without the regulariser)."""
    moved = {}
    for l2sp in ((), (10.0, 0.0)):
        workdir = tmp_path / f"l2sp{len(l2sp)}"
        config = make_config("", freeze="last_k:1", export_weights=True, total_steps=4,
                             parallelism=parallelism, **{"model.init": source_weights,
                                                         "optim.l2sp": l2sp, "optim.lr": 0.05})
        runs.run(config, str(workdir))
        before = tljax_format.load(source_weights)[4]["params"]
        after = tljax_format.load(str(workdir / "model.safetensors"))[4]["params"]
        flat_before = traverse_util.flatten_dict(before, sep="/")
        flat_after = traverse_util.flatten_dict(after, sep="/")
        np.testing.assert_array_equal(flat_after["stage1/unit1/conv1/kernel"],
                                      flat_before["stage1/unit1/conv1/kernel"])
        moved[l2sp] = sum(float(np.sum((flat_after[p] - flat_before[p]) ** 2))
                          for p in flat_after if p.startswith("stage2/"))
    assert 0 < moved[(10.0, 0.0)] < moved[()]


EXPLICIT = ((0, (("head/.*", 1.0), (".*", None))), (3, ((".*", 0.5),)))


def test_explicit_phases_run_from_a_config_and_read_well_in_the_summary(make_config, tmp_path):
    summary = runs.run(make_config(freeze_phases=EXPLICIT, total_steps=4), str(tmp_path))
    assert summary["freeze"] == "0: head/.*=1, .*=frozen | 3: .*=0.5"
    from tljax.experiments import sweep_report as report
    assert report.summarize(report.load_runs(str(tmp_path)))[0]["schedule"] == summary["freeze"]


def test_explicit_phases_can_be_given_on_the_command_line():
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import sys; from absl import flags; from ml_collections import config_flags\n"
              "c = config_flags.DEFINE_config_file('config', None, '')\n"
              "flags.FLAGS(sys.argv); print(repr(c.value.freeze_phases))")
    result = subprocess.run([sys.executable, "-c", script, "--config=configs/digits.py",
                             f"--config.freeze_phases={EXPLICIT!r}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == repr(EXPLICIT)


def _docs_strategies():
    """Every spec of docs/freezing.md's schedule table, placeholders filled in (K=1, N=3,
    D=0.7); the `A+B` row runs the combination its own row gives as the example."""
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "docs", "freezing.md")) as f:
        text = f.read()
    table = text.split("# Freezing schedules", 1)[1].split("\n\n", 2)[2].split("\n\n")[0]
    specs = []
    for row in table.splitlines()[2:]:
        spec_cell, what_cell = row.split("|")[1:3]
        for spec in re.findall(r"`([^`]+)`", spec_cell):
            if spec == "A+B":
                spec = re.findall(r"`([^`]+)`", what_cell)[0]
            specs.append(spec.replace(":K", ":1").replace("=N", "=3").replace(":D", ":0.7"))
    return specs


# What docs/freezing.md's table says each of its specs trains, on the tiny BiT of the test
# below (groups stem, stage1, stage2, norm, head; depth groups stem, stage1, stage2 + norm)
# in 4 steps: [(from step, regex of the trained paths)].
_DOCS_TRAIN = {
    "full": [(0, ".*")],
    "linear_probe": [(0, "head/.*")],
    "last_k:1": [(0, "(stage2|norm|head)/.*")],
    "surgical:stage1": [(0, "(stage1|head)/.*")],
    "surgical:groups=stem;stage2": [(0, "(stem|stage2|head)/.*")],
    "gradual:every=3": [(0, "head/.*"), (3, "(stage2|norm|head)/.*")],  # (6 is past the end)
    "lp_ft:lp_steps=3": [(0, "head/.*"), (3, ".*")],
    "bitfit": [(0, "head/.*|.*/bias")],
    "norm_only": [(0, "head/.*|(.*/)?(gn[0-9]|norm)/(scale|bias)")],
    "layer_decay:0.7": [(0, ".*")],
    # t_i·T = (0.5 + 0.5·i/3)³·4 = 0.5, 1.16, 2.31 for stem, stage1, stage2 + norm; a unit
    # trains at least one step.
    "freezeout:t0=0.5": [(0, ".*"), (1, "(stage2|norm|head)/.*"), (2, "head/.*")],
    "last_k:2+layer_decay:0.7": [(0, "(stage1|stage2|norm|head)/.*")],
}


@pytest.mark.slow
def test_docs_list_every_strategy_and_each_runs_end_to_end_under_jit(make_config, tmp_path,
                                                                        source_weights, monkeypatch):
    """Each documented spec runs, trains what the docs table says it trains (the parameters
    outside it end bit-identical to those the run started from) and reports that share as
    trainable (step-weighted over its phases)."""
    specs = _docs_strategies()
    names = {re.match(r"[a-z_]+", part).group() for spec in specs for part in spec.split("+")}
    assert names == set(freezing.STRATEGIES), "docs table and freezing.STRATEGIES differ"
    starts = record_initial_params(monkeypatch)
    for index, spec in enumerate(specs):
        summary = runs.run(make_config("", freeze=spec, total_steps=4, parallelism="jit",
                                        checkpoint_every=4, export_weights=False,
                                        **{"model.init": source_weights, "data.val_split": ""}),
                            str(tmp_path / str(index)))
        assert summary["status"] == "done" and np.isfinite(summary["test_accuracy"]), spec
        assert spec in _DOCS_TRAIN, f"{spec}: add what the docs say it trains to _DOCS_TRAIN"
        initial, phases = starts[-1], _DOCS_TRAIN[spec]
        ends = [start for start, _ in phases[1:]] + [4]
        trained = [{p for p in initial if re.fullmatch(regex, p)} for _, regex in phases]
        sizes = {p: v.size for p, v in initial.items()}
        fraction = sum(sum(sizes[p] for p in paths) * (end - start) for paths, (start, _), end
                       in zip(trained, phases, ends)) / (4 * sum(sizes.values()))
        assert_trained_only(summary, initial, checkpoint_params(str(tmp_path / str(index))),
                            set().union(*trained), fraction)


def test_freezeout_anneals_each_unit_to_zero_then_freezes_it_input_side_first():
    """ajbrock/FreezeOut WRN.py: t_i = scale(t0 + (1 - t0)·i/L), lr_i = lr/t_i annealed to 0 at
    t_i·T, after which the unit leaves the backward pass; the head trains to the end."""
    total = 200
    plan, paths = _plan("freezeout:t0=0.5,spacing=cubic", total_steps=total)
    units = models.depth_groups(models.groups(_tiny()[0]))  # stem, stage1, stage2, stage3+norm
    times = [(0.5 + 0.5 * i / len(units)) ** 3 for i in range(len(units))]
    assert [p.start_step for p in plan.phases] == [0] + [round(t * total) for t in times]
    assert times[0] == 0.125
    cfg = _optim_cfg(schedule="cosine")
    cfg.warmup_steps = 0
    trained = [set(phase.trainable_paths()) for phase in plan.phases]
    assert all(a > b for a, b in zip(trained, trained[1:]))  # one more unit frozen each phase
    assert all(p.startswith("head/") for p in trained[-1])
    for unit, t in zip(units, times):
        label = next(lab for p, lab in plan.labels[0].items() if lab.group == unit[0])
        stop = round(t * total)
        assert label.until == stop and label.lr_mult == pytest.approx(1 / t)  # scale_lr
        lr = optim.label_lr(cfg, total, label)
        assert float(lr(0)) == pytest.approx(cfg.lr / t)
        assert float(lr(stop)) == pytest.approx(0, abs=1e-9) and float(lr(stop - 1)) > 0
        frozen_from = next(i for i, ph in enumerate(plan.phases) if ph.start_step == stop)
        assert not any(group_of_path(p) in unit for p in trained[frozen_from])
    head = next(lab for p, lab in plan.labels[0].items() if lab.group == "head")
    assert head.until is None and head.lr_mult == 1.0
    cfg.warmup_steps = 10  # FreezeOut has no warmup (ajbrock WRN.py): each unit starts at lr/t_i
    label = next(lab for p, lab in plan.labels[0].items() if lab.group == units[0][0])
    assert float(optim.label_lr(cfg, total, label)(0)) == pytest.approx(cfg.lr / times[0])


def group_of_path(path):
    return models.group_of(path, models.groups(_tiny()[0]))


def test_freezeout_phases_compile_ever_cheaper_steps():
    module, variables = _tiny()
    batch = {"image": jnp.ones((8, 16, 16, 3)), "label": jnp.zeros((8,), jnp.int32)}
    plan, _ = _plan("freezeout:t0=0.5,spacing=linear", total_steps=100)
    flops = []
    for index, phase in enumerate(plan.phases):
        tx = optim.build(_optim_cfg(), plan, index, 100)
        state = state_lib.create(variables, tx, phase.trainable_paths(), seed=0)
        flops.append(_cost(steps.make_train_step(module, tx, phase.trainable_paths()), state, batch))
    assert all(a > b for a, b in zip(flops, flops[1:])), flops


def test_freezeout_needs_the_run_length():
    with pytest.raises(UserError, match="total_steps"):
        _plan("freezeout:t0=0.5")

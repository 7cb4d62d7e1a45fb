"""Feature probes: each checked against an independent implementation (numpy lstsq,
scikit-learn, brute-force k-NN), the features against the model's own head, and the
cache against stale or broken reuse."""
import os

import jax
import numpy as np
import pytest

from tljax.experiments import sweep
from tljax import models, runs
from tljax.experiments import sweep_report as report
from tljax.probe import classifiers, features
from tljax.errors import UserError


def _digits_sets():
    """sklearn digits pixels as 'features': 60/20/20 train/validation/test."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    cut1, cut2 = int(0.6 * len(y)), int(0.8 * len(y))
    return (classifiers.Features(x[:cut1], y[:cut1]), classifiers.Features(x[cut1:cut2], y[cut1:cut2]),
            classifiers.Features(x[cut2:], y[cut2:]))


@pytest.mark.parametrize("n", [40, 7])  # more examples than features, and fewer
def test_ridge_equals_lstsq_of_the_regularised_system(n):
    rng = np.random.RandomState(n)
    x, y = rng.randn(n, 12), rng.randint(0, 3, n)
    targets = np.where(np.eye(3)[y] > 0, 1.0, -1.0)
    for l2, w in classifiers.ridge_weights(x, y, 3, [0.5, 1024.0]).items():
        stacked_x = np.concatenate([x, np.sqrt(l2) * np.eye(12)])
        stacked_t = np.concatenate([targets, np.zeros((12, 3))])
        expected = np.linalg.lstsq(stacked_x, stacked_t, rcond=None)[0]
        np.testing.assert_allclose(w, expected, atol=1e-5, rtol=1e-5)


def test_ridge_bias_feature_and_standardisation_follow_big_vision():
    # A constant-offset, tiny-variance feature set: standardisation (std + 1e-5) makes it
    # separable; the bias feature (100, nearly unregularised) absorbs the offset.
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1], 20)
    x = 1000.0 + 1e-3 * (y[:, None] * 2.0 - 1 + 0.1 * rng.randn(40, 3))
    data = classifiers.Features(x, y)
    assert classifiers.ridge(data, data, data, 2, [1024.0])["test_accuracy"] == 1.0
    assert classifiers.RIDGE_BIAS == 100.0 and classifiers.RIDGE_STD_EPS == 1e-5


def test_logreg_grid_matches_sklearn_with_c_chosen_on_the_same_validation():
    from sklearn.linear_model import LogisticRegression

    train_set, val, test = _digits_sets()
    mean, std = train_set.x.mean(0), train_set.x.std(0) + classifiers.RIDGE_STD_EPS
    best = None
    for c in (0.001, 0.01, 0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit((train_set.x - mean) / std, train_set.y)
        score = clf.score((val.x - mean) / std, val.y)
        if best is None or score > best[0]:
            best = (score, clf.score((test.x - mean) / std, test.y))
    ours = classifiers.logreg(train_set, val, test, 10, (0.003, 0.01, 0.03, 0.1), (0.0, 1e-4, 1e-3, 1e-2),
                         epochs=30, batch_size=128)
    assert ours["test_accuracy"] >= best[1] - 0.01, (ours, best)
    assert ours["fit_flops"] > 0


def test_knn_equals_brute_force_weighted_votes():
    train_set, _, test = _digits_sets()
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(test.x[:50]) @ unit(train_set.x).T
    expected = []
    for row in similarity:
        top = np.argsort(-row)[:10]
        votes = np.zeros(10)
        np.add.at(votes, train_set.y[top], np.exp(row[top] / 0.07))
        expected.append(votes.argmax())
    got = classifiers.knn_predict(train_set, test.x[:50], 10, k=10)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("family,arch", [
    ("bit", {"block_counts": (1, 1), "base_width": 4, "gn_groups": 2, "stem": "small"}),
    ("resnet", {"depth": 18, "base_width": 4}),
    ("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2}),
])
def test_features_are_the_heads_input(family, arch):
    from tljax import weights

    module = models.build(family, arch, 5)
    variables = weights.init_variables(module, (16, 16, 3))
    head = dict(variables["params"]["head"])
    head["kernel"] = jax.random.normal(jax.random.PRNGKey(1), head["kernel"].shape)
    variables = {**variables, "params": {**variables["params"], "head": head}}
    images = jax.random.normal(jax.random.PRNGKey(2), (3, 16, 16, 3))
    feats = features.feature_fn(module)(variables, {"image": images})
    logits = module.apply(variables, images, train=False)
    np.testing.assert_allclose(feats @ head["kernel"] + head["bias"], logits, rtol=1e-4, atol=1e-5)


def _mtimes(workdir):
    folder = os.path.join(workdir, "features")
    return {f: os.path.getmtime(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}


def test_probe_run_caches_resumes_refuses_stale_cache_and_joins_the_report(make_config, tmp_path,
                                                                          source_weights):
    def config(method, **extra):
        return make_config("", **{"model.init": source_weights, "probe.method": method,
                                  "probe.epochs": 5, **extra})

    workdir = str(tmp_path / "sweep" / "probe-ridge" / "default" / "seed0")
    first = runs.run(config("ridge"), workdir)
    assert first["freeze"] == "probe:ridge" and 0 <= first["test_accuracy"] <= 1
    assert first["train_flops"] > 0 and first["trainable_fraction"] < 0.1
    written = _mtimes(workdir)
    assert set(written) == {"meta.json", "train.npz", "validation.npz", "test.npz"}
    # As if killed before the test features (and so the summary) were written:
    os.remove(os.path.join(workdir, "features", "test.npz"))
    os.remove(os.path.join(workdir, "summary.json"))
    again = runs.run(config("ridge"), workdir)
    now = _mtimes(workdir)
    assert now["train.npz"] == written["train.npz"] and now["test.npz"] != written["test.npz"]
    assert {k: v for k, v in again.items() if k != "wall_time_s"} == {
        k: v for k, v in first.items() if k != "wall_time_s"}
    with pytest.raises(UserError, match="different config"):  # the workdir's own check, first
        runs.run(config("ridge", **{"data.few_shot_val_k": 3}), workdir)
    from tljax import workdir as workdir_lib

    with pytest.raises(UserError, match="features extracted with another model or data config"):
        features.Cache(workdir_lib.Workdir(workdir).file(workdir_lib.FEATURES), '{"model.init": "other"}')
    with pytest.raises(UserError, match="2 of 3 test feature vectors hold NaN"):
        classifiers.check_finite("test", classifiers.Features(np.array([[np.nan], [1.0], [np.inf]]),
                                                    np.zeros(3, int)))
    assert sweep.plan_runs("c", ["probe:knn"], 1, "w")[0][1][0] == "probe.method=knn"
    runs.run(config("knn"), str(tmp_path / "sweep" / "probe-knn" / "default" / "seed0"))
    rows = report.summarize(report.load_runs(str(tmp_path / "sweep")), baseline="probe:ridge")
    assert sorted(r["schedule"] for r in rows) == ["probe:knn", "probe:ridge"]


def test_few_shot_monitor_logs_the_source_tasks_ridge_accuracy_of_the_current_model(
        make_config, tmp_path, source_weights):
    from tests.helpers import records
    from tljax.weights import tljax_format

    config = make_config("", total_steps=4, eval_every=2, **{
        "model.init": source_weights, "fewshot.name": "tljax_digits",
        "fewshot.train_split": "source_train", "fewshot.test_split": "source_test",
        "fewshot.shots": (1, 3), "fewshot.seeds": 2})
    runs.run(config, str(tmp_path))
    logged = records(str(tmp_path), "fewshot")
    assert [r["step"] for r in logged] == [2, 4] and set(logged[0]) >= {"1shot", "3shot"}
    # The last record, recomputed from the exported final model by the probe code alone.
    from tljax import run_init
    from tljax.data import pipeline

    export = tljax_format.load(str(tmp_path / "model.safetensors"))
    module = models.build(export.model, export.arch, export.num_classes)
    data_cfg = run_init.data_config(config, {})
    with data_cfg.unlocked():
        data_cfg.update(train_split="source_train", val_split="", test_split="source_test",
                        few_shot_k=3, few_shot_val_k=0, few_shot_seed=0)
    sets = {w: features.extract(features.feature_fn(module), export.variables, data_cfg, w, 0, 64)[0]
            for w in ("train", "test")}
    table = classifiers.few_shot_ridge(sets["train"], sets["test"], pipeline.num_classes(data_cfg),
                                  (1, 3), 2, 2.0**10)
    assert logged[-1]["1shot"] == pytest.approx(np.mean(table[1]))
    assert logged[-1]["3shot"] == pytest.approx(np.mean(table[3]))


def test_group_features_pool_the_named_groups():
    from tljax import weights

    resnet = models.build("resnet", {"depth": 18, "base_width": 4}, 5)
    variables = weights.init_variables(resnet, (16, 16, 3))
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    # ResNet's pre-logits are the spatial mean of stage4's output: the same numbers.
    np.testing.assert_allclose(features.feature_fn(resnet, ("stage4",), pre_logits=False)(variables, {"image": images}),
                               features.feature_fn(resnet)(variables, {"image": images}), rtol=1e-6)
    vit = models.build("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 3, "mlp_dim": 32,
                               "heads": 2}, 5)
    variables = weights.init_variables(vit, (16, 16, 3))
    both = features.feature_fn(vit, ("block1", "block2"))(variables, {"image": images})
    assert both.shape == (2, 2 * (16 + 16) + 16)  # (class token + mean patch token) x 2 + pre-logits
    with pytest.raises(UserError, match="choose groups among embed, block0, block1, block2"):
        features.feature_fn(vit, ("head",))


@pytest.mark.parametrize("n_last_blocks,avgpool", [(1, False), (2, True), (3, True)])
def test_dinov2_linear_input_equals_numpy(n_last_blocks, avgpool):
    """DINOv2 eval/linear.py create_linear_input over get_intermediate_layers(norm=True): the
    final LayerNorm of each of the last n blocks' outputs, their class tokens concatenated,
    then the mean patch token of the last block, computed here in numpy from the blocks'
    raw outputs (flax's capture of every module) and the norm's parameters."""
    from tljax import weights

    vit = models.build("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 3, "mlp_dim": 32,
                               "heads": 2, "ln_eps": 1e-6}, 5)
    variables = weights.init_variables(vit, (16, 16, 3))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(3), x.shape),
                          variables["params"])  # a non-trivial final norm
    variables = {"params": params}
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    _, state = vit.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
    blocks = [np.asarray(state["intermediates"]["encoder"][f"block{i}"]["__call__"][0], np.float64)
              for i in range(3)]
    scale = np.asarray(params["encoder"]["norm"]["scale"], np.float64)
    bias = np.asarray(params["encoder"]["norm"]["bias"], np.float64)

    def norm(x):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-6) * scale + bias

    last = [norm(x) for x in blocks[-n_last_blocks:]]
    expected = np.concatenate([x[:, 0] for x in last] + ([last[-1][:, 1:].mean(1)] if avgpool else []), -1)
    got = features.feature_fn(vit, n_last_blocks=n_last_blocks, avgpool=avgpool)(variables, {"image": images})
    assert got.shape == (2, 16 * (n_last_blocks + avgpool))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if n_last_blocks == 1 and not avgpool:  # the last block's normed class token: the pre-logits
        np.testing.assert_allclose(got, features.feature_fn(vit)(variables, {"image": images}), rtol=1e-6)


def test_dinov2_input_is_refused_where_it_does_not_apply():
    resnet = models.build("resnet", {"depth": 18, "base_width": 4}, 5)
    with pytest.raises(UserError, match="probe.n_last_blocks needs a model with a class token"):
        features.feature_fn(resnet, n_last_blocks=1)
    vit = models.build("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 3, "mlp_dim": 32,
                               "heads": 2}, 5)
    with pytest.raises(UserError, match="the model has 3 blocks"):
        features.feature_fn(vit, n_last_blocks=4)
    with pytest.raises(UserError, match="replaces probe.groups"):
        features.feature_fn(vit, ("block1",), n_last_blocks=2)
    with pytest.raises(UserError, match="set probe.n_last_blocks too"):
        features.feature_fn(vit, avgpool=True)
    with pytest.raises(UserError, match="needs a ViT with a class token"):
        features.feature_fn(vit.clone(classifier="gap"), n_last_blocks=1)

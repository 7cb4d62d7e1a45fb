"""Augmentation and regularisation: each op changes what it should and nothing else,
checked against its formula or an independent implementation (PIL for RandAugment's
pixel ops)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from tljax import models, weights
from tljax.training import steps
from tljax.training import state as state_lib
from tljax.data import preprocess
from tljax.data import randaugment as ra
from tljax.models import layers


def _image():
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (17, 23, 3)).astype(np.uint8)
    image[:, :5] = rng.randint(40, 90, (17, 5, 3))  # a low-contrast part
    return image


@pytest.mark.parametrize("name,ours,pil,tolerance", [
    # PIL rounds to uint8 after blending; ours stays float: at most ~1 grey level apart.
    ("auto_contrast", ra.auto_contrast, ImageOps.autocontrast, 1.0),
    ("equalize", ra.equalize, ImageOps.equalize, 0.0),
    ("solarize", lambda t: ra.solarize(t, 128.0), lambda p: ImageOps.solarize(p, 128), 0.0),
    ("posterize", lambda t: ra.posterize(t, 3), lambda p: ImageOps.posterize(p, 3), 0.0),
    ("color", lambda t: ra.color(t, 0.4), lambda p: ImageEnhance.Color(p).enhance(0.4), 1.5),
    ("contrast", lambda t: ra.contrast(t, 0.4), lambda p: ImageEnhance.Contrast(p).enhance(0.4), 1.0),
    ("brightness", lambda t: ra.brightness(t, 1.5), lambda p: ImageEnhance.Brightness(p).enhance(1.5), 1.0),
    ("sharpness", lambda t: ra.sharpness(t, 1.7), lambda p: ImageEnhance.Sharpness(p).enhance(1.7), 1.0),
    ("rotate", lambda t: ra.rotate(t, 20.0), lambda p: p.rotate(20, fillcolor=(128,) * 3), 0.0),
    ("translate_x", lambda t: ra.translate_x(t, 5 / 23),
     lambda p: p.transform(p.size, Image.AFFINE, (1, 0, -5, 0, 1, 0), fillcolor=(128,) * 3), 0.0),
])
def test_randaugment_pixel_ops_match_pil(name, ours, pil, tolerance):
    image = _image()
    got = ours(tf.constant(image, tf.float32)).numpy()
    expected = np.asarray(pil(Image.fromarray(image)), np.float32)
    assert np.abs(got - expected).max() <= tolerance, name


def test_shear_moves_row_y_by_level_times_y_and_fills_grey():
    image = np.tile(np.arange(23, dtype=np.float32)[None, :, None], (17, 1, 3))
    out = ra.shear_x(tf.constant(image), 0.25).numpy()
    for y in (0, 4, 8):
        shift = int(round(0.25 * y))
        np.testing.assert_array_equal(out[y, :23 - shift, 0], image[y, shift:, 0])
        assert (out[y, 23 - shift:] == ra.FILL).all()


@pytest.mark.parametrize("crop", ["inception_crop(16)", "random_crop(16, 2)"])
def test_randaug_follows_a_crop_of_a_decoded_jpeg(crop):
    """Decoded JPEGs have unknown height and width; after a crop RandAugment still needs the
    channel count (equalize works per channel), so the crops keep it static."""
    pp = preprocess.build(f"{crop}|randaug(2, 10)")
    spec = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64))
    out = tf.function(lambda image, seed: pp(image, seed), input_signature=spec)(
        tf.constant(_image().astype(np.uint8)), tf.constant([0, 1], tf.int64))
    assert out.shape == (16, 16, 3)


def _photo(size=48):
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[0][100:340:5, 200:440:5]  # 48x48, natural statistics
    return tf.constant(photo[:size, :size].astype(np.float32))


@pytest.mark.parametrize("index", range(14))
def test_every_randaugment_op_gets_stronger_with_the_magnitude(index):
    """The paper's one knob: for every op and either sign, the mean absolute change of a
    photo grows with M (never shrinks; strictly from M=0 to M=10; the identity at M=0 except
    posterize, which keeps 4 bits there as timm's increasing form does). Magnitude-free ops
    (auto-contrast, equalize) change equally at every M. tensorflow/tpu's enhance factor
    1.8·M/10 + 0.1 fails this: the identity at M=5, strongest at M=0."""
    image = _photo()
    name = ra.operations(0)[index][0]
    for sign in (-1.0, 1.0):
        changes = [float(tf.reduce_mean(tf.abs(ra.operations(m)[index][1](image, sign) - image)))
                   for m in (0, 2, 4, 6, 8, 10)]
        if name in ("identity", "auto_contrast", "equalize"):
            assert len(set(changes)) == 1, (name, changes)
            continue
        assert all(a <= b for a, b in zip(changes, changes[1:])), (name, sign, changes)
        assert changes[-1] > changes[0] and (changes[0] == 0) == (name != "posterize"), (
            name, sign, changes)


def test_randaug_is_keyed_by_the_example_seed_and_stays_in_range():
    pp = preprocess.build("randaug(2, 9)")
    image = tf.constant(_image())
    seeds = [tf.constant([0, i], tf.int64) for i in range(12)]
    outs = [pp(image, s).numpy() for s in seeds]
    np.testing.assert_array_equal(outs[3], pp(image, seeds[3]).numpy())  # same seed, same ops
    assert len({o.tobytes() for o in outs}) >= 8  # different seeds, mostly different ops
    assert all(o.shape == image.shape and o.min() >= 0 and o.max() <= 255 for o in outs)
    np.testing.assert_array_equal(preprocess.build("randaug(0, 9)")(image, seeds[0]).numpy(),
                                  _image().astype(np.float32))
    assert len(ra.operations(9)) == 14


def test_label_smoothing_equals_its_formula_also_on_mixed_labels():
    logits = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    labels = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (4, 5)))  # mixed labels
    eps = 0.1
    target = (1 - eps) * labels + eps / 5
    expected = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(logits), -1))
    assert steps.cross_entropy(logits, labels, eps) == pytest.approx(float(expected), rel=1e-6)
    ids = jnp.array([0, 3, 1, 4])
    assert steps.cross_entropy(logits, ids, 0.0) == pytest.approx(
        float(optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()), rel=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_label_weights_equal_the_pasted_area(seed):
    batch = {"image": jnp.arange(6, dtype=jnp.float32)[:, None, None, None] * jnp.ones((6, 10, 14, 3)),
             "label": jnp.arange(6)}
    out = steps.cutmix(batch, jax.random.PRNGKey(seed), 1.0, 6)
    for i in range(6):
        pasted = float(jnp.mean(out["image"][i] == 5 - i)) if i != 5 - i else 0.0
        assert out["label"][i, i] == pytest.approx(1 - pasted, abs=1e-6)
        assert out["label"][i, 5 - i] == pytest.approx(pasted, abs=1e-6)
        assert out["label"][i].sum() == pytest.approx(1.0)


def test_mixing_prob_and_switch_choose_as_asked():
    batch = {"image": jnp.arange(4, dtype=jnp.float32)[:, None, None, None] * jnp.ones((4, 8, 8, 1)),
             "label": jnp.arange(4)}
    rng = jax.random.PRNGKey(0)
    untouched = steps.Mixing(0.4, 1.0, prob=0.0)(batch, rng, 4)
    np.testing.assert_array_equal(untouched["image"], batch["image"])
    np.testing.assert_array_equal(untouched["label"], jax.nn.one_hot(batch["label"], 4))
    cut = steps.Mixing(0.4, 1.0, prob=1.0, switch_prob=1.0)(batch, rng, 4)["image"]
    assert set(np.unique(cut[0]).tolist()) <= {0.0, 3.0}  # pasted pixels, never blended
    mixed = steps.Mixing(0.4, 1.0, prob=1.0, switch_prob=0.0)(batch, rng, 4)["image"]
    assert len(np.unique(mixed[0])) == 1 and 0 < float(mixed[0, 0, 0, 0]) < 3  # blended
    # Mixup alone keeps the draws of runs made before CutMix existed.
    np.testing.assert_array_equal(steps.Mixing(0.4)(batch, rng, 4)["image"],
                                  steps.mixup(batch, rng, 0.4, 4)["image"])


def test_drop_path_is_identity_at_eval_and_scales_kept_paths():
    x = jnp.ones((1000, 3))
    layer = layers.DropPath(0.25)
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    out = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    kept = out[:, 0] != 0
    np.testing.assert_allclose(out[kept], 1 / 0.75)  # kept paths scaled by 1/keep
    assert (out[~kept] == 0).all() and abs(kept.mean() - 0.75) < 0.05
    assert layers.drop_path_rates(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])  # linear in depth


@pytest.mark.parametrize("family,arch", [
    ("bit", {"block_counts": (1, 2), "base_width": 4, "gn_groups": 2, "stem": "small"}),
    ("resnet", {"depth": 18, "base_width": 4, "stem": "small"}),
    ("vit", {"size": "Ti", "patch": 4, "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2}),
])
def test_dropout_and_drop_path_act_in_training_only(family, arch):
    plain = models.build(family, arch, 5)
    variables = weights.init_variables(plain, (8, 8, 3))
    head = dict(variables["params"]["head"], kernel=jnp.ones_like(variables["params"]["head"]["kernel"]))
    variables = {**variables, "params": {**variables["params"], "head": head}}
    regularised = plain.clone(drop_path=0.5, dropout=0.5)
    images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    apply = functools.partial(lambda m, train, **kw: m.apply(variables, images, train=train,
                                                              mutable=["batch_stats"], **kw)[0])
    rngs = {"dropout": jax.random.PRNGKey(1)}
    np.testing.assert_allclose(regularised.apply(variables, images, train=False),
                               plain.apply(variables, images, train=False), rtol=1e-6)
    assert not np.allclose(apply(regularised, True, rngs=rngs), apply(plain, True))
    np.testing.assert_array_equal(apply(regularised, True, rngs=rngs),
                                  apply(regularised, True, rngs=rngs))  # keyed, reproducible


def test_ema_after_k_steps_equals_the_closed_form_and_skips_frozen_params():
    module = models.build("bit", {"block_counts": (1,), "base_width": 4, "gn_groups": 2,
                                  "stem": "small"}, 3)
    variables = weights.init_variables(module, (8, 8, 3))
    head = [p for p in state_lib.split_params(variables["params"], [])[1] if p.startswith("head/")]
    tx = optax.sgd(0.1)
    state = state_lib.create(variables, tx, head, seed=0, with_ema=True)
    assert sorted(state_lib.split_params(state.ema, [])[1]) == sorted(head)  # no frozen copy
    step = jax.jit(steps.make_train_step(module, tx, head, ema_decay=0.8, ema_warmup=True))
    batch = {"image": jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3)),
             "label": jnp.array([0, 1, 2, 0])}
    expected = {p: np.asarray(state_lib.split_params(state.params, [])[1][p]) for p in head}
    for k in range(4):
        state, _ = step(state, batch)
        decay = min(0.8, (1 + k) / (10 + k))
        current = state_lib.split_params(state.params, [])[1]
        expected = {p: decay * expected[p] + (1 - decay) * np.asarray(current[p]) for p in head}
    got = state_lib.split_params(state.ema, [])[1]
    for p in head:
        np.testing.assert_allclose(got[p], expected[p], rtol=1e-6, atol=1e-7)
    # A phase that trains more starts their EMA at the current weights; the head keeps its EMA.
    everything = list(state_lib.split_params(state.params, [])[1])
    moved = state_lib.next_phase(state, tx, everything)
    moved_ema = state_lib.split_params(moved.ema, [])[1]
    np.testing.assert_array_equal(moved_ema["head/kernel"], got["head/kernel"])
    np.testing.assert_array_equal(moved_ema["stem/conv/kernel"],
                                  state_lib.split_params(state.params, [])[1]["stem/conv/kernel"])


def test_ema_averages_batchnorm_statistics_and_keeps_averaging_groups_that_freeze():
    """timm's ModelEmaV2 averages every parameter and buffer: the BatchNorm statistics follow
    the same recurrence as the weights, and a group that freezes at a phase boundary keeps its
    average, which goes on moving toward the frozen weights (no jump to the raw weights)."""
    module = models.build("resnet", {"depth": 18, "base_width": 4, "stem": "small"}, 3)
    variables = weights.init_variables(module, (8, 8, 3))
    flat = lambda tree: state_lib.split_params(tree, [])[1]  # noqa: E731
    everything = list(flat(variables["params"]))
    head = [p for p in everything if p.startswith("head/")]
    tx = optax.sgd(0.1)
    state = state_lib.create(variables, tx, everything, seed=0, with_ema=True)
    batch = {"image": jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3)),
             "label": jnp.array([0, 1, 2, 0])}
    decay = 0.5
    expected = {k: {p: np.asarray(v) for p, v in flat(getattr(state, k)).items()}
                for k in ("params", "batch_stats")}

    def advance(state, step_fn):
        state, _ = step_fn(state, batch)
        for k in expected:
            now = flat(getattr(state, k))
            expected[k] = {p: decay * e + (1 - decay) * np.asarray(now[p])
                           for p, e in expected[k].items()}
        return state

    full_step = jax.jit(steps.make_train_step(module, tx, everything, ema_decay=decay))
    for _ in range(3):
        state = advance(state, full_step)
    frozen_body = models.with_frozen_norms(module, [p for p in everything if p not in head])
    head_step = jax.jit(steps.make_train_step(frozen_body, tx, head, ema_decay=decay))
    state = state_lib.next_phase(state, tx, head)
    for _ in range(2):
        state = advance(state, head_step)
    got = {"params": flat(state.ema), "batch_stats": flat(state.ema_batch_stats)}
    assert sorted(got["params"]) == sorted(everything)  # the frozen body kept its average
    for k in expected:
        for p, value in expected[k].items():
            np.testing.assert_allclose(got[k][p], value, rtol=1e-5, atol=1e-6, err_msg=p)
    stem = "stem/conv/kernel"
    assert not np.allclose(got["params"][stem], flat(state.params)[stem])  # still averaging

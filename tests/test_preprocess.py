"""Preprocessing ops on real decoded JPEG photos, and BiT-HyperRule."""
import numpy as np
import pytest
import tensorflow as tf

from configs import common
from tljax import hyperrule
from tljax.data import preprocess
from tljax.errors import UserError


@pytest.fixture(scope="module")
def photo():
    """scikit-learn's sample photo (427x640), JPEG-encoded and decoded again."""
    from sklearn.datasets import load_sample_image

    jpeg = tf.io.encode_jpeg(load_sample_image("flower.jpg"), quality=90)
    return tf.cast(tf.io.decode_jpeg(jpeg), tf.float32)


def _seed(i):
    return tf.constant([7, i], tf.int64)


def test_deterministic_ops_shapes_and_ranges(photo):
    out = preprocess.build("resize_small(100)|central_crop(96)|value_range(-1,1)")(photo, _seed(0))
    assert out.shape == (96, 96, 3)
    assert -1.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
    small = preprocess.build("resize_small(100)")(photo, _seed(0))
    assert small.shape == (100, 150, 3)  # 427x640 keeps its aspect ratio
    norm = preprocess.build("normalize([0.5,0.4,0.3],[0.2,0.2,0.2])")(tf.fill([2, 2, 3], 255.0), _seed(0))
    np.testing.assert_allclose(norm[0, 0], [2.5, 3.0, 3.5], rtol=1e-6)
    vr = preprocess.build("value_range(-1,1)")(tf.constant([[[0.0, 127.5, 255.0]]]), _seed(0))
    np.testing.assert_allclose(vr[0, 0], [-1, 0, 1], atol=1e-6)


def test_inception_crop_respects_area_and_aspect_bounds(photo):
    areas, aspects = [], []
    for i in range(200):
        _, size = preprocess.inception_crop_box(tf.shape(photo), _seed(i), 0.08, 1.0)
        h, w = int(size[0]), int(size[1])
        areas.append(h * w / (427 * 640))
        aspects.append(w / h)
    assert 0.08 * 0.97 <= min(areas) and max(areas) <= 1.0
    assert min(aspects) >= 0.75 * 0.97 and max(aspects) <= 4 / 3 * 1.03
    assert np.std(areas) > 0.1  # really random
    out = preprocess.build("inception_crop(64)|flip_lr")(photo, _seed(3))
    assert out.shape == (64, 64, 3)


def test_flip_probability_is_one_half_and_flips_exactly(photo):
    image = photo[:32, :48]
    flip = preprocess.build("flip_lr")
    flipped = [bool(tf.reduce_all(flip(image, _seed(i)) == image[:, ::-1])) for i in range(400)]
    assert 160 <= sum(flipped) <= 240  # Binomial(400, 0.5): 5 sigma
    assert all(bool(tf.reduce_all(flip(image, _seed(i)) == image)) for i, f in enumerate(flipped) if not f)


def test_random_crop_with_padding_and_determinism(photo):
    crop = preprocess.build("resize(32)|random_crop(32, 4)")
    a, b = crop(photo, _seed(1)), crop(photo, _seed(1))
    assert a.shape == (32, 32, 3) and bool(tf.reduce_all(a == b))


def _tf1_bilinear(image, height, width):
    """TF1's resize_bilinear written out (half_pixel_centers=False, as tf.compat.v1's
    tf.image.resize calls it): output pixel i reads source position i * in / out, linearly
    between its floor and the next pixel, clamped at the border; no antialias."""
    image = np.asarray(image, np.float64)

    def axis(out, size):
        src = np.arange(out) * (size / out)
        low = np.floor(src).astype(int)
        return low, np.minimum(low + 1, size - 1), (src - low)

    (top, bottom, dy), (left, right, dx) = axis(height, image.shape[0]), axis(width, image.shape[1])
    rows = image[top] * (1 - dy)[:, None, None] + image[bottom] * dy[:, None, None]
    return rows[:, left] * (1 - dx)[None, :, None] + rows[:, right] * dx[None, :, None]


def test_resize_tf1_is_task_adaptations_legacy_bilinear(photo):
    """VTAB-1k's preprocessing (task_adaptation data_loader.py preprocess_fn, under
    tensorflow.compat.v1), against the formula: downscaled and upscaled, square and not. The
    TF2 antialiased `resize` differs on the photo by tens of grey levels where it has detail."""
    for height, width in ((224, 224), (100, 61), (500, 700)):
        ours = preprocess.build(f"resize_tf1(({height}, {width}))")(photo, _seed(0)).numpy()
        np.testing.assert_allclose(ours, _tf1_bilinear(photo, height, width), atol=5e-3)  # f32
    legacy = preprocess.build("resize_tf1(32)")(photo, _seed(0)).numpy()
    antialiased = preprocess.build("resize(32)")(photo, _seed(0)).numpy()
    assert np.abs(legacy - antialiased).max() > 30


def test_unknown_op_is_a_clear_error():
    with pytest.raises(UserError, match="unknown preprocessing op 'rezise\\(16\\)'.*known ops"):
        preprocess.build("rezise(16)")


def test_hyperrule_choices():
    assert hyperrule.schedule(2_040) == (100, (200, 300, 400), 500)
    assert hyperrule.schedule(50_000) == (500, (3_000, 6_000, 9_000), 10_000)
    assert hyperrule.schedule(1_281_167) == (500, (6_000, 12_000, 18_000), 20_000)
    assert hyperrule.resolution(32 * 32) == (160, 128)
    assert hyperrule.resolution(None) == (512, 480)
    config = common.base()
    config.data.batch_size = 128
    hyperrule.apply(config, 50_000, 32 * 32)
    assert config.optim.lr == pytest.approx(0.003 / 4) and config.data.mixup_alpha == 0.1
    assert config.data.pp_train == "resize(160)|random_crop(128)|flip_lr|value_range(-1,1)"
    assert config.total_steps == 10_000 and config.optim.decay_boundaries == (3_000, 6_000, 9_000)


def _big_transfer_lr(step, base_lr, supports):
    """big_transfer bit_hyperrule.py get_lr, with its schedule's supports as an argument."""
    if step < supports[0]:
        return base_lr * step / supports[0]
    for s in supports[1:]:
        if s < step:
            base_lr /= 10
    return base_lr


def test_hyperrule_lr_is_big_transfers_at_every_step():
    """Warmup, then /10 *after* each boundary (`s < step`): the boundary step keeps the old lr.
    (big_transfer ends training at the last support, so that step is not compared.)"""
    from tljax.training import optim

    for examples in (2_040, 50_000):
        config = common.base()
        config.data.batch_size = 512
        hyperrule.apply(config, examples, 32 * 32)
        warmup, boundaries, total = hyperrule.schedule(examples)
        schedule = optim.lr_schedule(config.optim, config.total_steps)
        ours = np.asarray([schedule(step) for step in range(total)])
        theirs = [_big_transfer_lr(step, 0.003, (warmup, *boundaries, total)) for step in range(total)]
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-12)  # f32

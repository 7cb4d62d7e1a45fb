"""RandAugment (Cubuk et al. 2020) as a stateless TF op: `randaug(N, M)` in a pp string.

The 14 operations of the paper: identity, auto-contrast, equalize, rotate, solarize,
color, posterize, contrast, brightness, sharpness, shear-x/y, translate-x/y. N of them
are drawn uniformly per example (from the example's seed, so runs resume exactly) and
applied at magnitude M on the paper's 0..10 scale (M may exceed 10, as in big_vision's
randaug(2, 15)). Every op with a magnitude gets stronger as M grows (the identity at M=0),
as the paper's single magnitude knob assumes: timm `auto_augment.py`'s "increasing"
forms (`_RAND_INCREASING_TRANSFORMS`): enhance factor 1 ± 0.9 · M/10, at least 0.1
(`_enhance_increasing_level_to_arg`; tensorflow/tpu's 1.8 · M/10 + 0.1, which big_vision
uses, is the identity at M=5 and strongest at M=0), solarize threshold 256 − 256 · M/10,
posterize to 4 − 4 · M/10 bits, translate 0.45 · M/10 of the image side (tpu: 100 px at
any size). As tensorflow/tpu `models/official/efficientnet/autoaugment.py`: rotate
30° · M/10, shear 0.3 · M/10, fill grey 128, nearest-neighbour affine. The pixel ops are PIL's algorithms (`ImageOps`, `ImageEnhance`),
checked against PIL in tests/test_augment.py. Images are float 0..255, HWC, any channels.
"""
import math

import tensorflow as tf

FILL = 128.0  # tpu autoaugment.py: replace=[128, 128, 128]
MAX_LEVEL = 10.0  # tpu autoaugment.py: _MAX_LEVEL


def blend(degenerate, image, factor):
    """PIL ImageEnhance: degenerate + factor · (image − degenerate), clipped to 0..255."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _gray(image):
    if image.shape[-1] == 1:
        return image
    weights = tf.constant([0.299, 0.587, 0.114], tf.float32)  # PIL "L" conversion (ITU-R 601-2)
    return tf.reduce_sum(image * weights, -1, keepdims=True)


def auto_contrast(image):
    """Per channel, stretch min..max to 0..255 (PIL ImageOps.autocontrast, cutoff 0)."""
    low = tf.reduce_min(image, axis=(0, 1), keepdims=True)
    high = tf.reduce_max(image, axis=(0, 1), keepdims=True)
    scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-6), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return tf.clip_by_value(tf.floor((image - offset) * scale), 0.0, 255.0)


def _equalize_channel(channel):
    pixels = tf.cast(tf.clip_by_value(tf.round(channel), 0, 255), tf.int32)
    histogram = tf.math.bincount(tf.reshape(pixels, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    safe_step = tf.maximum(step, 1)
    lut = tf.concat([[0], ((tf.cumsum(histogram) + safe_step // 2) // safe_step)[:-1]], 0)
    lut = tf.clip_by_value(lut, 0, 255)
    return tf.where(step > 0, tf.cast(tf.gather(lut, pixels), tf.float32), tf.cast(pixels, tf.float32))


def equalize(image):
    """Histogram equalisation per channel (PIL ImageOps.equalize)."""
    return tf.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], -1)


def solarize(image, threshold):
    return tf.where(image < threshold, image, 255.0 - image)


def posterize(image, bits):
    """Keep the top `bits` bits of each 8-bit value (PIL ImageOps.posterize)."""
    shift = tf.cast(8 - bits, tf.int32)
    pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.int32)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32)


def color(image, factor):
    return blend(tf.broadcast_to(_gray(image), tf.shape(image)), image, factor)


def contrast(image, factor):
    mean = tf.reduce_mean(tf.floor(_gray(image) + 0.5))
    return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, /13); borders kept."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    channels = image.shape[-1]
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.round(smooth)
    inner = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    mask = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
    degenerate = mask * inner + (1 - mask) * image
    return blend(degenerate, image, factor)


def _affine(image, transform):
    """Output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2), nearest, grey fill."""
    shape = tf.shape(image)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.stack(transform)[None], tf.float32),
        output_shape=shape[:2], fill_value=FILL, interpolation="NEAREST", fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], image.shape)


def rotate(image, degrees):
    """Counter-clockwise about the centre."""
    angle = degrees * math.pi / 180.0
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return _affine(image, [cos, -sin, cx - cos * cx + sin * cy,
                           sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def shear_x(image, level):
    return _affine(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
    return _affine(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, fraction):
    pixels = fraction * tf.cast(tf.shape(image)[1], tf.float32)
    return _affine(image, [1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, fraction):
    pixels = fraction * tf.cast(tf.shape(image)[0], tf.float32)
    return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])


def operations(magnitude):
    """[(name, fn(image, sign))] of the 14 ops at `magnitude` (sign: ±1 for the symmetric ones)."""
    level = magnitude / MAX_LEVEL

    def enhance(sign):  # timm _enhance_increasing_level_to_arg
        return tf.maximum(0.1, 1.0 + sign * 0.9 * level)

    return [
        ("identity", lambda im, s: im),
        ("auto_contrast", lambda im, s: auto_contrast(im)),
        ("equalize", lambda im, s: equalize(im)),
        ("rotate", lambda im, s: rotate(im, s * 30.0 * level)),
        ("solarize", lambda im, s: solarize(im, 256.0 - 256.0 * level)),
        ("color", lambda im, s: color(im, enhance(s))),
        ("posterize", lambda im, s: posterize(im, max(4 - int(4 * level), 0))),
        ("contrast", lambda im, s: contrast(im, enhance(s))),
        ("brightness", lambda im, s: brightness(im, enhance(s))),
        ("sharpness", lambda im, s: sharpness(im, enhance(s))),
        ("shear_x", lambda im, s: shear_x(im, s * 0.3 * level)),
        ("shear_y", lambda im, s: shear_y(im, s * 0.3 * level)),
        ("translate_x", lambda im, s: translate_x(im, s * 0.45 * level)),
        ("translate_y", lambda im, s: translate_y(im, s * 0.45 * level)),
    ]


def randaugment(image, seed, num_layers, magnitude):
    """N ops drawn uniformly (with replacement) from the 14, each with a random sign, keyed
    by `seed` (int[2]): the same example and seed always get the same ops."""
    ops = operations(magnitude)
    image = tf.ensure_shape(tf.cast(image, tf.float32), [None, None, image.shape[-1]])
    for layer in range(num_layers):
        layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
        index = tf.random.stateless_uniform([], layer_seed, 0, len(ops), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(layer_seed, 1)) < 0.5, -1.0, 1.0)
        branches = [(lambda fn: lambda: fn(image, sign))(fn) for _, fn in ops]
        image = tf.switch_case(index, branches)
    return image

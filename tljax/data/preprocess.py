"""Preprocessing ops composed from a config string, e.g. "resize(16)|gray_to_rgb|value_range(-1,1)".

Each op maps (image, seed) -> image, with `image` a float32 HWC tensor in 0..255
until a normalising op runs. Random ops use stateless TF random ops keyed by a
per-example seed, so a pipeline is reproducible and can be resumed by skipping.
"""
import re

import tensorflow as tf

from tljax import literals
from tljax.errors import UserError

_OPS = {}


def _op(fn):
    _OPS[fn.__name__] = fn
    return fn


@_op
def resize(size):
    """Bilinear resize to `size` (int: square, or (h, w))."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return lambda image, seed: tf.image.resize(image, hw, method="bilinear", antialias=True)


@_op
def resize_tf1(size):
    """Bilinear resize to `size` as TF1's `tf.image.resize` does (task_adaptation
    data_loader.py `preprocess_fn` imports tensorflow.compat.v1): source pixel = output pixel x
    scale, no half-pixel centres, no antialias. It can differ from `resize` by up to 160 grey
    levels on a photo downscaled to 224, so VTAB-1k rows are comparable with published ones only
    with this op."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return lambda image, seed: tf.compat.v1.image.resize(
        image, hw, method=tf.compat.v1.image.ResizeMethod.BILINEAR, align_corners=False)


@_op
def resize_small(size):
    """Resize so the shorter side is `size`, keeping the aspect ratio."""
    def fn(image, seed):
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        scale = size / tf.cast(tf.minimum(h, w), tf.float32)
        new_hw = tf.cast(tf.round(tf.cast(tf.stack([h, w]), tf.float32) * scale), tf.int32)
        return tf.image.resize(image, new_hw, method="bilinear", antialias=True)
    return fn


@_op
def central_crop(size):
    def fn(image, seed):
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        top, left = (h - size) // 2, (w - size) // 2
        return image[top:top + size, left:left + size]
    return fn


def _channels(image):
    """The channel count, static when the image's is (ops after a crop, such as RandAugment's
    per-channel equalize, need it static)."""
    return image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]


@_op
def random_crop(size, pad=0):
    """Random `size` crop after zero-padding by `pad` pixels (CIFAR-style)."""
    def fn(image, seed):
        if pad:
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        return tf.image.stateless_random_crop(image, [size, size, _channels(image)], seed)
    return fn


def inception_crop_box(image_shape, seed, area_min=0.05, area_max=1.0):
    """(begin, size) of a random crop with area in [area_min, area_max], aspect in [3/4, 4/3]."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
        area_range=(area_min, area_max), aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0.0, use_image_if_no_bounding_boxes=True)
    return begin, crop_size


@_op
def inception_crop(size, area_min=0.05, area_max=1.0):
    """Random crop covering [area_min, area_max] of the image (Inception-style), resized to `size`."""
    def fn(image, seed):
        begin, crop_size = inception_crop_box(tf.shape(image), seed, area_min, area_max)
        crop = tf.slice(image, begin, crop_size)
        crop.set_shape([None, None, image.shape[-1]])  # a dynamic slice forgets the channels
        return tf.image.resize(crop, (size, size), method="bilinear", antialias=True)
    return fn


@_op
def flip_lr():
    return lambda image, seed: tf.image.stateless_random_flip_left_right(image, seed)


@_op
def gray_to_rgb():
    return lambda image, seed: tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


@_op
def randaug(num_layers=2, magnitude=10):
    """RandAugment (Cubuk et al. 2020): `num_layers` of 14 ops at `magnitude` (0..10 scale)
    per example; see tljax/data/randaugment.py for the reference each range follows.
    Place it before the normalising op (it works on 0..255 images)."""
    from tljax.data import randaugment

    return lambda image, seed: randaugment.randaugment(image, seed, num_layers, magnitude)


@_op
def value_range(low, high):
    """Maps 0..255 linearly to low..high (BiT and ViT use -1..1)."""
    return lambda image, seed: image * ((high - low) / 255.0) + low


@_op
def normalize(mean, std):
    """(image/255 - mean) / std per channel (ImageNet-style torchvision/timm weights)."""
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    return lambda image, seed: (image / 255.0 - mean_t) / std_t


# keras.applications imagenet_utils.py, mode "caffe" (VGG16/19, ResNet50): the ImageNet mean
# of the BGR channels, subtracted from 0..255 pixels.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@_op
def caffe():
    """Keras' "caffe" input (VGG16/19 weights): RGB -> BGR, minus the ImageNet BGR mean,
    no scaling."""
    mean = tf.constant(CAFFE_BGR_MEAN, tf.float32)
    return lambda image, seed: image[..., ::-1] - mean


@_op
def init_norm():
    """Placeholder for the normalisation the init weights expect; run_init.data_config substitutes it."""
    raise UserError("preprocessing op init_norm needs model.init weights that record their "
                    "normalisation; write value_range(-1,1) or normalize(mean,std) instead")


def with_init_norm(spec, normalization):
    """`spec` with the init_norm placeholder replaced by the weights' normalisation op.

    Without a known normalisation the placeholder stays, and building the pipeline fails clearly.
    """
    if not normalization:
        return spec
    return "|".join(normalization if op.strip() == "init_norm" else op for op in spec.split("|"))


SIZE = "{size}"  # stands for data.image_size in a pp string, e.g. "inception_crop({size})"


def with_size(spec, image_size):
    """`spec` with every {size} replaced by data.image_size."""
    return spec.replace(SIZE, str(int(image_size)))


def check_output_size(spec, image_size, key):
    """Refuses a pp string whose images are not image_size x image_size (the size the model
    is built and exported for), e.g. after --config.data.image_size=32 with resize(16)."""
    probe = tf.zeros([image_size * 2 + 3, image_size * 2 + 5, 3], tf.uint8)
    shape = tuple(build(spec)(probe, tf.zeros([2], tf.int64)).shape[:2])
    if shape != (image_size, image_size):
        raise UserError(f"data.{key}={spec!r} makes {shape[0]}x{shape[1]} images but "
                        f"data.image_size={image_size}; write the size as {SIZE} in the pp string "
                        f"(e.g. resize({SIZE})) so it follows data.image_size, or make them agree")


def parse(spec):
    """Turns "op(args)|op|..." into a list of (name, fn); unknown ops are a UserError."""
    ops = []
    for part in filter(None, (p.strip() for p in spec.split("|"))):
        match = re.fullmatch(r"(\w+)(?:\((.*)\))?", part)
        if not match or match.group(1) not in _OPS:
            raise UserError(f"unknown preprocessing op {part!r} in {spec!r}; "
                            f"known ops: {', '.join(sorted(_OPS))}")
        args = literals.arguments(match.group(2) or "", f"preprocessing op {part!r}")
        ops.append((part, _OPS[match.group(1)](*args)))
    return ops


def build(spec):
    """A function (image uint8/float HWC, seed int32[2]) -> float32 image."""
    ops = parse(spec)

    def apply(image, seed):
        image = tf.cast(image, tf.float32)
        for index, (_, fn) in enumerate(ops):
            image = fn(image, tf.random.experimental.stateless_fold_in(seed, index))
        return image

    return apply


def normalization_op(spec):
    """The last normalising op of a spec, e.g. 'value_range(-1,1)' ('' if none)."""
    ops = [op.strip() for op in spec.split("|")
           if op.strip().startswith(("value_range", "normalize", "caffe", "init_norm"))]
    return ops[-1] if ops else ""

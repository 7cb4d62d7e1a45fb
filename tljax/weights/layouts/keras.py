"""keras.applications models from Keras weight files (weights/keras_files.py reads all three
formats into "<kind>:<k>/<i>" keys): VGG16/19. Layers are matched by kind and order, so the
layer names Keras generated (which depend on what else the session built) do not matter.
Preprocessing as keras.applications defines it (imagenet_utils.preprocess_input): VGG
"caffe" (BGR, ImageNet mean subtracted).
"""
import math

from tljax.errors import UserError
from tljax.models import vgg
from tljax.weights import keras_files, source
from tljax.weights.layouts.common import Detected, match

HF_MODEL_TYPES = ()


def _vgg_layout(depth):
    starts = [sum(vgg.DEPTHS[depth][:b]) for b in range(5)]

    def layout(path):
        if m := match(r"params/block(\d)/conv(\d)/(kernel|bias)", path):
            k = starts[int(m[1]) - 1] + int(m[2]) - 1
            return f"conv2d:{k}/{0 if m[3] == 'kernel' else 1}", "id"
        dense = {"classifier/fc1": 0, "classifier/fc2": 1, "head": 2}
        if m := match(r"params/(classifier/fc1|classifier/fc2|head)/(kernel|bias)", path):
            return f"dense:{dense[m[1]]}/{0 if m[2] == 'kernel' else 1}", "id"
        return None
    return layout


def _vgg(raw, path):
    convs, dense = keras_files.layer_count(raw, "conv2d"), keras_files.layer_count(raw, "dense")
    depth = {13: 16, 16: 19}.get(convs)
    if depth is None or dense not in (0, 3):
        raise UserError(f"{path}: a Keras VGG has 13 (VGG16) or 16 (VGG19) convolutions and 0 or 3 "
                        f"dense layers, not {convs} and {dense}")
    starts = [sum(vgg.DEPTHS[depth][:b]) for b in range(5)]
    widths = tuple(raw[f"conv2d:{k}/0"].shape[-1] for k in starts)
    arch = {"depth": depth, "widths": widths, "top": dense == 3}
    size, classes = 224, 0
    if dense == 3:  # the flattened grid fixes the resolution (7x7 at 224 px)
        arch["fc_width"] = raw["dense:0/0"].shape[1]
        size = math.isqrt(raw["dense:0/0"].shape[0] // widths[-1]) * 32
        classes = raw["dense:2/0"].shape[1]
    return Detected("vgg", arch, classes, {"normalization": "caffe", "image_size": size},
                    source.Arrays(raw, path), _vgg_layout(depth))


def from_hf(folder, cfg, raw, path):
    return None


def from_file(raw, path, model):
    if not any(":" in key for key in raw) or not keras_files.is_keras_file(path):
        return None
    if keras_files.layer_count(raw, "batch_normalization") == 0:
        return _vgg(raw, path)
    raise UserError(f"{path}: a Keras model tljax does not read (VGG16/19 are read)")

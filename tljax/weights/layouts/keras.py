"""keras.applications models from Keras weight files (weights/keras_files.py reads all three
formats into "<kind>:<k>/<i>" keys): VGG16/19, MobileNetV2, InceptionV3. Layers are matched by
kind and build order, so the layer names Keras generated (which depend on what else the session
built) do not matter. Preprocessing as keras.applications defines it
(imagenet_utils.preprocess_input): VGG "caffe" (BGR, ImageNet mean subtracted); MobileNetV2
and InceptionV3 "tf" ([-1, 1]); InceptionV3 at 299 px.
"""
import math
from collections import Counter


from tljax.errors import UserError
from tljax.models import inception, mobilenet, vgg
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


BN = "batch_normalization"
# flax BatchNorm leaf -> Keras weight index (gamma, beta, moving mean, moving variance; no gamma
# with scale=False, as InceptionV3's)
_BN_LEAVES = {"params/scale": 0, "params/bias": 1, "batch_stats/mean": 2, "batch_stats/var": 3}
_BN_NO_SCALE = {"params/bias": 0, "batch_stats/mean": 1, "batch_stats/var": 2}


def _slots(layers):
    """{tljax module path: "<kind>:<k>"} for (path, Keras kind) in Keras' model order."""
    counts, slots = Counter(), {}
    for path, kind in layers:
        slots[path] = f"{kind}:{counts[kind]}"
        counts[kind] += 1
    return slots


def _mobilenet_layers(alpha):
    layers = [("stem/conv", "conv2d"), ("stem/bn", BN)]
    for block_id, expansion, _, _ in mobilenet.block_plan(alpha):
        if expansion != 1:
            layers += [(f"block{block_id}/expand", "conv2d"), (f"block{block_id}/expand_bn", BN)]
        layers += [(f"block{block_id}/depthwise", "depthwise_conv2d"), (f"block{block_id}/depthwise_bn", BN),
                   (f"block{block_id}/project", "conv2d"), (f"block{block_id}/project_bn", BN)]
    return layers + [("top/conv", "conv2d"), ("top/bn", BN), ("head", "dense")]


def _slot_layout(slots, bn_leaves=_BN_LEAVES):
    """tljax path -> Keras key through `slots`: kernels HWIO as they are (a depthwise kernel
    (3, 3, C, 1) becomes flax's (3, 3, 1, C)), BatchNorm leaves by Keras' weight order."""
    def layout(path):
        collection, _, rest = path.partition("/")
        module, _, leaf = rest.rpartition("/")
        if module not in slots:
            return None
        slot = slots[module]
        if collection == "params" and leaf == "kernel":
            return f"{slot}/0", "keras_depthwise" if slot.startswith("depthwise") else "id"
        if slot.startswith(BN):
            return f"{slot}/{bn_leaves[f'{collection}/{leaf}']}", "id"
        return f"{slot}/1", "id"  # a dense bias
    return layout


def _mobilenet(raw, path):
    project = raw[f"conv2d:{keras_files.layer_count(raw, 'conv2d') - 2}/0"].shape[-1]  # block 16's
    alpha = next((a for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
                  if mobilenet.make_divisible(int(320 * a)) == project), None)
    if alpha is None:
        raise UserError(f"{path}: a Keras MobileNetV2 whose last block has {project} filters, which "
                        f"no Keras width multiplier gives")
    layers = _mobilenet_layers(alpha)
    top = keras_files.layer_count(raw, "dense") == 1
    if not top:
        layers = layers[:-1]
    classes = raw["dense:0/0"].shape[1] if top else 0
    return Detected("mobilenet_v2", {"alpha": alpha}, classes,
                    {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                    source.Arrays(raw, path), _slot_layout(_slots(layers)))


def _keras_build_order(top, classes):
    """{kind: [layer names in model order]} of Keras' own InceptionV3: a bare Keras 3
    .weights.h5 numbers layers in that order and records no names."""
    import keras

    model = keras.applications.InceptionV3(weights=None, include_top=top, classes=classes or 1000,
                                           input_shape=(299, 299, 3))
    kinds = {"Conv2D": "conv2d", "BatchNormalization": BN}
    names = {}
    for layer in model.layers:
        if type(layer).__name__ in kinds:
            names.setdefault(kinds[type(layer).__name__], []).append(layer.name)
    return names


def _inception(raw, path):
    top = keras_files.layer_count(raw, "dense") == 1
    classes = raw["dense:0/0"].shape[1] if top else 0
    if keras_files.is_bare_keras3(path):
        raw = keras_files.in_build_order(raw, _keras_build_order(top, classes))
    layers = [(f"{p}/{part}", kind) for p in inception.conv_paths()
              for part, kind in (("conv", "conv2d"), ("bn", BN))]
    layers += [("head", "dense")] if top else []
    return Detected("inception_v3", {}, classes, {"normalization": source.MINUS_ONE_ONE, "image_size": 299},
                    source.Arrays(raw, path), _slot_layout(_slots(layers), _BN_NO_SCALE))


def from_hf(folder, cfg, raw, path):
    return None


def from_file(raw, path, model):
    if not any(":" in key for key in raw) or not keras_files.is_keras_file(path):
        return None
    if keras_files.layer_count(raw, BN) == 0:
        return _vgg(raw, path)
    if keras_files.layer_count(raw, "depthwise_conv2d") == 17:
        return _mobilenet(raw, path)
    if keras_files.layer_count(raw, "conv2d") == 94 and f"{BN}:0/3" not in raw:
        return _inception(raw, path)
    raise UserError(f"{path}: a Keras model tljax does not read (VGG16/19, MobileNetV2 and "
                    f"InceptionV3 are read)")

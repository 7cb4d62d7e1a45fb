"""Keras weight files read into one flat form, whichever Keras wrote them:
  - legacy HDF5 (`.h5`: what keras.applications downloads into ~/.keras/models/, Keras 2's
    `save_weights`): a group per layer name in `layer_names` order, `weight_names` inside;
  - Keras 3 `.weights.h5`: `layers/<snake_case class>[_N]/vars/<i>`, N counting that class's
    layers in model order (0 unnumbered);
  - Keras 3 `.keras`: a zip of config.json and model.weights.h5 in the Keras 3 layout;
    config.json also records the input size (`image_size`).

Keys: "<kind>:<k>/<i>", weight i of the k-th layer of `kind`, kind one of conv2d,
depthwise_conv2d, batch_normalization, dense (Keras' own snake-case class names). k counts in
the order the model's code builds the layers: a functional model lists (and Keras 3 numbers)
its layers in its graph's topological order, which for branching models (InceptionV3) is not
the build order; where a file records the layer names and all of a kind are Keras' generated
names ("conv2d_17"), their numbers give the build order. A bare Keras 3 `.weights.h5` records
no names: `in_build_order` reorders it with the order Keras itself reports.
Weights keep Keras' order and shapes (conv HWIO, dense (in, out); BatchNorm gamma, beta,
moving mean, moving variance, without gamma when scale=False).
"""
import io
import json
import re
import zipfile
from collections import Counter

import numpy as np

from tljax.errors import UserError

KINDS = ("conv2d", "depthwise_conv2d", "batch_normalization", "dense")


def is_keras_file(path):
    return str(path).endswith((".h5", ".hdf5", ".keras"))


def read(path):
    import h5py

    try:
        if str(path).endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read("model.weights.h5"))
                config = json.loads(archive.read("config.json"))
            with h5py.File(data, "r") as f:
                return in_build_order(_keras3(f, path), _layer_names(config))
        with h5py.File(path, "r") as f:
            if "layers" in f and "layer_names" not in f.attrs:
                return _keras3(f, path)
            return _legacy(f.get("model_weights", f), path)
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable Keras weights file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}); it may be truncated: download it again") from None


def image_size(path):
    """The input size a `.keras` file's model was built for, as its config.json records its
    InputLayer (Keras 3 `batch_shape`, Keras 2 `batch_input_shape`): an int for a square, else
    (height, width); None for other files and for models built for any size. A model with a
    flattening top (VGG's fc1) fits this size alone."""
    if not str(path).endswith(".keras"):
        return None
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    inputs = [layer["config"] for layer in config.get("config", {}).get("layers", [])
              if layer.get("class_name") == "InputLayer"]
    if not inputs:
        return None
    shape = inputs[0].get("batch_shape") or inputs[0].get("batch_input_shape")
    height, width = shape[1:3]  # channels last, as tljax reads Keras models
    if not (height and width):
        return None
    return height if height == width else (height, width)


def is_bare_keras3(path):
    """A Keras 3 `.weights.h5` (no layer names recorded, unlike legacy .h5 and .keras)."""
    import h5py

    if str(path).endswith(".keras"):
        return False
    with h5py.File(path, "r") as f:
        return "layers" in f and "layer_names" not in f.attrs


def _keras3(f, path):
    out = {}
    for slot, group in f["layers"].items():
        m = re.fullmatch(r"([a-z0-9_]+?)(?:_(\d+))?", slot)
        if not m or m[1] not in KINDS or "vars" not in group:
            continue
        for index, array in group["vars"].items():
            out[f"{m[1]}:{int(m[2] or 0)}/{int(index)}"] = np.asarray(array)
    if not out:
        raise UserError(f"{path}: a Keras 3 weights file without convolution, BatchNorm or dense "
                        f"layers")
    return out


def _kind(layer, weight_names, arrays):
    """A legacy layer's kind from its weights (Keras 2 names a depthwise kernel
    "depthwise_kernel"; Keras 3 writes "kernel", where the layer's name tells)."""
    leaves = [name.split("/")[-1].split(":")[0] for name in weight_names]
    if "depthwise_kernel" in leaves or ("kernel" in leaves and "depthwise" in layer):
        return "depthwise_conv2d"
    if "moving_mean" in leaves:
        return "batch_normalization"
    if "kernel" in leaves:
        return "conv2d" if arrays[leaves.index("kernel")].ndim == 4 else "dense"
    return None


def _layer_names(config):
    """{kind: [layer names in model order]} from a .keras file's config.json."""
    layers = config.get("config", {}).get("layers", [])
    snake = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
             "BatchNormalization": "batch_normalization", "Dense": "dense"}
    names = {}
    for layer in layers:
        kind = snake.get(layer.get("class_name"))
        if kind:
            names.setdefault(kind, []).append(layer.get("name") or layer["config"]["name"])
    return names


def _build_rank(names, kind):
    """Positions in build order of layers listed in model order, when all carry Keras'
    generated names (kind, kind_1, kind_2, ...); None otherwise."""
    numbers = []
    for name in names:
        m = re.fullmatch(rf"{kind}(?:_(\d+))?", name)
        if not m:
            return None
        numbers.append(int(m[1] or 0))
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    return {model_index: build_index for build_index, model_index in enumerate(order)}


def in_build_order(arrays, names):
    """`arrays` keyed in model order, re-keyed in build order for each kind whose layers
    `names` ({kind: [names in model order]}) shows as generated names."""
    out = dict(arrays)
    for kind, kind_names in names.items():
        rank = _build_rank(kind_names, kind)
        if rank is None:
            continue
        for key in [k for k in arrays if k.startswith(kind + ":")]:
            del out[key]
        for key, value in arrays.items():
            if key.startswith(kind + ":"):
                index, _, weight = key[len(kind) + 1:].partition("/")
                out[f"{kind}:{rank[int(index)]}/{weight}"] = value
    return out


def _legacy(f, path):
    if "layer_names" not in f.attrs:
        raise UserError(f"{path}: an HDF5 file without Keras' layer_names: not Keras weights")
    out, counts, layer_names = {}, {}, {}
    for layer in f.attrs["layer_names"]:
        layer = layer.decode() if isinstance(layer, bytes) else layer
        group = f[layer]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
        if not names:
            continue
        arrays = [np.asarray(group[n]) for n in names]
        kind = _kind(layer, names, arrays)
        if kind is None:
            raise UserError(f"{path}: layer {layer!r} holds weights {names} of no layer kind tljax "
                            f"reads ({', '.join(KINDS)})")
        k = counts[kind] = counts.get(kind, -1) + 1
        layer_names.setdefault(kind, []).append(layer)
        for i, array in enumerate(arrays):
            out[f"{kind}:{k}/{i}"] = array
    return in_build_order(out, layer_names)


def layer_count(arrays, kind):
    return len({key.split("/")[0] for key in arrays if key.startswith(kind + ":")})


# ------------------------------------------------------------------ key layouts of Keras models
# What the families that read keras.applications models (models/vgg.py, mobilenet_v2.py,
# inception_v3.py) share. Layers are matched by kind and build order, so the layer names Keras
# generated (which depend on what else the session built) do not matter.
BN = "batch_normalization"
# flax BatchNorm leaf -> Keras weight index (gamma, beta, moving mean, moving variance; no gamma
# with scale=False, as InceptionV3's)
BN_LEAVES = {"params/scale": 0, "params/bias": 1, "batch_stats/mean": 2, "batch_stats/var": 3}
BN_NO_SCALE = {"params/bias": 0, "batch_stats/mean": 1, "batch_stats/var": 2}


def is_keras_model(raw, path):
    """Whether `raw`, read from `path`, are a Keras file's arrays (keys as `read` writes them)."""
    return any(":" in key for key in raw) and is_keras_file(path)


def slots(layers):
    """{tljax module path: "<kind>:<k>"} for (path, Keras kind) in Keras' model order."""
    counts, out = Counter(), {}
    for path, kind in layers:
        out[path] = f"{kind}:{counts[kind]}"
        counts[kind] += 1
    return out


def slot_layout(module_slots, bn_leaves=BN_LEAVES):
    """The key layout (formats/convert.py) tljax path -> Keras key through `module_slots`
    (`slots`' answer): kernels HWIO as they are (a depthwise kernel (3, 3, C, 1) becomes flax's
    (3, 3, 1, C)), BatchNorm leaves by Keras' weight order."""
    def layout(path):
        collection, _, rest = path.partition("/")
        module, _, leaf = rest.rpartition("/")
        if module not in module_slots:
            return None
        slot = module_slots[module]
        if collection == "params" and leaf == "kernel":
            return f"{slot}/0", "keras_depthwise" if slot.startswith("depthwise") else "id"
        if slot.startswith(BN):
            return f"{slot}/{bn_leaves[f'{collection}/{leaf}']}", "id"
        return f"{slot}/1", "id"  # a dense bias
    return layout

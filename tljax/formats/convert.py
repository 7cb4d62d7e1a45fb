"""What every family's checkpoint converters share: key layouts, transforms, conversion, and
reading the architecture off a checkpoint (Hugging Face config.json, key names and shapes).
It imports no model family: the families import it (their Family.layouts, models/family.py).

A family reads its checkpoints through its layouts (Family.layouts): each a converter module
or a Layout (below) with HF_MODEL_TYPES, `from_hf(folder, cfg, raw, path)` and
`from_file(raw, path, model)`, which return a Detected (from_file: None when the file is not
of that layout), and READS.

A key layout (Detected.layout) is a function `path -> (source_key, transform)` over tljax paths of the
form "<collection>/<param path>", e.g. "params/stage2/unit1/conv1/kernel". The
loader walks the paths the tljax model expects, so every expected parameter is
looked up and every source key left over is reported.

Transforms: "conv" (PyTorch OIHW -> HWIO), "dense" (PyTorch (out, in) -> (in, out)),
"id", "conv1x1_dense" (PyTorch 1x1 conv used as a classifier), "hwio_dense"
(flax/TF 1x1 conv kernel used as a classifier), "lead1" (leading axes of size 1 added: HF
CLIP's (D,) class token and (N, D) position table), and for attention:
"qkv_kernel:<i>:<heads>", "qkv_bias:<i>:<heads>", "heads_kernel:<heads>",
"heads_bias:<heads>", "out_kernel:<heads>", "kv_kernel:<i>:<heads>" and "kv_bias:<i>:<heads>"
(a packed key/value projection), "conv1d_qkv_kernel:<i>:<heads>" and
"conv1d_out_kernel:<heads>" (GPT-2's Conv1D, stored (in, out)), "zero_first_row" (a class token without a position) and
"flat" (a vector stored with singleton axes), "keras_depthwise" (a Keras depthwise kernel).
"""
import json
import os
import re
from typing import Callable, NamedTuple

import numpy as np

from tljax.errors import UserError
from tljax.formats import source


def match(pattern, path):
    return re.fullmatch(pattern, path)


# flax leaf -> PyTorch parameter name (Dense/Conv kernels, LayerNorm scale, GRN gamma/beta)
TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
              "embedding": "weight"}


def torch_parameter(path):
    """(module path, flax leaf, PyTorch leaf) of a tljax "params/<module>/<leaf>" path, or
    None for another collection or leaf."""
    m = match(rf"params/(.+)/({'|'.join(TORCH_LEAF)})", path)
    return (m[1], m[2], TORCH_LEAF[m[2]]) if m else None
# The ViT MAP head's parameters (models/vit.py MAPHead): (part, leaf)
MAP_PATH = r"params/map/(attention/(?:query|key|value|out)|norm|mlp/fc1|mlp/fc2)/(\w+)"


class Layout(NamedTuple):
    """A checkpoint layout (or a few) a family reads, with the names a converter module has, for
    converters that are not a module of their own. Family.layouts lists them and
    weights/detect.py asks them, family by family in registration order.
      HF_MODEL_TYPES: the Hugging Face config.json `model_type`s `from_hf` reads;
      from_hf(folder, cfg, raw, path) -> Detected: such a folder (cfg: its config.json, raw:
        its arrays, path: its weights file);
      from_file(raw, path, model) -> Detected, or None when the file's keys are not this
        layout's (model: the model.init spec's family and overrides, e.g. "vit:heads=12");
      READS: the files it reads, in words (for the message about a file no layout reads)."""
    HF_MODEL_TYPES: tuple = ()
    from_hf: Callable = None
    from_file: Callable = None
    READS: str = ""


class Detected(NamedTuple):
    """A recognised checkpoint: its family, architecture and preprocessing, and how to convert it."""
    family: str
    arch: dict
    num_classes: int
    preprocessing: dict
    arrays: object      # source.Arrays
    layout: Callable    # tljax path -> (source key, transform)


def hf_preprocessing(folder, default_norm, size):
    """Normalisation, image size and eval pipeline of an HF folder's preprocessor_config.json:
    resize the short side then centre-crop (DINOv2 256 → 224, CLIP 224 → 224, ConvNeXt below
    384 px: 224/crop_pct → 224), or resize to a square (SigLIP, ViT, ConvNeXt at 384 px and
    above, which HF warps without a crop). `size` is a dict, or in older files an int: the
    short side where the processor crops, else the square's side. HF resizes bicubically;
    tljax's resize ops are bilinear."""
    path = os.path.join(folder, "preprocessor_config.json")
    if not os.path.exists(path):
        return {"normalization": default_norm, "image_size": size}
    with open(path) as f:
        pre = json.load(f)
    norm = default_norm
    if pre.get("image_mean") and pre.get("image_std"):
        norm = source.normalization_string(pre["image_mean"], pre["image_std"])
    resize, crop = pre.get("size"), pre.get("crop_size")
    crop = crop.get("height") if isinstance(crop, dict) else crop
    crops = bool(pre.get("do_center_crop") or pre.get("crop_pct"))
    if isinstance(resize, int):
        resize = {"shortest_edge": resize} if crops else {"height": resize, "width": resize}
    resize = resize or {}
    edge = resize.get("shortest_edge")
    if pre.get("crop_pct") and edge:  # ConvNextImageProcessor
        if edge >= 384:
            return {"normalization": norm, "image_size": edge, "pp_eval": f"resize({edge})|{norm}"}
        return {"normalization": norm, "image_size": edge,
                "pp_eval": f"resize_small({int(edge / pre['crop_pct'])})|central_crop({edge})|{norm}"}
    if pre.get("do_center_crop") and crop and edge:
        return {"normalization": norm, "image_size": crop,
                "pp_eval": f"resize_small({edge})|central_crop({crop})|{norm}"}
    if resize.get("height") and resize.get("height") == resize.get("width"):
        return {"normalization": norm, "image_size": resize["height"],
                "pp_eval": f"resize({resize['height']})|{norm}"}
    return {"normalization": norm, "image_size": size}


def hf_text_preprocessing(folder, max_length, pad_id):
    """What a text model of an HF folder takes: at most `max_length` tokens, padded with
    `pad_id`, made by the folder's own tokenizer.json when it has one."""
    pp = {"max_length": max_length, "pad_id": pad_id}
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        pp["tokenizer"] = os.path.abspath(folder)
    return pp


# HF config `hidden_act` -> tljax ViT `activation` (models/vit.py ACTIVATIONS).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                  "quick_gelu": "quick_gelu"}


def activation_of(cfg, folder):
    act = cfg.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise UserError(f"{folder}: hidden_act {act!r} is not supported; supported: "
                        f"{', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[act]


# A Hugging Face model folder's (and a hub repository's) own file names.
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # in order of preference


def hf_weights_file(folder):
    for name in HF_WEIGHTS:
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(f"Hugging Face folder {folder} has no model.safetensors or pytorch_model.bin")


def prefix_of(keys, prefix):
    """'bit.' for *ForImageClassification checkpoints, '' for the bare *Model."""
    return prefix if any(k.startswith(prefix) for k in keys) else ""


def count(keys, pattern):
    return len({m.groups() for k in keys if (m := re.fullmatch(pattern, k))})


def stage_counts(keys, pattern):
    """Units per stage from keys matching `pattern` with (stage, unit) groups."""
    units = {}
    for k in keys:
        if m := re.fullmatch(pattern, k):
            units.setdefault(int(m[1]), set()).add(int(m[2]))
    return tuple(len(units[s]) for s in sorted(units))



# ------------------------------------------------------------------ transforms
def transform(array, kind, target_shape):
    """Applies a transform and reshapes attention tensors to the flax layout."""
    name, *args = kind.split(":")
    if name == "id":
        return array
    if name == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    if name == "dense":
        return np.transpose(array)
    if name == "conv1x1_dense":
        return np.transpose(array.reshape(array.shape[0], array.shape[1]))
    if name == "lead1":
        return array.reshape((1,) * (len(target_shape) - array.ndim) + array.shape)
    if name == "hwio_dense":
        return array.reshape(array.shape[-2], array.shape[-1])
    if name == "heads_kernel":  # (heads*hd, D) -> (D, heads, hd)
        heads = int(args[0])
        return np.transpose(array).reshape(array.shape[1], heads, -1)
    if name == "heads_bias":
        return array.reshape(int(args[0]), -1)
    if name == "out_kernel":  # (D, heads*hd) -> (heads, hd, D)
        heads = int(args[0])
        return np.transpose(array).reshape(heads, -1, array.shape[0])
    if name == "keras_depthwise":  # Keras (kh, kw, C, 1) -> flax grouped conv (kh, kw, 1, C)
        return np.transpose(array, (0, 1, 3, 2))
    if name == "flat":  # HF ConvNeXt V2's (1, 1, 1, C) GRN parameters
        return array.reshape(-1)
    if name == "zero_first_row":  # a (1, N, D) table given a leading zero row: (1, 1 + N, D)
        return np.concatenate([np.zeros_like(array[:, :1]), array], axis=1)
    if name == "conv1d_qkv_kernel":  # GPT-2's Conv1D (D, 3D) [q | k | v] -> (D, heads, hd)
        index, heads = int(args[0]), int(args[1])
        part = np.split(array, 3, axis=1)[index]
        return part.reshape(part.shape[0], heads, -1)
    if name == "conv1d_out_kernel":  # GPT-2's Conv1D (heads*hd, D) -> (heads, hd, D)
        return array.reshape(int(args[0]), -1, array.shape[1])
    if name in ("qkv_kernel", "qkv_bias", "kv_kernel", "kv_bias"):
        index, heads = int(args[0]), int(args[1])
        part = np.split(array, 3 if name.startswith("qkv") else 2, axis=0)[index]
        return transform(part, ("heads_kernel" if name.endswith("kernel") else "heads_bias") + f":{heads}",
                         target_shape)
    raise ValueError(f"unknown transform {kind}")


def convert(arrays, layout, expected_shapes):
    """{tljax path: array} for every expected path, from a `source.Arrays` and a layout.

    Raises one UserError listing missing/unexpected keys and shape mismatches.
    """
    out, shape_errors = {}, []
    for path, shape in expected_shapes.items():
        mapped = layout(path)
        if mapped is None:
            raise UserError(f"no source key known for tljax parameter {path}")
        key, kind = mapped
        value = arrays.take(key)
        if value is None:
            continue
        value = transform(value, kind, shape)
        if path.endswith("pos_embedding") and value.shape != tuple(shape):
            out[path] = value  # Resampled to the model's grid by merge.
            continue
        if value.shape != tuple(shape):
            shape_errors.append(f"{key} {value.shape} -> {path} expects {tuple(shape)}")
            continue
        out[path] = value
    arrays.check()
    if shape_errors:
        raise UserError(f"weights {arrays.source} have shapes that do not fit the model: "
                        f"{'; '.join(shape_errors[:6])}")
    return out

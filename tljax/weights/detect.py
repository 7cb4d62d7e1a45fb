"""Recognising a weights source: which family and layout it is, and its architecture.

Everything is read from the files themselves (HF config.json, key names and
shapes), so `load_model(path)` needs no architecture flags for known layouts.
"""
import json
import os
import re

from tljax.errors import UserError
from tljax.models import vit as vit_lib
from tljax.weights import layouts, source

HF_MODEL_TYPES = ("vit", "bit", "resnet")


def _hf_preprocessing(folder, default_norm, size):
    path = os.path.join(folder, "preprocessor_config.json")
    norm = default_norm
    if os.path.exists(path):
        with open(path) as f:
            pre = json.load(f)
        if pre.get("image_mean") and pre.get("image_std"):
            norm = source.normalization_string(pre["image_mean"], pre["image_std"])
    return {"normalization": norm, "image_size": size}


def _hf_weights_file(folder):
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise UserError(f"Hugging Face folder {folder} has no model.safetensors or pytorch_model.bin")


def _prefix(keys, prefix):
    """'bit.' for *ForImageClassification checkpoints, '' for the bare *Model."""
    return prefix if any(k.startswith(prefix) for k in keys) else ""


def from_hf(folder):
    """(family, arch, num_classes, preprocessing, Arrays, layout) of a Hugging Face model folder."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model_type = cfg.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise UserError(f"{folder}: Hugging Face model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(HF_MODEL_TYPES)}")
    path = _hf_weights_file(folder)
    raw = source.read_arrays(path)
    has_head = "classifier.weight" in raw or "classifier.1.weight" in raw
    num_classes = len(cfg.get("id2label", {})) if has_head else 0
    if model_type == "vit":
        prefix = _prefix(raw, "vit.")
        size = cfg.get("image_size", 224)
        arch = {"width": cfg["hidden_size"], "depth": cfg["num_hidden_layers"],
                "mlp_dim": cfg["intermediate_size"], "heads": cfg["num_attention_heads"],
                "patch": cfg["patch_size"], "classifier": "token",
                "ln_eps": cfg.get("layer_norm_eps", 1e-12),
                "gelu_approximate": cfg.get("hidden_act", "gelu") != "gelu"}
        heads = cfg["num_attention_heads"]
        return ("vit", arch, num_classes, _hf_preprocessing(folder, source.MINUS_ONE_ONE, size),
                source.Arrays(raw, path, ignore=(f"{prefix}pooler.",)),
                lambda p: layouts.vit_hf(p, heads, prefix))
    if model_type == "bit":
        if cfg.get("layer_type", "preactivation") != "preactivation" or cfg.get("global_padding"):
            raise UserError(f"{folder}: only pre-activation BiT without global padding is supported")
        root = cfg.get("embedding_size", 64)
        widths = [h * cfg.get("width_factor", 1) for h in cfg["hidden_sizes"]]
        if widths != [4 * root * 2**i for i in range(len(widths))]:
            raise UserError(f"{folder}: BiT hidden_sizes {widths} are not 4 x {root} x 2^stage")
        arch = {"block_counts": tuple(cfg["depths"]), "base_width": root,
                "gn_groups": cfg.get("num_groups", 32), "gn_eps": 1e-5, "ws_eps": 1e-8, "stem": "bit"}
        prefix = _prefix(raw, "bit.")
        return ("bit", arch, num_classes, _hf_preprocessing(folder, source.MINUS_ONE_ONE, 224),
                source.Arrays(raw, path), lambda p: layouts.bit_hf(p, prefix))
    depths = tuple(cfg["depths"])
    kind = cfg.get("layer_type", "bottleneck")
    depth = next((d for d, (k, c) in _resnet_depths().items() if k == kind and c == depths), None)
    if depth is None or cfg.get("downsample_in_bottleneck") or cfg.get("downsample_in_first_stage"):
        raise UserError(f"{folder}: ResNet with depths {depths} ({kind}) is not a v1.5 ResNet-18..152")
    root = cfg.get("embedding_size", 64)
    expansion = 4 if kind == "bottleneck" else 1
    if list(cfg["hidden_sizes"]) != [expansion * root * 2**i for i in range(len(depths))]:
        raise UserError(f"{folder}: ResNet hidden_sizes {cfg['hidden_sizes']} are not "
                        f"{expansion} x {root} x 2^stage")
    arch = {"depth": depth, "base_width": root, "stem": "imagenet"}
    prefix = _prefix(raw, "resnet.")
    return ("resnet", arch, num_classes, _hf_preprocessing(folder, source.IMAGENET_NORM, 224),
            source.Arrays(raw, path, ignore=("num_batches_tracked",)),
            lambda p: layouts.resnet_hf(p, prefix))


def _resnet_depths():
    from tljax.models.resnet import DEPTHS

    return DEPTHS


def _count(keys, pattern):
    return len({m.groups() for k in keys if (m := re.fullmatch(pattern, k))})


def _stage_counts(keys, pattern):
    """Units per stage from keys matching `pattern` with (stage, unit) groups."""
    units = {}
    for k in keys:
        if m := re.fullmatch(pattern, k):
            units.setdefault(int(m[1]), set()).add(int(m[2]))
    return tuple(len(units[s]) for s in sorted(units))


def from_file(path, model=None):
    """Official .npz releases and timm/torchvision state dicts, recognised by their keys."""
    raw = source.read_arrays(path)
    keys = set(raw)
    ignore = ("num_batches_tracked",)
    if "resnet/root_block/standardized_conv2d/kernel" in keys:  # official BiT .npz
        counts = _stage_counts(keys, r"resnet/block(\d+)/unit(\d+)/a/standardized_conv2d/kernel")
        arch = {"block_counts": counts, "base_width": raw["resnet/root_block/standardized_conv2d/kernel"].shape[-1],
                "stem": "bit"}
        return ("bit", arch, raw["resnet/head/conv2d/kernel"].shape[-1],
                {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                source.Arrays(raw, path), layouts.bit_npz)
    if "Transformer/encoder_norm/scale" in keys:  # official ViT / AugReg .npz
        patch_kernel = raw["embedding/kernel"]
        query = raw["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
        tokens = raw["Transformer/posembed_input/pos_embedding"].shape[1] - ("cls" in keys)
        arch = {"width": patch_kernel.shape[-1], "patch": patch_kernel.shape[0],
                "depth": _count(keys, r"Transformer/encoderblock_(\d+)/LayerNorm_0/scale"),
                "mlp_dim": raw["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[-1],
                "heads": query.shape[1], "classifier": "token" if "cls" in keys else "gap",
                "representation_size": raw["pre_logits/kernel"].shape[-1] if "pre_logits/kernel" in keys else None,
                "ln_eps": 1e-6, "gelu_approximate": True}
        size = int(round(tokens ** 0.5)) * patch_kernel.shape[0]
        return ("vit", arch, raw["head/kernel"].shape[-1],
                {"normalization": source.MINUS_ONE_ONE, "image_size": size},
                source.Arrays(raw, path), layouts.vit_npz)
    if "stem.conv.weight" in keys and "norm.weight" in keys:  # timm resnetv2_*_bit
        counts = _stage_counts(keys, r"stages\.(\d+)\.blocks\.(\d+)\.conv1\.weight")
        arch = {"block_counts": counts, "base_width": raw["stem.conv.weight"].shape[0],
                "gn_eps": 1e-5, "ws_eps": 1e-8, "stem": "bit"}
        return ("bit", arch, raw["head.fc.weight"].shape[0],
                {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                source.Arrays(raw, path, ignore), layouts.bit_timm)
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:  # torchvision / timm resnet
        counts = _stage_counts(keys, r"layer(\d+)\.(\d+)\.conv1\.weight")
        kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
        depth = next((d for d, (k, c) in _resnet_depths().items() if k == kind and c == counts), None)
        if depth is None:
            raise UserError(f"{path}: ResNet stage counts {counts} ({kind}) match no ResNet-18..152")
        arch = {"depth": depth, "base_width": raw["conv1.weight"].shape[0], "stem": "imagenet"}
        return ("resnet", arch, raw["fc.weight"].shape[0],
                {"normalization": source.IMAGENET_NORM, "image_size": 224},
                source.Arrays(raw, path, ignore), layouts.resnet_torchvision)
    if "patch_embed.proj.weight" in keys:  # timm vit_*
        width = raw["patch_embed.proj.weight"].shape[0]
        heads = next((h for w, _, _, h in vit_lib.SIZES.values() if w == width), None)
        if model and (m := re.search(r"heads=(\d+)", model)):
            heads = int(m[1])
        if heads is None:
            raise UserError(f"{path}: cannot tell the number of heads of a width-{width} ViT; "
                            f"pass model='vit:heads=N'")
        if "cls_token" not in keys or "fc_norm.weight" in keys:
            raise UserError(f"{path}: only class-token timm ViTs without fc_norm are supported")
        patch = raw["patch_embed.proj.weight"].shape[-1]
        tokens = raw["pos_embed"].shape[1] - 1
        arch = {"width": width, "patch": patch, "heads": heads,
                "depth": _count(keys, r"blocks\.(\d+)\.norm1\.weight"),
                "mlp_dim": raw["blocks.0.mlp.fc1.weight"].shape[0], "classifier": "token",
                "ln_eps": 1e-6, "gelu_approximate": False}
        return ("vit", arch, raw["head.weight"].shape[0],
                {"normalization": source.MINUS_ONE_ONE, "image_size": int(round(tokens ** 0.5)) * patch},
                source.Arrays(raw, path, ignore), lambda p: layouts.vit_timm(p, heads))
    raise UserError(f"{path}: not a known weights layout (official BiT/ViT .npz, timm resnetv2/vit, "
                    f"torchvision/timm resnet, or a tljax .safetensors)")

"""ResNet v1.5 checkpoints: Hugging Face `resnet`, torchvision / timm `resnet*` state dicts."""
from tljax.errors import UserError
from tljax.models.resnet import DEPTHS
from tljax.weights import source
from tljax.weights.layouts.common import Detected, hf_preprocessing, match, prefix_of, stage_counts

HF_MODEL_TYPES = ("resnet",)
_IGNORE = ("num_batches_tracked",)


_RESNET_UNIT = r"(params|batch_stats)/stage(\d+)/unit(\d+)/(conv\d|bn\d|proj_conv|proj_bn)/(\w+)"
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def resnet_hf(path, prefix="resnet."):
    if m := match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        base = f"{prefix}embedder.embedder"
        if m[2] == "conv":
            return f"{base}.convolution.weight", "conv"
        return f"{base}.normalization.{_BN[m[3]]}", "id"
    if m := match(r"params/head/(kernel|bias)", path):
        return f"classifier.1.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := match(_RESNET_UNIT, path):
        unit = f"{prefix}encoder.stages.{int(m[2]) - 1}.layers.{int(m[3]) - 1}"
        if m[4].startswith("proj"):
            module = f"{unit}.shortcut"
        else:
            module = f"{unit}.layer.{int(m[4][-1]) - 1}"
        if "conv" in m[4]:
            return f"{module}.convolution.weight", "conv"
        return f"{module}.normalization.{_BN[m[5]]}", "id"
    return None


def resnet_torchvision(path):
    """torchvision / timm `resnet*` state dicts (conv1, bn1, layer1.0..., fc)."""
    if m := match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        return ("conv1.weight", "conv") if m[2] == "conv" else (f"bn1.{_BN[m[3]]}", "id")
    if m := match(r"params/head/(kernel|bias)", path):
        return f"fc.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := match(_RESNET_UNIT, path):
        unit = f"layer{m[2]}.{int(m[3]) - 1}"
        name = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(m[4], m[4])
        if "conv" in m[4]:
            return f"{unit}.{name}.weight", "conv"
        return f"{unit}.{name}.{_BN[m[5]]}", "id"
    return None


def from_hf(folder, cfg, raw, path):
    depths = tuple(cfg["depths"])
    kind = cfg.get("layer_type", "bottleneck")
    depth = next((d for d, (k, c) in DEPTHS.items() if k == kind and c == depths), None)
    if depth is None or cfg.get("downsample_in_bottleneck") or cfg.get("downsample_in_first_stage"):
        raise UserError(f"{folder}: ResNet with depths {depths} ({kind}) is not a v1.5 ResNet-18..152")
    root = cfg.get("embedding_size", 64)
    expansion = 4 if kind == "bottleneck" else 1
    if list(cfg["hidden_sizes"]) != [expansion * root * 2**i for i in range(len(depths))]:
        raise UserError(f"{folder}: ResNet hidden_sizes {cfg['hidden_sizes']} are not "
                        f"{expansion} x {root} x 2^stage")
    arch = {"depth": depth, "base_width": root, "stem": "imagenet"}
    prefix = prefix_of(raw, "resnet.")
    has_head = "classifier.1.weight" in raw
    return Detected("resnet", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.IMAGENET_NORM, 224),
                    source.Arrays(raw, path, ignore=_IGNORE), lambda p: resnet_hf(p, prefix))


def from_file(raw, path, model):
    keys = set(raw)
    if "conv1.weight" not in keys or "layer1.0.conv1.weight" not in keys:
        return None
    counts = stage_counts(keys, r"layer(\d+)\.(\d+)\.conv1\.weight")
    kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
    depth = next((d for d, (k, c) in DEPTHS.items() if k == kind and c == counts), None)
    if depth is None:
        raise UserError(f"{path}: ResNet stage counts {counts} ({kind}) match no ResNet-18..152")
    arch = {"depth": depth, "base_width": raw["conv1.weight"].shape[0], "stem": "imagenet"}
    return Detected("resnet", arch, raw["fc.weight"].shape[0],
                    {"normalization": source.IMAGENET_NORM, "image_size": 224},
                    source.Arrays(raw, path, _IGNORE), resnet_torchvision)

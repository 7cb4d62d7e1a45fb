"""The BiT family's checkpoints (a layout of models/bit.py's FAMILY): Hugging Face `bit`, timm
`resnetv2_*_bit`, the official BiT .npz."""
from tljax.errors import UserError
from tljax.models.names import HEAD
from tljax.formats import source
from tljax.formats.convert import Detected, hf_preprocessing, match, prefix_of, stage_counts

HF_MODEL_TYPES = ("bit",)
READS = "official BiT .npz, timm resnetv2_*_bit"


_BIT_UNIT = r"params/stage(\d+)/unit(\d+)/(gn1|gn2|gn3|conv1|conv2|conv3|conv_proj)/(\w+)"


def _bit_torch(path, stem, norm, head, head_kind, unit):
    """HF and timm BiT share the block layout (norm1..3, conv1..3, downsample.conv)."""
    if path == "params/stem/conv/kernel":
        return stem, "conv"
    if m := match(r"params/norm/(scale|bias)", path):
        return f"{norm}.{'weight' if m[1] == 'scale' else 'bias'}", "id"
    if m := match(rf"params/{HEAD}/(kernel|bias)", path):
        return f"{head}.{'weight' if m[1] == 'kernel' else 'bias'}", head_kind if m[1] == "kernel" else "id"
    if m := match(_BIT_UNIT, path):
        prefix = unit.format(int(m[1]) - 1, int(m[2]) - 1)
        layer = {"gn1": "norm1", "gn2": "norm2", "gn3": "norm3", "conv_proj": "downsample.conv"}.get(m[3], m[3])
        if m[3].startswith("gn"):
            return f"{prefix}.{layer}.{'weight' if m[4] == 'scale' else 'bias'}", "id"
        return f"{prefix}.{layer}.weight", "conv"
    return None


def bit_hf(path, prefix="bit."):
    return _bit_torch(path, f"{prefix}embedder.convolution.weight", f"{prefix}norm", "classifier.1",
                      "dense", prefix + "encoder.stages.{}.layers.{}")


def bit_timm(path):
    return _bit_torch(path, "stem.conv.weight", "norm", "head.fc", "conv1x1_dense", "stages.{}.blocks.{}")


def bit_npz(path):
    """Official BiT release (big_transfer): resnet/block{i}/unit{jj}/{a,b,c}/..."""
    if path == "params/stem/conv/kernel":
        return "resnet/root_block/standardized_conv2d/kernel", "id"
    if m := match(r"params/norm/(scale|bias)", path):
        return f"resnet/group_norm/{'gamma' if m[1] == 'scale' else 'beta'}", "id"
    if m := match(rf"params/{HEAD}/(kernel|bias)", path):
        return f"resnet/head/conv2d/{m[1]}", "hwio_dense" if m[1] == "kernel" else "id"
    if m := match(_BIT_UNIT, path):
        unit = f"resnet/block{m[1]}/unit{int(m[2]):02d}/"
        letter = {"gn1": "a", "conv1": "a", "gn2": "b", "conv2": "b", "gn3": "c", "conv3": "c"}.get(m[3])
        if m[3] == "conv_proj":
            return f"{unit}a/proj/standardized_conv2d/kernel", "id"
        if m[3].startswith("gn"):
            return f"{unit}{letter}/group_norm/{'gamma' if m[4] == 'scale' else 'beta'}", "id"
        return f"{unit}{letter}/standardized_conv2d/kernel", "id"
    return None


def from_hf(folder, cfg, raw, path):
    if cfg.get("layer_type", "preactivation") != "preactivation" or cfg.get("global_padding"):
        raise UserError(f"{folder}: only pre-activation BiT without global padding is supported")
    root = cfg.get("embedding_size", 64)
    widths = [h * cfg.get("width_factor", 1) for h in cfg["hidden_sizes"]]
    if widths != [4 * root * 2**i for i in range(len(widths))]:
        raise UserError(f"{folder}: BiT hidden_sizes {widths} are not 4 x {root} x 2^stage")
    arch = {"block_counts": tuple(cfg["depths"]), "base_width": root,
            "gn_groups": cfg.get("num_groups", 32), "gn_eps": 1e-5, "ws_eps": 1e-8, "stem": "bit"}
    prefix = prefix_of(raw, "bit.")
    has_head = "classifier.1.weight" in raw
    return Detected("bit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.MINUS_ONE_ONE, 224),
                    source.Arrays(raw, path), lambda p: bit_hf(p, prefix))


def from_file(raw, path, model):
    keys = set(raw)
    if "resnet/root_block/standardized_conv2d/kernel" in keys:  # official BiT .npz
        counts = stage_counts(keys, r"resnet/block(\d+)/unit(\d+)/a/standardized_conv2d/kernel")
        arch = {"block_counts": counts, "base_width": raw["resnet/root_block/standardized_conv2d/kernel"].shape[-1],
                "stem": "bit"}
        return Detected("bit", arch, raw["resnet/head/conv2d/kernel"].shape[-1],
                        {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                        source.Arrays(raw, path), bit_npz)
    if "stem.conv.weight" in keys and "norm.weight" in keys:  # timm resnetv2_*_bit
        counts = stage_counts(keys, r"stages\.(\d+)\.blocks\.(\d+)\.conv1\.weight")
        arch = {"block_counts": counts, "base_width": raw["stem.conv.weight"].shape[0],
                "gn_eps": 1e-5, "ws_eps": 1e-8, "stem": "bit"}
        return Detected("bit", arch, raw["head.fc.weight"].shape[0],
                        {"normalization": source.MINUS_ONE_ONE, "image_size": 224},
                        source.Arrays(raw, path, ("num_batches_tracked",)), bit_timm)
    return None

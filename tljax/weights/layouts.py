"""Key layouts of foreign checkpoints: for each tljax variable path, the source key and transform.

A layout is a function `path -> (source_key, transform)` over tljax paths of the
form "<collection>/<param path>", e.g. "params/stage2/unit1/conv1/kernel". The
loader walks the paths the tljax model expects, so every expected parameter is
looked up and every source key left over is reported.

Transforms: "conv" (PyTorch OIHW -> HWIO), "dense" (PyTorch (out, in) -> (in, out)),
"id", "conv1x1_dense" (PyTorch 1x1 conv used as a classifier), "hwio_dense"
(flax/TF 1x1 conv kernel used as a classifier), and for attention:
"qkv_kernel:<i>:<heads>", "qkv_bias:<i>:<heads>", "heads_kernel:<heads>",
"heads_bias:<heads>", "out_kernel:<heads>".
"""
import re

import numpy as np

from tljax.errors import UserError


def _match(pattern, path):
    return re.fullmatch(pattern, path)


# ------------------------------------------------------------------ BiT ResNetV2
_BIT_UNIT = r"params/stage(\d+)/unit(\d+)/(gn1|gn2|gn3|conv1|conv2|conv3|conv_proj)/(\w+)"


def _bit_torch(path, stem, norm, head, head_kind, unit):
    """HF and timm BiT share the block layout (norm1..3, conv1..3, downsample.conv)."""
    if path == "params/stem/conv/kernel":
        return stem, "conv"
    if m := _match(r"params/norm/(scale|bias)", path):
        return f"{norm}.{'weight' if m[1] == 'scale' else 'bias'}", "id"
    if m := _match(r"params/head/(kernel|bias)", path):
        return f"{head}.{'weight' if m[1] == 'kernel' else 'bias'}", head_kind if m[1] == "kernel" else "id"
    if m := _match(_BIT_UNIT, path):
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
    if m := _match(r"params/norm/(scale|bias)", path):
        return f"resnet/group_norm/{'gamma' if m[1] == 'scale' else 'beta'}", "id"
    if m := _match(r"params/head/(kernel|bias)", path):
        return f"resnet/head/conv2d/{m[1]}", "hwio_dense" if m[1] == "kernel" else "id"
    if m := _match(_BIT_UNIT, path):
        unit = f"resnet/block{m[1]}/unit{int(m[2]):02d}/"
        letter = {"gn1": "a", "conv1": "a", "gn2": "b", "conv2": "b", "gn3": "c", "conv3": "c"}.get(m[3])
        if m[3] == "conv_proj":
            return f"{unit}a/proj/standardized_conv2d/kernel", "id"
        if m[3].startswith("gn"):
            return f"{unit}{letter}/group_norm/{'gamma' if m[4] == 'scale' else 'beta'}", "id"
        return f"{unit}{letter}/standardized_conv2d/kernel", "id"
    return None


# ------------------------------------------------------------------ ResNet v1.5
_RESNET_UNIT = r"(params|batch_stats)/stage(\d+)/unit(\d+)/(conv\d|bn\d|proj_conv|proj_bn)/(\w+)"
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def resnet_hf(path, prefix="resnet."):
    if m := _match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        base = f"{prefix}embedder.embedder"
        if m[2] == "conv":
            return f"{base}.convolution.weight", "conv"
        return f"{base}.normalization.{_BN[m[3]]}", "id"
    if m := _match(r"params/head/(kernel|bias)", path):
        return f"classifier.1.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := _match(_RESNET_UNIT, path):
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
    if m := _match(r"(params|batch_stats)/stem/(conv|bn)/(\w+)", path):
        return ("conv1.weight", "conv") if m[2] == "conv" else (f"bn1.{_BN[m[3]]}", "id")
    if m := _match(r"params/head/(kernel|bias)", path):
        return f"fc.{'weight' if m[1] == 'kernel' else 'bias'}", "dense" if m[1] == "kernel" else "id"
    if m := _match(_RESNET_UNIT, path):
        unit = f"layer{m[2]}.{int(m[3]) - 1}"
        name = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}.get(m[4], m[4])
        if "conv" in m[4]:
            return f"{unit}.{name}.weight", "conv"
        return f"{unit}.{name}.{_BN[m[5]]}", "id"
    return None


# ------------------------------------------------------------------ ViT
_VIT_BLOCK = r"params/encoder/block(\d+)/(norm1|norm2|attn/(?:query|key|value|out)|mlp/fc1|mlp/fc2)/(\w+)"
_LN = {"scale": "weight", "bias": "bias"}


def vit_hf(path, heads, prefix="vit."):
    emb = f"{prefix}embeddings"
    simple = {"params/embed/cls": (f"{emb}.cls_token", "id"),
              "params/embed/pos_embedding": (f"{emb}.position_embeddings", "id"),
              "params/embed/patch/kernel": (f"{emb}.patch_embeddings.projection.weight", "conv"),
              "params/embed/patch/bias": (f"{emb}.patch_embeddings.projection.bias", "id"),
              "params/encoder/norm/scale": (f"{prefix}layernorm.weight", "id"),
              "params/encoder/norm/bias": (f"{prefix}layernorm.bias", "id"),
              "params/head/kernel": ("classifier.weight", "dense"),
              "params/head/bias": ("classifier.bias", "id")}
    if path in simple:
        return simple[path]
    if m := _match(_VIT_BLOCK, path):
        layer = f"{prefix}encoder.layer.{m[1]}"
        part, leaf = m[2], m[3]
        if part in ("norm1", "norm2"):
            name = "layernorm_before" if part == "norm1" else "layernorm_after"
            return f"{layer}.{name}.{_LN[leaf]}", "id"
        if part.startswith("attn/"):
            which = part[5:]
            if which == "out":
                return ((f"{layer}.attention.output.dense.weight", f"out_kernel:{heads}") if leaf == "kernel"
                        else (f"{layer}.attention.output.dense.bias", "id"))
            key = f"{layer}.attention.attention.{which}.{'weight' if leaf == 'kernel' else 'bias'}"
            return key, f"heads_kernel:{heads}" if leaf == "kernel" else f"heads_bias:{heads}"
        name = "intermediate.dense" if part == "mlp/fc1" else "output.dense"
        return f"{layer}.{name}.{'weight' if leaf == 'kernel' else 'bias'}", "dense" if leaf == "kernel" else "id"
    return None


def vit_timm(path, heads):
    simple = {"params/embed/cls": ("cls_token", "id"),
              "params/embed/pos_embedding": ("pos_embed", "id"),
              "params/embed/patch/kernel": ("patch_embed.proj.weight", "conv"),
              "params/embed/patch/bias": ("patch_embed.proj.bias", "id"),
              "params/encoder/norm/scale": ("norm.weight", "id"),
              "params/encoder/norm/bias": ("norm.bias", "id"),
              "params/head/kernel": ("head.weight", "dense"),
              "params/head/bias": ("head.bias", "id")}
    if path in simple:
        return simple[path]
    if m := _match(_VIT_BLOCK, path):
        block = f"blocks.{m[1]}"
        part, leaf = m[2], m[3]
        if part in ("norm1", "norm2"):
            return f"{block}.{part}.{_LN[leaf]}", "id"
        if part.startswith("attn/"):
            which = part[5:]
            if which == "out":
                return ((f"{block}.attn.proj.weight", f"out_kernel:{heads}") if leaf == "kernel"
                        else (f"{block}.attn.proj.bias", "id"))
            index = ("query", "key", "value").index(which)
            if leaf == "kernel":
                return f"{block}.attn.qkv.weight", f"qkv_kernel:{index}:{heads}"
            return f"{block}.attn.qkv.bias", f"qkv_bias:{index}:{heads}"
        return f"{block}.{part.replace('/', '.')}.{'weight' if leaf == 'kernel' else 'bias'}", \
            "dense" if leaf == "kernel" else "id"
    return None


def vit_npz(path):
    """Official vit_jax / AugReg .npz: Transformer/encoderblock_{i}/..., embedding, cls, head."""
    simple = {"params/embed/cls": "cls", "params/embed/pos_embedding": "Transformer/posembed_input/pos_embedding",
              "params/embed/patch/kernel": "embedding/kernel", "params/embed/patch/bias": "embedding/bias",
              "params/encoder/norm/scale": "Transformer/encoder_norm/scale",
              "params/encoder/norm/bias": "Transformer/encoder_norm/bias",
              "params/head/kernel": "head/kernel", "params/head/bias": "head/bias",
              "params/pre_logits/kernel": "pre_logits/kernel", "params/pre_logits/bias": "pre_logits/bias"}
    if path in simple:
        return simple[path], "id"
    if m := _match(_VIT_BLOCK, path):
        block = f"Transformer/encoderblock_{m[1]}"
        part = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2", "mlp/fc1": "MlpBlock_3/Dense_0",
                "mlp/fc2": "MlpBlock_3/Dense_1"}.get(m[2])
        if part is None:
            part = f"MultiHeadDotProductAttention_1/{m[2][5:]}"
        return f"{block}/{part}/{m[3]}", "id"
    return None


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
    if name in ("qkv_kernel", "qkv_bias"):
        index, heads = int(args[0]), int(args[1])
        part = np.split(array, 3, axis=0)[index]
        return transform(part, ("heads_kernel" if name == "qkv_kernel" else "heads_bias") + f":{heads}",
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

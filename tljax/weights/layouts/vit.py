"""ViT checkpoints: Hugging Face `vit`, timm `vit_*`, the official vit_jax / AugReg .npz."""
import re

from tljax.errors import UserError
from tljax.models.vit import SIZES
from tljax.weights import source
from tljax.weights.layouts.common import (Detected, activation_of, count, hf_preprocessing, match,
                                          prefix_of)

HF_MODEL_TYPES = ("vit",)


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
    if m := match(_VIT_BLOCK, path):
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
    if m := match(_VIT_BLOCK, path):
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
    if m := match(_VIT_BLOCK, path):
        block = f"Transformer/encoderblock_{m[1]}"
        part = {"norm1": "LayerNorm_0", "norm2": "LayerNorm_2", "mlp/fc1": "MlpBlock_3/Dense_0",
                "mlp/fc2": "MlpBlock_3/Dense_1"}.get(m[2])
        if part is None:
            part = f"MultiHeadDotProductAttention_1/{m[2][5:]}"
        return f"{block}/{part}/{m[3]}", "id"
    return None


def from_hf(folder, cfg, raw, path):
    prefix = prefix_of(raw, "vit.")
    size = cfg.get("image_size", 224)
    arch = {"width": cfg["hidden_size"], "depth": cfg["num_hidden_layers"],
            "mlp_dim": cfg["intermediate_size"], "heads": cfg["num_attention_heads"],
            "patch": cfg["patch_size"], "classifier": "token",
            "ln_eps": cfg.get("layer_norm_eps", 1e-12), "activation": activation_of(cfg, folder)}
    heads = cfg["num_attention_heads"]
    has_head = "classifier.weight" in raw
    return Detected("vit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.MINUS_ONE_ONE, size),
                    source.Arrays(raw, path, ignore=(f"{prefix}pooler.",)),
                    lambda p: vit_hf(p, heads, prefix))


def from_file(raw, path, model):
    keys = set(raw)
    if "Transformer/encoder_norm/scale" in keys:  # official ViT / AugReg .npz
        patch_kernel = raw["embedding/kernel"]
        query = raw["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]
        tokens = raw["Transformer/posembed_input/pos_embedding"].shape[1] - ("cls" in keys)
        arch = {"width": patch_kernel.shape[-1], "patch": patch_kernel.shape[0],
                "depth": count(keys, r"Transformer/encoderblock_(\d+)/LayerNorm_0/scale"),
                "mlp_dim": raw["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape[-1],
                "heads": query.shape[1], "classifier": "token" if "cls" in keys else "gap",
                "representation_size": raw["pre_logits/kernel"].shape[-1] if "pre_logits/kernel" in keys else None,
                "ln_eps": 1e-6, "activation": "gelu_tanh"}
        size = int(round(tokens ** 0.5)) * patch_kernel.shape[0]
        return Detected("vit", arch, raw["head/kernel"].shape[-1],
                        {"normalization": source.MINUS_ONE_ONE, "image_size": size},
                        source.Arrays(raw, path), vit_npz)
    if "patch_embed.proj.weight" not in keys:
        return None
    width = raw["patch_embed.proj.weight"].shape[0]  # timm vit_*
    heads = next((h for w, _, _, h in SIZES.values() if w == width), None)
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
            "depth": count(keys, r"blocks\.(\d+)\.norm1\.weight"),
            "mlp_dim": raw["blocks.0.mlp.fc1.weight"].shape[0], "classifier": "token",
            "ln_eps": 1e-6, "activation": "gelu"}
    return Detected("vit", arch, raw["head.weight"].shape[0],
                    {"normalization": source.MINUS_ONE_ONE, "image_size": int(round(tokens ** 0.5)) * patch},
                    source.Arrays(raw, path, ("num_batches_tracked",)), lambda p: vit_timm(p, heads))

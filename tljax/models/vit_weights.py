"""The ViT family's checkpoints (layout(), in models/vit.py's FAMILY):
  - ViT: Hugging Face `vit`, timm `vit_*` state dicts (AugReg, and timm's DINOv2, CLIP and
    SigLIP ViTs), the official vit_jax / AugReg .npz;
  - DINOv2: Hugging Face `dinov2` / `dinov2_with_registers` (Dinov2Model,
    *ForImageClassification). The authors' hub .pth layout is not read yet;
  - CLIP and SigLIP image towers: Hugging Face `clip` / `clip_vision_model` (CLIPModel,
    CLIPVisionModel[WithProjection], CLIPForImageClassification) and `siglip` /
    `siglip_vision_model` (SiglipModel, SiglipVisionModel, SiglipForImageClassification;
    SigLIP 2 non-NaFlex checkpoints are `siglip` too). The text tower and projections are
    not read; open_clip's and big_vision's .npz layouts are not read yet.
This module does not import models/vit.py (which imports it): `layout(SIZES)` hands it the
published sizes.
"""
import functools
import json
import math
import os
import re

from tljax.errors import UserError
from tljax.models.names import HEAD
from tljax.formats import source
from tljax.formats.convert import (HF_CONFIG, MAP_PATH, TORCH_LEAF, Detected, Layout, activation_of, count,
                                   hf_preprocessing, match, prefix_of)


# ------------------------------------------------------------------ ViT: HF, timm, vit_jax .npz
_VIT_BLOCK = r"params/encoder/block(\d+)/(norm1|norm2|attn/(?:query|key|value|out)|mlp/fc1|mlp/fc2)/(\w+)"


def vit_hf(path, heads, prefix="vit."):
    emb = f"{prefix}embeddings"
    simple = {"params/embed/cls": (f"{emb}.cls_token", "id"),
              "params/embed/pos_embedding": (f"{emb}.position_embeddings", "id"),
              "params/embed/patch/kernel": (f"{emb}.patch_embeddings.projection.weight", "conv"),
              "params/embed/patch/bias": (f"{emb}.patch_embeddings.projection.bias", "id"),
              "params/encoder/norm/scale": (f"{prefix}layernorm.weight", "id"),
              "params/encoder/norm/bias": (f"{prefix}layernorm.bias", "id"),
              f"params/{HEAD}/kernel": ("classifier.weight", "dense"),
              f"params/{HEAD}/bias": ("classifier.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_VIT_BLOCK, path):
        layer = f"{prefix}encoder.layer.{m[1]}"
        part, leaf = m[2], m[3]
        if part in ("norm1", "norm2"):
            name = "layernorm_before" if part == "norm1" else "layernorm_after"
            return f"{layer}.{name}.{TORCH_LEAF[leaf]}", "id"
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


_TIMM_EXTRA = r"params/encoder/block(\d+)/(ls1|ls2)/gamma"


def vit_timm(path, heads, no_embed_class=False):
    simple = {"params/embed/cls": ("cls_token", "id"),
              "params/embed/pos_embedding": ("pos_embed", "zero_first_row" if no_embed_class else "id"),
              "params/embed/registers": ("reg_token", "id"),
              "params/embed/pre_norm/scale": ("norm_pre.weight", "id"),
              "params/embed/pre_norm/bias": ("norm_pre.bias", "id"),
              "params/map/probe": ("attn_pool.latent", "id"),
              "params/embed/patch/kernel": ("patch_embed.proj.weight", "conv"),
              "params/embed/patch/bias": ("patch_embed.proj.bias", "id"),
              "params/encoder/norm/scale": ("norm.weight", "id"),
              "params/encoder/norm/bias": ("norm.bias", "id"),
              f"params/{HEAD}/kernel": ("head.weight", "dense"),
              f"params/{HEAD}/bias": ("head.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_TIMM_EXTRA, path):
        return f"blocks.{m[1]}.{m[2]}.gamma", "id"
    if m := match(MAP_PATH, path):  # timm AttentionPoolLatent: q, packed kv, proj
        part, leaf = m[1], m[2]
        param = "weight" if leaf == "kernel" else "bias"
        if part in ("attention/key", "attention/value"):
            index = 0 if part == "attention/key" else 1
            return f"attn_pool.kv.{param}", f"kv_{'kernel' if leaf == 'kernel' else 'bias'}:{index}:{heads}"
        if part == "attention/query":
            return f"attn_pool.q.{param}", f"heads_{'kernel' if leaf == 'kernel' else 'bias'}:{heads}"
        if part == "attention/out":
            return f"attn_pool.proj.{param}", f"out_kernel:{heads}" if leaf == "kernel" else "id"
        if part == "norm":
            return f"attn_pool.norm.{TORCH_LEAF[leaf]}", "id"
        return f"attn_pool.{part.replace('/', '.')}.{param}", "dense" if leaf == "kernel" else "id"
    if m := match(_VIT_BLOCK, path):
        block = f"blocks.{m[1]}"
        part, leaf = m[2], m[3]
        if part in ("norm1", "norm2"):
            return f"{block}.{part}.{TORCH_LEAF[leaf]}", "id"
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
              f"params/{HEAD}/kernel": "head/kernel", f"params/{HEAD}/bias": "head/bias",
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


def _vit_from_hf(folder, cfg, raw, path):
    prefix = prefix_of(raw, "vit.")
    size = cfg.get("image_size", 224)
    arch = {"width": cfg["hidden_size"], "depth": cfg["num_hidden_layers"],
            "mlp_dim": cfg["intermediate_size"], "heads": cfg["num_attention_heads"],
            "patch": cfg["patch_size"], "classifier": "token",
            "ln_eps": cfg.get("layer_norm_eps", 1e-12), "activation": activation_of(cfg, folder),
            "pos_resize": "bicubic"}  # HF ViT interpolate_pos_encoding: torch bicubic
    heads = cfg["num_attention_heads"]
    has_head = "classifier.weight" in raw
    return Detected("vit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.MINUS_ONE_ONE, size),
                    source.Arrays(raw, path, ignore=(f"{prefix}pooler.",)),
                    lambda p: vit_hf(p, heads, prefix))


def from_file(raw, path, model, sizes):
    """An official .npz or a timm state dict; `sizes`: models/vit.py SIZES."""
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
    return _timm(raw, path, model, sizes)


# timm architectures built with act_layer="gelu_tanh" (timm models/vision_transformer.py: the
# SigLIP 2 ViTs); other timm ViTs use exact GELU, quickgelu ones OpenAI CLIP's.
TIMM_GELU_TANH = ("vit_base_patch32_siglip_256", "vit_large_patch16_siglip_512",
                  "vit_so400m_patch16_siglip_", "vit_giantopt_patch16_siglip_",
                  "vit_base_patch32_siglip_gap_256", "vit_large_patch16_siglip_gap_512")


def _timm_config(path):
    """The config.json timm writes beside its weights on the hub (architecture name,
    pretrained_cfg with mean/std and input size), or {}."""
    config_path = os.path.join(os.path.dirname(path), HF_CONFIG)
    if not os.path.exists(config_path):
        return {}
    with open(config_path) as f:
        config = json.load(f)
    return config if "architecture" in config else {}


def _timm(raw, path, model, sizes):
    """A timm VisionTransformer state dict (timm models/vision_transformer.py): AugReg, DINOv2
    (ls1/ls2 LayerScale, SwiGLUPacked fc1 for ViT-g, reg_token), CLIP (norm_pre, no patch
    bias) and SigLIP (no class token, attn_pool MAP head). Numerics are timm's: exact GELU
    unless the architecture is a `quickgelu` one, LayerNorm eps 1e-6 (1e-5 for CLIP's
    pre-norm towers), bicubic position resampling with antialias
    (layers/pos_embed.py resample_abs_pos_embed). timm's SigLIP 2 architectures use tanh GELU
    (TIMM_GELU_TANH); a bare file without timm's config.json gets exact GELU
    (model='vit:activation=gelu_tanh' overrides)."""
    keys = set(raw)
    timm_config = _timm_config(path)
    architecture = timm_config.get("architecture", "")
    width = raw["patch_embed.proj.weight"].shape[0]
    heads = next((h for w, _, _, h in sizes.values() if w == width), None)
    if model and (m := re.search(r"heads=(\d+)", model)):
        heads = int(m[1])
    if heads is None:
        raise UserError(f"{path}: cannot tell the number of heads of a width-{width} ViT; "
                        f"pass model='vit:heads=N'")
    class_token, pool = "cls_token" in keys, "attn_pool.latent" in keys
    if "fc_norm.weight" in keys or not (class_token or pool):
        raise UserError(f"{path}: timm ViTs pooled by fc_norm or an average are not supported "
                        f"(class-token and attention-pool (SigLIP) ones are)")
    patch = raw["patch_embed.proj.weight"].shape[-1]
    positions = raw["pos_embed"].shape[1]
    grid = math.isqrt(positions - (positions != math.isqrt(positions) ** 2))
    pre_norm = "norm_pre.weight" in keys
    fc1, fc2 = raw["blocks.0.mlp.fc1.weight"], raw["blocks.0.mlp.fc2.weight"]
    swiglu = fc1.shape[0] == 2 * fc2.shape[1]
    arch = {"width": width, "patch": patch, "heads": heads,
            "depth": count(keys, r"blocks\.(\d+)\.norm1\.weight"),
            "mlp_dim": fc2.shape[1], "classifier": "token" if class_token else "map",
            "ln_eps": 1e-5 if pre_norm else 1e-6,
            "activation": ("quick_gelu" if "quickgelu" in architecture else
                           "gelu_tanh" if architecture.startswith(TIMM_GELU_TANH) else "gelu"),
            "layer_scale": "blocks.0.ls1.gamma" in keys, "ffn": "swiglu" if swiglu else "mlp",
            "registers": raw["reg_token"].shape[1] if "reg_token" in keys else 0,
            "pre_norm": pre_norm, "patch_bias": "patch_embed.proj.bias" in keys,
            "pos_resize": "bicubic_antialias"}
    classes = raw["head.weight"].shape[0] if "head.weight" in keys else 0
    if classes and raw["head.weight"].shape[1] == 2 * width:
        arch["classifier"] = "token_gap"
    # timm's no_embed_class models (DINOv2 with registers) give the class token no position:
    # tljax's grid then starts with a zero row for it.
    no_embed_class = class_token and positions == grid**2
    pretrained = timm_config.get("pretrained_cfg", {})
    norm = source.MINUS_ONE_ONE
    if pretrained.get("mean") and pretrained.get("std"):
        norm = source.normalization_string(pretrained["mean"], pretrained["std"])
    size = (pretrained.get("input_size") or [3, grid * patch])[-1]
    return Detected("vit", arch, classes, {"normalization": norm, "image_size": size},
                    source.Arrays(raw, path, ("num_batches_tracked",)),
                    lambda p: vit_timm(p, heads, no_embed_class))


# ------------------------------------------------------------------ DINOv2: HF
# HF layout: the ViT one (vit_hf) with norm1/norm2, mlp.fc1/fc2 (SwiGLU: the packed
# mlp.weights_in/weights_out), layer_scale{1,2}.lambda1 and embeddings.register_tokens; the
# classifier reads [class token, mean patch token] (modeling_dinov2.py).
_BLOCK_EXTRA = r"params/encoder/block(\d+)/(norm1|norm2|mlp/fc1|mlp/fc2|ls1|ls2)/(\w+)"


def swiglu_hidden(width, mlp_ratio):
    """DINOv2's SwiGLU hidden width: two thirds of the MLP's, rounded up to a multiple of 8
    (modeling_dinov2.py Dinov2SwiGLUFFN; dinov2 layers/swiglu_ffn.py SwiGLUFFNFused)."""
    return (int(int(width * mlp_ratio) * 2 / 3) + 7) // 8 * 8


def dinov2_hf(path, heads, prefix, swiglu):
    if path == "params/embed/registers":
        return f"{prefix}embeddings.register_tokens", "id"
    if m := match(_BLOCK_EXTRA, path):
        layer, part, leaf = f"{prefix}encoder.layer.{m[1]}", m[2], m[3]
        if part in ("ls1", "ls2"):
            return f"{layer}.layer_scale{part[-1]}.lambda1", "id"
        if part.startswith("mlp/") and swiglu:
            name = "weights_in" if part == "mlp/fc1" else "weights_out"
            return f"{layer}.mlp.{name}.{TORCH_LEAF[leaf]}", "dense" if leaf == "kernel" else "id"
        name = part.replace("/", ".")
        return f"{layer}.{name}.{TORCH_LEAF[leaf]}", "dense" if leaf == "kernel" else "id"
    return vit_hf(path, heads, prefix)


def _dinov2_from_hf(folder, cfg, raw, path):
    registers = cfg.get("num_register_tokens", 0) if cfg["model_type"] == "dinov2_with_registers" else 0
    prefix = prefix_of(raw, f"{cfg['model_type']}.")
    width, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    swiglu = bool(cfg.get("use_swiglu_ffn"))
    ratio = cfg.get("mlp_ratio", 4)
    arch = {"width": width, "depth": cfg["num_hidden_layers"], "heads": heads,
            "mlp_dim": swiglu_hidden(width, ratio) if swiglu else int(width * ratio),
            "patch": cfg["patch_size"], "classifier": "token_gap", "registers": registers,
            "layer_scale": True, "ffn": "swiglu" if swiglu else "mlp",
            "ln_eps": cfg.get("layer_norm_eps", 1e-6), "activation": activation_of(cfg, folder),
            # HF resamples with torch bicubic; the registers model with antialias on.
            "pos_resize": "bicubic_antialias" if registers else "bicubic"}
    has_head = "classifier.weight" in raw
    return Detected("vit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.IMAGENET_NORM, cfg.get("image_size", 224)),
                    source.Arrays(raw, path, ignore=(f"{prefix}embeddings.mask_token",)),
                    lambda p: dinov2_hf(p, heads, prefix, swiglu))


# ------------------------------------------------------------------ CLIP and SigLIP: HF
# Both share HF's vision-tower layout (modeling_clip.py, modeling_siglip.py):
# vision_model.embeddings.{class_embedding, patch_embedding, position_embedding},
# encoder.layers.i.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1/fc2},
# post_layernorm; CLIP adds pre_layrnorm and has no patch bias; SigLIP has no class token and
# pools with its MAP head (vision_model.head).
def _dense(key, leaf):
    return (f"{key}.weight", "dense") if leaf == "kernel" else (f"{key}.{TORCH_LEAF[leaf]}", "id")


def _attention(key, which, leaf, heads, out_name="out_proj"):
    """flax MHA {query,key,value,out} from separate torch q/k/v/out projections."""
    if which == "out":
        return ((f"{key}.{out_name}.weight", f"out_kernel:{heads}") if leaf == "kernel"
                else (f"{key}.{out_name}.bias", "id"))
    name = f"{key}.{which[0]}_proj"
    return (f"{name}.weight", f"heads_kernel:{heads}") if leaf == "kernel" else (f"{name}.bias", f"heads_bias:{heads}")


def tower_hf(path, heads, prefix="vision_model."):
    emb = f"{prefix}embeddings"
    simple = {"params/embed/cls": (f"{emb}.class_embedding", "lead1"),
              "params/embed/pos_embedding": (f"{emb}.position_embedding.weight", "lead1"),
              "params/embed/patch/kernel": (f"{emb}.patch_embedding.weight", "conv"),
              "params/embed/patch/bias": (f"{emb}.patch_embedding.bias", "id"),
              "params/embed/pre_norm/scale": (f"{prefix}pre_layrnorm.weight", "id"),
              "params/embed/pre_norm/bias": (f"{prefix}pre_layrnorm.bias", "id"),
              "params/encoder/norm/scale": (f"{prefix}post_layernorm.weight", "id"),
              "params/encoder/norm/bias": (f"{prefix}post_layernorm.bias", "id"),
              "params/map/probe": (f"{prefix}head.probe", "id"),
              f"params/{HEAD}/kernel": ("classifier.weight", "dense"),
              f"params/{HEAD}/bias": ("classifier.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_VIT_BLOCK, path):
        layer, part, leaf = f"{prefix}encoder.layers.{m[1]}", m[2], m[3]
        if part in ("norm1", "norm2"):
            return f"{layer}.layer_norm{part[-1]}.{TORCH_LEAF[leaf]}", "id"
        if part.startswith("attn/"):
            return _attention(f"{layer}.self_attn", part[5:], leaf, heads)
        return _dense(f"{layer}.{part.replace('/', '.')}", leaf)
    if m := match(MAP_PATH, path):  # torch nn.MultiheadAttention packs q, k, v in in_proj
        head, part, leaf = f"{prefix}head", m[1], m[2]
        if part.startswith("attention/") and part != "attention/out":
            index = ("query", "key", "value").index(part[10:])
            kind = "kernel" if leaf == "kernel" else "bias"
            return f"{head}.attention.in_proj_{'weight' if leaf == 'kernel' else 'bias'}", \
                f"qkv_{kind}:{index}:{heads}"
        if part == "attention/out":
            return _attention(f"{head}.attention", "out", leaf, heads)
        if part == "norm":
            return f"{head}.layernorm.{TORCH_LEAF[leaf]}", "id"
        return _dense(f"{head}.{part.replace('/', '.')}", leaf)
    return None


def _clip_from_hf(folder, cfg, raw, path):
    model_type = cfg["model_type"]
    vision = cfg.get("vision_config", cfg) if model_type in ("clip", "siglip") else cfg
    clip = model_type.startswith("clip")
    # CLIPForImageClassification classifies the mean patch token of the encoder's output,
    # before post_layernorm, which CLIP applies to the pooled class token alone (transformers
    # models/clip/modeling_clip.py, CLIPForImageClassification.forward:
    # `torch.mean(sequence_output[:, 1:, :], dim=1)` of `last_hidden_state`).
    mean_patch = "CLIPForImageClassification" in (cfg.get("architectures") or [])
    has_head = "classifier.weight" in raw
    # SiglipForImageClassification classifies the mean of all tokens; its MAP head is unused.
    if clip:
        classifier = "patch_gap" if mean_patch else "token"
    else:
        classifier = "map" if vision.get("vision_use_head", True) and not has_head else "gap"
    heads = vision["num_attention_heads"]
    arch = {"width": vision["hidden_size"], "depth": vision["num_hidden_layers"],
            "mlp_dim": vision["intermediate_size"], "heads": heads, "patch": vision["patch_size"],
            "classifier": classifier, "ln_eps": vision.get("layer_norm_eps", 1e-5 if clip else 1e-6),
            "activation": activation_of(vision, folder), "pre_norm": clip,
            "patch_bias": not clip, "final_norm": not mean_patch,
            "pos_resize": "bicubic"}  # HF interpolate_pos_encoding
    prefix = prefix_of(raw, "vision_model.")  # a saved *VisionModel may be bare
    ignore = ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias")
    if has_head:
        ignore += (f"{prefix}head.",)
    if mean_patch:
        ignore += (f"{prefix}post_layernorm.",)
    default_norm = (source.normalization_string((0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758))
                    if clip else source.MINUS_ONE_ONE)  # OpenAI CLIP's mean/std; SigLIP [-1, 1]
    return Detected("vit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, default_norm, vision.get("image_size", 224)),
                    source.Arrays(raw, path, ignore=ignore), lambda p: tower_hf(p, heads, prefix))


# ------------------------------------------------------------------ the family's layout
# Hugging Face model_type -> reader of its folder
HF_READERS = {"vit": _vit_from_hf, "dinov2": _dinov2_from_hf, "dinov2_with_registers": _dinov2_from_hf,
              "clip": _clip_from_hf, "clip_vision_model": _clip_from_hf, "siglip": _clip_from_hf,
              "siglip_vision_model": _clip_from_hf}
HF_MODEL_TYPES = tuple(HF_READERS)
READS = "official ViT / AugReg .npz, timm vit_* (AugReg, DINOv2, CLIP, SigLIP)"


def from_hf(folder, cfg, raw, path):
    return HF_READERS[cfg["model_type"]](folder, cfg, raw, path)


def layout(sizes):
    """The ViT family's Layout; `sizes` (models/vit.py SIZES: name -> (width, depth, mlp_dim,
    heads)) give a timm state dict, which records its width, the heads of that size."""
    return Layout(HF_MODEL_TYPES, from_hf, functools.partial(from_file, sizes=sizes), READS)

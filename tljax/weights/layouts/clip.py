"""CLIP and SigLIP image towers into the ViT family, from Hugging Face folders: `clip` /
`clip_vision_model` (CLIPModel, CLIPVisionModel[WithProjection]) and `siglip` /
`siglip_vision_model` (SiglipModel, SiglipVisionModel, SiglipForImageClassification; SigLIP 2
non-NaFlex checkpoints are `siglip` too). The text tower and projections are not read.

Both share HF's vision-tower layout (modeling_clip.py, modeling_siglip.py):
vision_model.embeddings.{class_embedding, patch_embedding, position_embedding},
encoder.layers.i.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1/fc2},
post_layernorm; CLIP adds pre_layrnorm and has no patch bias; SigLIP has no class token and
pools with its MAP head (vision_model.head).
"""
from tljax.errors import UserError
from tljax.weights import source
from tljax.weights.layouts.common import (MAP_PATH, TORCH_LEAF, Detected, activation_of, hf_preprocessing,
                                          match, prefix_of)

HF_MODEL_TYPES = ("clip", "clip_vision_model", "siglip", "siglip_vision_model")

_BLOCK = r"params/encoder/block(\d+)/(norm1|norm2|attn/(?:query|key|value|out)|mlp/fc1|mlp/fc2)/(\w+)"


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
              "params/head/kernel": ("classifier.weight", "dense"),
              "params/head/bias": ("classifier.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_BLOCK, path):
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


def from_hf(folder, cfg, raw, path):
    model_type = cfg["model_type"]
    vision = cfg.get("vision_config", cfg) if model_type in ("clip", "siglip") else cfg
    architectures = cfg.get("architectures") or []
    clip = model_type.startswith("clip")
    if "CLIPForImageClassification" in architectures:
        raise UserError(f"{folder}: CLIPForImageClassification's head reads the mean patch token "
                        f"before CLIP's final LayerNorm, which tljax's CLIP (the post-norm class "
                        f"token) does not compute; load the CLIP or CLIPVisionModel checkpoint "
                        f"it was made from, with a new head")
    has_head = "classifier.weight" in raw
    # SiglipForImageClassification classifies the mean of all tokens; its MAP head is unused.
    classifier = "token" if clip else ("map" if vision.get("vision_use_head", True) and not has_head
                                       else "gap")
    heads = vision["num_attention_heads"]
    arch = {"width": vision["hidden_size"], "depth": vision["num_hidden_layers"],
            "mlp_dim": vision["intermediate_size"], "heads": heads, "patch": vision["patch_size"],
            "classifier": classifier, "ln_eps": vision.get("layer_norm_eps", 1e-5 if clip else 1e-6),
            "activation": activation_of(vision, folder), "pre_norm": clip,
            "patch_bias": not clip, "pos_resize": "bicubic"}  # HF interpolate_pos_encoding
    prefix = prefix_of(raw, "vision_model.")  # a saved *VisionModel may be bare
    ignore = ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias")
    if has_head:
        ignore += (f"{prefix}head.",)
    default_norm = (source.normalization_string((0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758))
                    if clip else source.MINUS_ONE_ONE)  # OpenAI CLIP's mean/std; SigLIP [-1, 1]
    return Detected("vit", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, default_norm, vision.get("image_size", 224)),
                    source.Arrays(raw, path, ignore=ignore), lambda p: tower_hf(p, heads, prefix))


def from_file(raw, path, model):
    """timm's CLIP and SigLIP state dicts are read with its other ViTs (layouts/vit.py);
    open_clip's and big_vision's .npz layouts are not read yet."""
    return None

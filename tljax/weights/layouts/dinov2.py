"""DINOv2 checkpoints into the ViT family: Hugging Face `dinov2` / `dinov2_with_registers`
(Dinov2Model, *ForImageClassification).

HF layout: the ViT one (layouts/vit.py) with norm1/norm2, mlp.fc1/fc2 (SwiGLU: the packed
mlp.weights_in/weights_out), layer_scale{1,2}.lambda1 and embeddings.register_tokens; the
classifier reads [class token, mean patch token] (modeling_dinov2.py).
"""
from tljax.weights import source
from tljax.weights.layouts import vit
from tljax.weights.layouts.common import TORCH_LEAF, Detected, activation_of, hf_preprocessing, match, prefix_of

HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers")

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
    return vit.vit_hf(path, heads, prefix)


def from_hf(folder, cfg, raw, path):
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


def from_file(raw, path, model):
    """timm's DINOv2 state dicts are read with its other ViTs (layouts/vit.py); the authors'
    hub .pth layout is not read yet."""
    return None

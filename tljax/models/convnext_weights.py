"""The ConvNeXt family's checkpoints (a layout of models/convnext.py's FAMILY): Hugging Face
`convnext` / `convnextv2` (ConvNext[V2]Model, *ForImageClassification) and timm `convnext_*` /
`convnextv2_*` state dicts (timm models/convnext.py: stem.0/1, stages.s.downsample.0/1,
stages.s.blocks.i.{conv_dw, norm, mlp.fc1, mlp.grn, mlp.fc2, gamma}, head.norm, head.fc)."""
from tljax.models.names import HEAD
from tljax.formats import source
from tljax.formats.convert import TORCH_LEAF, Detected, count, hf_preprocessing, match, prefix_of

HF_MODEL_TYPES = ("convnext", "convnextv2")
READS = "timm convnext*"

_BLOCK = r"params/stage(\d+)/block(\d+)/(dwconv|norm|mlp/fc1|mlp/fc2|mlp/grn|gamma)/?(\w*)"
_DOWN = r"params/stage(\d+)/down/(norm|conv)/(\w+)"


def _leaf(name, leaf, conv=False):
    kind = ("conv" if conv else "dense") if leaf == "kernel" else "id"
    return f"{name}.{TORCH_LEAF[leaf]}", kind


def convnext_hf(path, prefix):
    simple = {"params/stem/conv/kernel": (f"{prefix}embeddings.patch_embeddings.weight", "conv"),
              "params/stem/conv/bias": (f"{prefix}embeddings.patch_embeddings.bias", "id"),
              "params/stem/norm/scale": (f"{prefix}embeddings.layernorm.weight", "id"),
              "params/stem/norm/bias": (f"{prefix}embeddings.layernorm.bias", "id"),
              "params/norm/scale": (f"{prefix}layernorm.weight", "id"),
              "params/norm/bias": (f"{prefix}layernorm.bias", "id"),
              f"params/{HEAD}/kernel": ("classifier.weight", "dense"),
              f"params/{HEAD}/bias": ("classifier.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_DOWN, path):
        down = f"{prefix}encoder.stages.{int(m[1]) - 1}.downsampling_layer"
        return _leaf(f"{down}.{0 if m[2] == 'norm' else 1}", m[3], conv=True)
    if m := match(_BLOCK, path):
        layer = f"{prefix}encoder.stages.{int(m[1]) - 1}.layers.{m[2]}"
        part, leaf = m[3], m[4]
        if part == "gamma":
            return f"{layer}.layer_scale_parameter", "id"
        if part == "mlp/grn":  # HF stores (1, 1, 1, C)
            return f"{layer}.grn.{TORCH_LEAF[leaf]}", "flat"
        name = {"dwconv": "dwconv", "norm": "layernorm", "mlp/fc1": "pwconv1", "mlp/fc2": "pwconv2"}[part]
        return _leaf(f"{layer}.{name}", leaf, conv=part == "dwconv")
    return None


def from_hf(folder, cfg, raw, path):
    prefix = prefix_of(raw, f"{cfg['model_type']}.")
    v2 = cfg["model_type"] == "convnextv2"
    arch = {"depths": tuple(cfg["depths"]), "widths": tuple(cfg["hidden_sizes"]),
            "patch": cfg.get("patch_size", 4), "grn": v2,
            "layer_scale": not v2 and cfg.get("layer_scale_init_value", 1e-6) > 0,
            "ln_eps": cfg.get("layer_norm_eps", 1e-12)}
    has_head = "classifier.weight" in raw
    return Detected("convnext", arch, len(cfg.get("id2label", {})) if has_head else 0,
                    hf_preprocessing(folder, source.IMAGENET_NORM, cfg.get("image_size", 224)),
                    source.Arrays(raw, path), lambda p: convnext_hf(p, prefix))


def convnext_timm(path):
    simple = {"params/stem/conv/kernel": ("stem.0.weight", "conv"), "params/stem/conv/bias": ("stem.0.bias", "id"),
              "params/stem/norm/scale": ("stem.1.weight", "id"), "params/stem/norm/bias": ("stem.1.bias", "id"),
              "params/norm/scale": ("head.norm.weight", "id"), "params/norm/bias": ("head.norm.bias", "id"),
              f"params/{HEAD}/kernel": ("head.fc.weight", "dense"),
              f"params/{HEAD}/bias": ("head.fc.bias", "id")}
    if path in simple:
        return simple[path]
    if m := match(_DOWN, path):
        return _leaf(f"stages.{int(m[1]) - 1}.downsample.{0 if m[2] == 'norm' else 1}", m[3], conv=True)
    if m := match(_BLOCK, path):
        block, part, leaf = f"stages.{int(m[1]) - 1}.blocks.{m[2]}", m[3], m[4]
        if part == "gamma":
            return f"{block}.gamma", "id"
        name = {"dwconv": "conv_dw", "norm": "norm"}.get(part, part.replace("/", "."))
        return _leaf(f"{block}.{name}", leaf, conv=part == "dwconv")
    return None


def from_file(raw, path, model):
    if "stem.0.weight" not in raw or "stages.0.blocks.0.conv_dw.weight" not in raw:
        return None
    stages = count(raw, r"stages\.(\d+)\.blocks\.0\.conv_dw\.weight")
    arch = {"depths": tuple(count(raw, rf"stages\.{s}\.blocks\.(\d+)\.conv_dw\.weight") for s in range(stages)),
            "widths": tuple(raw[f"stages.{s}.blocks.0.conv_dw.weight"].shape[0] for s in range(stages)),
            "patch": raw["stem.0.weight"].shape[-1], "grn": "stages.0.blocks.0.mlp.grn.weight" in raw,
            "layer_scale": "stages.0.blocks.0.gamma" in raw, "ln_eps": 1e-6}
    classes = raw["head.fc.weight"].shape[0] if "head.fc.weight" in raw else 0
    return Detected("convnext", arch, classes, {"normalization": source.IMAGENET_NORM, "image_size": 224},
                    source.Arrays(raw, path, ("num_batches_tracked",)), convnext_timm)

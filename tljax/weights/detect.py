"""Recognising a weights source: which family and layout it is, and its architecture, asked of
each family's converter module in turn (weights/layouts/).

Everything is read from the files themselves (HF config.json, key names and
shapes), so `load_model(path)` needs no architecture flags for known layouts.
"""
import json
import os

from tljax.errors import UserError
from tljax.weights import layouts, source
from tljax.weights.layouts.common import hf_weights_file

HF_MODEL_TYPES = tuple(t for f in layouts.FORMATS for t in f.HF_MODEL_TYPES)


def from_hf(folder):
    """The layouts.Detected of a Hugging Face model folder."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model_type = cfg.get("model_type")
    family = next((f for f in layouts.FORMATS if model_type in f.HF_MODEL_TYPES), None)
    if family is None:
        raise UserError(f"{folder}: Hugging Face model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(HF_MODEL_TYPES)}")
    path = hf_weights_file(folder)
    return family.from_hf(folder, cfg, source.read_arrays(path), path)


def from_file(path, model=None):
    """The layouts.Detected of an official .npz release or a timm/torchvision state dict,
    recognised by its keys."""
    raw = source.read_arrays(path)
    for family in layouts.FORMATS:
        detected = family.from_file(raw, path, model)
        if detected is not None:
            return detected
    raise UserError(f"{path}: not a known weights layout (official BiT/ViT .npz, timm resnetv2/vit, "
                    f"torchvision/timm resnet, or a tljax .safetensors)")

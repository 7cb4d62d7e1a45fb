"""Recognising a weights source: which family and layout it is, and its architecture, asked of
the registered families' layouts (Family.layouts: converter modules or convert.Layouts, each
with HF_MODEL_TYPES, from_hf, from_file, READS) in registration order (the family.register
line of models/__init__.py).

Everything is read from the files themselves (HF config.json, key names and
shapes), so `load_model(path)` needs no architecture flags for known layouts.
"""
import json
import os

from tljax import models
from tljax.errors import UserError
from tljax.formats import keras_files, source
from tljax.formats.convert import HF_CONFIG, hf_weights_file


def layouts():
    """Every registered family's layouts, family by family in registration order."""
    return [layout for family in models.family.FAMILIES.values() for layout in family.layouts]


def hf_model_types():
    return tuple(t for layout in layouts() for t in layout.HF_MODEL_TYPES)


def from_hf(folder):
    """The convert.Detected of a Hugging Face model folder."""
    with open(os.path.join(folder, HF_CONFIG)) as f:
        cfg = json.load(f)
    model_type = cfg.get("model_type")
    layout = next((layout for layout in layouts() if model_type in layout.HF_MODEL_TYPES), None)
    if layout is None:
        raise UserError(f"{folder}: Hugging Face model_type {model_type!r} is not supported; "
                        f"supported: {', '.join(hf_model_types())}")
    path = hf_weights_file(folder)
    return layout.from_hf(folder, cfg, source.read_arrays(path), path)


def from_file(path, model=None):
    """The convert.Detected of a checkpoint file (an official .npz release, a timm/torchvision
    state dict, a Keras file), recognised by its keys: the first layout that reads it."""
    raw = source.read_arrays(path)
    for layout in layouts():
        detected = layout.from_file(raw, path, model) if layout.from_file else None
        if detected is not None:
            return detected
    read = "; ".join(layout.READS for layout in layouts() if layout.READS)
    if keras_files.is_keras_model(raw, path):
        raise UserError(f"{path}: a Keras model tljax does not read (read: {read})")
    raise UserError(f"{path}: not a known weights layout (read: {read}; Hugging Face folders; "
                    f"a tljax .safetensors)")

"""Checkpoint layouts, one converter module per model family (common.py: what they share).
FORMATS is the registry: a family's converters are one line here."""
from tljax.weights.layouts import bit, clip, convnext, dinov2, keras, resnet, vit
from tljax.weights.layouts.common import Detected, convert, transform  # noqa: F401

FORMATS = (keras, bit, resnet, vit, dinov2, clip, convnext)

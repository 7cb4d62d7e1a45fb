"""Merging loaded weights into a freshly initialised model: strict keys and shapes, head reset."""
import math

import numpy as np
from flax import traverse_util

from tljax.errors import UserError
from tljax.models.names import is_classifier


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def _zoom_linear(grid, new):
    """vit_jax/checkpoint.py interpolate_posembed: scipy.ndimage.zoom(order=1) on the grid."""
    from scipy import ndimage

    zoom = new / grid.shape[0]
    return ndimage.zoom(grid, (zoom, zoom, 1), order=1)


def _cubic(x, a):
    """Keys' cubic convolution kernel with parameter `a`."""
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def _torch_bicubic_matrix(old, new):
    """(new, old) weights of torch `F.interpolate(mode="bicubic", align_corners=False)` with
    an output size: half-pixel centres, Keys a = -0.75, taps clamped to the border."""
    src = (np.arange(new) + 0.5) * (old / new) - 0.5
    first = np.floor(src).astype(int)
    matrix = np.zeros((new, old))
    for tap in range(-1, 3):
        index = np.clip(first + tap, 0, old - 1)
        np.add.at(matrix, (np.arange(new), index), _cubic(src - (first + tap), -0.75))
    return matrix


def _torch_bicubic_antialias_matrix(old, new):
    """(new, old) weights of torch's `antialias=True` bicubic (PIL's filter): Keys a = -0.5
    widened by the downscale factor, taps outside the grid dropped and the rest renormalised."""
    scale = old / new
    support, stretch = 2 * max(scale, 1.0), max(scale, 1.0)
    matrix = np.zeros((new, old))
    for i in range(new):
        centre = scale * (i + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), old)
        taps = np.arange(lo, hi)
        weights = _cubic((taps - centre + 0.5) / stretch, -0.5)
        matrix[i, lo:hi] = weights / weights.sum()
    return matrix


def _separable(matrix_fn):
    return lambda grid, new: np.einsum("ij,kl,jlc->ikc", matrix_fn(grid.shape[0], new),
                                       matrix_fn(grid.shape[1], new), grid)


# model.arch pos_resize -> (grid (g, g, D), new side) -> (new, new, D), one per reference:
# vit_jax/big_vision bilinear zoom; HF DINOv2, CLIP and SigLIP torch bicubic (their
# modeling_*.py interpolate_pos_encoding); HF DINOv2 with registers and timm
# (layers/pos_embed.py resample_abs_pos_embed) torch bicubic with antialias.
RESAMPLERS = {"zoom_linear": _zoom_linear,
              "bicubic": _separable(_torch_bicubic_matrix),
              "bicubic_antialias": _separable(_torch_bicubic_antialias_matrix)}


def resample_pos_embedding(posemb, new_shape, method="zoom_linear"):
    """Resamples a square (1, [cls +] g*g, D) position grid to `new_shape` by `method`
    (RESAMPLERS), extra leading tokens (the class token) kept, computed in float64."""
    old_tokens, new_tokens = posemb.shape[1], new_shape[1]
    old_grid, new_grid = int(math.isqrt(old_tokens)), int(math.isqrt(new_tokens))
    old_extra, new_extra = old_tokens - old_grid**2, new_tokens - new_grid**2
    if old_extra != new_extra or posemb.shape[2] != new_shape[2]:
        return posemb  # Not a resolution change: reported as a shape mismatch.
    posemb = np.asarray(posemb)
    extra, grid = posemb[:, :old_extra], posemb[0, old_extra:].reshape(old_grid, old_grid, -1)
    grid = RESAMPLERS[method](grid.astype(np.float64), new_grid).astype(posemb.dtype)
    return np.concatenate([extra, grid.reshape(1, new_grid**2, -1)], axis=1)


def mismatches(expected, loaded, collection, skip=lambda path: False):
    """Problems (strings) between the model's {path: shape} and the file's: keys missing from
    the file, keys the model does not use (flax would ignore them silently), other shapes."""
    missing = sorted(p for p in expected if p not in loaded and not skip(p))
    unexpected = sorted(p for p in loaded if p not in expected and not skip(p))
    shapes = sorted(f"{p} {tuple(loaded[p])} in the file vs {tuple(shape)} in the model"
                    for p, shape in expected.items()
                    if p in loaded and not skip(p) and tuple(loaded[p]) != tuple(shape))
    problems = []
    for kind, items in (("missing", missing), ("unexpected (not used by the model)", unexpected),
                        ("shape", shapes)):
        if items:
            problems.append(f"{kind} {collection}: {', '.join(items[:8])}"
                            + (f" (+{len(items) - 8} more)" if len(items) > 8 else ""))
    return problems


def merge(init_variables, loaded_variables, *, reset_head, source, pos_resize="zoom_linear"):
    """`init_variables` with every entry replaced by the loaded one; position embeddings of
    another resolution resampled by `pos_resize` (the model's, models.pos_resize).

    With `reset_head` the head keeps its initialisation: zero for the vision families, HF's
    normal(0.02) for the text families (layers.HF_TEXT_INIT; a zero hidden layer in
    RoBERTa's and DistilBERT's two-layer heads would leave both layers without a gradient). Any key missing
    from or unexpected in the file, or a shape mismatch, is one UserError that
    lists them all: nothing is loaded partially.
    """
    merged = {}
    problems = []
    for collection, init_tree in init_variables.items():
        init_flat = _flat(init_tree)
        loaded_flat = _flat(loaded_variables.get(collection, {}))
        skip = is_classifier if reset_head else (lambda p: False)
        for p, v in init_flat.items():  # ViT at a new resolution: resample the position grid.
            if p.endswith("pos_embedding") and p in loaded_flat and loaded_flat[p].shape != v.shape:
                loaded_flat[p] = resample_pos_embedding(loaded_flat[p], v.shape, pos_resize)
        found = mismatches({p: v.shape for p, v in init_flat.items()},
                           {p: v.shape for p, v in loaded_flat.items()}, collection, skip)
        problems += found
        if not init_flat or found:
            merged[collection] = init_tree
            continue
        merged[collection] = traverse_util.unflatten_dict(
            {p: (np.asarray(v) if skip(p) else np.asarray(loaded_flat[p], v.dtype))
             for p, v in init_flat.items()}, sep="/")
    if problems:
        raise UserError(f"weights {source} do not fit the model: {'; '.join(problems)}. "
                        f"Check model.name/model.arch against the weights, or set "
                        f"model.init_head='reset' if only the head differs")
    return merged

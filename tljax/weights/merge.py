"""Merging loaded weights into a freshly initialised model: strict keys and shapes, head reset."""
import math

import numpy as np
from flax import traverse_util

from tljax.errors import UserError
from tljax.models import is_classifier


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def resample_pos_embedding(posemb, new_shape):
    """Resamples a square (1, [cls +] g*g, D) position grid to `new_shape` as vit_jax does:
    `scipy.ndimage.zoom(grid, (new/old, new/old, 1), order=1)` on the grid tokens, extra
    leading tokens (the class token) kept (vit_jax/checkpoint.py: interpolate_posembed).
    """
    from scipy import ndimage

    old_tokens, new_tokens = posemb.shape[1], new_shape[1]
    old_grid, new_grid = int(math.isqrt(old_tokens)), int(math.isqrt(new_tokens))
    old_extra, new_extra = old_tokens - old_grid**2, new_tokens - new_grid**2
    if old_extra != new_extra or posemb.shape[2] != new_shape[2]:
        return posemb  # Not a resolution change: reported as a shape mismatch.
    posemb = np.asarray(posemb)
    extra, grid = posemb[:, :old_extra], posemb[0, old_extra:].reshape(old_grid, old_grid, -1)
    zoom = new_grid / old_grid
    grid = ndimage.zoom(grid, (zoom, zoom, 1), order=1)
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


def merge(init_variables, loaded_variables, *, reset_head, source):
    """`init_variables` with every entry replaced by the loaded one.

    With `reset_head` the head keeps its (zero) initialisation. Any key missing
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
                loaded_flat[p] = resample_pos_embedding(loaded_flat[p], v.shape)
        found = mismatches({p: v.shape for p, v in init_flat.items()},
                           {p: v.shape for p, v in loaded_flat.items()}, collection, skip)
        problems += found
        if not init_flat or found:
            merged[collection] = init_tree
            continue
        merged[collection] = traverse_util.unflatten_dict(
            {p: (np.zeros(v.shape, v.dtype) if skip(p) else np.asarray(loaded_flat[p], v.dtype))
             for p, v in init_flat.items()}, sep="/")
    if problems:
        raise UserError(f"weights {source} do not fit the model: {'; '.join(problems)}. "
                        f"Check model.name/model.arch against the weights, or set "
                        f"model.init_head='reset' if only the head differs")
    return merged

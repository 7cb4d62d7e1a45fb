"""Merging loaded weights into a freshly initialised model: strict keys and shapes, head reset."""
import jax.numpy as jnp
from flax import traverse_util

from tljax.errors import UserError

HEAD_PREFIX = "head/"


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/") if tree else {}


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
        skip = (lambda p: p.startswith(HEAD_PREFIX)) if reset_head else (lambda p: False)
        missing = sorted(p for p in init_flat if p not in loaded_flat and not skip(p))
        unexpected = sorted(p for p in loaded_flat if p not in init_flat and not skip(p))
        shapes = sorted(f"{p} {tuple(loaded_flat[p].shape)} vs model {tuple(v.shape)}"
                        for p, v in init_flat.items()
                        if p in loaded_flat and not skip(p) and loaded_flat[p].shape != v.shape)
        for kind, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                problems.append(f"{kind} {collection}: {', '.join(items[:8])}"
                                + (f" (+{len(items) - 8} more)" if len(items) > 8 else ""))
        if not init_flat or problems:
            merged[collection] = init_tree
            continue
        merged[collection] = traverse_util.unflatten_dict(
            {p: (v if skip(p) else jnp.asarray(loaded_flat[p], v.dtype))
             for p, v in init_flat.items()}, sep="/")
    if problems:
        raise UserError(f"weights {source} do not fit the model: {'; '.join(problems)}. "
                        f"Check model.name/model.arch against the weights, or set "
                        f"model.init_head='reset' if only the head differs")
    return merged

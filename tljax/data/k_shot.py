"""Deterministic k-shot-per-class subsets of a split."""
import numpy as np

from tljax.errors import UserError


def few_shot_indices(labels, k, seed):
    """Sorted indices of k examples per class, chosen by `seed` alone.

    Every class present in `labels` must have at least k examples.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < k:
            raise UserError(f"few-shot k={k} but class {cls} has only {len(members)} examples; "
                            f"lower data.few_shot_k")
        chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen))

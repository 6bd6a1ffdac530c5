"""Deterministic, class-stratified index splits (validation carved from train) and class-balanced caps.

The Prompt-CAM reference selects models on the test set; we hold out part of the training set
instead, the same share of every class so rare classes are still validated on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int] | np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted index arrays; ``round(fraction * n_c)`` of each class held out.

    A class with at least two items gives at least one to the held-out side (when ``fraction > 0``)
    and always keeps at least one, so neither side loses a class it could have.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held_out.append(members[:count])
    held = np.sort(np.concatenate(held_out)) if held_out else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held.astype(np.int64)


def balanced_subset(labels: Sequence[int] | np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` sorted indices taken round-robin over classes (random order within each class)."""
    labels = np.asarray(labels)
    if count < 1:
        raise ValueError(f"subset size must be >= 1, got {count}")
    if count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[rng.permutation(members)] = np.arange(len(members))
    order = np.lexsort((rng.random(len(labels)), rank))  # rank first, random tie-break across classes
    return np.sort(order[:count])

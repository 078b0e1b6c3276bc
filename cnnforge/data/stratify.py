"""Stratified, seeded index splits: light (no torch), so ``cnnforge data split`` starts fast."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays for ``fractions`` of ``labels`` with class proportions kept (deterministic by seed)."""
    from sklearn.model_selection import train_test_split

    rest = np.arange(len(labels))
    parts: list[np.ndarray] = []
    remaining = 1.0
    for k, frac in enumerate(fractions[:-1]):
        share = frac / remaining if remaining > 0 else 0.0
        if share <= 0 or len(rest) == 0:
            parts.append(rest[:0])
            continue
        if share >= 1:
            parts.append(rest)
            rest = rest[:0]
            continue
        y = labels[rest]
        counts = np.bincount(y)
        strat = y if counts[counts > 0].min() >= 2 else None
        n_take = max(1, round(share * len(rest)))
        try:
            take, rest = train_test_split(rest, train_size=n_take, stratify=strat, random_state=seed + k)
        except ValueError:  # too few samples per class for a stratified cut of that size
            take, rest = train_test_split(rest, train_size=n_take, random_state=seed + k)
        parts.append(np.sort(take))
        remaining -= frac
    parts.append(np.sort(rest))
    return parts

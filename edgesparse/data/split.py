"""Stratified, seeded train/validation/test splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse.errors import DataError


def _stratified(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, taken) with ``fraction`` of every class taken (at least one when possible)."""
    rng = np.random.default_rng(seed)
    taken, rest = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if fraction > 0 and k == 0 and len(idx) > 1:
            k = 1
        taken.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(taken))


def split(name: str, x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None, y_test: np.ndarray | None,
          class_names: list[str], cfg: Any, seed: int, dataset_cls: type) -> Any:
    """Build a Dataset: test split first (unless given), then validation from the rest.

    Raises:
        DataError: there are too few samples for the requested splits.
    """
    if cfg.limit is not None and cfg.limit < len(x):
        _, keep = _stratified(y, cfg.limit / len(x), seed + 7)
        x, y = x[keep], y[keep]
    if len(x) < 3:
        raise DataError(f"{name}: only {len(x)} samples; at least a few per split are needed.")
    if x_test is None:
        rest, test = _stratified(y, cfg.test_split, seed)
        x_test, y_test = x[test], y[test]
        x, y = x[rest], y[rest]
    val_fraction = cfg.validation_split / (1.0 - (cfg.test_split if x_test is not None else 0.0))
    train, val = _stratified(y, min(val_fraction, 0.9), seed + 1) if cfg.validation_split > 0 else (
        np.arange(len(y)), np.array([], dtype=np.int64))
    if len(train) == 0:
        raise DataError(f"{name}: no training samples left after the validation and test splits.")
    num_classes = max(len(class_names), int(max(y.max(initial=0), y_test.max(initial=0))) + 1)
    names = list(class_names) + [str(i) for i in range(len(class_names), num_classes)]
    return dataset_cls(name=name, x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                       x_test=x_test, y_test=y_test, num_classes=num_classes, class_names=names)

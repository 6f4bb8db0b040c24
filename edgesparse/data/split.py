"""Stratified, seeded limit and train/validation/test splits.

The test split is taken first, then validation from the rest, so changing ``validation_split``
never changes which samples are held out for the reported accuracy. Every class keeps its share in
every split (at least one sample when the class has more than one).
"""

from __future__ import annotations

import numpy as np

from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import Loaded, SourceConfig
from edgesparse.errors import DataError

# Independent random streams per purpose, so that e.g. a limit does not shift the test split's draw.
_LIMIT, _TEST, _VAL, _ORDER_TRAIN, _ORDER_VAL, _ORDER_TEST = 1, 2, 3, 4, 5, 6


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream])


def stratified(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of ``y`` into ``(rest, taken)`` with ``fraction`` of every class taken.

    A class of two or more samples gives at least one to ``taken`` when ``fraction > 0`` and
    always keeps at least one in ``rest``.
    """
    taken: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if fraction > 0 and len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        taken.append(idx[:k])
        rest.append(idx[k:])
    empty = np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(rest or [empty])), np.sort(np.concatenate(taken or [empty]))


def _cap(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n >= len(x):
        return x, y
    _, keep = stratified(y, n / len(x), _rng(seed, _LIMIT))
    return x[keep], y[keep]


def _shuffled(x: np.ndarray, y: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Loaders return samples grouped by class; shuffle so no consumer depends on shuffling itself.
    idx = rng.permutation(idx)
    return x[idx], y[idx]


def split_dataset(loaded: Loaded, cfg: SourceConfig, seed: int) -> Dataset:
    """Apply ``limit``, hold out the test split, take validation from the rest.

    Args:
        loaded: What the source's loader returned.
        cfg: The source config (its common fields: splits and limit).
        seed: Fixes which samples land in which split.

    Returns:
        The data set; samples of each split in a seeded random order.

    Raises:
        DataError: the labels do not fit the class names, or a split would be empty.
    """
    name, x, y, x_test, y_test, class_names = loaded
    labels_max = int(max(y.max(initial=-1), -1 if y_test is None else y_test.max(initial=-1)))
    num_classes = max(len(class_names), labels_max + 1)
    if class_names and labels_max >= len(class_names):
        raise DataError(f"{name}: labels go up to {labels_max} but only {len(class_names)} class names are given "
                        f"({', '.join(class_names)}); labels must be class indices 0..{len(class_names) - 1}.")
    names = list(class_names) + [str(i) for i in range(len(class_names), num_classes)]

    if cfg.limit is not None:
        if x_test is None:
            x, y = _cap(x, y, cfg.limit, seed)
        else:  # share the cap between the pool and the given test set, in proportion
            n_pool = max(1, round(cfg.limit * len(x) / (len(x) + len(x_test))))
            x, y = _cap(x, y, n_pool, seed)
            x_test, y_test = _cap(x_test, y_test, max(1, cfg.limit - n_pool), seed)  # type: ignore[arg-type]

    if x_test is None:
        if cfg.test_split == 0:
            raise DataError(f"{name}: test_split is 0 and the source has no test set of its own, so nothing would "
                            "be held out for the reported accuracy; set test_split > 0 (e.g. 0.2).")
        pool, test = stratified(y, cfg.test_split, _rng(seed, _TEST))
        x_test, y_test = x[test], y[test]
        x, y = x[pool], y[pool]
        val_fraction = cfg.validation_split / (1.0 - cfg.test_split)
    else:
        val_fraction = cfg.validation_split
    if len(x_test) == 0:
        raise DataError(f"{name}: the test split is empty ({len(x)} samples in all); use more data, a larger "
                        "test_split or a larger limit.")
    train, val = stratified(y, val_fraction, _rng(seed, _VAL))
    if len(train) == 0:
        raise DataError(f"{name}: no training samples are left after the validation and test splits; "
                        "use more data or smaller validation_split/test_split.")
    x_train, y_train = _shuffled(x, y, train, _rng(seed, _ORDER_TRAIN))
    x_val, y_val = _shuffled(x, y, val, _rng(seed, _ORDER_VAL))
    x_test, y_test = _shuffled(x_test, y_test, np.arange(len(x_test)), _rng(seed, _ORDER_TEST))  # type: ignore[arg-type]
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, num_classes=num_classes, class_names=names)

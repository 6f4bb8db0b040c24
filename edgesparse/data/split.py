"""Stratified, seeded limit and train/validation/test splits.

The test split is taken first, then validation from the rest, so changing ``validation_split``
never changes which samples are held out for the reported figures. Where the targets are classes
(class indices, one-hot rows, 0/1 labels; for several outputs the first such output) every class
keeps its share in every split (at least one sample when the class has more than one); other targets
(regression) are split at random. Inputs and targets may be dicts of arrays (several inputs/outputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesparse.data.dataset import Dataset, n_samples, take
from edgesparse.data.registry import Loaded, SourceConfig
from edgesparse.errors import DataError

# Independent random streams per purpose, so that e.g. a limit does not shift the test split's draw.
_LIMIT, _TEST, _VAL, _ORDER_TRAIN, _ORDER_VAL, _ORDER_TEST = 1, 2, 3, 4, 5, 6


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stream])


def class_key(y: Any) -> np.ndarray | None:
    """Class of every sample for stratification, or None when the targets are not classes.

    Class indices (1-D whole numbers) as they are; one-hot rows by their argmax; for a dict the first
    target that is classes.
    """
    if y is None:
        return None
    if isinstance(y, Mapping):
        for v in y.values():
            key = class_key(v)
            if key is not None:
                return key
        return None
    y = np.asarray(y)
    if y.dtype.kind not in "iub":
        return None
    if y.ndim == 1:
        return y.astype(np.int64)
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return y.argmax(axis=1).astype(np.int64)
    return None


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


def _split(y: Any, n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    key = class_key(y)
    return stratified(key if key is not None else np.zeros(n, dtype=np.int64), fraction, rng)


def _cap(x: Any, y: Any, n: int, seed: int) -> tuple[Any, Any]:
    total = n_samples(x)
    if n >= total:
        return x, y
    _, keep = _split(y, total, n / total, _rng(seed, _LIMIT))
    return take(x, keep), take(y, keep)


def _shuffled(x: Any, y: Any, idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
    # Loaders return samples grouped by class; shuffle so no consumer depends on shuffling itself.
    idx = rng.permutation(idx)
    return take(x, idx), take(y, idx)


def _check_lengths(name: str, x: Any, y: Any, what: str) -> None:
    lengths = {k: len(v) for k, v in x.items()} if isinstance(x, Mapping) else {"x": len(x)}
    lengths.update({k: len(v) for k, v in y.items()} if isinstance(y, Mapping) else {"y": len(y)})
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise DataError(f"{name}: the {what} arrays have different numbers of samples ({listed}); every input and "
                        "target array needs one row per sample.")


def split_dataset(loaded: Loaded, cfg: SourceConfig, seed: int) -> Dataset:
    """Apply ``limit``, hold out the test split, take validation from the rest.

    Args:
        loaded: What the source's loader returned (``y`` None: unlabelled normal samples, anomaly).
        cfg: The source config (its common fields: splits and limit).
        seed: Fixes which samples land in which split.

    Returns:
        The data set; samples of each split in a seeded random order.

    Raises:
        DataError: the labels do not fit the class names, arrays disagree in length, or a split would be empty.
    """
    name, x, y, x_test, y_test, class_names = loaded
    if y is None:  # an autoencoder's normal samples: label 0 (normal) for the splits taken from them
        y = np.zeros(n_samples(x), dtype=np.int64)
    _check_lengths(name, x, y, "training")
    if x_test is not None:
        _check_lengths(name, x_test, y_test, "test")
    keys = [k for k in (class_key(y), None if y_test is None else class_key(y_test)) if k is not None]
    labels_max = max([int(k.max(initial=-1)) for k in keys] or [-1])
    num_classes = max(len(class_names), labels_max + 1) if keys else len(class_names)
    if class_names and labels_max >= len(class_names):
        raise DataError(f"{name}: labels go up to {labels_max} but only {len(class_names)} class names are given "
                        f"({', '.join(class_names)}); labels must be class indices 0..{len(class_names) - 1}.")
    names = list(class_names) + [str(i) for i in range(len(class_names), num_classes)]

    if cfg.limit is not None:
        if x_test is None:
            x, y = _cap(x, y, cfg.limit, seed)
        else:  # share the cap between the pool and the given test set, in proportion
            n_x, n_t = n_samples(x), n_samples(x_test)
            n_pool = max(1, round(cfg.limit * n_x / (n_x + n_t)))
            x, y = _cap(x, y, n_pool, seed)
            x_test, y_test = _cap(x_test, y_test, max(1, cfg.limit - n_pool), seed)

    if x_test is None:
        if cfg.test_split == 0:
            raise DataError(f"{name}: test_split is 0 and the source has no test set of its own, so nothing would "
                            "be held out for the reported figures; set test_split > 0 (e.g. 0.2).")
        pool, test = _split(y, n_samples(x), cfg.test_split, _rng(seed, _TEST))
        x_test, y_test = take(x, test), take(y, test)
        x, y = take(x, pool), take(y, pool)
        val_fraction = cfg.validation_split / (1.0 - cfg.test_split)
    else:
        val_fraction = cfg.validation_split
    if n_samples(x_test) == 0:
        raise DataError(f"{name}: the test split is empty ({n_samples(x)} samples in all); use more data, a larger "
                        "test_split or a larger limit.")
    train, val = _split(y, n_samples(x), val_fraction, _rng(seed, _VAL))
    if len(train) == 0:
        raise DataError(f"{name}: no training samples are left after the validation and test splits; "
                        "use more data or smaller validation_split/test_split.")
    x_train, y_train = _shuffled(x, y, train, _rng(seed, _ORDER_TRAIN))
    x_val, y_val = _shuffled(x, y, val, _rng(seed, _ORDER_VAL))
    x_test, y_test = _shuffled(x_test, y_test, np.arange(n_samples(x_test)), _rng(seed, _ORDER_TEST))
    return Dataset.from_arrays(name=name, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                   y_test=y_test, num_classes=num_classes, class_names=names)

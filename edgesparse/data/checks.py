"""Checks on what a split yields: non-finite values (which split, which batch) and stable evaluation streams.

Validation and test splits are read many times (every epoch, the guards, export verification); a stream that
yields other samples, or the same ones in another order, on a second pass makes every comparison between those
passes meaningless (the issue measured "TFLite vs Keras top-1 agreement 20.40%" on a reshuffling test stream).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from edgesparse.data.stream import Split
from edgesparse.errors import DataError

__all__ = ["check_stable", "find_nonfinite", "raise_if_nonfinite"]

#: Samples of a stream compared on two passes (the first ones: enough to see a reshuffle, cheap to read twice).
STABLE_SAMPLES = 512


def _arrays(value: Any, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, v in value.items():
            yield from _arrays(v, f"{prefix} '{key}'")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _arrays(v, f"{prefix} {i}")
    else:
        yield prefix, np.asarray(value)


def find_nonfinite(split: Split, batch_size: int) -> str | None:
    """The first batch of ``split`` holding NaN or Inf, described ("batch 3 (samples 96-127): the targets hold
    2 NaN"), or None when every value is finite. Reads the split once, in its fixed order."""
    for b, (x, y) in enumerate(split.batches(batch_size)):
        for what, arr in [*_arrays(x, "the inputs"), *_arrays(y, "the targets")]:
            if not np.issubdtype(arr.dtype, np.floating):
                continue
            bad = ~np.isfinite(arr)
            if bad.any():
                nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
                kinds = " and ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "Inf")) if n)
                first = int(np.argwhere(bad.reshape(len(arr), -1).any(axis=1))[0][0]) if arr.ndim else 0
                start = b * batch_size
                return (f"batch {b} (samples {start}-{start + len(arr) - 1}, first at sample {start + first}): "
                        f"{what} hold {kinds}")
    return None


def raise_if_nonfinite(splits: list[Split | None], batch_size: int, context: str) -> None:
    """Raise DataError naming the split and batch of the first NaN/Inf value.

    Args:
        splits: The splits to read (train, validation...).
        batch_size: The batch size training used (batch numbers match its batches when unshuffled).
        context: What happened that made the check run (for the message).

    Raises:
        DataError: a split holds a non-finite value.
    """
    for split in splits:
        if split is None or split.n == 0:
            continue
        found = find_nonfinite(split, batch_size)
        if found:
            raise DataError(f"{context}: the {split.name} split's {found}. The data is broken, not the training: "
                            "fix or filter those samples (e.g. tf.data's .filter on tf.math.is_finite) and run again.")


def _fingerprint(split: Split, batch_size: int, limit: int) -> tuple[str, int]:
    h = hashlib.sha256()
    seen = 0
    for x, y in split.batches(batch_size):
        for _, arr in [*_arrays(x, "x"), *_arrays(y, "y")]:
            h.update(np.ascontiguousarray(arr[: max(0, limit - seen)]).tobytes())
        seen += len(next(_arrays(x, "x"))[1])
        if seen >= limit:
            break
    return h.hexdigest(), seen


def check_stable(split: Split | None, batch_size: int = 256, limit: int = STABLE_SAMPLES) -> None:
    """Refuse a streamed split whose first ``limit`` samples differ (values or order) between two passes.

    In-memory splits are fixed by construction and not read.

    Raises:
        DataError: naming the split and what to change (no ``shuffle`` on validation/test streams).
    """
    if split is None or not split.is_stream or split.n == 0:
        return
    first, n = _fingerprint(split, batch_size, limit)
    second, _ = _fingerprint(split, batch_size, limit)
    if first != second:
        raise DataError(
            f"the {split.name} split yields different samples (or the same in another order) each time it is read: "
            f"its first {n} samples differed between two passes. Its figures would not be comparable from one "
            f"pass to the next (every epoch, the guards, the TFLite verification); give a {split.name} stream with a "
            "fixed order: no .shuffle() (or shuffle with a seed and reshuffle_each_iteration=False), no random "
            "augmentation.")

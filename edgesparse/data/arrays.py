"""Checks and conversions for user-supplied arrays (npz files, Keras data sets)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgesparse.errors import DataError


def as_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Validate class-index labels and return them as int64.

    Args:
        y: Labels, shape ``(N,)`` or ``(N, 1)``; integer, boolean or whole-valued float.
        where: Names the array in messages (file and array name).

    Raises:
        DataError: the labels are not non-negative whole class indices.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all():
        raise DataError(f"{where}: labels look one-hot encoded (shape {y.shape}); store class indices instead, "
                        "e.g. y.argmax(axis=1).")
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array of class indices, got shape {y.shape}.")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.equal(np.mod(y, 1), 0).all():
            raise DataError(f"{where}: labels must be whole class indices (0, 1, 2 ...), found fractional or "
                            "non-finite values; store integer class indices.")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be integer class indices, got dtype {y.dtype}; map class names "
                        "to 0, 1, 2 ... and store those (class names can go in an array `class_names`).")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be class indices >= 0, found {int(y.min())}.")
    return y.astype(np.int64)


def as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Validate targets of any task and return int64 (whole numbers) or float32 (fractional values).

    Class indices, one-hot or multi-hot rows, 0/1 labels and float regression targets all pass; which
    task they serve is decided later, against the model's outputs (:mod:`edgesparse.task`).

    Raises:
        DataError: the targets are not numbers (strings, objects) or hold NaN/inf.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: targets must be numbers, got dtype {y.dtype}, which fits no task; map class names "
                        "to 0, 1, 2 ... (class names can go in an array `class_names`), or store float targets.")
    if y.ndim == 0:
        raise DataError(f"{where}: targets must have a sample axis, got a scalar.")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise DataError(f"{where}: targets contain NaN or infinite values, which fit no task; drop or impute "
                            "those samples.")
        if not np.equal(np.mod(y, 1), 0).all():
            return y.astype(np.float32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y.astype(np.int64)


#: integer dtypes read as indices (token ids, categorical codes): never scaled, never cast to float
INDEX_DTYPES = ("int32", "int64")


def is_index_array(x: np.ndarray) -> bool:
    """Whether ``x`` holds integer indices (int32/int64: token ids, categorical codes), not pixel or sample values.

    uint8/uint16 (pixels) and int8/int16 (audio samples) arrays are values, scaled by ``scale``; int32/int64
    arrays are what ``np.array`` of Python ints and tokenizers produce, and are fed to the model as integers.
    """
    return np.asarray(x).dtype.name in INDEX_DTYPES


def as_indices(x: np.ndarray, where: str) -> np.ndarray:
    """Integer index inputs (token ids) as int32, unscaled: the dtype Keras' Embedding and TFLite's GATHER take.

    Raises:
        DataError: ``x`` has no feature axis, or holds values an int32 cannot hold.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"{where}: inputs must have a sample axis and at least one feature axis, got shape "
                        f"{x.shape}; store token ids as (N, sequence length).")
    if x.size and (int(x.min()) < np.iinfo(np.int32).min or int(x.max()) > np.iinfo(np.int32).max):
        raise DataError(f"{where}: integer inputs range over [{int(x.min())}, {int(x.max())}], beyond int32; "
                        "token ids and category indices must fit int32 (store float32 for other values).")
    return x.astype(np.int32)


def model_feed(x: object) -> np.ndarray:
    """An input array as a model takes it: int32/int64 indices as int32 (never scaled nor cast), else float32."""
    a = np.asarray(x)
    return a.astype(np.int32) if is_index_array(a) else a.astype(np.float32)


def integer_scale(arrays: Sequence[np.ndarray], where: str) -> float:
    """Divisor taking integer inputs to [0, 1]: 1 if already 0/1, 255 up to 255, else the dtype's maximum.

    Raises:
        DataError: the integers include negative values, which no divisor maps into [0, 1].
    """
    lo = min(int(a.min(initial=0)) for a in arrays)
    hi = max(int(a.max(initial=0)) for a in arrays)
    if lo < 0:
        raise DataError(f"{where}: integer inputs with negative values ({lo}) cannot be scaled to [0, 1]; "
                        "set `scale: false` to use them as they are, or store float32 inputs.")
    if hi <= 1:
        return 1.0
    if hi <= 255:
        return 255.0
    return float(max(np.iinfo(a.dtype).max for a in arrays))


def as_inputs(x: np.ndarray, where: str, divisor: float = 1.0) -> np.ndarray:
    """Validate model inputs and return them as float32, divided by ``divisor``.

    A 3-D ``x`` of integers ``(N, H, W)`` is taken as grey images (pixels) and gets a channel axis; a 3-D float
    ``x`` is kept as it is: ``(N, T, C)`` windows of a sensor or a sequence (store float grey images as
    ``(N, H, W, 1)``).

    Raises:
        DataError: ``x`` is not numeric, has no feature axis or holds NaN/inf.
    """
    x = np.asarray(x)
    if is_index_array(x):
        return as_indices(x, where)
    pixels = x.dtype.kind in "biu"
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: inputs must be numeric, got dtype {x.dtype}.")
    if x.ndim < 2:
        raise DataError(f"{where}: inputs must have a sample axis and at least one feature axis, got shape "
                        f"{x.shape}; store x as (N, features) or (N, H, W, C).")
    out = x.astype(np.float32)
    if divisor != 1.0:
        out /= np.float32(divisor)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise DataError(f"{where}: inputs contain NaN or infinite values; clean or impute them first.")
    return out[..., None] if out.ndim == 3 and pixels else out

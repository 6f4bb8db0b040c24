"""``{npz: data.npz}``: arrays saved with ``numpy.savez``.

Arrays: ``x`` (inputs) and ``y`` (targets: class indices, one-hot or multi-hot rows, 0/1 labels or float
values), optionally ``x_test`` and ``y_test`` (then used as the held-out test split, and ``test_split``
is ignored) and ``class_names`` (strings). Several model inputs: ``x_<input name>`` per input (and
``x_test_<input name>``); several outputs: ``y_<output name>`` (and ``y_test_<output name>``). An
anomaly-detection autoencoder: ``x`` holds normal samples only (no ``y``), ``x_test`` and ``y_test``
(0 normal, 1 anomalous) the labelled test split. A detector's data adds ``anchors`` ``(A, 4)`` ``[ymin, xmin,
ymax, xmax]``, the anchors its per-anchor targets ``y_<scores>`` ``(N, A)`` and ``y_<boxes>`` ``(N, A, 4)`` are
encoded against (``task: {kind: detection}``).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from edgesparse.data.arrays import as_inputs, as_targets, integer_scale, is_index_array
from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import Loaded, SourceConfig, data_source, path_str, resolve
from edgesparse.data.split import split_dataset
from edgesparse.errors import DataError

_HOW = "save it with numpy.savez(path, x=inputs, y=labels)"


class NpzConfig(SourceConfig):
    """``{npz: data.npz, scale: true}``.

    int32/int64 inputs are indices (token ids for an Embedding, category codes): they are fed to the
    model as int32, never scaled nor cast to float, whatever ``scale`` says. Value arrays of uint8/uint16
    (pixels) and int8/int16 (samples) become float32 in [0, 1] unless ``scale: false`` (then float32 as
    they are): values that are already 0/1 stay, values up to 255 are divided by 255, larger ones by the
    dtype's maximum. Float inputs are never changed. A 3-D value ``x`` ``(N, H, W)`` (grey pixels) gets a
    channel axis; a 3-D float ``x`` stays ``(N, T, C)`` (sensor windows, sequences): store float grey
    images as ``(N, H, W, 1)``.
    """

    npz: str = Field(min_length=1, description="path of the .npz file, relative to the recipe's folder")
    scale: bool = Field(True, description=(
        "divide uint8/uint16/int8/int16 input arrays (pixels, samples) into [0, 1] (by 1, 255 or the dtype's "
        "maximum); false feeds them as float32 unscaled. int32/int64 inputs (token ids, category indices) and "
        "float inputs are never scaled"))

    _path = field_validator("npz", mode="before")(path_str)


def _group(raw: dict[str, np.ndarray], prefix: str, path: Path) -> Any:
    """``raw[prefix]``, or ``{name: raw[prefix_name]}`` for the per-input/-output form, or None."""
    others = ("x_test", "y_test") if prefix in ("x", "y") else ()
    named = {k[len(prefix) + 1:]: v for k, v in raw.items()
             if k.startswith(prefix + "_") and not any(k == o or k.startswith(o + "_") for o in others)}
    if prefix in raw and named:
        raise DataError(f"'{path}' has both {prefix} and {', '.join(prefix + '_' + n for n in named)}; store one "
                        f"array {prefix}, or one {prefix}_<name> per model input/output, not both.")
    if prefix in raw:
        return raw[prefix]
    return named or None


def _arrays(a: Any) -> list[np.ndarray]:
    return list(a.values()) if isinstance(a, dict) else [a]


def _map(a: Any, fn: Any, prefix: str) -> Any:
    if isinstance(a, dict):
        return {k: fn(v, f"{prefix}_{k}") for k, v in a.items()}
    return fn(a, prefix)


def _n(a: Any) -> int:
    return len(next(iter(a.values()))) if isinstance(a, dict) else len(a)


def _pairs(a: Any, b: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [(f"x_{k}", a[k], b[k]) for k in a if k in b]
    if not isinstance(a, dict) and not isinstance(b, dict):
        return [("x", a, b)]
    return []


def _read(z: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(z[key])
    except ValueError as exc:  # object arrays need pickle, which is never enabled
        raise DataError(f"'{path}': array '{key}' cannot be read without pickle ({exc}); store plain numeric "
                        "arrays (and strings for class_names).") from None


@data_source("npz", NpzConfig)
def load_npz(cfg: NpzConfig, seed: int, base_dir: Path | None) -> Loaded | Dataset:
    """Load and check the arrays of an .npz file.

    Raises:
        DataError: the file is missing or unreadable, arrays are missing or inconsistent, labels are
            not non-negative integers, or inputs are not finite numbers.
    """
    path = resolve(cfg.npz, base_dir)
    if not path.is_file():
        where = f" (relative paths are taken from {base_dir})" if base_dir and not Path(cfg.npz).is_absolute() else ""
        raise DataError(f"npz file '{path}' does not exist{where}; check `data.npz` in the recipe.")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"'{path}' is not a readable .npz file ({exc}); {_HOW}.") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"'{path}' holds a single array, not named arrays x and y; {_HOW}.")
    with z:
        files = set(z.files)
        raw = {k: _read(z, k, path) for k in files}
    x = _group(raw, "x", path)
    if x is None:
        raise DataError(f"'{path}' has no array x (nor x_<input name> per model input) "
                        f"(found: {', '.join(sorted(files)) or 'none'}); {_HOW}.")
    y = _group(raw, "y", path)
    x_test, y_test = _group(raw, "x_test", path), _group(raw, "y_test", path)
    if (x_test is None) != (y_test is None):
        given, absent = ("x_test", "y_test") if x_test is not None else ("y_test", "x_test")
        raise DataError(f"'{path}' has {given} but no {absent}; store both for a separate test set, or neither "
                        "(an anomaly-detection set needs both: x_test and its 0/1 labels y_test).")
    if y is None and x_test is None:
        raise DataError(f"'{path}' has no array y (nor y_<output name> per model output) "
                        f"(found: {', '.join(sorted(files)) or 'none'}); {_HOW}. For an anomaly-detection "
                        "autoencoder store x (normal samples only), x_test and y_test (0 normal, 1 anomalous).")

    xs = [a for a in _arrays(x) + (_arrays(x_test) if x_test is not None else []) if not is_index_array(a)]
    divisor = 1.0
    if cfg.scale and xs and all(a.dtype.kind in "iu" for a in xs):
        divisor = integer_scale(xs, f"'{path}'")
    x = _map(x, lambda a, k: as_inputs(a, f"'{path}' ({k})", divisor), "x")
    if y is not None:
        y = _map(y, lambda a, k: as_targets(a, f"'{path}' ({k})"), "y")
    if _n(x) == 0:
        raise DataError(f"'{path}': x and y are empty; store at least a few samples per class.")
    if x_test is not None:
        x_test = _map(x_test, lambda a, k: as_inputs(a, f"'{path}' ({k})", divisor), "x_test")
        y_test = _map(y_test, lambda a, k: as_targets(a, f"'{path}' ({k})"), "y_test")
        for key, a, b in _pairs(x, x_test):
            if a.shape[1:] != b.shape[1:]:
                raise DataError(f"'{path}': {key}_test samples have shape {b.shape[1:]} but {key} samples "
                                f"{a.shape[1:]}; they must match.")
    names: list[str] = []
    if "class_names" in raw:
        cn = raw["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "US":
            raise DataError(f"'{path}': class_names must be a 1-D array of strings, got {cn.dtype} {cn.shape}.")
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in cn.tolist()]
    return _with_anchors(Loaded(path.stem, x, y, x_test, y_test, names), raw, cfg, seed)


def _with_anchors(loaded: Loaded, raw: dict[str, np.ndarray], cfg: NpzConfig, seed: int) -> Loaded | Dataset:
    """A detector's data (``anchors`` in the file) split here, with its anchors; other data as loaded."""
    if "anchors" not in raw:
        return loaded
    return dataclasses.replace(split_dataset(loaded, cfg, seed), anchors=raw["anchors"].astype(np.float32))

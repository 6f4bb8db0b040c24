"""``{npz: data.npz}``: arrays saved with ``numpy.savez``.

Arrays: ``x`` (inputs) and ``y`` (class indices), optionally ``x_test`` and ``y_test`` (then used
as the held-out test split, and ``test_split`` is ignored) and ``class_names`` (strings).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from edgesparse.data.arrays import as_inputs, as_labels, integer_scale
from edgesparse.data.registry import Loaded, SourceConfig, data_source, path_str, resolve
from edgesparse.errors import DataError

_HOW = "save it with numpy.savez(path, x=inputs, y=labels)"


class NpzConfig(SourceConfig):
    """``{npz: data.npz, scale: true}``.

    Integer inputs (e.g. uint8 images) become float32 in [0, 1] unless ``scale: false``: values
    that are already 0/1 stay, values up to 255 are divided by 255, larger ones by the dtype's
    maximum. A 3-D ``x`` ``(N, H, W)`` gets a channel axis.
    """

    npz: str = Field(min_length=1, description="path of the .npz file, relative to the recipe's folder")
    scale: bool = True

    _path = field_validator("npz", mode="before")(path_str)


def _read(z: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(z[key])
    except ValueError as exc:  # object arrays need pickle, which is never enabled
        raise DataError(f"'{path}': array '{key}' cannot be read without pickle ({exc}); store plain numeric "
                        "arrays (and strings for class_names).") from None


@data_source("npz", NpzConfig)
def load_npz(cfg: NpzConfig, seed: int, base_dir: Path | None) -> Loaded:
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
        missing = [k for k in ("x", "y") if k not in files]
        if missing:
            raise DataError(f"'{path}' has no array {' or '.join(missing)} "
                            f"(found: {', '.join(sorted(files)) or 'none'}); "
                            f"{_HOW}.")
        if ("x_test" in files) != ("y_test" in files):
            given, absent = ("x_test", "y_test") if "x_test" in files else ("y_test", "x_test")
            raise DataError(f"'{path}' has {given} but no {absent}; store both for a separate test set, or neither.")
        raw = {k: _read(z, k, path) for k in ("x", "y", "x_test", "y_test", "class_names") if k in files}

    has_test = "x_test" in raw
    xs = [raw["x"], raw["x_test"]] if has_test else [raw["x"]]
    divisor = 1.0
    if cfg.scale and all(a.dtype.kind in "iu" for a in xs):
        divisor = integer_scale(xs, f"'{path}'")
    x = as_inputs(raw["x"], f"'{path}' (x)", divisor)
    y = as_labels(raw["y"], f"'{path}' (y)")
    if len(x) != len(y):
        raise DataError(f"'{path}': x has {len(x)} samples but y has {len(y)}; they must have the same length.")
    if len(x) == 0:
        raise DataError(f"'{path}': x and y are empty; store at least a few samples per class.")
    x_test = y_test = None
    if has_test:
        x_test = as_inputs(raw["x_test"], f"'{path}' (x_test)", divisor)
        y_test = as_labels(raw["y_test"], f"'{path}' (y_test)")
        if len(x_test) != len(y_test):
            raise DataError(f"'{path}': x_test has {len(x_test)} samples but y_test has {len(y_test)}; "
                            "they must have the same length.")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"'{path}': x_test samples have shape {x_test.shape[1:]} but x samples {x.shape[1:]}; "
                            "they must match.")
    names: list[str] = []
    if "class_names" in raw:
        cn = raw["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "US":
            raise DataError(f"'{path}': class_names must be a 1-D array of strings, got {cn.dtype} {cn.shape}.")
        names = [c.decode() if isinstance(c, bytes) else str(c) for c in cn.tolist()]
    return Loaded(path.stem, x, y, x_test, y_test, names)

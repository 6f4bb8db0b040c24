"""Dataset sources behind one registry. Built-ins come from installed packages or are generated.

Recipe forms (one source key each, plus the common fields)::

    data: {builtin: digits}                                   # scikit-learn's bundled 8x8 digits
    data: {builtin: shapes, image_size: 96, num_classes: 4}   # generated RGB shapes
    data: {npz: data.npz}                                     # arrays x, y (optional x_test, y_test)
    data: {image_folder: photos/, image_size: [64, 64]}       # one sub-folder per class
    data: {keras: mnist}                                      # downloaded by Keras (needs internet)

Common fields: ``validation_split`` (0.1), ``test_split`` (0.2), ``batch_size`` (64), ``limit``.
Splits are stratified and fixed by the recipe's seed; the test split is held out and is the only
split used for reported accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

import numpy as np
from pydantic import Discriminator, Tag

from edgesparse.data.sources import (
    BUILTIN_CONFIGS,
    LOADERS,
    BuiltinConfig,
    ImageFolderConfig,
    KerasConfig,
    NpzConfig,
    SourceConfig,
)

__all__ = ["Dataset", "DataConfig", "load_dataset", "DATA_SOURCES", "BUILTINS"]


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits in memory. x is float32, y int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def representative(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` samples of the training split (calibration data for int8 quantization)."""
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[: max(1, n)]
        return self.x_train[idx]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "train": int(len(self.x_train)), "validation": int(len(self.x_val)),
                "test": int(len(self.x_test)), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}


#: source key -> config class; the recipe's data section has exactly one of these keys
DATA_SOURCES: dict[str, type[SourceConfig]] = {
    "builtin": BuiltinConfig,  # type: ignore[dict-item]
    "npz": NpzConfig,
    "image_folder": ImageFolderConfig,
    "keras": KerasConfig,
}
BUILTINS = BUILTIN_CONFIGS


def _source_key(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in DATA_SOURCES if k in value), None)
    for key, cls in DATA_SOURCES.items():
        if key != "builtin" and isinstance(value, cls):
            return key
    return "builtin"


DataConfig = Annotated[
    Union[
        Annotated[BuiltinConfig, Tag("builtin")],
        Annotated[NpzConfig, Tag("npz")],
        Annotated[ImageFolderConfig, Tag("image_folder")],
        Annotated[KerasConfig, Tag("keras")],
    ],
    Discriminator(_source_key, custom_error_type="data_source",
                  custom_error_message="the data section needs one of the keys builtin, npz, image_folder or keras"),
]

def load_dataset(cfg: Any, seed: int, base_dir: Path | None = None) -> Dataset:
    """Load and split the data a recipe names.

    Args:
        cfg: A validated data config.
        seed: Fixes generation and splits.
        base_dir: Folder relative paths resolve against (the recipe's).

    Raises:
        DataError: the data cannot be loaded or split.
    """
    from edgesparse.data.split import split

    key = _source_key(cfg) or "builtin"
    name = cfg.builtin if key == "builtin" else key
    x, y, x_test, y_test, class_names = LOADERS.get(name)(cfg, seed, base_dir)
    return split(name, x, y, x_test, y_test, class_names, cfg, seed, Dataset)


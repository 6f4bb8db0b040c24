"""Dataset sources behind one registry. Built-ins come from installed packages or are generated.

Recipe forms (one source key each, plus the common fields)::

    data: {builtin: digits}                                   # scikit-learn's bundled 8x8 digits
    data: {builtin: shapes, image_size: 96, num_classes: 4}   # generated RGB shapes
    data: {npz: data.npz}                                     # arrays x, y (optional x_test, y_test)
    data: {image_folder: photos/, image_size: [64, 64]}       # one sub-folder per class
    data: {keras: mnist}                                      # downloaded by Keras (needs internet)
    data: {tfrecord: "records/*.tfrecord", x: image, y: label} # tf.train.Example files, streamed
    data: {factory: "pkg.module:fn", kwargs: {n: 20000}}      # your function returns tf.data/array splits
    data: {python: mine, batch_size: 32}                      # objects given to train(..., data=...)

Common fields: ``validation_split`` (0.1), ``test_split`` (0.2), ``batch_size`` (64), ``limit``
(none). Splits are stratified and fixed by the recipe's seed; the test split is held out and is the
only split used for reported accuracy.

Adding a source: a :class:`~edgesparse.data.registry.SourceConfig` subclass with a field named
after its key, and a loader decorated with :func:`~edgesparse.data.registry.data_source` (or
:func:`~edgesparse.data.registry.builtin`), imported below before ``DataConfig`` is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

# Importing the source modules registers them; DataConfig is built from the registries afterwards.
from edgesparse.data import (  # noqa: F401
    digits,
    factory,
    har,
    image_folder,
    keras_datasets,
    machine_sound,
    npz,
    python,
    shape_boxes,
    shape_masks,
    shapes,
    tfrecord,
    tokens,
    wake_word,
)
from edgesparse.data.dataset import Dataset
from edgesparse.data.digits import DigitsConfig
from edgesparse.data.image_folder import ImageFolderConfig
from edgesparse.data.keras_datasets import KerasConfig
from edgesparse.data.npz import NpzConfig
from edgesparse.data.registry import BUILTINS, DATA_SOURCES, SourceConfig, data_config_type, loader_for
from edgesparse.data.shapes import SHAPE_NAMES, ShapesConfig
from edgesparse.data.split import split_dataset
from edgesparse.errors import DataError

if TYPE_CHECKING:
    # Statically, every source's config is a SourceConfig (the union is only known once sources register).
    DataConfig = SourceConfig
else:
    #: The pydantic type of a recipe's ``data:`` section: ``TypeAdapter(DataConfig).validate_python(d)``.
    DataConfig = data_config_type()

__all__ = [
    "BUILTINS", "DATA_SOURCES", "SHAPE_NAMES", "DataConfig", "Dataset", "DigitsConfig", "ImageFolderConfig",
    "KerasConfig", "NpzConfig", "ShapesConfig", "SourceConfig", "load_dataset", "validate_data_config",
]


def validate_data_config(raw: Any) -> SourceConfig:
    """Validate a ``data:`` mapping (as in a recipe) into its source config.

    Raises:
        DataError: the mapping is invalid; the message lists pydantic's findings.
    """
    try:
        validated: SourceConfig = TypeAdapter(DataConfig).validate_python(raw)
        return validated
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"invalid data section {raw!r}: {problems}. Known sources: {', '.join(DATA_SOURCES)}; "
                        f"builtins: {', '.join(BUILTINS)}.") from None


def load_dataset(cfg: BaseModel | dict[str, Any], seed: int, base_dir: Path | None = None) -> Dataset:
    """Load the data a recipe names and split it into train/validation/test.

    Args:
        cfg: A validated data config (a ``DataConfig`` member), or a raw ``data:`` mapping.
        seed: Fixes generation (shapes) and the splits.
        base_dir: Folder relative paths resolve against (the recipe's folder); default: the
            current directory.

    Returns:
        The splits, x float32 and y int64 class indices.

    Raises:
        DataError: the config is invalid, or the data cannot be loaded or split.
    """
    config = validate_data_config(cfg) if isinstance(cfg, dict) else cfg
    loaded = loader_for(config)(config, seed, None if base_dir is None else Path(base_dir))
    if isinstance(loaded, Dataset):  # the source made its own splits (a factory, a streamed folder)
        return loaded
    return split_dataset(loaded, config, seed)  # type: ignore[arg-type]

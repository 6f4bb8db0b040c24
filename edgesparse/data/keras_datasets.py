"""``{keras: mnist}``: the classic Keras data sets, downloaded by Keras on first use.

TensorFlow is imported only when such a data set is loaded. Offline, the download fails and
:func:`load_keras` explains where Keras looks for the file and which sources work without internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from edgesparse import _tf
from edgesparse.data.arrays import as_inputs, as_labels
from edgesparse.data.registry import Loaded, SourceConfig, data_source
from edgesparse.errors import DataError, EdgesparseError


class KerasDataset(NamedTuple):
    """Where Keras keeps a data set below its cache folder, and its class names."""

    cached_as: str
    class_names: tuple[str, ...]


KERAS_DATASETS: dict[str, KerasDataset] = {
    "mnist": KerasDataset("datasets/mnist.npz", tuple(str(i) for i in range(10))),
    "fashion_mnist": KerasDataset(
        "datasets/fashion-mnist/ (the four *-ubyte.gz files)",
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"),
    ),
    "cifar10": KerasDataset(
        "datasets/cifar-10-batches-py/ (extracted from cifar-10-python.tar.gz)",
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
}


class KerasConfig(SourceConfig):
    """``{keras: mnist}``: mnist | fashion_mnist | cifar10 via ``tf_keras.datasets`` (needs internet once)."""

    keras: Literal["mnist", "fashion_mnist", "cifar10"]


def keras_load_data(name: str) -> Any:
    """``tf_keras.datasets.<name>.load_data()``: ``((x, y), (x_test, y_test))``, downloading if needed."""

    return getattr(_tf.keras().datasets, name).load_data()


@data_source("keras", KerasConfig)
def load_keras(cfg: KerasConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Load a Keras data set; its own test split is used as the test split.

    Raises:
        DataError: Keras could not download or read the data set.
    """
    info = KERAS_DATASETS[cfg.keras]
    try:
        (x, y), (x_test, y_test) = keras_load_data(cfg.keras)
    except EdgesparseError:
        raise  # e.g. TensorFlow missing or imported with Keras 3: already explained
    except Exception as exc:
        cache = Path("~/.keras").expanduser()
        raise DataError(
            f"the Keras data set '{cfg.keras}' could not be loaded ({type(exc).__name__}: {str(exc)[:200]}). "
            "Keras downloads it on first use, which needs internet access. On a machine without internet, "
            f"download it elsewhere and place it at {cache / info.cached_as}, or use a source that needs no "
            "download: `data: {npz: file.npz}` (arrays x, y) or a builtin (`data: {builtin: digits}` or "
            "`{builtin: shapes}`)."
        ) from None
    div = 255.0  # all three are uint8 images
    return Loaded(cfg.keras, as_inputs(x, cfg.keras, div), as_labels(y, cfg.keras),
                  as_inputs(x_test, cfg.keras, div), as_labels(y_test, cfg.keras), list(info.class_names))

"""The one module that imports TensorFlow, tf_keras and tfmot.

tensorflow-model-optimization only works with Keras 2, the ``tf_keras`` package. edgesparse names
``tf_keras`` explicitly everywhere it needs Keras 2 (:func:`keras`) and never reads ``tf.keras``, so it
works whatever was imported first: a notebook that imported tensorflow and Keras 3 (``tf.keras`` is then
Keras 3) before edgesparse gets the same results as a script that imports edgesparse first. Every other
edgesparse module reaches TensorFlow through the functions here, lazily, so ``edgesparse --help`` and the
device runner never pay for the import.
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType
from typing import Any

from edgesparse.errors import EdgesparseError


class KerasVersionError(EdgesparseError):
    """The Keras that a model or a stage needs cannot be had in this process (e.g. no Keras 3 package)."""


#: Non-empty when the process imported tensorflow before edgesparse did (a notebook): its tf.keras is the user's.
_USER_IMPORTED_TF: list[bool] = []


def _prepare_env() -> None:
    """Quiet TensorFlow's import and ask for Keras 2 as ``tf.keras`` when TensorFlow is not imported yet.

    Nothing in edgesparse depends on what ``tf.keras`` is: Keras 2 is always reached as ``tf_keras`` by name
    (:func:`keras`), and tfmot picks ``tf_keras`` itself. So TensorFlow (and Keras 3) imported before
    edgesparse, as in a notebook's first cell, is fine. ``TF_USE_LEGACY_KERAS`` is only set when TensorFlow is
    not imported yet (it would change nothing afterwards) and never overrides the user's own setting.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    else:
        _USER_IMPORTED_TF.append(True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@functools.cache
def tf() -> ModuleType:
    """Return the ``tensorflow`` module (whatever ``tf.keras`` is: edgesparse never reads it)."""
    _prepare_env()
    with _quiet_native_stderr():
        import tensorflow

        cpus = tensorflow.config.list_physical_devices("CPU")  # probes CUDA now, quietly, not mid-run
    n = int(os.environ.get("EDGESPARSE_CPU_DEVICES", "0") or 0)
    if n > 1 and cpus:
        # Split the CPU into logical devices (must happen before TensorFlow initialises them):
        # lets MirroredStrategy run data-parallel on one machine, e.g. in tests.
        tensorflow.config.set_logical_device_configuration(
            cpus[0], [tensorflow.config.LogicalDeviceConfiguration() for _ in range(n)])
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def strategy_scope(distribution: str) -> Any:
    """The tf.distribute scope a recipe's ``training.distribution`` asks for (a no-op for "none")."""
    import contextlib

    if distribution == "none":
        return contextlib.nullcontext()
    if distribution == "mirrored":
        return tf().distribute.MirroredStrategy().scope()
    raise EdgesparseError(f"unknown distribution '{distribution}'; known: none, mirrored")


class _quiet_native_stderr:  # noqa: N801 - used as a context manager
    """Hide what TensorFlow's C++ side writes to fd 2 at import (absl/CUDA probe chatter).

    Python exceptions are unaffected: they propagate after fd 2 is restored.
    """

    def __enter__(self) -> None:
        self._saved = None
        if os.environ.get("EDGESPARSE_TF_VERBOSE"):
            return
        try:
            self._saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:  # pragma: no cover - no fd 2
            self._saved = None

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)


@functools.cache
def keras() -> ModuleType:
    """Return ``tf_keras`` (Keras 2), the Keras tfmot works with."""
    tf()
    import tf_keras

    # Activations Keras 3 has and tf_keras lacks (hard_silu...): registered so that translated
    # models save and load anywhere edgesparse is imported.
    from edgesparse._activations import register

    register(tf_keras)
    return tf_keras


@functools.cache
def keras3() -> ModuleType:
    """Return Keras 3 (the ``keras`` package), for importing and writing Keras 3 models only.

    Keras 3 runs on the TensorFlow backend next to ``tf_keras`` (Keras 2, which tfmot works with).

    Raises:
        KerasVersionError: the ``keras`` package is missing or is not Keras 3.
    """
    keras()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras as keras3_module
    except ImportError as exc:
        raise KerasVersionError(
            f"this model needs Keras 3 to be read, but the keras package cannot be imported ({exc}). "
            "Install it with `pip install 'keras>=3'`."
        ) from exc
    version = str(getattr(keras3_module, "__version__", ""))
    if not version.startswith("3"):
        raise KerasVersionError(
            f"the installed keras package is version {version or 'unknown'}, not Keras 3; "
            "install Keras 3 with `pip install 'keras>=3'` to import Keras 3 models."
        )
    backend = keras3_module.backend.backend()
    if backend != "tensorflow":
        raise KerasVersionError(
            f"Keras 3 runs on the '{backend}' backend here; edgesparse reads Keras 3 models with the "
            "TensorFlow backend. Unset KERAS_BACKEND or set it to 'tensorflow'."
        )
    return keras3_module


@functools.cache
def tfmot() -> ModuleType:
    """Return ``tensorflow_model_optimization``."""
    keras()
    import warnings

    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    if _USER_IMPORTED_TF:
        # tfmot sets TF_USE_LEGACY_KERAS=1 at import, which would turn the user's tf.keras (still unresolved, a
        # lazy loader) into Keras 2 behind their back: resolve it now, as it is, and put the variable back after.
        getattr(tf().keras, "__name__", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow_model_optimization

    if _USER_IMPORTED_TF:
        if legacy is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = legacy
    return tensorflow_model_optimization


def tfmot_module(name: str) -> ModuleType:
    """A submodule of tfmot that its public API does not expose (e.g. ``python.core.sparsity.keras.prune_registry``).

    tfmot's prune registry is the authority on which weights of a layer it prunes; asking it beats assuming.
    """
    tfmot()
    import importlib

    return importlib.import_module(f"tensorflow_model_optimization.{name}")


def versions() -> dict[str, Any]:
    """Versions of the ML stack in this process (imports it).

    Returns:
        A mapping of package name to version string (``None`` when not installed).
    """
    out: dict[str, Any] = {
        "tensorflow": tf().__version__,
        "tf_keras": keras().__version__,
        "tfmot": getattr(tfmot(), "__version__", None),
    }
    try:
        from importlib.metadata import version

        out["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - optional package
        out["ai_edge_litert"] = None
    import numpy

    out["numpy"] = numpy.__version__
    out["python"] = sys.version.split()[0]
    return out


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow for a reproducible run."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    keras().utils.set_random_seed(seed)

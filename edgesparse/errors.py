"""Typed errors. Every message says what is wrong and how to fix it.

The CLI maps :class:`EdgesparseError` to exit code 1 and prints the message as one paragraph.
"""

from __future__ import annotations


class EdgesparseError(Exception):
    """Base class of every error edgesparse raises on purpose."""


class RecipeError(EdgesparseError):
    """The recipe (or a --set override) is invalid."""


class DataError(EdgesparseError):
    """A dataset could not be loaded or does not fit the model."""


class ModelError(EdgesparseError):
    """A model could not be loaded, built or pruned."""


class TrainError(EdgesparseError):
    """Training did not reach what the recipe asked for (for example the target sparsity)."""


class ExportError(EdgesparseError):
    """Conversion to TFLite or its verification failed."""


class AccuracyDropError(ExportError):
    """The converted model runs but loses more of the primary metric than ``export.max_accuracy_drop`` allows.

    Attributes:
        verification: What the check measured (an ``edgesparse.export.verify.Verification``), or None.
    """

    def __init__(self, message: str, verification: object = None) -> None:
        super().__init__(message)
        self.verification = verification


class DeviceError(EdgesparseError):
    """A target device could not be reached or could not run the model."""


class ProfileError(EdgesparseError):
    """A model could not be profiled (not a TFLite file, bad arguments...)."""


class InterruptedRun(EdgesparseError):
    """The user interrupted a run (Ctrl-C); what was written is complete, the rest was not started."""


class RunDirError(EdgesparseError):
    """A run directory or bundle folder holds another run's results (use -o, --resume or --force)."""

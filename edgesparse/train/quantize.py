"""Quantization-aware training: the modes that fine-tune a model before export.

``qat`` wraps the model with tfmot's ``quantize_model``; ``pqat`` (prune-preserving QAT) annotates it
and applies the ``Default8BitPrunePreserveQuantizeScheme`` so every pruned zero survives the
fine-tuning. Post-training modes (none, dynamic, float16, int8, int16x8) do not train: their converter
settings are :mod:`edgesparse.export.modes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.errors import ModelError, RecipeError

#: quantization mode -> function wrapping a float model for quantization-aware fine-tuning.
QAT_MODES: Registry[Callable[[Any], Any]] = Registry("quantization-aware mode", RecipeError)


def trains(mode: str) -> bool:
    """Whether quantization ``mode`` fine-tunes the model (qat, pqat)."""
    return mode in QAT_MODES


def prepare(model: Any, mode: str) -> Any:
    """Wrap ``model`` for quantization-aware fine-tuning in ``mode`` (qat or pqat).

    Raises:
        RecipeError: ``mode`` does not train.
        ModelError: tfmot cannot make the model quantization-aware.
    """
    return QAT_MODES.get(mode)(model)


@QAT_MODES.register("qat")
def _qat(model: Any) -> Any:
    q = _tf.tfmot().quantization.keras
    try:
        return q.quantize_model(model)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(_qat_hint("qat", exc)) from exc


@QAT_MODES.register("pqat")
def _pqat(model: Any) -> Any:
    tfmot = _tf.tfmot()
    q = tfmot.quantization.keras
    try:
        annotated = q.quantize_annotate_model(model)
        return q.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(_qat_hint("pqat", exc)) from exc


def _qat_hint(mode: str, exc: Exception) -> str:
    return (
        f"quantization mode {mode}: tfmot cannot make this model quantization-aware ({exc}). Some layers "
        "have no QAT support; use post-training `mode: int8` instead, or restructure those layers."
    )

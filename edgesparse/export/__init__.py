"""Export stage: convert -> verify -> bundle (model.tflite, dense.tflite, export.json).

``export_models`` works on models in memory; the orchestrator (:mod:`edgesparse.run`) calls it
after training and re-creates the models from a run directory for ``edgesparse export RUN_DIR``.
This package never imports ``edgesparse.train`` (converter settings per quantization mode live in
:mod:`edgesparse.export.modes`). Progress goes to the ``edgesparse.export`` logger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _io
from edgesparse.export.convert import convert, convert_smallest
from edgesparse.export.modes import CONVERTER_MODES
from edgesparse.export.verify import verify
from edgesparse.tflite import gzip_size, storage_facts

__all__ = ["VERIFY_SAMPLES", "ExportResult", "default_bundle_dir", "export_models", "gzip_size"]

log = logging.getLogger(__name__)

VERIFY_SAMPLES = 100  # samples stored in the bundle for on-device checks


@dataclass
class ExportResult:
    """Paths and figures of an exported bundle (also written as export.json)."""

    bundle: Path
    model_path: Path
    dense_path: Path | None
    info: dict[str, Any]


def default_bundle_dir(recipe: Any) -> Path:
    """``export.dir`` of the recipe, else ``export/<name>``."""
    if recipe.export is not None and recipe.export.dir:
        return Path(recipe.export.dir)
    return Path("export") / recipe.name


def export_models(
    final_model: Any,
    dense_model: Any | None,
    *,
    recipe: Any,
    data: Any,
    bundle: Path,
    final_outputs: np.ndarray | None = None,
    dense_outputs: np.ndarray | None = None,
) -> ExportResult:
    """Convert, verify and write the bundle.

    Args:
        final_model: The stripped (and possibly quantization-aware) Keras model to ship.
        dense_model: The dense baseline, exported as float32 for comparison (optional).
        recipe: The validated recipe (its ``export`` and ``quantization`` sections are used).
        data: The Dataset; its test split verifies, its train split calibrates.
        bundle: Output folder.
        final_outputs: Keras outputs of ``final_model`` on the test split (computed if None).
        dense_outputs: Same for ``dense_model``.

    Returns:
        The written bundle.

    Raises:
        ExportError: conversion or verification failed; nothing is written to the bundle then.
    """
    cfg = recipe.export
    mode = recipe.quantization.mode
    if final_outputs is None:
        final_outputs = final_model.predict(data.x_test, batch_size=256, verbose=0)
    model_bytes, info = _convert_final(final_model, recipe, data)
    if cfg.verify:
        log.info("verifying model.tflite on the test split with LiteRT")
        v = verify(model_bytes, data.x_test, data.y_test, final_outputs, threads=cfg.threads,
                   float_model=CONVERTER_MODES.get(mode).float_outputs, max_drop_points=cfg.max_accuracy_drop,
                   label="model.tflite")
        info["verification"] = v.to_dict()
    dense_bytes = _convert_dense(dense_model, data, cfg, dense_outputs, info) if dense_model is not None else None
    info["model"] = {"file": "model.tflite", "bytes": len(model_bytes), "gzip_bytes": gzip_size(model_bytes),
                     **storage_facts(model_bytes)}
    if dense_bytes is not None:
        info["dense"] = {"file": "dense.tflite", "bytes": len(dense_bytes), "gzip_bytes": gzip_size(dense_bytes)}
        info["ratio"] = len(dense_bytes) / len(model_bytes)
    return _write_bundle(bundle, data, final_outputs, model_bytes, dense_bytes, info)


def _convert_final(model: Any, recipe: Any, data: Any) -> tuple[bytes, dict[str, Any]]:
    """Convert the final model as the recipe asks (``sparse_encoding: auto`` keeps the smaller file)."""
    cfg = recipe.export
    mode = recipe.quantization.mode
    rep = (data.representative(cfg.representative_samples, seed=recipe.seed)
           if CONVERTER_MODES.get(mode).needs_calibration else None)
    choice = None
    if cfg.sparse_encoding == "auto":
        log.info("converting (%s, io %s) with and without the sparse encoding; keeping the smaller", mode, cfg.io)
        model_bytes, encoded, sizes = convert_smallest(model, mode, representative=rep, io=cfg.io)
        choice = {"requested": "auto", **{f"{k}_bytes": v for k, v in sizes.items()}}
        log.info("sparse encoding %s: %s B encoded vs %s B plain", "kept" if encoded else "dropped",
                 f"{sizes['sparse']:,}", f"{sizes['plain']:,}")
    else:
        encoded = bool(cfg.sparse_encoding)
        log.info("converting (%s, sparse encoding %s, io %s)", mode, "on" if encoded else "off", cfg.io)
        model_bytes = convert(model, mode, sparse_encoding=encoded, representative=rep, io=cfg.io)
    info: dict[str, Any] = {"name": recipe.name, "quantization": mode, "io": cfg.io,
                            "sparse_encoding": encoded, "class_names": list(data.class_names)}
    if choice is not None:
        info["sparse_encoding_choice"] = choice
    return model_bytes, info


def _convert_dense(dense_model: Any, data: Any, cfg: Any, dense_outputs: np.ndarray | None,
                   info: dict[str, Any]) -> bytes:
    """The dense baseline as float32 .tflite, verified like the final model."""
    log.info("converting the dense baseline (float32)")
    dense_bytes = convert(dense_model, "none", sparse_encoding=False)
    if cfg.verify:
        if dense_outputs is None:
            dense_outputs = dense_model.predict(data.x_test, batch_size=256, verbose=0)
        dv = verify(dense_bytes, data.x_test, data.y_test, dense_outputs, threads=cfg.threads,
                    float_model=True, max_drop_points=cfg.max_accuracy_drop, label="dense.tflite")
        info["dense_verification"] = dv.to_dict()
    return dense_bytes


def _write_bundle(bundle: Path, data: Any, final_outputs: np.ndarray, model_bytes: bytes, dense_bytes: bytes | None,
                  info: dict[str, Any]) -> ExportResult:
    """Write the bundle, only after everything converted and verified: a failed export leaves the old one."""
    bundle.mkdir(parents=True, exist_ok=True)
    n = min(VERIFY_SAMPLES, len(data.x_test))
    with _io.atomic_path(bundle / "verify.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x=data.x_test[:n].astype(np.float32), y=data.y_test[:n],
                            keras_outputs=final_outputs[:n].astype(np.float32))
    model_path = _io.write_bytes(bundle / "model.tflite", model_bytes)
    dense_path = _io.write_bytes(bundle / "dense.tflite", dense_bytes) if dense_bytes is not None else None
    if (bundle / "labels.txt").exists() or data.class_names:
        _io.write_text(bundle / "labels.txt", "\n".join(map(str, data.class_names)) + "\n")
    _io.write_json(bundle / "export.json", info)
    return ExportResult(bundle=bundle, model_path=model_path, dense_path=dense_path, info=info)

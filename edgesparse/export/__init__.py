"""Export stage: strip -> convert -> verify -> bundle (model.tflite, dense.tflite, export.json).

``export_models`` works on models in memory (``train`` calls it); ``export_run`` re-creates them from
a run directory so the stage also runs on its own (``edgesparse export RUN_DIR``).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _io

VERIFY_SAMPLES = 100  # samples stored in the bundle for on-device checks


@dataclass
class ExportResult:
    """Paths and figures of an exported bundle (also written as export.json)."""

    bundle: Path
    model_path: Path
    dense_path: Path | None
    info: dict[str, Any]


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` after gzip -9 (what a compressed download or OTA update costs)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _tflite_facts(data: bytes) -> dict[str, Any]:
    """Encodings and DENSIFY ops of a flatbuffer, from the inspection module if available."""
    from edgesparse.export.inspect import inspect_tflite

    info = inspect_tflite(data)
    d = info.to_dict()
    weights = d["weights"]
    encodings: dict[str, int] = {}
    for w in weights:
        enc = w.get("encoding", "dense")
        encodings[enc] = encodings.get(enc, 0) + 1
    return {
        "densify_ops": d["densify_ops"],
        "weight_stored_bytes": sum(w["stored_bytes"] for w in weights),
        "weight_runtime_bytes": sum(w["runtime_bytes"] for w in weights),
        "weight_dense_bytes": sum(w["dense_bytes"] for w in weights),
        "encodings": encodings,
        "weights": [
            {k: w.get(k) for k in ("name", "shape", "dtype", "encoding", "stored_bytes", "dense_bytes",
                                   "runtime_bytes", "densified", "sparsity")}
            for w in weights
        ],
    }


def export_models(
    final_model: Any,
    dense_model: Any | None,
    *,
    recipe: Any,
    data: Any,
    bundle: Path,
    final_outputs: np.ndarray | None = None,
    dense_outputs: np.ndarray | None = None,
    log: Any = None,
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
        log: Optional callable receiving progress lines.

    Returns:
        The written bundle.

    Raises:
        ExportError: conversion or verification failed; nothing is written to the bundle then.
    """
    from edgesparse.export.convert import convert, convert_smallest
    from edgesparse.export.verify import verify
    from edgesparse.train.quantize import MODES

    say = log or (lambda _m: None)
    cfg = recipe.export
    mode = recipe.quantization.mode
    qm = MODES.get(mode)
    if final_outputs is None:
        final_outputs = final_model.predict(data.x_test, batch_size=256, verbose=0)
    rep = data.representative(cfg.representative_samples, seed=recipe.seed) if qm.needs_calibration else None
    choice = None
    if cfg.sparse_encoding == "auto":
        say(f"converting ({mode}, io {cfg.io}) with and without the sparse encoding; keeping the smaller")
        model_bytes, encoded, sizes = convert_smallest(final_model, mode, representative=rep, io=cfg.io)
        choice = {"requested": "auto", **{f"{k}_bytes": v for k, v in sizes.items()}}
        say(f"sparse encoding {'kept' if encoded else 'dropped'}: {sizes['sparse']:,} B encoded vs "
            f"{sizes['plain']:,} B plain")
    else:
        encoded = bool(cfg.sparse_encoding)
        say(f"converting ({mode}, sparse encoding {'on' if encoded else 'off'}, io {cfg.io})")
        model_bytes = convert(final_model, mode, sparse_encoding=encoded, representative=rep, io=cfg.io)
    info: dict[str, Any] = {"name": recipe.name, "quantization": mode, "io": cfg.io,
                            "sparse_encoding": encoded, "class_names": list(data.class_names)}
    if choice is not None:
        info["sparse_encoding_choice"] = choice
    if cfg.verify:
        say("verifying model.tflite on the test split with LiteRT")
        v = verify(model_bytes, data.x_test, data.y_test, final_outputs, threads=cfg.threads,
                   float_model=not qm.integer and mode != "dynamic", max_drop_points=cfg.max_accuracy_drop,
                   label="model.tflite")
        info["verification"] = v.to_dict()
    dense_bytes = None
    if dense_model is not None:
        say("converting the dense baseline (float32)")
        dense_bytes = convert(dense_model, "none", sparse_encoding=False)
        if cfg.verify:
            if dense_outputs is None:
                dense_outputs = dense_model.predict(data.x_test, batch_size=256, verbose=0)
            dv = verify(dense_bytes, data.x_test, data.y_test, dense_outputs, threads=cfg.threads,
                        float_model=True, max_drop_points=cfg.max_accuracy_drop, label="dense.tflite")
            info["dense_verification"] = dv.to_dict()
    info["model"] = {"file": "model.tflite", "bytes": len(model_bytes), "gzip_bytes": gzip_size(model_bytes),
                     **_tflite_facts(model_bytes)}
    if dense_bytes is not None:
        info["dense"] = {"file": "dense.tflite", "bytes": len(dense_bytes), "gzip_bytes": gzip_size(dense_bytes)}
        info["ratio"] = len(dense_bytes) / len(model_bytes)
    # Write only after everything converted and verified: a failed export leaves the old bundle.
    bundle.mkdir(parents=True, exist_ok=True)
    n = min(VERIFY_SAMPLES, len(data.x_test))
    with _io.atomic_path(bundle / "verify.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, x=data.x_test[:n].astype(np.float32), y=data.y_test[:n],
                                keras_outputs=final_outputs[:n].astype(np.float32))
    model_path = _io.write_bytes(bundle / "model.tflite", model_bytes)
    dense_path = _io.write_bytes(bundle / "dense.tflite", dense_bytes) if dense_bytes is not None else None
    if (bundle / "labels.txt").exists() or data.class_names:
        _io.write_text(bundle / "labels.txt", "\n".join(map(str, data.class_names)) + "\n")
    _io.write_json(bundle / "export.json", info)
    return ExportResult(bundle=bundle, model_path=model_path, dense_path=dense_path, info=info)


def export_run(run_dir: str | Path, bundle: str | Path | None = None, log: Any = None) -> ExportResult:
    """Export the models a finished ``train`` run saved.

    Args:
        run_dir: The run directory (with recipe.lock.yaml and the saved Keras models).
        bundle: Output folder; default: the recipe's ``export.dir`` or ``export/<name>``.
        log: Optional callable receiving progress lines.

    Raises:
        ExportError: the run directory is incomplete, or conversion/verification failed.
    """
    from edgesparse.train.pipeline import load_run

    run = load_run(Path(run_dir))
    recipe = run.recipe
    if recipe.export is None:
        from edgesparse.recipe import ExportConfig

        recipe = recipe.model_copy(update={"export": ExportConfig()})
    out = Path(bundle) if bundle is not None else default_bundle_dir(recipe)
    return export_models(run.final_model, run.dense_model, recipe=recipe, data=run.data, bundle=out, log=log)


def default_bundle_dir(recipe: Any) -> Path:
    """``export.dir`` of the recipe, else ``export/<name>``."""
    if recipe.export is not None and recipe.export.dir:
        return Path(recipe.export.dir)
    return Path("export") / recipe.name

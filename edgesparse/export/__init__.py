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

from edgesparse import _io, manifest
from edgesparse.data.arrays import model_feed
from edgesparse.data.stream import model_outputs
from edgesparse.errors import AccuracyDropError
from edgesparse.export.candidates import Candidate, Sources, select
from edgesparse.export.convert import convert
from edgesparse.export.modes import CONVERTER_MODES
from edgesparse.export.verify import Verification, signature_facts, verify
from edgesparse.tflite import gzip_size, storage_facts
from edgesparse.tflite.mixed import float_ops

__all__ = ["VERIFY_SAMPLES", "ExportResult", "default_bundle_dir", "export_models", "gzip_size", "verify_arrays"]

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
    run_dir: Path | None = None,
    float_model: Any | None = None,
) -> ExportResult:
    """Convert (several candidates), verify, time against the dense model, keep the best and write the bundle.

    Args:
        final_model: The stripped (and possibly quantization-aware) Keras model to ship.
        dense_model: The dense baseline, exported as float32 for comparison and as the latency reference.
        recipe: The validated recipe (its ``export`` and ``quantization`` sections are used).
        data: The Dataset; its test split verifies, its train split calibrates.
        bundle: Output folder.
        final_outputs: Keras outputs of ``final_model`` on the test split (computed if None).
        dense_outputs: Same for ``dense_model``.
        run_dir: The run directory the models come from, recorded in export.json as the bundle's owner.
        float_model: The pruned float model (``final_model`` before QAT), converted to float32 when no
            conversion in the requested mode is as fast as the dense model (``export.objective``); None: the
            final model itself when it is a float model.

    Returns:
        The written bundle.

    Raises:
        ExportError: conversion or verification failed; nothing is written to the bundle then.
    """
    cfg = recipe.export
    mode = recipe.quantization.mode
    if final_outputs is None:
        final_outputs = model_outputs(final_model, data.test)
    if isinstance(final_outputs, (list, tuple)) and data.task is not None:
        final_outputs = data.task.outputs_dict(final_outputs)
    dense_bytes = _convert_dense(dense_model, data, cfg, dense_outputs) if dense_model is not None else None
    budget = _budget_bytes(recipe)
    src = Sources(final_model=final_model, float_model=float_model if float_model is not None else final_model,
                  x=data.test, y=None, final_outputs=final_outputs, io=cfg.io, verify=cfg.verify, threads=cfg.threads,
                  representative=(data.representative(cfg.representative_samples, seed=recipe.seed)
                                  if CONVERTER_MODES.get(mode).needs_calibration else None),
                  max_drop=_max_drop(cfg, data), task=data.task, max_bytes=budget,
                  keep_float=recipe.quantization.keep_float,
                  keep_float_weights=recipe.quantization.keep_float_weights,
                  per_channel=per_channel_options(cfg, mode, budget))
    best, candidates = select(src, mode, cfg.sparse_encoding, cfg.objective, dense_bytes[0] if dense_bytes else None)
    _check_agreement(best, getattr(cfg, "min_agreement", None))
    log.info("kept %s (%s B) for objective %s", best.label, f"{len(best.data):,}", cfg.objective)
    info = _export_info(recipe, data, best, candidates, dense_bytes)
    info["float_ops"] = float_ops(best.data, src.report.get("op_layers")) if CONVERTER_MODES.get(best.mode).integer \
        else []
    info.update({k: src.report[k] for k in ("keep_float", "quantization_diagnosis") if k in src.report})
    if best.equalized:  # what the kept file's equalizing MUL does, per input
        info["equalized"] = src.report.get("equalized_inputs")
    model_bytes = _shipped(cfg, data, best.data, final_outputs, dense_bytes, info, run_dir)
    return _write_bundle(bundle, data, final_outputs, model_bytes, dense_bytes[0] if dense_bytes else None, info)


def _check_agreement(best: Candidate, minimum: float | None) -> None:
    """Fail (not only print) when the kept conversion agrees with Keras on too few test samples.

    Raises:
        AccuracyDropError: top-1 (or the task's) agreement below ``export.min_agreement``.
    """
    v = best.verification
    if minimum is None or v is None or v.agreement is None or v.agreement >= minimum:
        return
    raise AccuracyDropError(
        f"{best.label}: the TFLite model agrees with the Keras model on {v.agreement:.2%} of {v.samples} test samples "
        f"(top-1 class, or the task's thresholded outputs), below export.min_agreement {minimum:.0%}; the file would "
        "not behave like the model it was made from. Check that the test split is fixed (no reshuffling between "
        "reads), try quantization.mode qat/pqat or int16x8 instead of post-training int8, or lower "
        "export.min_agreement if its outputs are near ties by design.", v)


def _shipped(cfg: Any, data: Any, model_bytes: bytes, final_outputs: Any, dense_bytes: tuple[bytes, Any] | None,
             info: dict[str, Any], run_dir: Path | None) -> bytes:
    """The file the bundle ships: the kept conversion, with TFLite_Detection_PostProcess appended and verified when
    ``export.detection_postprocess``; export.json's ``run_dir`` (the bundle's owner) is recorded here too."""
    if run_dir is not None:
        info["run_dir"] = str(Path(run_dir).resolve())
    if not getattr(cfg, "detection_postprocess", False):
        return model_bytes
    from edgesparse.export.postprocess import postprocess_and_verify

    x_test, y_test = data.test.in_memory()
    model_bytes, info["detection_postprocess"] = postprocess_and_verify(
        model_bytes, data.task, x_test, y_test, final_outputs, verify=cfg.verify, threads=cfg.threads,
        max_drop=_max_drop(cfg, data))
    info["model"] = {"file": "model.tflite", "bytes": len(model_bytes), "gzip_bytes": gzip_size(model_bytes),
                     **storage_facts(model_bytes)}
    if dense_bytes:
        info["ratio"] = len(dense_bytes[0]) / len(model_bytes)
    return model_bytes


def per_channel_options(cfg: Any, mode: str, budget: int | None) -> tuple[bool, ...]:
    """The int8 weight scales ``export.per_channel`` converts with: per channel, per tensor, or both (auto).

    ``auto`` adds per-tensor candidates only where a smaller file is what is asked for (``objective: size``)
    and no size budget is set: the budget's sparsity is planned on per-channel trial conversions, and a file
    smaller than planned would miss the budget's lower bound. Other modes than int8 are per channel.
    """
    if mode != "int8" or cfg.per_channel is True:
        return (True,)
    if cfg.per_channel is False:
        return (False,)
    return (True, False) if cfg.objective == "size" and budget is None else (True,)


def _budget_bytes(recipe: Any) -> int | None:
    """``sparsity.target.bytes`` of the recipe, None without a size budget."""
    target = getattr(recipe.sparsity, "target", None) if recipe.sparsity is not None else None
    return int(target.bytes) if target is not None else None


def _export_info(recipe: Any, data: Any, best: Candidate, candidates: list[Candidate],
                 dense: tuple[bytes, Verification | None] | None) -> dict[str, Any]:
    """export.json: what was converted, every candidate, the verification and the storage facts."""
    cfg = recipe.export
    info: dict[str, Any] = {"name": recipe.name, "quantization": best.mode,
                            "requested_quantization": recipe.quantization.mode, "io": cfg.io,
                            "sparse_encoding": best.sparse_encoding,
                            "per_channel": best.per_channel if best.mode == "int8" else None,
                            "objective": cfg.objective,
                            "class_names": list(data.class_names),
                            "task": data.task.to_json() if data.task is not None else None,
                            "candidates": [c.to_dict(c is best) for c in candidates]}
    if cfg.sparse_encoding == "auto":
        sizes = {c.sparse_encoding: len(c.data) for c in candidates
                 if c.source == "final" and c.mode == recipe.quantization.mode and c.per_channel == best.per_channel
                 and c.equalized == best.equalized}
        info["sparse_encoding_choice"] = {"requested": "auto", "sparse_bytes": sizes.get(True),
                                          "plain_bytes": sizes.get(False)}
    if best.mode != recipe.quantization.mode:
        info["fallback"] = {"mode": best.mode, "why": best.tried_because}
    if best.verification is not None:
        info["verification"] = best.verification.to_dict()
    if dense is not None:
        if dense[1] is not None:
            info["dense_verification"] = dense[1].to_dict()
        info["dense"] = {"file": "dense.tflite", "bytes": len(dense[0]), "gzip_bytes": gzip_size(dense[0])}
        info["ratio"] = len(dense[0]) / len(best.data)
    info["model"] = {"file": "model.tflite", "bytes": len(best.data), "gzip_bytes": gzip_size(best.data),
                     **storage_facts(best.data)}
    info["signature"] = signature_facts(best.data)  # batch 1 and state reset for recurrent models
    return info


def _convert_dense(dense_model: Any, data: Any, cfg: Any,
                   dense_outputs: np.ndarray | None) -> tuple[bytes, Verification | None]:
    """The dense baseline as float32 .tflite (the size and latency reference), verified like the final model."""
    log.info("converting the dense baseline (float32)")
    dense_bytes = convert(dense_model, "none", sparse_encoding=False)
    if not cfg.verify:
        return dense_bytes, None
    if dense_outputs is None:
        dense_outputs = model_outputs(dense_model, data.test)
    return dense_bytes, verify(dense_bytes, data.test, None, dense_outputs, threads=cfg.threads,
                               float_model=True, max_drop_points=_max_drop(cfg, data), label="dense.tflite",
                               task=data.task)


def _max_drop(cfg: Any, data: Any) -> float:
    """``export.max_accuracy_drop``, or the task's default (2 points, or 10% for an error metric)."""
    if data.task is not None:
        return float(data.task.max_drop(cfg.max_accuracy_drop))
    return 2.0 if cfg.max_accuracy_drop is None else float(cfg.max_accuracy_drop)


def verify_arrays(data: Any, outputs: Any, n: int) -> dict[str, np.ndarray]:
    """verify.npz's arrays: ``x``/``y``/``keras_outputs``, or ``x_<input>``, ``y_<output>``, ``keras_outputs_<output>``.

    One input and one output keep the plain names (what devices and older bundles read).
    """
    arrays: dict[str, np.ndarray] = {}
    x_test, y_test = data.test.head(n)
    for prefix, value in (("x", x_test), ("y", y_test), ("keras_outputs", outputs)):
        if isinstance(value, (list, tuple)) and data.task is not None:
            value = data.task.outputs_dict(value)
        if isinstance(value, dict):
            for k, v in value.items():
                arrays[f"{prefix}_{k}"] = np.asarray(v)[:n]
        else:
            arrays[prefix] = np.asarray(value)[:n]
    return {k: (model_feed(v) if k.startswith("x") else v.astype(np.float32) if v.dtype.kind == "f" else v)
            for k, v in arrays.items()}


def _write_bundle(bundle: Path, data: Any, final_outputs: np.ndarray, model_bytes: bytes, dense_bytes: bytes | None,
                  info: dict[str, Any]) -> ExportResult:
    """Write the bundle, only after everything converted and verified: a failed export leaves the old one.

    The files are written in a folder beside the bundle, export.json last with every file's sha256
    (``files``), and the folder renamed into place (:func:`edgesparse.manifest.build`): a full disk or a
    kill leaves the old bundle or none, never half of one.
    """
    n = min(VERIFY_SAMPLES, data.sizes()[2])
    with manifest.build(bundle) as tmp:
        with open(tmp / "verify.npz", "wb") as f:
            np.savez_compressed(f, **verify_arrays(data, final_outputs, n))  # type: ignore[arg-type]
        (tmp / "model.tflite").write_bytes(model_bytes)
        if dense_bytes is not None:
            (tmp / "dense.tflite").write_bytes(dense_bytes)
        if data.class_names:
            (tmp / "labels.txt").write_text("\n".join(map(str, data.class_names)) + "\n", encoding="utf-8")
        info["files"] = manifest.manifest_files(tmp)
        _io.write_json(tmp / manifest.MANIFEST, info)
    return ExportResult(bundle=bundle, model_path=bundle / "model.tflite",
                        dense_path=bundle / "dense.tflite" if dense_bytes is not None else None, info=info)

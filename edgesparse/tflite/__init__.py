"""Reading .tflite flatbuffers without TensorFlow: the one reader that export, profile and device share.

* :mod:`edgesparse.tflite.inspect` — operators, tensors, weights and how each weight is stored
  (dense, CSR, blocks; decoded), the bytes stored vs the bytes the runtime holds.
* :mod:`edgesparse.tflite.footprint` — parameters, non-zeros, MACs, activation memory and the
  XNNPACK sparse-inference eligibility check.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from edgesparse.tflite.footprint import Footprint, footprint
from edgesparse.tflite.inspect import ModelInspection, inspect_tflite

__all__ = ["Footprint", "ModelInspection", "footprint", "gzip_size", "inspect_tflite", "storage_facts"]


def gzip_size(data: bytes) -> int:
    """Bytes of ``data`` after gzip -9 (what a compressed download or OTA update costs)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def storage_facts(model: str | Path | bytes) -> dict[str, Any]:
    """How a flatbuffer stores its weights: encodings, DENSIFY ops, stored vs runtime bytes per weight."""
    d = inspect_tflite(model).to_dict()
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

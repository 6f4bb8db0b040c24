"""Paired latency of two Keras models as float32 .tflite files, on this machine (the device runner, local)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgesparse import progress
from edgesparse.device.targets import parse_target
from edgesparse.export.convert import convert


def paired_float_latency(model: Any, reference: Any, *, runs: int = 200, threads: int = 1) -> dict[str, Any]:
    """Convert both models to float32 .tflite and time them alternately in one process.

    Args:
        model: The model timed.
        reference: The model it is compared with (the dense one).
        runs: Timed runs of each.
        threads: Interpreter threads.

    Returns:
        ``ratio_median``, ``ratio_q1``, ``ratio_q3`` (model / reference), ``bytes`` and ``reference_bytes``.

    Raises:
        ExportError: a model does not convert. ProfileError/DeviceError: it does not run.
    """
    data = convert(model, "none")
    return time_paired(data, convert(reference, "none"), runs=runs, threads=threads)


def time_paired(model: bytes, reference: bytes, *, runs: int = 200, warmup: int = 10,
                threads: int = 1) -> dict[str, Any]:
    """Time two flatbuffers alternately in one process with the device runner on this machine.

    Returns:
        ``ratio_median``, ``ratio_q1``, ``ratio_q3`` (model / reference), ``resolver`` (of ``model``),
        ``bytes`` and ``reference_bytes``.

    Raises:
        ProfileError/DeviceError: a model does not run.
    """
    # one record per timing, not per run: the runner times all of them in one process
    progress.logger.info("latency: timing a %s B model alternately with the %s B reference (%d warm-up + %d runs "
                         "each, %d thread(s))", f"{len(model):,}", f"{len(reference):,}", warmup, runs, threads,
                         extra={"event": "timing", "runs": runs, "warmup": warmup, "threads": threads})
    with tempfile.TemporaryDirectory(prefix="es-latency-") as tmp:
        a, b = Path(tmp) / "model.tflite", Path(tmp) / "reference.tflite"
        a.write_bytes(model)
        b.write_bytes(reference)
        r = parse_target("local").run_runner(a, threads=threads, runs=runs, warmup=warmup, paired=b)
    paired = r.get("paired") or {}
    return {"ratio_median": paired.get("ratio_median"), "ratio_q1": paired.get("ratio_q1"),
            "ratio_q3": paired.get("ratio_q3"), "resolver": r.get("resolver"), "bytes": len(model),
            "reference_bytes": len(reference)}

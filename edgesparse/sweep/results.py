"""A sweep's results: one row per trial x repeat, written as results.csv and results.json."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import _io


@dataclass
class SweepResult:
    """Rows of every trial and where they were written."""

    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    dense: dict[str, Any] | None = None  # the dense float32 .tflite profiled on this machine
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]



COLUMNS = ["trial", "repeat", "seed", "status", "baseline_accuracy", "keras_accuracy", "tflite_accuracy", "agreement",
           "sparsity", "dense_tflite_bytes", "tflite_bytes", "gzip_bytes", "runtime_weight_bytes", "peak_rss_bytes",
           "latency_median_ms", "latency_p90_ms", "latency_ratio", "latency_ratio_q1", "latency_ratio_q3",
           "drift_pct", "resolver", "macs_dense", "macs_nonzero", "train_seconds", "error"]


def write_results(result: SweepResult, axes: list[str]) -> None:
    """results.csv and results.json: one row per trial x repeat, every grid value as a column."""
    cols = ["trial", "repeat", "seed", *axes, *[c for c in COLUMNS if c not in ("trial", "repeat", "seed")]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in result.rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    _io.write_text(result.root / "results.csv", buf.getvalue())
    _io.write_json(result.root / "results.json", {"axes": axes, "baselines": result.baselines, "dense": result.dense,
                                                  "seconds": result.seconds, "rows": result.rows})

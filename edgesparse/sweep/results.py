"""A sweep's results: one row per trial x repeat, written as results.csv and results.json."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.errors import EdgesparseError


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


COLUMNS = ["trial", "repeat", "seed", "status", "metric", "direction", "baseline_metric", "keras_metric",
           "tflite_metric", "baseline_accuracy", "keras_accuracy", "tflite_accuracy", "agreement",
           "sparsity", "dense_tflite_bytes", "tflite_bytes", "gzip_bytes", "runtime_weight_bytes", "peak_rss_bytes",
           "latency_median_ms", "latency_p90_ms", "latency_ratio", "latency_ratio_q1", "latency_ratio_q3",
           "drift_pct", "resolver", "macs_dense", "macs_nonzero", "budget_bytes", "budget_predicted_bytes",
           "budget_met", "train_seconds", "error"]


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


def _cell(text: str) -> Any:
    """A results.csv cell back as a value: empty -> None, numbers -> int/float, JSON -> its value."""
    if text == "":
        return None
    for parse in (int, float, json.loads):
        try:
            return parse(text)
        except ValueError:
            continue
    return text


def read_results(root: str | Path) -> tuple[SweepResult, list[str]]:
    """A finished sweep's results (results.json, else results.csv) and its grid axes, to render again.

    Files written before the task layer (accuracy columns only) read as a classifier's.

    Args:
        root: The sweep directory.

    Returns:
        The result (rows, baselines, dense figures) and the axes, in grid order.

    Raises:
        EdgesparseError: neither file is there.
    """
    out = Path(root)
    if (out / "results.json").exists():
        data = json.loads((out / "results.json").read_text())
        result = SweepResult(root=out, rows=list(data.get("rows", [])), baselines=dict(data.get("baselines", {})),
                             dense=data.get("dense"), seconds=float(data.get("seconds") or 0.0))
        return result, list(data.get("axes", []))
    if not (out / "results.csv").exists():
        raise EdgesparseError(f"'{out}' holds no results.json or results.csv; give the folder `edgesparse sweep` "
                              "wrote (its -o directory).")
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: (v if k == "trial" else _cell(v)) for k, v in r.items()} for r in reader]
        header = list(reader.fieldnames or [])
    known = set(COLUMNS) | {"trial", "repeat", "seed"}
    return SweepResult(root=out, rows=rows), [c for c in header if c not in known]

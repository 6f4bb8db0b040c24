"""Console renderings (rich tables) of summaries and inspections. No computation happens here."""

from __future__ import annotations

from typing import Any


def _fmt_pct(v: Any) -> str:
    return "—" if v is None else f"{v:.2%}"


def _fmt_int(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def comparison_table(summary: dict[str, Any]) -> Any:
    """Dense baseline vs final model: accuracy, sparsity, .tflite bytes, gzip bytes, ratio."""
    from rich.table import Table

    base = summary.get("baseline", {})
    model = summary.get("model", {})
    tfl = summary.get("tflite", {})
    quant = summary.get("quantization", {}).get("mode", "none")
    t = Table(title=f"{summary.get('name')}: dense vs final (test split, {summary.get('data', {}).get('test', '?')} samples)")
    for col in ("model", "Keras acc.", "TFLite acc.", "sparsity (pruned kernels)", "sparsity (all params)",
                "coverage", ".tflite bytes", "gzip bytes", "size ratio"):
        t.add_column(col, justify="right" if col != "model" else "left")
    t.add_row("dense float32", _fmt_pct(base.get("accuracy")), _fmt_pct(base.get("tflite_accuracy")), "—", "—", "—",
              _fmt_int(base.get("tflite_bytes")), _fmt_int(base.get("tflite_gzip_bytes")), "1.0x")
    ratio = tfl.get("ratio_vs_dense")
    t.add_row(f"final ({quant})", _fmt_pct(model.get("accuracy")), _fmt_pct(tfl.get("accuracy")),
              _fmt_pct(model.get("sparsity_pruned_kernels", model.get("sparsity"))),
              _fmt_pct(model.get("sparsity_all_params")), _fmt_pct(model.get("coverage")),
              _fmt_int(tfl.get("bytes")), _fmt_int(tfl.get("gzip_bytes")), "—" if not ratio else f"1/{ratio:.1f}")
    caption = []
    if tfl:
        caption.append(f"TFLite vs Keras top-1 agreement {_fmt_pct(tfl.get('agreement'))}, resolver {tfl.get('resolver')}")
        if tfl.get("densify_ops"):
            caption.append(
                f"{tfl['densify_ops']} DENSIFY ops: those weights are densified when the model loads, so their "
                "runtime memory is not reduced (see `edgesparse inspect`)"
            )
    timing = summary.get("timing", {})
    if timing.get("step_time_ratio"):
        caption.append(f"pruning step time {timing['step_time_ratio']:.2f}x dense")
    t.caption = "; ".join(caption)
    return t


def inspection_table(info: dict[str, Any]) -> Any:
    """Per weight tensor: shape, dtype, encoding, stored bytes, runtime bytes, sparsity."""
    from rich.table import Table

    weights = info.get("weights") or []
    t = Table(title=f"{info.get('path', 'model')}: {info.get('file_bytes', 0):,} bytes, "
                    f"{info.get('densify_ops', 0)} DENSIFY ops")
    for col in ("tensor", "shape", "dtype", "encoding", "stored", "runtime", "sparsity", "used by"):
        t.add_column(col, justify="left" if col in ("tensor", "encoding", "used by", "dtype") else "right")
    for w in weights:
        t.add_row(str(w.get("name")), "x".join(map(str, w.get("shape") or [])), str(w.get("dtype")),
                  str(w.get("encoding")) + (" → DENSIFY" if w.get("densified") else ""),
                  _fmt_int(w.get("stored_bytes")), _fmt_int(w.get("runtime_bytes")),
                  _fmt_pct(w.get("sparsity")), ", ".join(w.get("consumers") or []))
    return t

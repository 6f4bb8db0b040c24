"""Console renderings (rich tables) of summaries and inspections. No computation happens here."""

from __future__ import annotations

from typing import Any

from edgesparse.render import MetricLabel, fmt_int, fmt_pct

#: A :class:`edgesparse.summary.RunSummary`. Not imported: RunSummary's repr renders these tables, and summary.py
#: sits below this module (no import circle).
RunSummary = Any


def comparison_table(summary: RunSummary) -> Any:
    """Dense baseline vs final model: the task's primary metric, sparsity, .tflite bytes, gzip bytes, ratio."""
    from rich.table import Table

    base, model, tfl = summary.baseline, summary.model, summary.tflite
    metric_label = MetricLabel.of(summary.task)
    fmt_metric = metric_label.fmt
    metric = metric_label.name
    short = "acc." if metric == "accuracy" else metric
    t = Table(title=f"{summary.name}: dense vs final (test split, {summary.data.test} samples)")
    for col in ("model", f"Keras {short}", f"TFLite {short}", "sparsity (pruned kernels)", "sparsity (all params)",
                "coverage", ".tflite bytes", "gzip bytes", "size ratio"):
        t.add_column(col, justify="right" if col != "model" else "left")
    base_tfl = base.tflite_metric if base.tflite_metric is not None else base.tflite_accuracy
    warned = " (health: warn)" if (base.health or {}).get("status") == "warn" else ""
    t.add_row(f"dense float32{warned}", fmt_metric(base.metric), fmt_metric(base_tfl), "—", "—", "—",
              fmt_int(base.tflite_bytes), fmt_int(base.tflite_gzip_bytes), "1.0x")
    ratio = tfl.ratio_vs_dense if tfl else None
    pruned = model.sparsity_pruned_kernels if model and model.sparsity_pruned_kernels is not None else (
        model.sparsity if model else None)
    kept = tfl.quantization if tfl and tfl.quantization else summary.quantization.mode
    label = "float32" if kept == "none" else kept
    if kept != summary.quantization.mode:
        label += f", not {summary.quantization.mode}"
    coverage = model.coverage if model is not None and summary.sparsity is not None else None  # pruned share
    t.add_row(f"final ({label})", fmt_metric(model.metric if model else None),
              fmt_metric(tfl.metric if tfl else None), fmt_pct(pruned),
              fmt_pct(model.sparsity_all_params if model else None), fmt_pct(coverage),
              fmt_int(tfl.bytes if tfl else None), fmt_int(tfl.gzip_bytes if tfl else None),
              "—" if not ratio else f"1/{ratio:.1f}")
    caption = []
    if tfl:
        kind = (summary.task or {}).get("kind", "classification")
        if tfl.agreement is not None:
            how = "top-1" if kind == "classification" else "thresholded" if kind in ("binary", "multilabel") else ""
            caption.append(f"TFLite vs Keras {how + ' ' if how else ''}agreement {fmt_pct(tfl.agreement)}, "
                           f"max |diff| {tfl.max_abs_diff:.3g}, resolver {tfl.resolver}")
        else:
            caption.append(f"TFLite vs Keras outputs: max |diff| {tfl.max_abs_diff or 0:.3g}, max relative diff "
                           f"{tfl.max_rel_diff or 0:.3g}, resolver {tfl.resolver}")
        if tfl.latency_ratio is not None:
            caption.append(f"latency {tfl.latency_ratio:.2f}x the dense float model's (paired, on this machine, "
                           f"export.objective {tfl.objective})")
        if tfl.densify_ops:
            caption.append(
                f"{tfl.densify_ops} DENSIFY ops: those weights are densified when the model loads, so their "
                "runtime memory is not reduced (see `edgesparse inspect`)"
            )
    if summary.timing.step_time_ratio:
        caption.append(f"pruning step time {summary.timing.step_time_ratio:.2f}x dense")
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
                  fmt_int(w.get("stored_bytes")), fmt_int(w.get("runtime_bytes")),
                  fmt_pct(w.get("sparsity")), ", ".join(w.get("consumers") or []))
    return t


def quantization_table(q: dict[str, Any]) -> Any:
    """quantization.json's rows: per quantized op, its layer, rmse, rmse / scale, range and the drop kept float."""
    from rich.table import Table

    unit = q.get("unit", "points")
    lost = q.get("int8_drop")
    t = Table(title=f"{q.get('name')}: int8 error per op, worst first"
                    + ("" if lost is None else f" (int8 loses {lost:.2f} {unit} on the test split)"))
    for col in ("layer", "op", "rmse", "rmse / scale", "range", f"lost with only it float ({unit})"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for r in q.get("rows", []):
        lo, hi = r["range"]
        kept = r.get("drop_if_float")
        t.add_row(str(r.get("layer") or r.get("tensor")), str(r.get("op")), f"{r['rmse']:.3g}",
                  f"{r['rmse_over_scale']:.3g}", f"{lo:.3g} to {hi:.3g}", "not measured" if kept is None
                  else f"{kept:.2f}")
    if q.get("mode_note"):
        t.caption = str(q["mode_note"])
    return t


def inspection_float_ops(info: dict[str, Any]) -> str | None:
    """``"float32 ops in this int8 model: fc1 (FULLY_CONNECTED)"`` for a mixed model, else None."""
    ops = info.get("float_ops") or []
    if not ops:
        return None
    return (f"{len(ops)} op(s) compute in float32 in this integer model (quantization.keep_float): "
            + ", ".join(f"{o.get('layer') or o.get('tensor')} ({o.get('op')})" for o in ops))


def channels_table(summary: RunSummary) -> Any:
    """Dense vs thinned (channel pruning): parameters, MACs, float .tflite bytes, paired latency, guard metric.

    The last column is the task's guard metric on validation (accuracy for classifiers, e.g. mae for a
    regressor; summaries from before the task layer show their accuracy).
    """
    from rich.table import Table

    ch = summary.channels
    if ch is None:
        return None
    guard = MetricLabel.of(summary.task, "guard_metric")
    t = Table(title=f"{summary.name}: channel pruning ({ch.allocation}, {ch.importance}, {ch.schedule}, target "
                    + ", ".join(f"{k} {v:g}" for k, v in ch.target.items()) + ")")
    short = "acc." if guard.key == "accuracy" else guard.name
    for col in ("model", "params", "MACs", "float .tflite bytes", "paired latency", f"val. {short}"):
        t.add_column(col, justify="right" if col != "model" else "left")
    base = summary.baseline
    dense_val = base.validation_metric if base.validation_metric is not None else base.validation_accuracy
    thinned_val = ch.validation_metric if ch.validation_metric is not None else ch.validation_accuracy
    t.add_row("dense", fmt_int(ch.dense_params), fmt_int(ch.dense_macs), fmt_int(ch.dense_tflite_bytes), "1.00x",
              guard.fmt(dense_val))
    lat = "not measured" if ch.latency_ratio is None else f"{ch.latency_ratio:.2f}x"
    t.add_row("thinned", f"{fmt_int(ch.params)} ({ch.params / max(1, ch.dense_params):.0%})",
              f"{fmt_int(ch.macs)} ({ch.macs / max(1, ch.dense_macs):.0%})", fmt_int(ch.tflite_bytes), lat,
              guard.fmt(thinned_val))
    kept = ", ".join(f"{g.name} {g.kept}/{g.channels}" for g in ch.groups)
    frozen = ", ".join(f"{k} ({v})" for k, v in ch.frozen.items())
    diff = "" if ch.max_abs_diff is None else f" Thinned vs masked outputs: max |diff| {ch.max_abs_diff:.1e}"
    t.caption = f"kept channels: {kept}. Frozen: {frozen or 'none'}.{diff}"
    return t


def _report_label(report: Any) -> MetricLabel:
    """The metric an ``analyze`` report measured (accuracy for reports made before the task layer)."""
    label = getattr(report, "label", None)
    return label if isinstance(label, MetricLabel) else MetricLabel()


def _validation_value(report: Any) -> float | None:
    value = getattr(report, "validation_metric", None)
    return value if value is not None else getattr(report, "validation_accuracy", None)


def sensitivity_table(report: Any) -> Any:
    """Per channel group and ratio: channels removed, the guard metric and its drop, loss increase, cost saved.

    The metric is the task's guard metric on validation (``report.metric``); its drop is in points for
    fractions (accuracy, AUC) and a relative % for errors (mae, reconstruction error), positive = worse.
    """
    from rich.table import Table

    m = _report_label(report)
    short = "acc." if m.key == "accuracy" else m.name
    drop = "acc. drop (points)" if m.key == "accuracy" else m.drop_label
    t = Table(title=f"{report.name}: channel sensitivity (each group pruned alone, no fine-tuning; dense "
                    f"{report.dense_macs:,} MACs, {report.dense_params:,} params, validation {m.name} "
                    f"{m.fmt(_validation_value(report))})")
    for col in ("group", "removed", f"val. {short}", drop, "loss increase", "MACs saved", "params saved"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for r in report.rows:
        t.add_row(r.group, f"{r.removed}/{r.channels}", m.fmt(r.accuracy), m.fmt_drop(r.accuracy_drop),
                  f"{r.loss_increase:+.3f}", fmt_pct(r.macs_saved, 1), fmt_pct(r.params_saved, 1))
    if report.frozen:
        t.caption = "never pruned: " + ", ".join(f"{k} ({v})" for k, v in report.frozen.items())
    return t


def unstructured_sensitivity_table(report: Any) -> Any:
    """Per layer tfmot prunes: the drop of the guard metric at each unstructured level (that layer alone)."""
    from rich.table import Table

    m = _report_label(report)
    levels = sorted({r.sparsity for r in report.unstructured})
    unit = "in points" if m.fraction else "in % (relative), positive = worse"
    t = Table(title=f"{report.name}: unstructured sensitivity (each layer's smallest-magnitude kernel weights zeroed "
                    f"alone, no fine-tuning; validation {m.name} {'drop' if m.fraction else 'change'} {unit})")
    t.add_column("layer")
    t.add_column("weights", justify="right")
    for level in levels:
        t.add_column(f"{level:.0%}", justify="right")
    by: dict[str, dict[float, Any]] = {}
    for r in report.unstructured:
        by.setdefault(r.layer, {})[r.sparsity] = r
    for layer, rows in by.items():
        first = next(iter(rows.values()))
        t.add_row(f"{layer} ({first.kind})", f"{first.weights:,}",
                  *(m.fmt_drop(rows[lv].accuracy_drop) if lv in rows else "—" for lv in levels))
    return t

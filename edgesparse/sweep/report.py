"""report.md and plots of a sweep. Every number in the text comes from the results table.

The table, the summary, the Pareto fronts and the plots are named after the task's primary metric (the
rows' ``metric`` column: ``accuracy``, ``mae``, ``cls/accuracy``) and respect its direction: for an error
(lower is better) the best strategy has the lowest value and the Pareto front minimises both the cost and
the error. Drops against dense are in the metric's unit (points for fractions, relative % for errors).
Rows written before the task layer (accuracy columns only) read as a classifier's.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.render import MetricLabel, figure, fmt, markdown_table, save_png
from edgesparse.task import DEFAULT_MAX_DROP

SPARSITY_AXIS = "sparsity.final"
_MEANS = ("tflite_metric", "keras_metric", "baseline_metric", "tflite_accuracy", "keras_accuracy",
          "baseline_accuracy", "sparsity", "tflite_bytes", "gzip_bytes", "dense_tflite_bytes", "runtime_weight_bytes",
          "latency_median_ms", "peak_rss_bytes")


def metric_of(rows: list[dict[str, Any]]) -> MetricLabel:
    """The sweep's primary metric, from its rows' ``metric``/``direction`` (accuracy for older rows)."""
    for r in rows:
        if r.get("metric"):
            return MetricLabel(str(r["metric"]), str(r.get("direction") or "higher"))
    return MetricLabel()


def _with_metric(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its ``*_metric`` columns (rows written before the task layer have the accuracy only)."""
    if "tflite_metric" in row or "baseline_metric" in row:
        return row
    return {**row, **{f"{p}_metric": row.get(f"{p}_accuracy") for p in ("baseline", "keras", "tflite")}}


def _point_metric(p: dict[str, Any]) -> MetricLabel:
    return MetricLabel(str(p.get("metric") or "accuracy"), str(p.get("direction") or "higher"))


def _tflite_value(p: dict[str, Any]) -> float | None:
    """A point's TFLite metric (``tflite_accuracy`` for points made outside :func:`aggregate`)."""
    value = p.get("tflite_metric", p.get("tflite_accuracy"))
    return None if value is None else float(value)


def aggregate(rows: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Mean/std over repeats of each grid point (failed trials are counted, not averaged).

    Each point has the ``*_metric`` means (the task's primary metric; ``*_accuracy`` too where the task has
    an accuracy), ``metric``, ``direction`` and ``unit`` (points or %), and ``drop``: the mean degradation
    of the TFLite metric against the dense baseline in that unit (positive = worse; ``drop_points`` is the
    same figure for fraction metrics, None otherwise).
    """
    metric = metric_of(rows)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(json.dumps(r.get(a), default=str) for a in axes)].append(_with_metric(r))
    out = []
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("status") == "ok" and r.get("tflite_metric") is not None]
        point: dict[str, Any] = {a: json.loads(k) for a, k in zip(axes, key)}
        point.update(metric=metric.key, direction=metric.direction, unit=metric.unit)
        point["repeats"] = len(rs)
        point["resolver"] = next((r.get("resolver") for r in ok if r.get("resolver")), None)
        point["failed"] = len(rs) - len(ok)
        for col in _MEANS:
            vals = [float(r[col]) for r in ok if r.get(col) is not None]
            point[col] = statistics.mean(vals) if vals else None
            point[col + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        ratios = [r for r in ok if r.get("latency_ratio") is not None]
        if ratios:  # paired latency vs dense: median over repeats, spread from the widest quartiles
            point["latency_ratio"] = statistics.median(float(r["latency_ratio"]) for r in ratios)
            point["latency_ratio_lo"] = min(float(r["latency_ratio_q1"]) for r in ratios)
            point["latency_ratio_hi"] = max(float(r["latency_ratio_q3"]) for r in ratios)
        else:
            point["latency_ratio"] = point["latency_ratio_lo"] = point["latency_ratio_hi"] = None
        paired = [r for r in ok if r.get("baseline_metric") is not None]
        if point["tflite_metric"] is not None and paired:
            drops = [metric.degradation(float(r["baseline_metric"]), float(r["tflite_metric"])) for r in paired]
            point["drop"] = statistics.mean(drops)
            point["drop_std"] = statistics.pstdev(drops) if len(drops) > 1 else 0.0
            point["ratio"] = point["dense_tflite_bytes"] / point["tflite_bytes"] if point["tflite_bytes"] else None
        else:
            point["drop"] = point["ratio"] = None
            point["drop_std"] = 0.0
        point["drop_points"] = point["drop"] if metric.fraction else None
        point["drop_points_std"] = point["drop_std"] if metric.fraction else 0.0
        out.append(point)
    return out


def axis_label(axis: str, value: Any) -> str:
    """One axis value as a reader understands it alone: ``float32`` for quantization none, ``l1=1e-05``."""
    if axis == "quantization.mode":
        return "float32" if str(value) == "none" else str(value)
    if axis == "sparsity.pattern":
        return str(value)
    return f"{axis.rsplit('.', maxsplit=1)[-1]}={value}"


def strategy(point: dict[str, Any], axes: list[str]) -> str:
    """A grid point's strategy: every axis value except the sparsity level."""
    parts = [axis_label(a, point[a]) for a in axes if a != SPARSITY_AXIS]
    return " + ".join(parts) or "default"


def pareto(points: list[dict[str, Any]], cost: str = "tflite_bytes") -> list[dict[str, Any]]:
    """Points no other point beats: no costlier in ``cost`` (size, latency ratio...) and no worse in the metric.

    The metric is the point's ``tflite_metric`` (``tflite_accuracy`` for points without it) in the point's
    ``direction``: for an error (lower is better) the front minimises both the cost and the error.
    """
    ok = [p for p in points if p.get(cost) and _tflite_value(p) is not None]

    def beats(q: dict[str, Any], p: dict[str, Any]) -> bool:
        m = _point_metric(p)
        qv, pv = m.sign(_tflite_value(q) or 0.0), m.sign(_tflite_value(p) or 0.0)
        return q[cost] <= p[cost] and qv >= pv and (q[cost] < p[cost] or qv > pv)

    return sorted((p for p in ok if not any(beats(q, p) for q in ok if q is not p)), key=lambda p: p[cost])


def summary_lines(points: list[dict[str, Any]], axes: list[str], dense: dict[str, Any] | None) -> list[str]:
    """Plain sentences about the best strategy per sparsity level, generated from the table."""
    lines = []
    m = _point_metric(points[0]) if points else MetricLabel()
    unit = " points" if m.fraction else "%"
    levels: list[Any] = sorted({p[SPARSITY_AXIS] for p in points if p.get(SPARSITY_AXIS) is not None})
    for level in levels:
        cands = [p for p in points if p.get(SPARSITY_AXIS) == level and p.get("drop") is not None]
        if not cands:
            continue
        best = max(cands, key=lambda p: (m.sign(p["tflite_metric"]), -(p["tflite_bytes"] or 0)))
        rel = (f"within {best['drop']:.1f}{unit} of dense" if best["drop"] >= 0
               else f"{-best['drop']:.1f}{unit} {m.better} dense")
        ratio = f"1/{best['ratio']:.1f}" if best.get("ratio") else "—"
        text = (f"At {float(level):.0%} sparsity, {strategy(best, axes)} keeps TFLite {m.name} {rel} "
                f"({m.fmt(best['tflite_metric'])} vs {m.fmt(best['baseline_metric'])}, "
                f"±{best['drop_std']:.1f}{unit} over {best['repeats']} repeat(s)) at "
                f"{ratio} of the dense float32 .tflite ({fmt(best['tflite_bytes'], ',.0f')} bytes)")
        if best.get("latency_ratio") is not None:
            text += (f"; latency {best['latency_ratio']:.2f}x dense float32 on this CPU (timed alternately with the "
                     f"dense model in one process; quartiles "
                     f"{best['latency_ratio_lo']:.2f}–{best['latency_ratio_hi']:.2f})"
                     " — " + _latency_reason(best))
        elif dense and dense.get("latency_median_ms") and best.get("latency_median_ms"):
            r = best["latency_median_ms"] / dense["latency_median_ms"]
            text += (f"; median latency {best['latency_median_ms']:.3f} ms "
                     f"vs {dense['latency_median_ms']:.3f} ms dense "
                     f"({r:.2f}x, measured separately) on this CPU")
        lines.append(text + ".")
    front = pareto(points)
    allowed = DEFAULT_MAX_DROP[m.unit] / 2  # half a guard's default: 1 point of a fraction, 5% of an error
    within = [p for p in points if p.get("drop") is not None and p["drop"] <= allowed and p.get("ratio")]
    if within:
        smallest = max(within, key=lambda p: p["ratio"])
        d = smallest["drop"]
        worse = "below" if m.higher else "above"
        rel = f"{d:.1f}{unit} {worse} it" if d >= 0 else f"{-d:.1f}{unit} {m.better} it"
        margin = f"{allowed:g} point{'s' if allowed != 1 else ''}" if m.fraction else f"{allowed:g}%"
        lines.append(f"The smallest model whose TFLite {m.name} is within {margin} of dense is "
                     f"{_where(smallest, axes)}: 1/{smallest['ratio']:.1f} of the dense .tflite, {rel}.")
    if front:
        lines.append(f"Pareto front (size vs {m.name}, {m.direction} is better): " + "; ".join(
            f"{_where(p, axes)} ({p['tflite_bytes']:,.0f} B, {m.fmt(_tflite_value(p))})" for p in front) + ".")
    return lines


def _where(point: dict[str, Any], axes: list[str]) -> str:
    """A point's strategy, with its sparsity level when the grid has a sparsity axis."""
    if SPARSITY_AXIS not in axes:
        return strategy(point, axes)
    return f"{strategy(point, axes)} at {float(point.get(SPARSITY_AXIS, 0) or 0):.0%}"


def _latency_reason(point: dict[str, Any]) -> str:
    """What the paired measurement says, plus the facts known about the model; no guessed causes."""
    lo, hi, r = point["latency_ratio_lo"], point["latency_ratio_hi"], point["latency_ratio"]
    quant = str(point.get("quantization.mode", ""))
    facts = " (an int8 model)" if quant in ("int8", "qat", "pqat") else ""
    if point.get("resolver") == "builtin":
        return "slower: XNNPACK refused this model (sparse int8 fully-connected), so LiteRT's builtin kernels ran"
    if lo <= 1.0 <= hi or abs(r - 1.0) < 0.05:
        return "no measurable change" + facts
    return ("faster" if r < 1 else "slower") + facts


def plot_names(metric: MetricLabel) -> dict[str, str]:
    """The report's PNG files, named after the metric: ``accuracy_vs_size.png``, ``mae_vs_size.png`` ..."""
    return {"vs_sparsity": f"{metric.slug}_vs_sparsity.png", "vs_size": f"{metric.slug}_vs_size.png",
            "latency": f"latency_vs_{metric.slug}.png", "layers": "layer_sparsity.png"}


def write_report(result: Any, axes: list[str]) -> Path:
    """Write report.md with plots next to it (named after the task's primary metric)."""
    root = Path(result.root)
    points = aggregate(result.rows, axes)
    m = metric_of(result.rows)
    data = json.loads((root / "results.json").read_text()) if (root / "results.json").exists() else {}
    dense = data.get("dense") or getattr(result, "dense", None)
    names = plot_names(m)
    _plot_metric_vs_sparsity(points, axes, m, root / names["vs_sparsity"])
    _plot_metric_vs_size(points, axes, m, root / names["vs_size"])
    _plot_latency_vs_metric(points, axes, m, root / names["latency"], dense)
    _plot_layer_sparsity(result.rows, pareto(points), axes, root / names["layers"])
    drop_head = "drop (pt)" if m.fraction else m.drop_label
    how = ("'drop (pt)' is the loss against the dense baseline in points" if m.fraction else
           f"'{drop_head}' is its relative change against the dense baseline (positive = worse)")
    lines = [f"# Sweep: {root.name}", "",
             f"{len(result.rows)} trials ({len(result.failed)} failed), "
             f"{len(result.baselines)} shared dense baseline(s); "
             f"recorded time {sum(float(r.get('train_seconds') or 0) for r in result.rows):.0f} s in trials + "
             f"{sum(float(b.get('seconds') or 0) for b in result.baselines.values()):.0f} s in baselines "
             f"(this invocation {result.seconds:.0f} s). "
             f"The metric is the task's {m.name} ({m.direction} is better) on the held-out test split; {how}; "
             "sizes are .tflite bytes; 'median ms' is the "
             "runner's median on this machine (measured per trial, so it moves with the machine's speed); "
             "'latency vs dense' "
             "times the trial's and the dense model alternately in one process (median ratio, quartiles in brackets), "
             "the figure to compare.", "", "## Summary", ""]
    lines += [f"- {s}" for s in summary_lines(points, axes, dense)] or ["- no successful trials"]
    lines += ["", "## Table (mean ± std over repeats)", ""]
    short = "acc" if m.key == "accuracy" else m.name
    head = [*(a.split(".")[-1] for a in axes), "repeats", f"TFLite {short}", drop_head, "sparsity", ".tflite B",
            "ratio", "runtime weights B", "median ms", "latency vs dense"]
    ordered = sorted(points, key=lambda p: (strategy(p, axes), float(p.get(SPARSITY_AXIS) or 0)))
    lines += markdown_table(head, [_table_row(p, axes, m) for p in ordered])
    failed = result.failed
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- `{r['trial']}`: {r.get('error')}" for r in failed]
    lines += ["", f"![{m.name} vs sparsity]({names['vs_sparsity']})", "",
              f"![{m.name} vs size]({names['vs_size']})", "", f"![latency vs {m.name}]({names['latency']})", "",
              f"![per-layer sparsity]({names['layers']})", ""]
    return _io.write_text(root / "report.md", "\n".join(lines))


def _table_row(p: dict[str, Any], axes: list[str], m: MetricLabel) -> list[str]:
    """One line of report.md's table: a grid point's means (± std) over its repeats."""
    std = p.get("tflite_metric_std")
    value = m.fmt(p["tflite_metric"]) + (f" ± {m.fmt(std)}" if std else "")
    ratio = "—" if not p.get("ratio") else f"1/{p['ratio']:.1f}"
    latency = ("—" if p.get("latency_ratio") is None else
               f"{p['latency_ratio']:.2f}x ({p['latency_ratio_lo']:.2f}–{p['latency_ratio_hi']:.2f})")
    return [*(str(p[a]) for a in axes), f"{p['repeats']}" + (f" ({p['failed']} failed)" if p["failed"] else ""),
            value, fmt(p["drop"], ".2f"), fmt(p["sparsity"], ".1%"), fmt(p["tflite_bytes"], ",.0f"), ratio,
            fmt(p["runtime_weight_bytes"], ",.0f"), fmt(p["latency_median_ms"], ".3f"), latency]


def _by_strategy(points: list[dict[str, Any]], axes: list[str], *needed: str) -> dict[str, list[dict[str, Any]]]:
    """Points that have every ``needed`` figure, grouped by strategy (sorted by name)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if all(p.get(k) is not None for k in needed):
            by[strategy(p, axes)].append(p)
    return dict(sorted(by.items()))


def _plot_metric_vs_sparsity(points: list[dict[str, Any]], axes: list[str], m: MetricLabel, path: Path) -> None:
    fig, ax = figure()
    for name, ps in _by_strategy(points, axes, "tflite_metric").items():
        ps = sorted(ps, key=lambda p: p["sparsity"] or 0)
        ax.errorbar([(p["sparsity"] or 0) * 100 for p in ps], [m.plot_value(p["tflite_metric"]) for p in ps],
                    yerr=[m.plot_value(p["tflite_metric_std"]) for p in ps], marker="o", capsize=3, label=name)
    base = [p["baseline_metric"] for p in points if p.get("baseline_metric") is not None]
    if base:
        ax.axhline(m.plot_value(statistics.mean(base)), color="grey", ls="--", label="dense baseline")
    ax.set_xlabel("achieved sparsity (%)")
    ax.set_ylabel(m.axis_label("TFLite test"))
    ax.legend(fontsize=7)
    ax.set_title(f"{m.name} vs sparsity (error bars: std over repeats)")
    save_png(fig, path)


def _plot_metric_vs_size(points: list[dict[str, Any]], axes: list[str], m: MetricLabel, path: Path) -> None:
    fig, ax = figure()
    ok = [p for p in points if p.get("tflite_bytes") and p.get("tflite_metric") is not None]
    for name, ps in _by_strategy(ok, axes).items():
        ax.scatter([p["tflite_bytes"] / 1024 for p in ps], [m.plot_value(p["tflite_metric"]) for p in ps], label=name,
                   s=25)
    front = pareto(ok)
    if front:
        ax.plot([p["tflite_bytes"] / 1024 for p in front], [m.plot_value(p["tflite_metric"]) for p in front], "k--",
                lw=1, label=f"Pareto front ({m.direction} {m.name}, smaller size)")
    ax.set_xscale("log")
    ax.set_xlabel(".tflite size (KiB, log)")
    ax.set_ylabel(m.axis_label("TFLite test"))
    ax.legend(fontsize=7)
    ax.set_title(f"{m.name} vs size")
    save_png(fig, path)


def _plot_latency_vs_metric(points: list[dict[str, Any]], axes: list[str], m: MetricLabel, path: Path,
                            dense: dict[str, Any] | None) -> None:
    """The metric against latency relative to dense (paired, with quartile bars) when measured, else ms."""
    fig, ax = figure()
    paired = any(p.get("latency_ratio") is not None for p in points)
    key = "latency_ratio" if paired else "latency_median_ms"
    ok = [p for p in points if p.get(key) and p.get("tflite_metric") is not None]
    for name, ps in _by_strategy(ok, axes).items():
        xs = [p[key] for p in ps]
        ys = [m.plot_value(p["tflite_metric"]) for p in ps]
        if paired:
            err = [[p[key] - p["latency_ratio_lo"] for p in ps], [p["latency_ratio_hi"] - p[key] for p in ps]]
            ax.errorbar(xs, ys, xerr=err, fmt="o", ms=5, capsize=3, label=name)
        else:
            ax.scatter(xs, ys, label=name, s=25)
    if paired:
        ax.axvline(1.0, color="grey", ls="--", label="dense float32")
        ax.set_xlabel("latency / dense float32 latency (timed alternately in one process; bars: quartiles)")
    else:
        if dense and dense.get("latency_median_ms"):
            ax.axvline(dense["latency_median_ms"], color="grey", ls="--", label="dense float32 latency")
        ax.set_xlabel("median latency per inference (ms, this CPU)")
    ax.set_ylabel(m.axis_label("TFLite test"))
    ax.legend(fontsize=7)
    ax.set_title(f"latency vs {m.name}")
    save_png(fig, path)


def _plot_layer_sparsity(rows: list[dict[str, Any]], chosen: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    fig, ax = figure(8, 4)
    import numpy as np

    chosen = chosen[:4]
    series = []
    for p in chosen:
        r = next((r for r in rows if r.get("status") == "ok" and all(r.get(a) == p[a] for a in axes)), None)
        if r and r.get("layer_sparsity"):
            series.append((f"{strategy(p, axes)} @ {p.get(SPARSITY_AXIS)}", json.loads(r["layer_sparsity"])))
    layers = sorted({name for _, d in series for name in d})
    width = 0.8 / max(1, len(series))
    x = np.arange(len(layers))
    for i, (label, d) in enumerate(series):
        ax.bar(x + i * width, [d.get(name, 0) * 100 for name in layers], width, label=label)
    ax.set_xticks(x + width * (len(series) - 1) / 2 if series else x, layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("sparsity (%)")
    ax.set_title("per-layer sparsity of the Pareto-front models")
    if series:
        ax.legend(fontsize=7)
    save_png(fig, path)

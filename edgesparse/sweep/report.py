"""report.md and plots of a sweep. Every number in the text comes from the results table."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.render import figure, fmt, markdown_table, save_png

SPARSITY_AXIS = "sparsity.final"


def aggregate(rows: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Mean/std over repeats of each grid point (failed trials are counted, not averaged)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(json.dumps(r.get(a), default=str) for a in axes)].append(r)
    out = []
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("status") == "ok" and r.get("tflite_accuracy") is not None]
        point: dict[str, Any] = {a: json.loads(k) for a, k in zip(axes, key)}
        point["repeats"] = len(rs)
        point["resolver"] = next((r.get("resolver") for r in ok if r.get("resolver")), None)
        point["failed"] = len(rs) - len(ok)
        for col in ("tflite_accuracy", "keras_accuracy", "baseline_accuracy", "sparsity", "tflite_bytes", "gzip_bytes",
                    "dense_tflite_bytes", "runtime_weight_bytes", "latency_median_ms", "peak_rss_bytes"):
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
        if point["tflite_accuracy"] is not None and point["baseline_accuracy"] is not None:
            drops = [(float(r["baseline_accuracy"]) - float(r["tflite_accuracy"])) * 100 for r in ok]
            point["drop_points"] = statistics.mean(drops)
            point["drop_points_std"] = statistics.pstdev(drops) if len(drops) > 1 else 0.0
            point["ratio"] = point["dense_tflite_bytes"] / point["tflite_bytes"] if point["tflite_bytes"] else None
        else:
            point["drop_points"] = point["ratio"] = None
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
    """Points no other point beats: cheaper in ``cost`` (size, latency ratio...) and at least as accurate."""
    ok = [p for p in points if p.get(cost) and p.get("tflite_accuracy") is not None]

    def beats(q: dict[str, Any], p: dict[str, Any]) -> bool:
        return (q[cost] <= p[cost] and q["tflite_accuracy"] >= p["tflite_accuracy"]
                and (q[cost] < p[cost] or q["tflite_accuracy"] > p["tflite_accuracy"]))

    return sorted((p for p in ok if not any(beats(q, p) for q in ok if q is not p)), key=lambda p: p[cost])


def summary_lines(points: list[dict[str, Any]], axes: list[str], dense: dict[str, Any] | None) -> list[str]:
    """Plain sentences about the best strategy per sparsity level, generated from the table."""
    lines = []
    levels: list[Any] = sorted({p[SPARSITY_AXIS] for p in points if p.get(SPARSITY_AXIS) is not None})
    for level in levels:
        cands = [p for p in points if p.get(SPARSITY_AXIS) == level and p.get("drop_points") is not None]
        if not cands:
            continue
        best = max(cands, key=lambda p: (p["tflite_accuracy"], -(p["tflite_bytes"] or 0)))
        rel = (f"within {best['drop_points']:.1f} points of dense" if best["drop_points"] >= 0
               else f"{-best['drop_points']:.1f} points above dense")
        text = (f"At {float(level):.0%} sparsity, {strategy(best, axes)} keeps TFLite accuracy {rel} "
                f"({best['tflite_accuracy']:.2%} vs "
                f"{best['baseline_accuracy']:.2%}, ±{best['drop_points_std']:.1f} over {best['repeats']} repeat(s)) at "
                f"1/{best['ratio']:.1f} of the dense float32 .tflite ({best['tflite_bytes']:,.0f} bytes)")
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
    within = [p for p in points if p.get("drop_points") is not None and p["drop_points"] <= 1.0 and p.get("ratio")]
    if within:
        smallest = max(within, key=lambda p: p["ratio"])
        d = smallest["drop_points"]
        rel = f"{d:.1f} points below it" if d >= 0 else f"{-d:.1f} points above it"
        lines.append(f"The smallest model within 1 point of dense is {_where(smallest, axes)}: "
                     f"1/{smallest['ratio']:.1f} of the dense .tflite, "
                     f"{rel}.")
    if front:
        lines.append("Pareto front (size vs accuracy): " + "; ".join(
            f"{_where(p, axes)} ({p['tflite_bytes']:,.0f} B, "
            f"{p['tflite_accuracy']:.2%})" for p in front) + ".")
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


def write_report(result: Any, axes: list[str]) -> Path:
    """Write report.md with plots next to it."""
    root = Path(result.root)
    points = aggregate(result.rows, axes)
    dense = None
    data = json.loads((root / "results.json").read_text()) if (root / "results.json").exists() else {}
    dense = data.get("dense")
    _plot_accuracy_vs_sparsity(points, axes, root / "accuracy_vs_sparsity.png")
    _plot_accuracy_vs_size(points, axes, root / "accuracy_vs_size.png")
    _plot_latency_vs_accuracy(points, axes, root / "latency_vs_accuracy.png", dense)
    _plot_layer_sparsity(result.rows, pareto(points), axes, root / "layer_sparsity.png")
    lines = [f"# Sweep: {root.name}", "",
             f"{len(result.rows)} trials ({len(result.failed)} failed), "
             f"{len(result.baselines)} shared dense baseline(s); "
             f"recorded time {sum(float(r.get('train_seconds') or 0) for r in result.rows):.0f} s in trials + "
             f"{sum(float(b.get('seconds') or 0) for b in result.baselines.values()):.0f} s in baselines "
             f"(this invocation {result.seconds:.0f} s). "
             "Accuracy is on the held-out test split; sizes are .tflite bytes; 'median ms' is the "
             "runner's median on this machine (measured per trial, so it moves with the machine's speed); "
             "'latency vs dense' "
             "times the trial's and the dense model alternately in one process (median ratio, quartiles in brackets), "
             "the figure to compare.", "", "## Summary", ""]
    lines += [f"- {s}" for s in summary_lines(points, axes, dense)] or ["- no successful trials"]
    lines += ["", "## Table (mean ± std over repeats)", ""]
    head = [*(a.split(".")[-1] for a in axes), "repeats", "TFLite acc", "drop (pt)", "sparsity", ".tflite B", "ratio",
            "runtime weights B", "median ms", "latency vs dense"]
    ordered = sorted(points, key=lambda p: (strategy(p, axes), float(p.get(SPARSITY_AXIS) or 0)))
    lines += markdown_table(head, [_table_row(p, axes) for p in ordered])
    failed = result.failed
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- `{r['trial']}`: {r.get('error')}" for r in failed]
    lines += ["", "![accuracy vs sparsity](accuracy_vs_sparsity.png)", "",
              "![accuracy vs size](accuracy_vs_size.png)", "", "![latency vs accuracy](latency_vs_accuracy.png)", "",
              "![per-layer sparsity](layer_sparsity.png)", ""]
    return _io.write_text(root / "report.md", "\n".join(lines))


def _table_row(p: dict[str, Any], axes: list[str]) -> list[str]:
    """One line of report.md's table: a grid point's means (± std) over its repeats."""
    acc = fmt(p["tflite_accuracy"], ".2%") + (
        f" ± {p['tflite_accuracy_std']:.2%}" if p.get("tflite_accuracy_std") else ""
    )
    ratio = "—" if not p.get("ratio") else f"1/{p['ratio']:.1f}"
    latency = ("—" if p.get("latency_ratio") is None else
               f"{p['latency_ratio']:.2f}x ({p['latency_ratio_lo']:.2f}–{p['latency_ratio_hi']:.2f})")
    return [*(str(p[a]) for a in axes), f"{p['repeats']}" + (f" ({p['failed']} failed)" if p["failed"] else ""),
            acc, fmt(p["drop_points"], ".2f"), fmt(p["sparsity"], ".1%"), fmt(p["tflite_bytes"], ",.0f"), ratio,
            fmt(p["runtime_weight_bytes"], ",.0f"), fmt(p["latency_median_ms"], ".3f"), latency]


def _by_strategy(points: list[dict[str, Any]], axes: list[str], *needed: str) -> dict[str, list[dict[str, Any]]]:
    """Points that have every ``needed`` figure, grouped by strategy (sorted by name)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        if all(p.get(k) is not None for k in needed):
            by[strategy(p, axes)].append(p)
    return dict(sorted(by.items()))


def _plot_accuracy_vs_sparsity(points: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    fig, ax = figure()
    for name, ps in _by_strategy(points, axes, "tflite_accuracy").items():
        ps = sorted(ps, key=lambda p: p["sparsity"] or 0)
        ax.errorbar([p["sparsity"] * 100 for p in ps], [p["tflite_accuracy"] * 100 for p in ps],
                    yerr=[p["tflite_accuracy_std"] * 100 for p in ps], marker="o", capsize=3, label=name)
    base = [p["baseline_accuracy"] for p in points if p.get("baseline_accuracy") is not None]
    if base:
        ax.axhline(statistics.mean(base) * 100, color="grey", ls="--", label="dense baseline")
    ax.set_xlabel("achieved sparsity (%)")
    ax.set_ylabel("TFLite test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title("accuracy vs sparsity (error bars: std over repeats)")
    save_png(fig, path)


def _plot_accuracy_vs_size(points: list[dict[str, Any]], axes: list[str], path: Path) -> None:
    fig, ax = figure()
    ok = [p for p in points if p.get("tflite_bytes") and p.get("tflite_accuracy") is not None]
    for name, ps in _by_strategy(ok, axes).items():
        ax.scatter([p["tflite_bytes"] / 1024 for p in ps], [p["tflite_accuracy"] * 100 for p in ps], label=name, s=25)
    front = pareto(ok)
    if front:
        ax.plot([p["tflite_bytes"] / 1024 for p in front], [p["tflite_accuracy"] * 100 for p in front], "k--",
                lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(".tflite size (KiB, log)")
    ax.set_ylabel("TFLite test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title("accuracy vs size")
    save_png(fig, path)


def _plot_latency_vs_accuracy(points: list[dict[str, Any]], axes: list[str], path: Path,
                              dense: dict[str, Any] | None) -> None:
    """Accuracy against latency relative to dense (paired, with quartile bars) when measured, else ms."""
    fig, ax = figure()
    paired = any(p.get("latency_ratio") is not None for p in points)
    key = "latency_ratio" if paired else "latency_median_ms"
    ok = [p for p in points if p.get(key) and p.get("tflite_accuracy") is not None]
    for name, ps in _by_strategy(ok, axes).items():
        xs = [p[key] for p in ps]
        ys = [p["tflite_accuracy"] * 100 for p in ps]
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
    ax.set_ylabel("TFLite test accuracy (%)")
    ax.legend(fontsize=7)
    ax.set_title("latency vs accuracy")
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

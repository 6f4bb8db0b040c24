"""Compare compression families from several ``edgesparse sweep`` runs on one model (issue 11, item 8).

Each sweep directory holds one family's grid (e.g. unstructured and 1x16 blocks from ``resnet_shapes.yaml``,
channels from ``resnet_channels.yaml``), all against the same dense baseline recipe (same data, model, baseline
and seeds, so the dense models are the same). This script pools their aggregated grid points (mean over repeats),
labels each point with its family and settings, finds the Pareto fronts (accuracy against .tflite size, and
accuracy against the paired latency ratio), draws both plots and writes a Markdown section between markers in
``docs/results.md`` (replacing the previous one).

Usage: ``PYTHONPATH=. python benchmarks/families_report.py sweeps/fam_sparse sweeps/fam_channels
[-o docs/results.md] [--title "..."]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from edgesparse.render import figure, fmt_pct, markdown_table, save_png
from edgesparse.sweep.report import aggregate, pareto

BEGIN, END = "<!-- families:begin -->", "<!-- families:end -->"


def _get(recipe: dict[str, Any], path: str) -> Any:
    node: Any = recipe
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def label(point: dict[str, Any], axes: list[str], recipe: dict[str, Any]) -> str:
    """A point's family and settings (the sweep's recipe with the point's grid values) as a reader needs them."""
    def get(path: str) -> Any:
        return point[path] if path in axes else _get(recipe, path)

    parts = []
    if get("channels") is not None or any(a.startswith("channels.") for a in axes):
        kind = next((k for k in ("macs", "params", "latency") if get(f"channels.target.{k}") is not None), None)
        target = f"{kind} {get(f'channels.target.{kind}'):g}" if kind else f"ratio {get('channels.ratio'):g}"
        parts.append(f"channels {target} {get('channels.allocation')}")
    if get("sparsity") is not None:
        pattern = get("sparsity.pattern")
        pattern = pattern if isinstance(pattern, str) else json.dumps(pattern)
        parts.append(f"{pattern} {float(get('sparsity.final')):.0%}")
    mode = get("quantization.mode")
    parts.append("float32" if mode in (None, "none") else str(mode))
    return " + ".join(parts)


def load(sweeps: list[Path]) -> tuple[list[dict[str, Any]], list[float], float]:
    """Aggregated points of every sweep (labelled), the dense baseline accuracies, the recorded seconds."""
    points, dense, seconds = [], {}, 0.0
    for sweep in sweeps:
        data = json.loads((sweep / "results.json").read_text())
        recipe = json.loads((sweep / "sweep.json").read_text())["recipe"]
        axes = list(data["axes"])
        for p in aggregate(data["rows"], axes):
            p["label"], p["sweep"] = label(p, axes, recipe), sweep.name
            points.append(p)
        dense.update({key: float(b["accuracy"]) for key, b in data["baselines"].items()})  # shared: once each
        seconds += float(data.get("seconds") or 0.0)
    return points, list(dense.values()), seconds


def _plot(points: list[dict[str, Any]], cost: str, xlabel: str, path: Path, dense: float) -> None:
    fig, ax = figure()
    ok = [p for p in points if p.get(cost) is not None and p.get("tflite_accuracy") is not None]
    for p in sorted(ok, key=lambda p: p["label"]):
        x = p[cost] / 1024 if cost == "tflite_bytes" else p[cost]
        ax.errorbar([x], [p["tflite_accuracy"] * 100], yerr=[p["tflite_accuracy_std"] * 100], fmt="o", ms=5,
                    capsize=2, label=p["label"])
    front = pareto(ok, cost)
    ax.plot([p[cost] / 1024 if cost == "tflite_bytes" else p[cost] for p in front],
            [p["tflite_accuracy"] * 100 for p in front], "k--", lw=1, label="Pareto front")
    ax.axhline(dense * 100, color="grey", ls=":", label="dense float32 (mean)")
    if cost == "tflite_bytes":
        ax.set_xscale("log")
    else:
        ax.axvline(1.0, color="grey", ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("TFLite test accuracy (%, mean over seeds; bars: std)")
    ax.legend(fontsize=6, ncol=2)
    save_png(fig, path)


def section(points: list[dict[str, Any]], dense: list[float], seconds: float, title: str, commands: str,
            figures: Path, prefix: str) -> list[str]:
    """The Markdown section: table, fronts, plots."""
    mean_dense = statistics.mean(dense)
    dense_bytes = statistics.mean(p["dense_tflite_bytes"] for p in points if p.get("dense_tflite_bytes"))
    rows = []
    for p in sorted(points, key=lambda p: -(p.get("tflite_bytes") or 0)):
        lat = p.get("latency_ratio")
        rows.append([p["label"], str(p["repeats"] - p["failed"]) + f"/{p['repeats']}",
                     f"{fmt_pct(p['tflite_accuracy'])} ± {100 * p['tflite_accuracy_std']:.2f}",
                     f"{p['drop_points']:+.2f}" if p.get("drop_points") is not None else "—",
                     f"{p['tflite_bytes']:,.0f}" if p.get("tflite_bytes") else "—",
                     f"1/{dense_bytes / p['tflite_bytes']:.1f}" if p.get("tflite_bytes") else "—",
                     f"{lat:.2f}x ({p['latency_ratio_lo']:.2f}–{p['latency_ratio_hi']:.2f})" if lat else "—",
                     str(p.get("resolver") or "—")])
    size_front = pareto(points, "tflite_bytes")
    lat_front = pareto(points, "latency_ratio")
    for cost, name, xlabel in (("tflite_bytes", "size", ".tflite size (KiB, log)"),
                               ("latency_ratio", "latency", "latency / dense float32 (paired, 1 thread)")):
        _plot(points, cost, xlabel, figures / f"{prefix}_accuracy_vs_{name}.png", mean_dense)
    return [
        BEGIN, f"## {title}", "",
        f"Dense float32 baseline: {fmt_pct(mean_dense)} mean over seeds "
        f"({', '.join(fmt_pct(d) for d in dense)}), "
        f"{dense_bytes:,.0f} B .tflite. Accuracy: TFLite model on the held-out test split, mean ± std over seeds; "
        "drop: points below the same seed's dense model (mean; negative: above it). Latency: the trial's model and "
        "the dense float32 model timed alternately in one process by the device runner (median ratio over seeds, "
        "quartiles in brackets), 1 thread, this 2-core x86-64 machine. Recorded training and export time "
        f"{seconds / 60:.0f} min.",
        "", f"Produced by: {commands}", "",
        *markdown_table(["model", "ok", "TFLite acc", "drop (pt)", ".tflite B", "size", "latency vs dense",
                         "kernels"], rows), "",
        "Pareto front, accuracy against size: " + "; ".join(
            f"{p['label']} ({p['tflite_bytes']:,.0f} B, {fmt_pct(p['tflite_accuracy'])})" for p in size_front) + ".",
        "",
        "Pareto front, accuracy against latency: " + "; ".join(
            f"{p['label']} ({p['latency_ratio']:.2f}x, {fmt_pct(p['tflite_accuracy'])})" for p in lat_front) + ".",
        "", f"![accuracy vs size](results/{prefix}_accuracy_vs_size.png)", "",
        f"![accuracy vs latency](results/{prefix}_accuracy_vs_latency.png)", "", END]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--title", default="Unstructured vs 1x16 blocks vs channels vs channels + int8")
    parser.add_argument("--commands", default="`bash benchmarks/families.sh`")
    parser.add_argument("--prefix", default="families")
    args = parser.parse_args()
    points, dense, seconds = load(args.sweeps)
    figures = args.output.parent / "results"
    figures.mkdir(parents=True, exist_ok=True)
    text = "\n".join(section(points, dense, seconds, args.title, args.commands, figures, args.prefix))
    old = args.output.read_text() if args.output.exists() else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    args.output.write_text(new)
    print(text)


if __name__ == "__main__":
    main()

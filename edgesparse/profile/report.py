"""Renderings of a ProfileReport: console table, JSON, Markdown with PNG plots.

Nothing is computed here that was not measured or read from the flatbuffer; ratios are against
the first model given (the dense baseline by convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.device.emulation import EMULATED_LABEL
from edgesparse.render import figure, markdown_table, save_png


def _emulated_suffix(target: dict[str, Any]) -> str:
    """The console title's label for latency measured on an emulated CPU ('' on real hardware)."""
    return f" — latency {EMULATED_LABEL}" if target.get("emulated") else ""


def _kb(v: Any) -> str:
    return "—" if v is None else f"{v / 1024:,.1f} KiB"


def _ms(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ratio(v: Any, base: Any) -> str:
    if not v or not base:
        return ""
    return f" ({v / base:.2f}x)"


def _paired(p: dict[str, Any]) -> str:
    """The ratio against the first model from alternating timing in one process, with its quartiles."""
    return f" ({p['ratio_median']:.2f}x, {p['ratio_q1']:.2f}–{p['ratio_q3']:.2f} paired)"


def _model_rss(r: dict[str, Any]) -> int | None:
    """The model's own memory: peak RSS minus RSS after importing the runtime (same process)."""
    if r.get("peak_rss_bytes") is None or r.get("runtime_rss_bytes") is None:
        return None
    return max(0, int(r["peak_rss_bytes"]) - int(r["runtime_rss_bytes"]))


def table_rows(report: Any) -> list[list[str]]:
    """One row per model x threads, with ratios against the first model at the same thread count."""
    rows = report.rows()
    base_by_threads: dict[int, dict[str, Any]] = {}
    for r in rows:
        base_by_threads.setdefault(r["threads"], r)
    out = []
    for r in rows:
        b = base_by_threads[r["threads"]]
        lat = r.get("latency_ms") or {}
        blat = b.get("latency_ms") or {}
        nz = r.get("nonzero_params") or 0
        params = r.get("params") or 0
        out.append([
            Path(r["path"]).name,
            str(r["threads"]),
            "—" if r.get("bytes") is None else f"{r['bytes']:,}",
            "" if not b.get("bytes") else f"{r['bytes'] / b['bytes']:.3f}",
            "—" if r.get("gzip_bytes") is None else f"{r['gzip_bytes']:,}",
            f"{nz / params:.1%}" if params else "—",
            _kb(r.get("weight_runtime_bytes")),
            _kb(_model_rss(r)),
            _kb(r.get("peak_rss_bytes")),
            _ms(r.get("init_ms")),
            _ms(lat.get("median")) + (_paired(r["paired_vs_first"]) if r.get("paired_vs_first")
                                      else _ratio(lat.get("median"), blat.get("median"))),
            _ms(lat.get("p90")),
            "—" if r.get("drift_pct") is None else f"{r['drift_pct']:.0f}%",
            str(r.get("resolver")),
        ])
    return out


HEADERS = ["model", "thr", "file bytes", "size ratio", "gzip bytes", "non-zero", "runtime weights",
           "model RSS", "peak RSS", "init ms", "median ms", "p90 ms", "drift", "resolver"]


def console_table(report: Any) -> Any:
    """A rich Table of the report."""
    from rich.table import Table

    tgt = report.target
    title = f"profile on {tgt.get('name', 'local')} ({tgt.get('machine', '?')}, {tgt.get('runtime', {}).get('name', '?')} {tgt.get('runtime', {}).get('version', '')})"
    title += _emulated_suffix(tgt)
    t = Table(title=title, caption_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("model", "resolver") else "right")
    for row in table_rows(report):
        t.add_row(*row)
    if report.notes:
        t.caption = "\n".join(report.notes)
    return t


def write_json(report: Any, path: Path) -> Path:
    """The documented JSON: ``{"models": [{"path", "bytes", ..., "latency_ms": {...}}], ...}``."""
    return _io.write_json(path, report.to_dict())


def write_markdown(report: Any, path: Path) -> Path:
    """Markdown with the table, the notes and two PNG plots written next to it.

    Plots: latency distribution per model (box plot of every timed run) and size breakdown by
    weight tensor (stored in the file vs held by the runtime after DENSIFY).
    """
    path = Path(path)
    stem = path.with_suffix("")
    lat_png = stem.parent / f"{stem.name}_latency.png"
    size_png = stem.parent / f"{stem.name}_size.png"
    _plot_latency(report, lat_png)
    _plot_sizes(report, size_png)
    lines = [f"# Profile on {report.target.get('name', 'local')}", ""]
    tgt = report.target
    lines.append(f"Target: {tgt.get('name')} — machine {tgt.get('machine', '?')}, Python {tgt.get('python', '?')}, "
                 f"runtime {tgt.get('runtime', {}).get('name', '?')} {tgt.get('runtime', {}).get('version', '')}.")
    if tgt.get("cpu_model"):
        lines[-1] = lines[-1][:-1] + f", CPU {tgt['cpu_model']}."
    if _emulated_suffix(tgt):
        lines += ["", f"**Latency: {EMULATED_LABEL}.** The CPU is emulated; see the notes below."]
    lines += ["", *markdown_table(HEADERS, table_rows(report))]
    if report.notes:
        lines += ["", "## What these numbers mean", ""] + [f"- {n}" for n in report.notes]
    lines += ["", f"![latency distribution]({lat_png.name})", "", f"![size by layer]({size_png.name})", ""]
    return _io.write_text(path, "\n".join(lines))


def _plot_latency(report: Any, out: Path) -> None:
    labels, data = [], []
    for r in report.rows():
        samples = r.get("samples_ms") or []
        if samples:
            labels.append(f"{Path(r['path']).name}\n{r['threads']}t")
            data.append(samples)
    fig, ax = figure(max(4, 1.6 * len(data) + 2), 4)
    if data:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_ylabel("latency per invoke (ms)")
    ax.set_title("latency distribution")
    save_png(fig, out)


def _plot_sizes(report: Any, out: Path) -> None:
    import numpy as np

    fps = list(report.footprints.items())
    fig, axes = figure(8, 2.6 * max(1, len(fps)), nrows=max(1, len(fps)))
    if len(fps) <= 1:
        axes = np.array([[axes]])
    for ax, (path, fp) in zip(axes[:, 0], fps):
        tensors = sorted(fp.get("tensors") or [], key=lambda t: -(t.get("dense_bytes") or 0))[:12]
        names = [str(t.get("name", "")).split(";")[0][-32:] for t in tensors]
        stored = [t.get("stored_bytes") or 0 for t in tensors]
        runtime = [t.get("runtime_bytes") or 0 for t in tensors]
        y = np.arange(len(tensors))
        ax.barh(y - 0.2, [s / 1024 for s in stored], height=0.4, label="stored in file")
        ax.barh(y + 0.2, [s / 1024 for s in runtime], height=0.4, label="held at runtime")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("KiB")
        ax.set_title(Path(path).name, fontsize=9)
        ax.legend(fontsize=7)
    save_png(fig, out)

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


def _ops(r: dict[str, Any]) -> str:
    """XNNPACK's share of the model's ops, "62/65" ("—" when the runner did not report it)."""
    ops = r.get("ops") or {}
    if ops.get("total") is None:
        return "—"
    return f"{ops['delegated']}/{ops['total']}"


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
            _ops(r),
        ])
    return out


HEADERS = ["model", "thr", "file bytes", "size ratio", "gzip bytes", "non-zero", "runtime weights",
           "model RSS", "peak RSS", "init ms", "median ms", "p90 ms", "drift", "resolver", "XNNPACK ops"]


def _title(report: Any) -> str:
    tgt = report.target
    rt = tgt.get("runtime", {})
    return (f"profile on {tgt.get('name', 'local')} ({tgt.get('machine', '?')}, {rt.get('name', '?')} "
            f"{rt.get('version', '')})" + _emulated_suffix(tgt))


def console_table(report: Any) -> Any:
    """A rich Table of the report: every column, one row per model x threads (``profile --wide``)."""
    from rich.table import Table

    t = Table(title=_title(report), caption_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("model", "resolver") else "right", no_wrap=h == "model")
    for row in table_rows(report):
        t.add_row(*row)
    if report.notes:
        t.caption = "\n".join(report.notes)
    return t


def _model_labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each model's full file name (its whole path where two models share a file name)."""
    names: dict[str, str] = {}
    for r in rows:
        names.setdefault(r["path"], Path(r["path"]).name)
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {p: (n if counts[n] == 1 else str(p)) for p, n in names.items()}


def _size_table(rows: list[dict[str, Any]], cells: list[list[str]], number: dict[str, int]) -> Any:
    """The stacked output's model table: one row per model (size does not depend on threads).

    It also holds how many of the model's ops XNNPACK took, a property of the model on this runtime
    (every thread count's value, where they differ).
    """
    from rich.table import Table

    size = Table(title="size and XNNPACK's share of the ops (ratios vs [1])", title_justify="left")
    for h in ("#", "file bytes", "size ratio", "gzip bytes", "non-zero", "runtime weights", "XNNPACK ops"):
        size.add_column(h, justify="right", overflow="fold")
    ops: dict[str, list[str]] = {}
    for r, c in zip(rows, cells):
        if c[14] not in ops.setdefault(r["path"], []):
            ops[r["path"]].append(c[14])
    seen: set[str] = set()
    for r, c in zip(rows, cells):
        if r["path"] in seen:
            continue
        seen.add(r["path"])
        size.add_row(f"[{number[r['path']]}]", c[2], c[3], c[4], c[5], c[6], ", ".join(ops[r["path"]]))
    return size


def console_tables(report: Any, width: int, wide: bool = False) -> list[Any]:
    """What ``profile`` prints: the full table if it fits ``width`` columns (or ``wide``), else stacked.

    Stacked: a numbered list of the models' full names, a size table (one row per model: size
    does not depend on threads) and a speed table (model x threads), keyed by the numbers; the
    peak RSS column and the notes' table caption are dropped for plain lines (both are in
    ``--wide``, ``--json`` and ``--report``). No cell is cut short: cells that still do not fit
    fold onto a second line rather than end in "…".

    Args:
        report: A ``ProfileReport``.
        width: The console's width in columns.
        wide: Always return the one full table (the caller widens its console to fit it).

    Returns:
        rich renderables, to print in order.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    full = console_table(report)
    if wide or Console(width=10_000).measure(full).maximum <= width:
        return [full]
    rows = report.rows()
    labels = _model_labels(rows)
    number = {p: i + 1 for i, p in enumerate(labels)}
    cells = table_rows(report)
    base_latency: dict[int, Any] = {}
    for r in rows:
        base_latency.setdefault(r["threads"], r.get("latency_ms"))
    out: list[Any] = [Text(_title(report), style="italic")]
    out += [Text(f"[{number[p]}] {name}") for p, name in labels.items()]

    out.append(_size_table(rows, cells, number))

    speed = Table(title="latency per invoke and memory (ratios vs [1] at the same threads)", title_justify="left")
    for h in ("#", "thr", "median ms", "vs [1]", "p90 ms", "init ms", "model RSS", "drift", "resolver"):
        speed.add_column(h, justify="left" if h == "resolver" else "right", overflow="fold")
    for r, c in zip(rows, cells):
        lat = r.get("latency_ms") or {}
        p = r.get("paired_vs_first")
        if p:
            ratio = f"{p['ratio_median']:.2f}x ({p['ratio_q1']:.2f}–{p['ratio_q3']:.2f})"
        else:
            ratio = _ratio(lat.get("median"), (base_latency.get(r["threads"]) or {}).get("median")).strip(" ()")
        speed.add_row(f"[{number[r['path']]}]", c[1], _ms(lat.get("median")), ratio or "—", c[11], c[9], c[7],
                      c[12], c[13])
    out.append(speed)
    if any(r.get("paired_vs_first") for r in rows):
        out.append(Text("vs [1] with (q1–q3): paired, timed alternately with [1] in one process; "
                        "without: ratio of medians timed apart"))
    out += [Text(f"- {n}") for n in report.notes]
    return out


def write_json(report: Any, path: Path) -> Path:
    """The documented JSON: ``{"models": [{"path", "bytes", ..., "latency_ms": {...}}], ...}``."""
    return _io.write_json(path, report.to_dict())


def write_markdown(report: Any, path: Path) -> Path:
    """Markdown with the table, the notes and two PNG plots written next to it.

    Plots: latency distribution per model (box plot of every timed run; when a run took over 10x
    the smallest median the axis stops above the whiskers and marks those runs on its top edge, see
    :func:`latency_plot_limit`) and size breakdown by
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
        features = f" ({' '.join(tgt['cpu_features'])})" if tgt.get("cpu_features") else ""
        lines[-1] = lines[-1][:-1] + f", CPU {tgt['cpu_model']}{features}."
    if _emulated_suffix(tgt):
        lines += ["", f"**Latency: {EMULATED_LABEL}.** The CPU is emulated; see the notes below."]
    lines += ["", *markdown_table(HEADERS, table_rows(report))]
    if report.notes:
        lines += ["", "## What these numbers mean", ""] + [f"- {n}" for n in report.notes]
    lines += ["", f"![latency distribution]({lat_png.name})", "", f"![size by layer]({size_png.name})", ""]
    return _io.write_text(path, "\n".join(lines))


_OUTLIER_RATIO = 10.0


def latency_plot_limit(samples: list[list[float]]) -> float | None:
    """The latency plot's y-axis top when far outliers would flatten the boxes, else None.

    A single run at 100x the median (a page fault, the machine being busy) would squeeze every box
    into the bottom pixels of a linear axis, and the medians could no longer be compared. When a
    run exceeds 10x the smallest median, the axis stops a little above the highest whisker (the
    boxes keep their linear scale) and the runs beyond it are drawn as markers on the top edge.
    """
    import numpy as np

    data = [np.asarray(d, dtype=float) for d in samples if len(d)]
    if not data:
        return None
    smallest_median = min(float(np.median(d)) for d in data)
    slowest = max(float(np.max(d)) for d in data)
    if smallest_median <= 0 or slowest <= _OUTLIER_RATIO * smallest_median:
        return None
    tops = []
    for d in data:
        q1, q3 = np.percentile(d, [25, 75])
        tops.append(float(np.max(d[d <= q3 + 1.5 * (q3 - q1)])))  # matplotlib's whisker (whis=1.5)
    return max(tops) * 1.25


def _plot_latency(report: Any, out: Path) -> None:
    import numpy as np

    labels, data = [], []
    for r in report.rows():
        samples = r.get("samples_ms") or []
        if samples:
            labels.append(f"{Path(r['path']).name}\n{r['threads']}t")
            data.append(samples)
    fig, ax = figure(max(4, 1.6 * len(data) + 2), 4)
    top = latency_plot_limit(data)
    title = "latency distribution (x: runs beyond the whiskers)"
    if data:
        ax.boxplot(data, showfliers=True, flierprops={"marker": "x", "markersize": 4, "alpha": 0.6})
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    if top is not None:
        ax.set_ylim(0, top)
        beyond = 0
        for i, d in enumerate(data, start=1):
            far = np.asarray(d)[np.asarray(d) > top]
            if len(far):
                beyond += len(far)
                ax.plot([i], [top], marker="^", color="red", clip_on=False)
                ax.annotate(f"{len(far)} off scale, max {far.max():.3g} ms", (i, top), textcoords="offset points",
                            xytext=(0, -12), ha="center", fontsize=7, color="red")
        title += f"\n{beyond} run(s) above {top:.3g} ms are off the scale (red ▲)"
    ax.set_ylabel("latency per invoke (ms)")
    ax.set_title(title, fontsize=9)
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

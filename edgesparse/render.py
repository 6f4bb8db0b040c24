"""What the three renderers (run table, profile report, sweep report) share: number formats,
Markdown tables and PNG figures. Nothing is computed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgesparse import _io

DASH = "—"


def fmt_pct(v: float | None, digits: int = 2) -> str:
    """``0.9861`` -> ``98.61%``; None or NaN -> an em dash."""
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}%}"


def fmt_int(v: float | None) -> str:
    """``46280`` -> ``46,280``; None -> an em dash."""
    return DASH if v is None else f"{int(v):,}"


def fmt(v: Any, spec: str) -> str:
    """``format(v, spec)``; None or NaN -> an em dash."""
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a GitHub Markdown table (``|`` inside cells is escaped as ``/``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def figure(width: float = 7, height: float = 4.5, nrows: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display needed) and its axes (an array if ``nrows > 1``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if nrows == 1:
        return plt.subplots(figsize=(width, height))
    return plt.subplots(nrows, 1, figsize=(width, height), squeeze=False)


def save_png(fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it atomically as PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)

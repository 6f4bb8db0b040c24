"""What the three renderers (run table, profile report, sweep report) share: number formats,
Markdown tables and PNG figures. Nothing is computed here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MetricLabel:
    """How a task's metric is named, formatted and compared in tables, summaries and plots.

    Built from the metric's key (``accuracy``, ``mae``, ``cls/accuracy``) and direction alone, so results
    written without a task (old sweeps, old summaries: accuracy, higher is better) label the same way.
    Units follow :meth:`edgesparse.task.Task.unit`: fractions (accuracy, AUC) in points, errors in percent.
    """

    key: str = "accuracy"
    direction: str = "higher"

    @classmethod
    def of(cls, task: Mapping[str, Any] | None, field: str = "metric") -> MetricLabel:
        """The label of ``task[field]`` (``metric`` or ``guard_metric``) of a ``Task.to_json()`` mapping.

        Args:
            task: The task's JSON (None: a classifier from before the task layer).
            field: ``metric`` (the primary metric) or ``guard_metric`` (what the guards compare).

        Returns:
            The label; the direction is the metric's own for known metrics, else the task's.
        """
        if not task:
            return cls()
        key = str(task.get(field) or task.get("metric") or "accuracy")
        from edgesparse.task import METRICS

        base = key.rsplit("/", 1)[-1]
        direction = METRICS[base][0] if base in METRICS else str(task.get("direction") or "higher")
        return cls(key, direction)

    @property
    def name(self) -> str:
        """As people read it: ``accuracy``, ``mae``, ``cls accuracy``."""
        return self.key.replace("/", " ")

    @property
    def slug(self) -> str:
        """For file names: ``accuracy``, ``mae``, ``cls_accuracy``."""
        return "".join(c if c.isalnum() else "_" for c in self.name)

    @property
    def unit(self) -> str:
        """``points`` (fractions) or ``%`` (a relative change of an error or value)."""
        from edgesparse.task import Task

        return Task.unit(self.key)

    @property
    def fraction(self) -> bool:
        return self.unit == "points"

    @property
    def higher(self) -> bool:
        return self.direction == "higher"

    @property
    def better(self) -> str:
        """The word for 'better than' in this direction: ``above`` or ``below``."""
        return "above" if self.higher else "below"

    def sign(self, value: float) -> float:
        """``value`` signed so that larger is better (for max/sort)."""
        return value if self.higher else -value

    def degradation(self, reference: float, candidate: float) -> float:
        """How much worse ``candidate`` is (positive = worse), as :func:`edgesparse.task.degradation`."""
        from edgesparse.task import degradation

        return degradation(reference, candidate, self.unit, self.direction)

    def fmt(self, value: float | None) -> str:
        """``98.61%`` for fractions, ``0.0412`` for values; None or NaN -> an em dash."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return DASH
        return fmt_pct(value) if self.fraction else f"{value:.4g}"

    def fmt_drop(self, drop: float | None, signed: bool = True) -> str:
        """A degradation in its unit: ``+1.25`` (points) or ``+3.1%``."""
        if drop is None or (isinstance(drop, float) and math.isnan(drop)):
            return DASH
        text = f"{drop:+.2f}" if signed else f"{drop:.2f}"
        return text if self.fraction else text + "%"

    @property
    def drop_label(self) -> str:
        """Column or axis title of a degradation: ``accuracy drop (points)``, ``mae increase (%)``."""
        if self.fraction:
            return f"{self.name} drop (points)"
        return f"{self.name} {'decrease' if self.higher else 'increase'} (%)"

    def plot_value(self, value: float) -> float:
        """Fractions are plotted in percent, values as they are."""
        return 100 * value if self.fraction else value

    def axis_label(self, prefix: str) -> str:
        """``TFLite test accuracy (%)`` or ``TFLite test mae (lower is better)``."""
        return f"{prefix} {self.name} (%)" if self.fraction else f"{prefix} {self.name} ({self.direction} is better)"

"""``edgesparse analyze RECIPE``: channel and unstructured sensitivity of the recipe's trained dense model.

Each channel group is pruned alone at several ratios (no fine-tuning), and the drop of the task's guard metric on
validation (accuracy for a classifier, mae for a regressor, the reconstruction error for an autoencoder; in points
for fractions, relative % for errors), the loss increase and the MACs/parameters saved are measured
(:mod:`edgesparse.train.channels.sensitivity`). For the ``sparsity:`` section, each layer tfmot prunes has its
smallest-magnitude kernel weights zeroed alone at several unstructured levels
(:func:`edgesparse.train.sparsity.layer_sensitivity`), measured the same way. The dense model comes from a finished
run directory (``run_dir``) or is trained here from the recipe's baseline section. Writes ``sensitivity.json``,
``sensitivity.png`` and ``unstructured_sensitivity.png`` into the output folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _io
from edgesparse.check import bind_task
from edgesparse.data.dataset import n_samples
from edgesparse.recipe import ChannelsConfig, Recipe, override
from edgesparse.render import MetricLabel, figure, save_png
from edgesparse.run import load_model, load_run, train
from edgesparse.train import fit
from edgesparse.train.channels import build_graph, sensitivity
from edgesparse.train.channels.cost import build_cost_model
from edgesparse.train.channels.importance import importance
from edgesparse.train.sparsity import LayerSensitivity, layer_sensitivity

log = logging.getLogger(__name__)


@dataclass
class SensitivityReport:
    """What ``analyze`` measured and where it wrote it.

    ``metric`` is the task's guard metric (its key, e.g. ``accuracy``, ``mae``, ``reconstruction_mse``) with
    its ``direction``; the rows' ``accuracy`` and ``accuracy_drop`` hold that metric and its degradation (in
    points for fractions, relative % for errors), ``validation_metric`` the unpruned model's value.
    """

    name: str
    rows: list[sensitivity.SensitivityRow]
    dense_params: int
    dense_macs: int
    validation_metric: float
    metric: str = "accuracy"
    direction: str = "higher"
    frozen: dict[str, str] = field(default_factory=dict)
    unstructured: list[LayerSensitivity] = field(default_factory=list)
    json_path: Path | None = None
    png_path: Path | None = None
    unstructured_png_path: Path | None = None

    @property
    def label(self) -> MetricLabel:
        """How the metric is named and formatted in tables and plots."""
        return MetricLabel(self.metric, self.direction)

    @property
    def validation_accuracy(self) -> float | None:
        """The unpruned model's validation accuracy when the metric is an accuracy (else None)."""
        return self.validation_metric if self.metric.rsplit("/", 1)[-1] == "accuracy" else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "dense_params": self.dense_params, "dense_macs": self.dense_macs,
                "metric": self.metric, "direction": self.direction, "unit": self.label.unit,
                "validation_metric": self.validation_metric, "validation_accuracy": self.validation_accuracy,
                "frozen": self.frozen, "rows": [r.to_dict() for r in self.rows],
                "unstructured": [r.to_dict() for r in self.unstructured]}


def _dense_and_data(recipe: Recipe, out: Path, run_dir: Path | None, force: bool, model: Any = None,
                    data: Any = None) -> tuple[Any, Any]:
    """The trained dense model and the data bound to its task: from ``run_dir``, or a baseline-only run in ``out``."""
    if run_dir is not None:
        loaded = load_run(run_dir, data=data)
        dense, data = loaded.dense_model, loaded.data
    else:
        base = override(recipe, {"channels": None, "sparsity": None, "export": None, "quantization": {"mode": "none"}})
        target = out / "baseline-run"
        resume = (target / "state.json").exists() and not force
        result = train(base, model=model, data=data, run_dir=target, export=False, force=force or resume,
                       resume=resume)
        dense, data = load_model(result.run_dir / "baseline.keras"), load_run(result.run_dir, data=data).data
    if data.task is None:  # load_run binds it; a Dataset from elsewhere may not be
        data = bind_task(dense, data, recipe.task)
    return dense, data


def analyze(recipe: Recipe, *, out_dir: str | Path | None = None, run_dir: str | Path | None = None,
            ratios: list[float] | None = None, force: bool = False, model: Any = None,
            data: Any = None) -> SensitivityReport:
    """Prune every channel group of the recipe's dense model alone at ``ratios`` and measure the cost.

    The cost is measured on the task's guard metric (:attr:`~edgesparse.task.Task.guard_key`) of the
    validation split, the data bound to the dense model's task (:func:`edgesparse.check.bind_task`).

    Args:
        recipe: The recipe (its data, model and baseline sections; ``channels`` for importance and ratios).
        out_dir: Where to write (default ``runs/<name>-analyze``).
        run_dir: A finished run whose ``baseline.keras`` is analysed instead of training one.
        ratios: Fractions of each group removed (default: ``channels.sensitivity_ratios`` or 0.25, 0.5, 0.75).
        force: Retrain the baseline even if ``out_dir`` holds one.
        model: A model object instead of the recipe's model section (as in :func:`edgesparse.train`).
        data: Data objects instead of the recipe's data section (as in :func:`edgesparse.train`).

    Returns:
        The rows, the dense model's figures, and the JSON and PNG paths.

    Raises:
        TrainError: the model has no prunable channel group.
    """
    cfg = recipe.channels or ChannelsConfig(ratio=0.5)
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"{recipe.name}-analyze"
    dense, data = _dense_and_data(recipe, out, Path(run_dir) if run_dir is not None else None, force, model, data)
    task = data.task
    x, y = data.validation().in_memory()
    x_train, y_train = data.train.in_memory()
    graph = build_graph(dense)
    if not graph.groups:
        from edgesparse.train.channels import plan_channels

        plan_channels(dense, cfg, x, y, task=task)  # raises the no-prunable-group error with the frozen layers
    cost = build_cost_model(dense, graph)
    scores = importance(cfg.importance, dense, graph, x=x_train, y=y_train, batches=cfg.taylor_batches,
                        task=task)
    log.info("analyze: %d channel groups x %d ratios on %d validation samples, measuring %s", len(graph.groups),
             len(ratios or cfg.sensitivity_ratios), n_samples(x), task.guard_key.replace("/", " "))
    rows = sensitivity.analyze(dense, graph, scores, cost, x=x, y=y, ratios=tuple(ratios or cfg.sensitivity_ratios),
                               min_keep=cfg.min_keep, task=task)
    full = np.ones(graph.num_units, dtype=bool)
    found = fit.scores(dense, x, y, task=task)[0]
    base = float(found.get(task.guard_key, found.get(task.metric_key, float("nan"))))
    levels = sorted({0.5, 0.75, 0.9} | ({round(recipe.sparsity.final, 4)} if recipe.sparsity is not None else set()))
    report = SensitivityReport(name=recipe.name, rows=rows, dense_params=cost.params(full), dense_macs=cost.macs(full),
                               validation_metric=base, metric=task.guard_key,
                               direction=task.direction_of(task.guard_key), frozen=dict(graph.frozen_layers),
                               unstructured=layer_sensitivity(dense, x, y, tuple(levels), base=base, task=task))
    report.json_path = _io.write_json(out / "sensitivity.json", report.to_dict())
    report.png_path = _plot_drops(report.rows, "group", "macs_saved", "MACs saved (% of the dense model)",
                                  f"{report.name}: each channel group pruned alone, no fine-tuning",
                                  out / "sensitivity.png", report.label)
    report.unstructured_png_path = _plot_drops(
        report.unstructured, "layer", "sparsity", "unstructured sparsity of the layer's kernel (%)",
        f"{report.name}: each layer's kernel pruned alone (smallest magnitudes), no fine-tuning",
        out / "unstructured_sensitivity.png", report.label)
    return report


def _plot_drops(rows: list[Any], name: str, x: str, xlabel: str, title: str, path: Path, metric: MetricLabel) -> Path:
    """The metric's validation drop against ``100 * row.<x>``, one line per ``row.<name>``, each from (0, 0)."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        lines.setdefault(getattr(r, name), []).append((100 * getattr(r, x), r.accuracy_drop))
    fig, ax = figure()
    for label, points in lines.items():
        points = sorted(points)
        ax.plot([0] + [p for p, _ in points], [0] + [d for _, d in points], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"validation {metric.drop_label}" + ("" if metric.fraction else ", positive = worse"))
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_png(fig, path)

"""``edgesparse analyze RECIPE --quantization``: the per-op int8 error of a run's final model.

The run's final model is quantized to int8 by TensorFlow's QuantizationDebugger
(:class:`~edgesparse.export.debugger.QuantDebugger`) on the recipe's calibration samples; one row per
quantized op: the Keras layer it came from, ``rmse``, ``rmse / scale`` (the error in steps of the op's
int8 output), the output's int8 range, sorted worst first. The first :data:`MEASURED_OPS` ops are
also measured kept float alone (one conversion and one test-split verification each): the task's
primary metric of that model and its degradation vs Keras, in points for fractions and % for errors.
Writes ``quantization.json``, ``quantization.png`` into the output folder.

The debugger quantizes to int8 only: for a run in another mode the analysis says what int8 would
lose (``mode_note`` in the JSON); a quantization-aware trained model (qat, pqat) is refused, its
fake-quant ops already fix every op's quantization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.data.stream import model_outputs
from edgesparse.errors import RecipeError
from edgesparse.export.debugger import OpError, QuantDebugger
from edgesparse.export.keep_float import MEASURED_OPS, measure_each
from edgesparse.export.verify import verify
from edgesparse.recipe import ExportConfig, Recipe
from edgesparse.render import figure, save_png
from edgesparse.run import default_run_dir, load_run

log = logging.getLogger(__name__)


@dataclass
class QuantizationReport:
    """What ``analyze --quantization`` measured and where it wrote it."""

    name: str
    rows: list[OpError]
    metric: str
    unit: str
    keras_metric: float | None
    int8_metric: float | None
    int8_drop: float | None
    measured_ops: int
    mode_note: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """quantization.json."""
        return {"name": self.name, "mode": "int8", "mode_note": self.mode_note, "metric": self.metric,
                "unit": self.unit, "keras_metric": self.keras_metric, "int8_metric": self.int8_metric,
                "int8_drop": self.int8_drop, "measured_ops": self.measured_ops,
                "measured_note": f"metric_if_float / drop_if_float: the worst {self.measured_ops} ops, each kept "
                                 "float alone, scored on the test split; the others are not measured (null)",
                "sorted_by": "rmse_over_scale, worst first", "rows": [r.to_dict() for r in self.rows]}


def analyze_quantization(recipe: Recipe, *, run_dir: str | Path | None = None, out_dir: str | Path | None = None,
                         measured: int = MEASURED_OPS, data: Any = None) -> QuantizationReport:
    """Quantize a finished run's final model to int8 with the debugger and rank its ops by error.

    Args:
        recipe: The recipe (its run directory, name and ``export.representative_samples``).
        run_dir: The finished run (default: the recipe's run directory).
        out_dir: Where to write (default: the run directory).
        measured: How many of the worst ops are measured kept float alone.
        data: The data objects the run was trained on, when it had them from Python.

    Returns:
        The rows, the plain int8 figures and the written files.

    Raises:
        RecipeError: the run's model is quantization-aware trained (qat, pqat).
        ExportError: the run directory is incomplete, or the debugger failed.
    """
    run_path = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    run = load_run(run_path, data=data)
    mode = run.recipe.quantization.mode
    if mode in ("qat", "pqat"):
        raise RecipeError(f"analyze --quantization ranks post-training int8 errors, but the run in '{run_path}' is "
                          f"quantization-aware trained ({mode}): its fake-quant ops fix every op's quantization. "
                          "Analyse a run with quantization.mode int8 (or none) instead.")
    note = None if mode == "int8" else (f"the run's mode is {mode}; the debugger quantizes to int8 only, so this is "
                                        "what int8 would lose")
    cfg = run.recipe.export or ExportConfig()
    data = run.data
    outputs = model_outputs(run.final_model, data.test)

    def score(tflite: bytes) -> tuple[float, float | None]:
        v = verify(tflite, data.test, None, outputs, float_model=False, label="int8", task=data.task)
        return v.drop, v.metric

    dbg = QuantDebugger(run.final_model, data.representative(cfg.representative_samples, seed=run.recipe.seed))
    rows = dbg.rows()
    log.info("analyze --quantization: %d quantized ops; measuring the worst %d kept float", len(rows),
             min(measured, len(rows)))
    v = verify(dbg.model([]), data.test, None, outputs, float_model=False, label="int8", task=data.task)
    measure_each(dbg, rows, score, cap=measured)
    report = QuantizationReport(name=recipe.name, rows=rows, metric=data.task.metric_key, unit=v.unit,
                                keras_metric=v.keras_metric, int8_metric=v.metric, int8_drop=v.drop,
                                measured_ops=min(measured, len(rows)), mode_note=note)
    out = Path(out_dir) if out_dir is not None else run_path
    report.files["json"] = str(_io.write_json(out / "quantization.json", report.to_dict()))
    report.files["png"] = str(_plot(report, out / "quantization.png"))
    return report


def _plot(report: QuantizationReport, path: Path) -> Path:
    """rmse / scale per op, worst first, each bar labelled with the drop measured keeping that op float."""
    rows = report.rows
    fig, ax = figure(width=max(6.0, 0.6 * len(rows) + 2))
    names = [f"{r.layer or r.tensor[:20]}\n{r.op}" for r in rows]
    bars = ax.bar(range(len(rows)), [r.rmse_over_scale for r in rows], color="tab:red")
    for bar, r in zip(bars, rows):
        if r.drop_if_float is not None:
            ax.annotate(f"{r.drop_if_float:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, fontsize="x-small")
    ax.set_ylabel("rmse / scale (steps of the op's int8 output)")
    lost = "" if report.int8_drop is None else f", int8 loses {report.int8_drop:.2f} {report.unit}"
    ax.set_title(f"{report.name}: int8 error per op{lost}; labels: {report.unit} lost with only that op float",
                 fontsize="small")
    return save_png(fig, path)

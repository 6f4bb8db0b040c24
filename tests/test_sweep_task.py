"""The sweep, analyze and validate read the task: a regressor's report is named after its mae, lower is better."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.check import CheckReport
from edgesparse.recipe import validate_recipe
from edgesparse.render import MetricLabel
from edgesparse.sweep import sweep
from edgesparse.sweep.report import aggregate, pareto, summary_lines, write_report
from edgesparse.sweep.results import read_results
from tests.conftest import tiny_recipe


def _regression_recipe(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x @ rng.normal(size=12) + 0.1 * rng.normal(size=300)).astype(np.float32)  # float targets: regression
    np.savez(tmp / "reg.npz", x=x, y=y)
    return tiny_recipe(tmp, data={"npz": str(tmp / "reg.npz"), "batch_size": 64},
                       model={"factory": "tests.factories:tiny_regressor"},
                       baseline={"epochs": 3, "optimizer": {"learning_rate": 0.02}},
                       sparsity={"epochs": 1, "end": 1, "frequency": 1})


@pytest.fixture(scope="module")
def regression_sweep(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("regsweep")
    base = validate_recipe(_regression_recipe(tmp))
    return sweep(base, {"sparsity.final": [0.5, 0.8]}, root=tmp / "sw", profile_runs=0)


def test_a_regression_sweep_records_and_reports_its_mae(regression_sweep: Any) -> None:
    res = regression_sweep
    assert [r["status"] for r in res.rows] == ["ok", "ok"], res.rows
    for r in res.rows:
        assert r["metric"] == "mae" and r["direction"] == "lower"
        assert r["tflite_metric"] > 0 and r["keras_metric"] > 0 and r["baseline_metric"] > 0
        assert r["tflite_accuracy"] is None and r["baseline_accuracy"] is None  # a regressor has no accuracy
    with open(res.root / "results.csv") as f:
        header = next(csv.reader(f))
    assert {"metric", "direction", "baseline_metric", "keras_metric", "tflite_metric", "tflite_accuracy"} <= set(header)
    report = (res.root / "report.md").read_text()
    assert "TFLite mae" in report and "mae increase (%)" in report and "TFLite acc" not in report
    assert "keeps TFLite mae" in report and "Pareto front (size vs mae, lower is better)" in report
    for png in ("mae_vs_sparsity", "mae_vs_size", "latency_vs_mae", "layer_sparsity"):
        assert (res.root / f"{png}.png").stat().st_size > 1000
    assert not (res.root / "accuracy_vs_size.png").exists()
    points = aggregate(res.rows, ["sparsity.final"])
    m = MetricLabel("mae", "lower")
    for p in points:  # the drop is the relative increase of the mae, in %
        assert p["unit"] == "%" and p["drop_points"] is None
        assert p["drop"] == pytest.approx(m.degradation(p["baseline_metric"], p["tflite_metric"]))
    front = pareto(points)
    assert min(points, key=lambda p: p["tflite_metric"]) in front  # the lowest error is never beaten
    for p in points:  # nothing on the front is beaten by a point both smaller and with a lower mae
        if p in front:
            assert not any(q["tflite_bytes"] <= p["tflite_bytes"] and q["tflite_metric"] <= p["tflite_metric"]
                           and q is not p and (q["tflite_bytes"] < p["tflite_bytes"]
                                               or q["tflite_metric"] < p["tflite_metric"]) for q in points)


def test_pareto_minimises_an_error_and_maximises_an_accuracy() -> None:
    def pts(direction: str) -> list[dict[str, Any]]:
        return [{"name": n, "tflite_bytes": b, "tflite_metric": v, "direction": direction}
                for n, b, v in (("a", 100, 0.2), ("b", 200, 0.1), ("c", 300, 0.3))]

    assert [p["name"] for p in pareto(pts("lower"))] == ["a", "b"]  # c: bigger and a worse error than b
    assert [p["name"] for p in pareto(pts("higher"))] == ["a", "c"]  # b: bigger and less accurate than a
    old = [{"tflite_bytes": 100, "tflite_accuracy": 0.9}, {"tflite_bytes": 200, "tflite_accuracy": 0.8}]
    assert pareto(old) == old[:1]  # points without a metric column are read as accuracies


def test_an_old_accuracy_only_results_csv_still_renders(tmp_path: Path) -> None:
    cols = ["trial", "repeat", "seed", "sparsity.final", "status", "baseline_accuracy", "keras_accuracy",
            "tflite_accuracy", "agreement", "sparsity", "dense_tflite_bytes", "tflite_bytes", "gzip_bytes",
            "runtime_weight_bytes", "latency_median_ms", "train_seconds", "error"]
    rows = [["final=0.5-r0", 0, 0, 0.5, "ok", 0.95, 0.94, 0.94, 1.0, 0.5, 40000, 22000, 15000, 40000, 0.05, 3.0, ""],
            ["final=0.9-r0", 0, 0, 0.9, "ok", 0.95, 0.90, 0.905, 0.98, 0.9, 40000, 9000, 6000, 40000, 0.05, 3.0, ""]]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)
    result, axes = read_results(tmp_path)
    assert axes == ["sparsity.final"] and result.rows[1]["tflite_accuracy"] == 0.905
    write_report(result, axes)
    report = (tmp_path / "report.md").read_text()
    assert "TFLite acc" in report and "drop (pt)" in report and "accuracy (higher is better)" in report
    assert "At 90% sparsity, default keeps TFLite accuracy within 4.5 points of dense (90.50% vs 95.00%" in report
    assert (tmp_path / "accuracy_vs_size.png").stat().st_size > 1000
    lines = summary_lines(aggregate(result.rows, axes), axes, None)
    assert any(line.startswith("Pareto front (size vs accuracy, higher is better)") for line in lines)


def test_analyze_measures_and_labels_a_regressors_mae(regression_sweep: Any, tmp_path: Path) -> None:
    from rich.console import Console

    from edgesparse.analyze import analyze
    from edgesparse.report import sensitivity_table, unstructured_sensitivity_table

    baseline_run = next((regression_sweep.root / "baselines").iterdir()) / "run"
    recipe = validate_recipe(json.loads(json.dumps(_regression_recipe(tmp_path))))
    report = analyze(recipe, out_dir=tmp_path / "an", run_dir=baseline_run, ratios=[0.5])
    assert report.metric == "mae" and report.direction == "lower" and report.validation_accuracy is None
    assert report.validation_metric > 0 and [r.group for r in report.rows] == ["fc1"]
    for r in report.rows + report.unstructured:  # the row holds the mae, its drop the relative increase
        assert r.accuracy > 0
        assert r.accuracy_drop == pytest.approx(100 * (r.accuracy - report.validation_metric)
                                                / report.validation_metric)
    saved = json.loads(report.json_path.read_text())
    assert saved["metric"] == "mae" and saved["unit"] == "%"
    console = Console(width=250, record=True)
    console.print(sensitivity_table(report))
    console.print(unstructured_sensitivity_table(report))
    text = console.export_text()
    assert "validation mae" in text and "mae increase (%)" in text and "val. mae" in text
    assert "accuracy" not in text
    assert report.png_path.stat().st_size > 1000 and report.unstructured_png_path.stat().st_size > 1000


def test_validate_lines_read_well_for_a_regressor_and_for_several_outputs(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe

    lines = check_recipe(validate_recipe(_regression_recipe(tmp_path))).lines()
    assert "classes" not in " ".join(lines), lines
    assert lines[0].endswith("input (12,), targets scalar") and "-> 1 regression unit: fits the data" in lines[2]
    assert lines[1].startswith("task: regression, metric mae (lower is better)")
    heads = [{"name": "cls", "kind": "classification", "units": 4}, {"name": "box", "kind": "regression", "units": 4}]
    multi = CheckReport(
        data={"name": "det", "train": 8, "validation": 2, "test": 2, "input_shape": [12], "num_classes": 4,
              "target_shapes": {"cls": [], "box": [4]}},
        model={"name": "detector", "params": 1000, "input_shape": [12], "output_shape": [4]},
        task={"kind": "multi", "metric": "cls/accuracy", "direction": "higher", "reason": "inferred",
              "primary": "cls", "outputs": heads}).lines()
    assert "-> 2 outputs: cls (4 classes), box (4 regression units): fits the data" in multi[2]
    assert multi[1].startswith("task: several outputs (cls classification, box regression; primary cls), "
                               "metric cls accuracy")

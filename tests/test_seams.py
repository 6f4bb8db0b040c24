"""Small seams a new user meets (issue 32, item 6): a local deploy without --dest that leaves no temporary folder,
a task metric module next to the recipe, sensor windows kept (T, C), and a channels-only run without a coverage
figure."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli import main
from tests.conftest import tiny_recipe, write_recipe


def test_local_deploy_needs_no_dest_and_leaves_no_temporary_folder(trained_run: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgesparse.device.deploy import deploy

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp / TemporaryDirectory create folders
    r = CliRunner().invoke(main, ["deploy", str(trained_run.run_dir), "--target", "local"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "deployed to local:" in r.output and "temporary copy, removed" in r.output
    assert not list(scratch.iterdir())  # no edgesparse-local-* (nor any other) folder left behind
    res = deploy(trained_run.run_dir, "local")  # the Python API the same
    assert res.files and not list(scratch.iterdir())
    kept = deploy(trained_run.run_dir, "local", dest=str(tmp_path / "device"))
    assert (tmp_path / "device" / Path(trained_run.summary.tflite.path).name).exists() and kept.remote_dir


def test_windows_and_a_metric_module_next_to_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(N, 32, 3) float windows stay (32, 3), and ``task.metric: my_metrics:balanced`` imports from the recipe's
    folder when the command runs elsewhere."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    t = np.linspace(0, 1, 32, dtype=np.float32)[None, :, None]
    x = (np.sin(2 * np.pi * (y[:, None, None] + 1) * t * np.array([1.0, 2.0, 3.0], np.float32))
         + 0.3 * rng.normal(size=(600, 32, 3))).astype(np.float32)
    folder = tmp_path / "project"
    folder.mkdir()
    np.savez(folder / "windows.npz", x=x, y=y)
    (folder / "my_metrics.py").write_text(
        "import numpy as np\n\n"
        "def balanced(y_true, y_pred):\n"
        "    y_true = np.asarray(y_true).reshape(-1)\n"
        "    hit = np.argmax(y_pred, axis=-1) == y_true\n"
        "    return float(np.mean([hit[y_true == c].mean() for c in np.unique(y_true)]))\n")
    recipe = tiny_recipe(tmp_path, data={"npz": "windows.npz", "batch_size": 64},
                         model={"builtin": "mlp", "hidden": [32]}, baseline={"epochs": 3},
                         task={"metric": "my_metrics:balanced", "direction": "higher"},
                         sparsity=None, export=None)
    path = write_recipe(folder, recipe)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = CliRunner().invoke(main, ["train", str(path), "--no-export"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert re.search(r"input \(32, 3\)", r.output) and "(32, 3, 1)" not in r.output, r.output
    assert "my_metrics:balanced" in r.output or "balanced" in r.output
    import json

    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    r = CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)  # validate (check) imports it too
    assert r.exit_code == 0, r.output
    assert s["task"]["metric"] == "balanced" and s["data"]["input_shape"] == [32, 3]  # named after the function
    assert s["baseline"]["metric"] > 0.5  # learned the three frequencies


def test_a_channels_only_run_reports_no_coverage(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, baseline={"epochs": 2}, channels={"ratio": 0.5, "epochs": 1, "on_drop": "warn"},
                         sparsity=None, export=None)
    r = CliRunner().invoke(main, ["train", str(write_recipe(tmp_path, recipe)), "--no-export"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "coverage 0.0%" not in r.output and "(no sparsity phase)" in r.output, r.output
    final = next(line for line in r.output.splitlines() if "final (" in line)
    assert "0.00%" not in final, final  # the table's coverage cell is a dash, not 0.00%

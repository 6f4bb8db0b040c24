"""The CLI: exit codes, one-paragraph errors, the commands' output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edgesparse.cli import main
from tests.conftest import tiny_recipe, write_recipe


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_missing_recipe_exits_1_with_message(tmp_path: Path) -> None:
    r = _invoke("train", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 1
    assert "does not exist" in r.output and "Traceback" not in r.output


def test_usage_error_exits_2() -> None:
    r = _invoke("train")
    assert r.exit_code == 2


def test_bad_override_exits_1(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    r = _invoke("train", str(path), "--set", "sparsity.final=1.5")
    assert r.exit_code == 1 and "sparsity.final" in r.output


def test_unknown_dataset_exits_1(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, data={"builtin": "mnist"}))
    r = _invoke("validate", str(path))
    assert r.exit_code == 1 and "digits" in r.output


def test_schema_is_json() -> None:
    r = _invoke("schema")
    assert r.exit_code == 0
    assert "properties" in json.loads(r.output)


def test_validate_prints_resolved_recipe(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    r = _invoke("validate", str(path), "--set", "quantization.mode=int8")
    assert r.exit_code == 0 and "mode: int8" in r.output and "frequency:" in r.output


def test_inspect_shows_sparse_encoding(trained_run: Any) -> None:
    r = _invoke("inspect", trained_run.summary.tflite.path)
    assert r.exit_code == 0, r.output
    assert "DENSIFY" in r.output
    r = _invoke("inspect", "--json", trained_run.summary.tflite.path)
    info = json.loads(r.output)
    assert info["densify_ops"] >= 1


def test_inspect_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    r = _invoke("inspect", str(bad))
    assert r.exit_code == 1 and "TFLite" in r.output


def test_export_run_dir_again(trained_run: Any, tmp_path: Path) -> None:
    r = _invoke("export", str(trained_run.run_dir), "-o", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "b" / "export.json").read_text())
    assert info["model"]["bytes"] == (tmp_path / "b" / "model.tflite").stat().st_size
    # the same models re-created from the run directory give the same verified accuracy
    assert info["verification"]["accuracy"] == trained_run.summary.tflite.accuracy


def test_export_of_a_non_run_dir(tmp_path: Path) -> None:
    r = _invoke("export", str(tmp_path))
    assert r.exit_code == 1 and "not a run directory" in r.output

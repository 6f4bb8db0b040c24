"""The README's two set-up commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    idx = next(i for i, line in enumerate(lines) if "README's test command" in line)
    return lines[idx + 1].strip()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _ci_command() in readme


def test_readme_quickstart_command_names_a_shipped_recipe() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install -e . && edgesparse train recipes/quickstart.yaml" in readme
    assert (ROOT / "recipes" / "quickstart.yaml").exists()


def _python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_python_example_runs_on_the_quickstart(tmp_path: Path) -> None:
    """The documented Python API example, verbatim, end to end (trains the quickstart: about a minute)."""
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    script = tmp_path / "example.py"
    script.write_text(_python_example())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    head = lines[0]
    assert head.startswith("TFLite accuracy ") and "of the dense file" in head
    accuracy = float(head.split()[2].rstrip("%"))
    ratio = float(head.split("1/")[1].split()[0])
    assert accuracy >= 96.0 and ratio >= 14  # the quickstart's documented targets
    assert [line.split()[0] for line in lines[1:3]] == ["export/api/dense.tflite", "export/api/model.tflite"]
    assert lines[3].endswith("DENSIFY ops") and int(lines[3].split()[0]) >= 1
    assert (tmp_path / "runs" / "api" / "summary.json").exists()
    assert "edgesparse.run: baseline: training" in proc.stderr  # logging reaches the user's handler

"""The README's two set-up commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

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

"""The documentation site: it builds with --strict, its recipe reference is current, and every code block in
the guides is run by a test or marked as not runnable with the reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DOCS = ROOT / "docs"
MARK = re.compile(r"<!-- docs-test: (.*?) -->")
FENCE = re.compile(r"^```")


def _blocks() -> list[tuple[str, int, str, str, str]]:
    """(file, line, language, marker, text) of every fenced code block in docs/."""
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text().splitlines()
        i = 0
        while i < len(lines):
            if FENCE.match(lines[i]):
                lang = lines[i][3:].strip()
                end = next(j for j in range(i + 1, len(lines)) if FENCE.match(lines[j]))
                prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
                m = MARK.fullmatch(prev.strip())
                out.append((str(page.relative_to(ROOT)), i + 1, lang, m.group(1) if m else "",
                            "\n".join(lines[i + 1:end]) + "\n"))
                i = end
            i += 1
    return out


def _readme_blocks() -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_every_docs_code_block_is_run_or_says_why_not() -> None:
    blocks = _blocks()
    assert len(blocks) >= 10
    unmarked = [f"{f}:{line}" for f, line, _, mark, _ in blocks if not mark]
    assert not unmarked, f"code blocks without a <!-- docs-test: ... --> marker: {unmarked}"
    for f, line, _, mark, _ in blocks:
        kind = mark.split(":", 1)[0]
        assert kind in ("recipe", "recipe-section", "readme", "not run"), f"{f}:{line}: unknown marker {mark!r}"
        if kind == "not run":
            assert len(mark.split(":", 1)[1].strip()) >= 10, f"{f}:{line}: say why the block is not run"


def _minimal(section: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "docs", "data": {"builtin": "digits"}, "model": {"builtin": "small_cnn"}}
    return {**base, **section}


def test_docs_recipe_blocks_validate() -> None:
    """Blocks marked recipe are whole recipes; recipe-section blocks (one YAML document per alternative) are
    sections that a minimal recipe takes: both go through the recipe's validation (no data or model loaded)."""
    from edgesparse.recipe import validate_recipe

    checked = 0
    for f, line, _, mark, text in _blocks():
        if mark == "recipe":
            validate_recipe(yaml.safe_load(text))
            checked += 1
        elif mark == "recipe-section":
            for doc in yaml.safe_load_all(text):
                try:
                    validate_recipe(_minimal(doc))
                except Exception as exc:  # noqa: BLE001 - name the block
                    pytest.fail(f"{f}:{line}: {exc}")
                checked += 1
    assert checked >= 7


def test_docs_readme_blocks_are_the_readme_s_own() -> None:
    """Blocks marked readme are copies of README blocks that CI runs (the set-up commands, by .ci/run) or a test
    runs verbatim (the Python API example, tests/test_readme.py): they must not drift apart."""
    readme = _readme_blocks()
    marked = [(f, line, text) for f, line, _, mark, text in _blocks() if mark == "readme"]
    assert marked
    for f, line, text in marked:
        assert text in readme, f"{f}:{line} differs from every README block"


def test_recipe_reference_is_current() -> None:
    from edgesparse.recipe_reference import render

    page = (DOCS / "reference" / "recipe.md").read_text()
    assert page == render(), "stale: run `edgesparse schema --markdown > docs/reference/recipe.md`"
    from edgesparse.recipe import json_schema

    for name in json_schema()["$defs"]:
        assert f"## {name}\n" in page


def test_docs_site_builds_strict(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "edgesparse.run.train" in api  # the API page is generated from the docstrings


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300

"""The Python API as a notebook or a script uses it: progress shown by default (bars in a Jupyter cell, lines
when logging is unconfigured), ``progress=False`` silent, and a result whose repr is the summary table."""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgesparse import progress
from tests.conftest import tiny_recipe


class _Handle:
    """What ``IPython.display.display(obj, display_id=True)`` returns: records every state the cell showed."""

    def __init__(self, shown: list[Any]) -> None:
        self.shown = shown

    def update(self, obj: Any) -> None:
        self.shown.append(obj)


@contextlib.contextmanager
def _unconfigured_logging() -> Iterator[None]:
    """A fresh interpreter's logging: no handler anywhere (pytest's capture handlers, which it attaches to the
    root logger for each test phase, are set aside while the block runs)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        assert not progress.logging_configured()
        yield
    finally:
        root.handlers[:] = saved


@pytest.fixture
def notebook(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """A Jupyter kernel as seen from the package: ``IPython.get_ipython()`` is a kernel shell and
    ``IPython.display.display`` shows objects in the cell (each output area's states are recorded)."""
    areas: list[list[Any]] = []

    class ZMQInteractiveShell:
        def __init__(self) -> None:
            self.config: dict[str, Any] = {"IPKernelApp": {}}

    def display(obj: Any, display_id: bool = False) -> _Handle:
        assert display_id
        areas.append([obj])
        return _Handle(areas[-1])

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    assert progress.interactive() == "notebook"
    return areas


def _train(tmp_path: Path, **kwargs: Any) -> Any:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    recipe = validate_recipe(tiny_recipe(tmp_path, baseline={"epochs": 2}, sparsity={"epochs": 1}, export=None))
    return train(recipe, export=False, **kwargs)


def test_notebook_shows_a_bar_per_phase_and_its_epochs_and_the_result_reads_as_a_table(
        tmp_path: Path, notebook: list[list[Any]], capsys: pytest.CaptureFixture[str]) -> None:
    with _unconfigured_logging():
        result = _train(tmp_path)

    assert [area[0].phase for area in notebook] == ["baseline", "sparsity"]  # one output area per phase
    final = [area[-1] for area in notebook]
    assert len(notebook[0]) > 3  # updated in place while training
    assert [len(b.lines) for b in final] == [2, 1] and not any(b.running for b in final)
    assert final[0].lines[1].startswith("baseline epoch 2/2: loss ")
    html, text = final[1]._repr_html_(), repr(final[1])
    assert "<progress value='1' max='1'" in html and "sparsity epoch 1/1: loss" in html
    assert "sparsity epoch [" in text and "] 1/1" in text
    running = notebook[0][1]  # a state within the first epoch shows the batch bar too
    assert running.running and "batch" in repr(running) and "loss " in running.info

    err = capsys.readouterr().err
    assert " epoch 1/" not in err  # the epochs are in the cell, not repeated on stderr

    shown = repr(result)
    assert "dense vs final" in shown and "Keras acc." in shown and "75.00%" in shown  # the sparsity reached
    assert f"run directory: {result.run_dir}" in shown and "RunSummary" not in shown
    assert repr(result.summary).startswith("RunSummary 'tiny'") and "Keras acc." in repr(result.summary)


def test_a_script_without_logging_prints_one_line_per_epoch_and_progress_false_prints_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert progress.interactive() is None  # stderr is captured: no bars
    with _unconfigured_logging():
        _train(tmp_path / "a")
    out = capsys.readouterr()
    epochs = [line for line in out.err.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in epochs] == ["· baseline epoch 1/2", "· baseline epoch 2/2",
                                                        "· sparsity epoch 1/1"]
    assert out.out == ""
    assert not logging.getLogger("edgesparse").handlers  # the handler left with the call

    with _unconfigured_logging():
        _train(tmp_path / "b", progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""

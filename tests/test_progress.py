"""Progress reporting (edgesparse.progress): one record per epoch of every training phase, ``i/N`` records of
long steps, plain lines on a pipe, nothing printed through the API."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgesparse import progress
from edgesparse.task import Head, Task
from tests.conftest import tiny_recipe, write_recipe

EPOCH_LINE = re.compile(r"^· (\w+) epoch (\d+)/(\d+): loss [0-9.e-]+, accuracy [0-9.e-]+, val loss [0-9.e-]+, "
                        r"val accuracy [0-9.e-]+, (sparsity [0-9.]+%, )?\S+/epoch, elapsed \S+, ETA \S+$")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == event]


@pytest.fixture
def records() -> Iterator[_Records]:
    """A handler on the progress logger, attached the way an API user would (INFO)."""
    handler = _Records()
    logger = logging.getLogger("edgesparse.progress")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_cli_train_on_a_pipe_prints_one_plain_line_per_epoch_of_every_phase(tmp_path: Path) -> None:
    from edgesparse.cli import main

    recipe = tiny_recipe(tmp_path, baseline={"epochs": 2}, sparsity={"epochs": 2}, export=None,
                         quantization={"mode": "qat", "epochs": 1})
    r = CliRunner().invoke(main, ["train", str(write_recipe(tmp_path, recipe)), "--no-export"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output and "\x1b" not in r.output  # no bar redrawn on a pipe
    lines = [line for line in r.output.splitlines() if re.match(r"^· \w+ epoch \d", line)]
    assert [EPOCH_LINE.match(line) is not None for line in lines] == [True] * len(lines), lines
    seen = [(m[1], int(m[2]), int(m[3])) for m in map(EPOCH_LINE.match, lines) if m is not None]
    assert seen == [("baseline", 1, 2), ("baseline", 2, 2), ("sparsity", 1, 2), ("sparsity", 2, 2),
                    ("quantization", 1, 1)]
    assert all("sparsity " in line for line in lines if line.startswith("· sparsity"))
    assert not any("sparsity " in line for line in lines if line.startswith("· baseline"))
    assert lines[-1].endswith("ETA 0s") and lines[1].endswith("ETA 0s")


class _Live(progress.Listener):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def phase_begin(self, phase: str, epochs: int, first_epoch: int, steps: int | None) -> None:
        self.calls.append(("begin", phase, epochs, first_epoch, steps))

    def batch_end(self, phase: str, epoch: int, step: int, steps: int | None, loss: float | None,
                  elapsed: float, eta: float | None) -> None:
        self.calls.append(("batch", epoch, step, steps))


def test_api_run_logs_structured_epoch_records_and_prints_nothing(
        tmp_path: Path, records: _Records, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    recipe = validate_recipe(tiny_recipe(tmp_path, baseline={"epochs": 2}, sparsity=None, export=None))
    live, screen = _Live(), io.StringIO()
    with progress.listening(live), progress.listening(progress.RichDisplay(Console(file=screen, force_terminal=True))):
        train(recipe, export=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the API prints nothing; only the records carry progress

    epochs = records.of("epoch")
    assert [(r.phase, r.epoch, r.epochs) for r in epochs] == [("baseline", 1, 2), ("baseline", 2, 2)]
    for r in epochs:
        assert r.metric_name == "accuracy" and 0 <= r.metric <= 1 and 0 <= r.val_metric <= 1
        assert r.loss > 0 and r.val_loss > 0 and r.sparsity is None
        assert r.seconds > 0 and r.elapsed >= r.seconds and r.eta >= 0
        assert r.getMessage().startswith(f"baseline epoch {r.epoch}/2: loss ")
    assert epochs[0].eta == pytest.approx(epochs[0].seconds, rel=1e-6) and epochs[1].eta == 0

    steps = -(-1259 // 64)  # digits: 1259 training samples, batches of 64
    assert live.calls[0] == ("begin", "baseline", 2, 0, steps)
    batches = [c for c in live.calls if c[0] == "batch"]
    assert batches[:2] == [("batch", 1, 1, steps), ("batch", 1, 2, steps)] and batches[-1] == ("batch", 2, steps,
                                                                                                 steps)
    assert "baseline epoch" in screen.getvalue()  # the rich bars rendered


def test_long_steps_say_what_they_do_and_how_far(records: _Records, tiny_tflite: dict[str, Path]) -> None:
    import numpy as np

    from edgesparse import _tf
    from edgesparse.profile.measure import profile
    from edgesparse.train.sparsity import layer_sensitivity

    keras = _tf.keras()
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(hidden))
    rng = np.random.default_rng(0)
    layer_sensitivity(model, rng.random((16, 6), dtype=np.float32), rng.integers(0, 3, 16), levels=(0.5, 0.9))
    profile([tiny_tflite["dense"], tiny_tflite["int8"]], runs=3, warmup=1)

    items = [(r.step, r.index, r.total) for r in records.of("item")]
    assert items == [("unstructured sensitivity", 1, 2), ("unstructured sensitivity", 2, 2),
                     ("latency", 1, 2), ("latency", 2, 2)]
    msgs = [r.getMessage() for r in records.of("item")]
    assert msgs[0].startswith("unstructured sensitivity 1/2: layer fc1 (48 weights) at sparsity 0.5, 0.9")
    assert msgs[3].startswith("latency 2/2: model int8.tflite on local") and "alternately with dense" in msgs[3]


def _head(name: str, kind: str, metric: str) -> Head:
    return Head(name=name, kind=kind, loss="mse", metric=metric, metrics=(metric,), direction="higher")


@pytest.mark.parametrize(("task", "keys", "found"), [
    (None, ["loss", "accuracy", "val_accuracy"], ("accuracy", "accuracy")),
    (Task(heads=(_head("out", "binary", "auc"),), primary="out"), ["loss", "accuracy", "auc"], ("auc", "auc")),
    (Task(heads=(_head("cls", "classification", "accuracy"), _head("box", "regression", "mae")), primary="cls"),
     ["loss", "prune_low_magnitude_box_mae", "prune_low_magnitude_cls_accuracy", "val_cls_accuracy"],
     ("prune_low_magnitude_cls_accuracy", "cls accuracy")),
    (Task(heads=(_head("ae", "anomaly", "auc"),), primary="ae"), ["loss", "mse"], ("mse", "reconstruction_mse")),
    (Task(heads=(_head("y", "regression", "rmse"),), primary="y"), ["loss", "mae"], None),
])
def test_metric_log_key_finds_the_primary_metric_or_falls_back_to_loss(task: Task | None, keys: list[str],
                                                                       found: tuple[str, str] | None) -> None:
    assert progress.metric_log_key(task, keys) == found


def test_durations_read_well() -> None:
    assert [progress.duration(s) for s in (0.42, 3.21, 42.4, 245, 3725, float("inf"))] == [
        "0.42s", "3.2s", "42s", "4m05s", "1h02m", "?"]

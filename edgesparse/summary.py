"""``RunSummary``: the one typed contract for a run's ``summary.json``.

The orchestrator (:mod:`edgesparse.run`) writes it; the console report, the sweep, ``profile`` and
``deploy`` read it through :func:`read_summary`, by attribute. Every section allows extra keys, so
a summary written by a newer edgesparse still loads, and the JSON keeps every key it had before the
schema was typed (``schema_version`` tells the versions apart; summaries without it are version 0).

This module is light (pydantic only): reading a summary never imports TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgesparse import _io
from edgesparse.errors import EdgesparseError

SCHEMA_VERSION = 2  # 2: the task layer (task, metric, metrics); version-1 files still read
SUMMARY_FILE = "summary.json"


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class DataInfo(_Section):
    """Split sizes, input shape and classes of the run's data."""

    name: str = ""
    train: int = 0
    validation: int = 0
    test: int = 0
    input_shape: list[int | None] = []
    num_classes: int = 0
    class_names: list[str] = []
    input_shapes: dict[str, list[int | None]] | None = None
    target_shapes: Any = None
    #: where the data came from: the recipe's source, or ``{"python": ...}`` for objects given to the API, and
    #: for streamed data each split's length and element spec (shapes and dtypes, never the contents)
    source: dict[str, Any] | None = None


class BaselineInfo(_Section):
    """The dense baseline: Keras figures, and its float32 .tflite once exported.

    ``metric`` is the task's primary metric on the test split (``accuracy`` too where the task has it),
    ``metrics`` every metric the task computes, ``validation_metric`` the figure the guards compare.
    """

    accuracy: float | None = None
    params: int
    metric: float | None = None
    metrics: dict[str, float] = {}
    validation_metric: float | None = None
    epochs: int = 0
    seconds: float = 0.0
    step_ms: float | None = None
    shared: bool = False  # cloned from a baseline shared by a sweep's trials
    validation_accuracy: float | None = None
    keras3_input: bool = False  # the user's model came as Keras 3 and was translated to tf_keras
    keras3_translation_diff: float | None = None  # max abs output difference of that translation
    tflite_bytes: int | None = None
    tflite_gzip_bytes: int | None = None
    tflite_path: str | None = None
    tflite_accuracy: float | None = None
    tflite_metric: float | None = None
    health: dict[str, Any] | None = None  # the baseline health check: chance level, figures, findings, status


class ChannelGroupInfo(_Section):
    """One coupled channel group: its layers, prunable channels and how many were kept."""

    name: str
    layers: list[str] = []
    channels: int = 0
    kept: int = 0


class ChannelsInfo(_Section):
    """Channel pruning: dense vs thinned parameters and MACs, per-group decisions, frozen layers."""

    target: dict[str, float] = {}
    allocation: str = "uniform"
    importance: str = "l2"
    schedule: str = "oneshot"  # oneshot: thin, then fine-tune; gradual: mask step by step while fine-tuning, thin
    schedule_steps: dict[str, int] = {}  # gradual: begin_step, end_step, frequency of the mask updates
    epochs: int = 0
    seconds: float = 0.0
    step_ms: float | None = None
    dense_params: int = 0
    params: int = 0
    dense_macs: int = 0
    macs: int = 0
    groups: list[ChannelGroupInfo] = []
    frozen: dict[str, str] = {}  # layer -> why its channels are never pruned
    max_abs_diff: float | None = None  # thinned vs masked model outputs (oneshot: before, gradual: after fine-tuning)
    validation_accuracy_pruned: float | None = None  # oneshot: right after surgery, before fine-tuning (gradual: None)
    validation_accuracy: float | None = None  # after fine-tuning
    validation_metric_pruned: float | None = None  # the task's guard metric (accuracy for classifiers), likewise
    validation_metric: float | None = None
    latency_ratio: float | None = None  # thinned float .tflite / dense float .tflite, paired, when measured
    latency_trials: list[dict[str, float]] = []
    dense_tflite_bytes: int | None = None
    tflite_bytes: int | None = None


class SparsityMeasure(_Section):
    """Zeros over pruned kernels: overall, and per layer."""

    overall: float = 0.0
    zeros: int = 0
    params: int = 0
    layers: dict[str, float] = {}


class SparsityInfo(_Section):
    """The pruning phase: its plan (per-layer decisions) and what the weights achieved."""

    epochs: int = 0
    seconds: float = 0.0
    step_ms: float | None = None
    plan: dict[str, Any] = {}
    achieved: SparsityMeasure = SparsityMeasure()
    dynamic: dict[str, Any] | None = None  # method rigl / set: the drop/grow updates (train.dynamic.DynamicStats)
    validation_accuracy: float | None = None  # of the pruned model, checked against the dense baseline's
    validation_metric: float | None = None  # the task's guard metric (the accuracy for classifiers)
    budget: dict[str, Any] | None = None  # sparsity.target.bytes: budget, predicted, actual, trials (BudgetPlan)


class QuantizationInfo(_Section):
    """The quantization mode, its fine-tuning (qat/pqat) and whether the zeros survived it."""

    mode: str = "none"
    epochs: int | None = None
    seconds: float | None = None
    step_ms: float | None = None
    sparsity_before: float | None = None
    sparsity_after: float | None = None
    sparsity_preserved: bool | None = None
    validation_accuracy: float | None = None  # after quantization-aware training
    validation_metric: float | None = None


class ModelInfo(_Section):
    """The final Keras model (before conversion)."""

    accuracy: float | None = None
    metric: float | None = None
    metrics: dict[str, float] = {}
    validation_metric: float | None = None
    sparsity: float
    params: int
    zeros: int
    validation_accuracy: float | None = None
    # read back from the weights: the headline over the pruned kernels AND over every parameter
    all_params: int | None = None
    all_zeros: int | None = None
    sparsity_all_params: float | None = None
    pruned_kernel_params: int | None = None
    pruned_kernel_zeros: int | None = None
    sparsity_pruned_kernels: float | None = None
    coverage: float | None = None  # pruned-kernel parameters / all parameters


class TimingInfo(_Section):
    """Wall time of the run and the per-step cost of pruning against dense training."""

    train_seconds: float = 0.0
    baseline_step_ms: float | None = None
    sparsity_step_ms: float | None = None
    step_time_ratio: float | None = None
    batch_size: int = 0
    total_seconds: float | None = None


class TFLiteInfo(_Section):
    """The exported model.tflite: size, verification against Keras, storage facts."""

    path: str
    bytes: int
    gzip_bytes: int
    accuracy: float | None = None
    metric: float | None = None
    metrics: dict[str, float] = {}
    agreement: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    resolver: str | None = None
    fallback_reason: str | None = None
    ratio_vs_dense: float | None = None
    densify_ops: int | None = None
    encodings: dict[str, int] | None = None
    bundle: str | None = None
    quantization: str | None = None  # the conversion kept (a float32 fallback differs from the recipe's mode)
    objective: str | None = None  # export.objective that chose it
    latency_ratio: float | None = None  # paired median latency / the dense float32 model's, on the exporting machine
    float_ops: list[str] | None = None  # ops of an int8 model kept float32 ("fc1 (FULLY_CONNECTED)"; keep_float)


class TrainingInfo(_Section):
    """How training was distributed."""

    distribution: str = "none"
    replicas: int = 1


class RunSummary(_Section):
    """Every figure of one run, as written to ``RUN_DIR/summary.json``."""

    schema_version: int = SCHEMA_VERSION
    name: str
    run_dir: str
    seed: int
    data: DataInfo
    task: dict[str, Any] | None = None  # kind, metric, direction, outputs (edgesparse.task.Task.to_json)
    baseline: BaselineInfo
    channels: ChannelsInfo | None = None
    sparsity: SparsityInfo | None = None
    quantization: QuantizationInfo = QuantizationInfo()
    model: ModelInfo | None = None
    timing: TimingInfo = TimingInfo()
    tflite: TFLiteInfo | None = None
    keras3: dict[str, Any] | None = None  # the final model written back as Keras 3 (input was Keras 3)
    distillation: dict[str, Any] | None = None  # the recipe's distillation settings, when the dense model taught
    warnings: list[str] = []
    versions: dict[str, str | None] = {}
    training: TrainingInfo = TrainingInfo()

    @property
    def metric_name(self) -> str:
        """The primary metric's name (``accuracy`` for summaries written before the task layer)."""
        return str((self.task or {}).get("metric", "accuracy")).replace("/", " ")

    @property
    def metric_direction(self) -> str:
        return str((self.task or {}).get("direction", "higher"))

    def to_json(self) -> dict[str, Any]:
        """The summary.json mapping: sections the run did not have (no pruning, no export) are left out."""
        out = self.model_dump(mode="json")
        return {k: v for k, v in out.items()
                if not (v is None and k in ("channels", "sparsity", "tflite", "model", "distillation", "keras3"))}

    def write(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/summary.json`` atomically."""
        return _io.write_json(Path(run_dir) / SUMMARY_FILE, self.to_json())

    def table(self, width: int = 120) -> str:
        """The dense-vs-final table (and the channels table of a channels run) as plain text, as ``repr`` shows it."""
        from edgesparse.report import channels_table, comparison_table

        tables = ([channels_table(self)] if self.channels is not None else []) + [comparison_table(self)]
        return render_text(*tables, width=width)

    def __repr__(self) -> str:
        return f"RunSummary {self.name!r} ({self.run_dir})\n{self.table()}"

    def tflite_paths(self) -> list[Path]:
        """The exported dense and final .tflite files the summary names (dense first)."""
        found = [self.baseline.tflite_path, self.tflite.path if self.tflite else None]
        return [Path(f) for f in found if f]


def render_text(*renderables: Any, width: int = 120) -> str:
    """Rich renderables (tables) as plain text without colours, for ``repr`` and logs."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False, force_jupyter=False)
    for r in renderables:
        console.print(r)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())


class SummaryError(EdgesparseError):
    """summary.json is missing or unreadable."""


def read_summary(path: str | Path) -> RunSummary:
    """Load ``summary.json`` (or the one inside a run directory).

    Raises:
        SummaryError: the file is missing, not JSON, or not a run summary.
    """
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_FILE
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SummaryError(f"'{p}' does not exist: give a run directory that `edgesparse train` finished.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SummaryError(f"cannot read the run summary '{p}' ({exc}); re-run `edgesparse train`.") from None
    raw.setdefault("schema_version", 0)
    if raw["schema_version"] < 2:  # before the task layer: a classifier, its metric is the accuracy
        for section in ("baseline", "model", "tflite"):
            if isinstance(raw.get(section), dict) and raw[section].get("metric") is None:
                raw[section]["metric"] = raw[section].get("accuracy")
    try:
        return RunSummary.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise SummaryError(f"'{p}' is not an edgesparse run summary ({where}: {first['msg']}).") from None

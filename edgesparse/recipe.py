"""The recipe: one YAML file that describes a whole job, validated by pydantic models.

A minimal recipe::

    name: quickstart
    data: {builtin: digits}
    model: {builtin: small_cnn}
    sparsity: {final: 0.9}

Every section has defaults written once, here. ``load_recipe`` reads YAML with safe loading only,
applies ``--set key.path=value`` overrides and turns every validation problem into a
:class:`~edgesparse.errors.RecipeError` naming the file, line, field, bad value, allowed values and
the closest allowed key.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from edgesparse.data import DataConfig
from edgesparse.data.python import PythonDataConfig
from edgesparse.errors import RecipeError
from edgesparse.models import ModelConfig, PythonModelConfig
from edgesparse.task import TaskConfig, task_before

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Section):
    """``optimizer: {name: adam, learning_rate: 1.0e-3, schedule: constant}``.

    ``schedule: cosine`` decays the learning rate per epoch from ``learning_rate`` towards 0 over the phase
    (half a cosine): the last epochs take small steps, so the final weights do not depend on where the
    last large step happened to land (steadier accuracy from seed to seed).
    """

    name: Literal["adam", "sgd", "rmsprop", "adamw"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate over the phase: constant, or cosine decay per epoch towards 0")


class BaselineConfig(_Section):
    """The dense baseline. ``epochs: 0`` skips training (a pretrained model)."""

    epochs: int = Field(15, ge=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    on_broken: Literal["fail", "warn"] = Field(
        "fail", description="what to do when the dense baseline scores at or near chance on the validation split "
        "(the health check before any compression): fail stops the run with the causes it found, warn goes on")
    bn_momentum: float | None = Field(
        None, gt=0.0, lt=1.0, description="set the momentum of every BatchNormalization layer before the baseline "
        "trains (and for the later phases); e.g. 0.99 where a model built with 0.999 (keras.applications) trains too "
        "few steps for its moving statistics to converge; null keeps the model's")


_PATTERN_RE = re.compile(r"^\s*(block|m_by_n)\s*[:= ]\s*(\d+)\s*[x,:]\s*(\d+)\s*$")


class Pattern(_Section):
    """Which weights may be zeroed together.

    YAML forms: ``unstructured``; ``{block: [1, 16]}`` or ``"block:1x16"``; ``{m_by_n: [2, 4]}`` or
    ``"m_by_n:2x4"``. Block shapes are given the way TFLite stores a weight: for a Dense layer
    ``[1, 16]`` means 1 output unit x 16 consecutive inputs, the block the converter encodes for
    int8 (``[1, 4]`` for float32). ``m_by_n: [2, 4]`` keeps 2 non-zeros in every 4 consecutive
    inputs (50% sparsity, whatever ``final`` says).
    """

    kind: Literal["unstructured", "block", "m_by_n"] = "unstructured"
    shape: tuple[int, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text == "unstructured":
                return {"kind": "unstructured"}
            m = _PATTERN_RE.match(text)
            if not m:
                raise ValueError(
                    f"'{value}' is not a pattern; use unstructured, block:RxC (e.g. block:1x16) "
                    "or m_by_n:MxN (e.g. m_by_n:2x4)"
                )
            return {"kind": m.group(1), "shape": (int(m.group(2)), int(m.group(3)))}
        if isinstance(value, dict) and "kind" not in value and len(value) == 1:
            (key, shape), = value.items()
            if key in ("block", "m_by_n"):
                return {"kind": key, "shape": shape}
        return value

    @model_validator(mode="after")
    def _check(self) -> Pattern:
        if self.kind == "unstructured":
            if self.shape is not None:
                raise ValueError("unstructured takes no shape")
            return self
        if self.shape is None:
            raise ValueError(f"{self.kind} needs a shape, e.g. {self.kind}: [1, 16]")
        a, b = self.shape
        if a < 1 or b < 1:
            raise ValueError(f"{self.kind} shape must be positive, got {list(self.shape)}")
        if self.kind == "m_by_n" and not a < b:
            raise ValueError(f"m_by_n needs M < N (M non-zeros in every N), got {a}x{b}")
        if self.kind == "block" and (a, b) == (1, 1):
            return Pattern(kind="unstructured")
        return self

    def __str__(self) -> str:
        return self.kind if self.shape is None else f"{self.kind}:{self.shape[0]}x{self.shape[1]}"

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity an M:N pattern implies (None for other patterns)."""
        if self.kind == "m_by_n" and self.shape:
            return 1.0 - self.shape[0] / self.shape[1]
        return None


class RegularizationConfig(_Section):
    """A sparsity-inducing kernel regularizer added to the pruned layers during the sparsity phase."""

    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)


class LayerOverride(_Section):
    """Per-layer override: ``{match: "regex on layer names", skip: true | final: 0.5 | pattern: ...}``."""

    match: str
    skip: bool = False
    final: Fraction | None = None
    pattern: Pattern | None = None

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"'{value}' is not a valid regular expression: {exc}") from None
        return value


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


class SizeTarget(_Section):
    """``target: {bytes: 65536}`` (or ``"64 KiB"``, ``"64 KB"`` = 64,000): the exported model.tflite must fit."""

    bytes: int = Field(gt=0, description="the largest model.tflite allowed, in bytes (or with a unit: KB = 1000, "
                       "KiB = 1024, MB, MiB)")

    @field_validator("bytes", mode="before")
    @classmethod
    def _units(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"'{value}' is not a size; give bytes (65536) or a number with a unit: B, KB (1000), "
                             "KiB (1024), MB, MiB (e.g. '64 KiB')")
        return int(round(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]))


class DynamicUpdate(_Section):
    """``update: {frequency: 100, drop_fraction: 0.3, end: 6}``: the drop/grow of ``method: rigl | set``.

    Every ``frequency`` training steps (default: ten updates before ``end``, at most every 100 steps) until
    ``end`` (epochs of the sparsity phase; default 3/4 of it), each pruned layer drops ``drop_fraction``
    (cosine-decayed to 0 at ``end``) of its active weights, the smallest by magnitude,
    and regrows as many inactive ones (rigl: largest gradient magnitude; set: at random), which start at zero.
    """

    frequency: int | None = Field(None, gt=0, description="training steps between drop/grow updates; default: "
                                  "the steps before end / 10 (at least 1, at most 100)")
    drop_fraction: float = Field(0.3, gt=0.0, le=1.0, description="share of each layer's active weights dropped and "
                                 "regrown at the first update, cosine-decayed to 0 at end")
    end: float | None = Field(None, gt=0.0, description="epoch of the sparsity phase after which the masks stay "
                              "fixed; default 3/4 of the phase")

    def end_epoch(self, epochs: int) -> float:
        """Where the updates stop in a phase of ``epochs`` epochs (default: 3/4 of its steps, so the last quarter
        trains on fixed masks even in a one-epoch phase)."""
        return self.end if self.end is not None else 0.75 * epochs


#: the magnitude schedule's fields, which method rigl / set ignores, and what to use instead
_MAGNITUDE_ONLY = {"schedule": "rigl/set hold the final sparsity from the first step",
                   "initial": "rigl/set hold the final sparsity from the first step",
                   "start": "rigl/set hold the final sparsity from the first step",
                   "end": "use update.end (epoch where drop/grow stops)",
                   "frequency": "use update.frequency (steps between drop/grow updates)"}


class SparsityConfig(_Section):
    """The pruning phase (tensorflow-model-optimization), in epochs of this phase.

    ``method: magnitude`` (the default) prunes gradually by magnitude on tfmot's schedules (``schedule``,
    ``initial``, ``start``, ``end``, ``frequency``); ``rigl`` and ``set`` are dynamic sparse training: each
    layer's target sparsity from the phase's first step, and masks updated by drop/grow (see ``update``).
    """

    method: Literal["magnitude", "rigl", "set"] = Field(
        "magnitude", description="magnitude: gradual magnitude pruning on tfmot's schedule; rigl: the final sparsity "
        "from the first step, drop the smallest weights and regrow by gradient magnitude every update.frequency "
        "steps; set: the same, regrowing at random")
    update: DynamicUpdate = Field(DynamicUpdate(), description="rigl / set: the drop/grow schedule")
    schedule: Literal["polynomial", "constant"] = "polynomial"
    initial: Fraction = 0.0
    final: Fraction = Field(0.9, description="the target sparsity: of every pruned layer (allocation uniform), or "
                            "over all pruned kernels together (global, erk, auto)")
    target: SizeTarget | None = Field(None, description="a size budget instead of final: the sparsity over the "
                                      "pruned kernels is chosen so the exported model.tflite fits target.bytes")
    allocation: Literal["uniform", "global", "erk", "auto"] = Field(
        "uniform", description="how final is shared among the pruned layers: uniform (each gets final), global (one "
        "magnitude ranking across layers), erk (Erdos-Renyi-Kernel densities from the kernel shapes, as in RigL), "
        "auto (from each layer's measured unstructured sensitivity on validation, least predicted loss)")
    max_layer: float = Field(0.98, gt=0.0, lt=1.0, description="global, erk, auto: the highest sparsity any one "
                             "layer is given, so no layer is emptied")
    start: float = Field(0.0, ge=0.0, description="epoch of this phase where pruning begins")
    end: float | None = Field(None, gt=0.0, description="epoch where the final sparsity is reached")
    frequency: int = Field(25, gt=0, description="steps between mask updates")
    pattern: Pattern = Pattern()
    policy: Literal["all", "xnnpack"] = "all"
    regularization: RegularizationConfig | None = None
    layers: list[LayerOverride] = Field(default_factory=list)
    epochs: int = Field(8, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=5e-4)
    on_shortfall: Literal["fail", "warn"] = "fail"
    tolerance: float = Field(0.01, ge=0.0, le=1.0, description="allowed shortfall of achieved sparsity")
    max_drop: float | None = Field(None, ge=0.0, description="how much of the task's guard metric on validation "
                                   "the pruned (and quantization-aware trained) model may lose against the dense "
                                   "baseline: points for fractions (accuracy, AUC), % relative for errors (mae, "
                                   "reconstruction error); default 2 points or 10%")
    on_drop: Literal["fail", "warn"] = Field("fail", description="when the drop exceeds max_drop: fail the run, "
                                             "or warn and keep the model")

    @model_validator(mode="after")
    def _check(self) -> SparsityConfig:
        end = self.end_epoch
        if end <= self.start:
            raise ValueError(f"end ({end:g}) must be after start ({self.start:g})")
        if end > self.epochs:
            raise ValueError(
                f"end ({end:g}) is after the last epoch of the sparsity phase (epochs: {self.epochs}); "
                "pruning would never reach the final sparsity"
            )
        if self.method != "magnitude":
            self._check_dynamic()
        elif "update" in self.model_fields_set and self.update != DynamicUpdate():
            raise ValueError("update (drop/grow) applies to method rigl or set, not magnitude; add method: rigl "
                             "(or set), or remove update and use frequency/start/end for the magnitude schedule")
        if self.target is not None:
            if "final" in self.model_fields_set:
                raise ValueError(
                    f"give either final (a sparsity, here {self.final:g}) or target: {{bytes: {self.target.bytes}}} "
                    "(a file size the sparsity is chosen for), not both: remove one of them")
            return self
        if self.schedule == "polynomial" and self.initial > self.final:
            raise ValueError(f"initial ({self.initial}) must not exceed final ({self.final})")
        if self.max_layer < self.final and (self.allocation != "uniform" or "max_layer" in self.model_fields_set):
            raise ValueError(
                f"max_layer ({self.max_layer:g}) is below final ({self.final:g}): no allocation can reach an overall "
                f"sparsity of {self.final:g} when every layer stays at or below {self.max_layer:g}; raise max_layer "
                f"to at least {self.final:g} (e.g. 0.98) or lower final")
        return self

    def _check_dynamic(self) -> None:
        """rigl / set: no magnitude-schedule field given, unstructured patterns, an update window inside the phase."""
        defaults = SparsityConfig.model_fields
        # "set and not the default": a dumped-and-revalidated recipe (override(), the lock file) sets every field
        given = [k for k in _MAGNITUDE_ONLY if k in self.model_fields_set and getattr(self, k) != defaults[k].default]
        if given:
            raise ValueError(
                f"method {self.method} does not use the magnitude schedule's "
                + "; ".join(f"{k} ({_MAGNITUDE_ONLY[k]})" for k in given)
                + f". Remove {', '.join(given)} (or use method: magnitude); rigl/set take update.frequency, "
                "update.drop_fraction and update.end")
        patterns = [("pattern", self.pattern)] + [(f"layers (match '{ov.match}') pattern", ov.pattern)
                                                   for ov in self.layers if ov.pattern is not None]
        structured = [f"{where}: {p}" for where, p in patterns if p.kind != "unstructured"]
        if structured:
            raise ValueError(
                f"method {self.method} drops and regrows single weights, so it prunes unstructured only, not "
                + ", ".join(structured) + "; use pattern: unstructured or method: magnitude for block and M:N "
                "patterns")
        end = self.update.end_epoch(self.epochs)
        if end > self.epochs:
            raise ValueError(f"update.end ({end:g}) is after the last epoch of the sparsity phase (epochs: "
                             f"{self.epochs}); give update.end <= {self.epochs}")

    @property
    def end_epoch(self) -> float:
        """Where the schedule ends; default: 3/4 of the phase, leaving epochs to recover."""
        return self.end if self.end is not None else max(self.start + 1, round(self.epochs * 0.75))


class ChannelsTarget(_Section):
    """Exactly one of ``macs`` / ``params`` (a fraction of the dense model's) or ``latency`` (a fraction of the
    dense model's paired latency, measured on this machine with the device runner)."""

    macs: float | None = Field(None, gt=0.0, lt=1.0)
    params: float | None = Field(None, gt=0.0, lt=1.0)
    latency: float | None = Field(None, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _one(self) -> ChannelsTarget:
        given = [k for k in ("macs", "params", "latency") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of macs, params, latency (got {', '.join(given) or 'none'}), "
                             "e.g. target: {macs: 0.5}")
        return self

    @property
    def kind(self) -> str:
        """macs | params | latency."""
        return next(k for k in ("macs", "params", "latency") if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        """The fraction asked for."""
        return float(getattr(self, self.kind))


class ChannelsConfig(_Section):
    """Channel (filter) pruning before ``sparsity``: a physically smaller dense model, faster on every CPU.

    ``target: {macs: 0.5}`` (or ``{params: 0.4}``, ``{latency: 0.5}``) or ``ratio: 0.5`` (channels removed per
    group); ``allocation``: uniform | global | auto (per-group ratios from a sensitivity analysis);
    ``importance``: l1 | l2 | bn | taylor; ``epochs`` of fine-tuning.

    ``schedule``: ``oneshot`` thins the model at once and fine-tunes the thinned model; ``gradual`` fine-tunes a
    copy of the dense model while whole channels are masked to zero step by step (tfmot's PolynomialDecay shape:
    the share of each group's planned removals grows as ``1 - (1 - p)^3`` from ``begin`` to ``end``, fractions of
    the phase's training steps, one update every ``frequency`` steps), then thins it. ``begin``, ``end`` and
    ``frequency`` apply to ``gradual`` only.
    """

    target: ChannelsTarget | None = None
    ratio: float | None = Field(None, gt=0.0, lt=1.0, description="fixed fraction of each group's channels removed")
    allocation: Literal["uniform", "global", "auto"] = "uniform"
    importance: Literal["l1", "l2", "bn", "taylor"] = "l2"
    epochs: int = Field(10, ge=0, description="fine-tuning epochs (of the thinned model; gradual: of the masked "
                        "dense copy, removal included)")
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="oneshot: thin at once, then fine-tune the thinned model; gradual: mask channels "
        "step by step while fine-tuning a copy of the dense model, then thin it")
    begin: float = Field(0.0, ge=0.0, lt=1.0, description="gradual: where removal starts, a fraction of the "
                         "phase's training steps")
    end: float = Field(0.5, gt=0.0, le=1.0, description="gradual: where every planned channel is removed, a "
                       "fraction of the phase's training steps (the rest recovers at the final width)")
    frequency: int = Field(25, gt=0, description="gradual: training steps between mask updates")
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=5e-4)
    min_keep: float = Field(0.1, gt=0.0, le=1.0, description="fraction of every group's channels always kept")
    channel_multiple: int = Field(1, ge=1, le=64, description="keep a multiple of this many channels per group "
                                  "(uniform, auto): SIMD-friendly widths, e.g. 4 or 8")
    sensitivity_ratios: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        [0.25, 0.5, 0.75], min_length=1, description="ratios each group is pruned at alone (auto, analyze)")
    taylor_batches: int = Field(4, ge=1, description="batches the taylor criterion averages over")
    tolerance: float = Field(1e-4, gt=0.0, description="max |thinned - masked| output difference (else an error)")
    max_drop: float | None = Field(None, ge=0.0, description="how much of the task's guard metric the fine-tuned "
                                   "thinned model may lose against the dense baseline: points for fractions, % "
                                   "relative for errors; default 2 points or 10%")
    on_drop: Literal["fail", "warn"] = Field("fail", description="when the drop exceeds max_drop: fail or warn")

    @model_validator(mode="after")
    def _check(self) -> ChannelsConfig:
        if (self.target is None) == (self.ratio is None):
            raise ValueError("give either target (e.g. target: {macs: 0.5}) or ratio (e.g. ratio: 0.5), not both "
                             "or neither")
        if self.channel_multiple > 1 and self.allocation == "global":
            raise ValueError("channel_multiple applies to allocation uniform and auto, not global (its ranking "
                             "removes single channels)")
        if self.ratio is not None and self.allocation == "auto":
            raise ValueError("allocation auto chooses per-group ratios for a target; give target: {macs: ...} "
                             "or use allocation uniform/global with ratio")
        if self.schedule == "gradual" and self.end <= self.begin:
            raise ValueError(f"end ({self.end:g}) must be after begin ({self.begin:g}): both are fractions of the "
                             "channel phase's training steps")
        if self.schedule == "gradual" and self.epochs < 1:
            raise ValueError("schedule gradual removes channels while it fine-tunes: give epochs >= 1, or use "
                             "schedule oneshot")
        return self


class QuantizationConfig(_Section):
    """``mode``: none | dynamic | float16 | int8 | int16x8 (post-training) | qat | pqat (quantization-aware).

    ``int16x8`` keeps int8 weights but int16 activations (calibrated like int8): for models whose
    activations int8's 256 levels cannot hold (features of very different scales), at a speed cost
    (LiteRT runs it on its builtin kernels, not XNNPACK).
    """

    mode: Literal["none", "dynamic", "float16", "int8", "int16x8", "qat", "pqat"] = "none"
    epochs: int = Field(2, ge=0, description="fine-tuning epochs for qat / pqat")
    optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-4)
    max_drop: float | None = Field(None, ge=0.0, description="qat / pqat: the most the fine-tuned model may lose "
                                   "against the dense baseline on validation (the task's unit; default: "
                                   "sparsity.max_drop, else the task's default)")
    on_drop: Literal["fail", "warn"] | None = Field(None, description="qat / pqat: when the drop exceeds max_drop: "
                                                    "fail or warn (default: sparsity.on_drop, else fail)")
    keep_float: list[str] | Literal["auto"] | None = Field(
        None, description="int8 only: keep the ops of the layers these regexes match (searched in layer names) in "
        "float32 in an otherwise int8 model; auto: the fewest ops, worst quantization error first, that bring the "
        "model within export.max_accuracy_drop (edgesparse analyze --quantization ranks them)")

    keep_float_weights: Literal["float16", "float32"] = Field(
        "float16", description="how the kernels of the ops keep_float leaves float are stored: float16 (half the "
        "bytes, behind a DEQUANTIZE that runs once at load; the ops still compute in float32) or float32")

    @field_validator("keep_float")
    @classmethod
    def _regexes(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("keep_float: [] keeps nothing float; give layer-name regexes, auto, or null")
            for v in value:
                try:
                    re.compile(v)
                except re.error as exc:
                    raise ValueError(f"keep_float: '{v}' is not a valid regex ({exc})") from None
        return value

    @model_validator(mode="after")
    def _keep_float_mode(self) -> QuantizationConfig:
        if self.keep_float_weights != "float16" and self.keep_float is None:  # (an override dumps every field)
            raise ValueError("keep_float_weights sets how the kernels of keep_float's ops are stored; give "
                             "keep_float (layer regexes or auto) too, or remove it")
        if self.keep_float is not None and self.mode != "int8":
            why = {"int16x8": "the quantization debugger that keeps ops float quantizes to int8 only",
                   "qat": "a quantization-aware trained model's fake-quant ops fix every layer's quantization",
                   "pqat": "a quantization-aware trained model's fake-quant ops fix every layer's quantization"}.get(
                       self.mode, f"mode {self.mode} has no integer ops to keep float")
            raise ValueError(f"quantization.keep_float needs quantization.mode: int8, not '{self.mode}': {why}; "
                             "use mode int8 with keep_float, or drop keep_float")
        return self


class ExportConfig(_Section):
    """Conversion to TFLite and its verification on the held-out test split."""

    sparse_encoding: bool | Literal["auto"] = Field(
        "auto", description="the converter's sparse weight storage: true, false, or auto (convert both ways "
        "and keep the smaller file)")
    per_channel: bool | Literal["auto"] = Field(
        "auto", description="int8 weights with one scale per output channel (true, the converter's default) or one "
        "per tensor (false: 12 bytes less per output channel, for models so small that their quantization "
        "parameters weigh as much as their weights); auto: per channel, and with objective size (no size budget) "
        "also per tensor, verified like every candidate, the smaller kept. Post-training int8 only")
    representative_samples: int = Field(200, ge=1)
    io: Literal["float32", "int8", "int16"] = Field(
        "float32", description="model input/output type: float32, int8 (int8, qat, pqat) or int16 (int16x8)")
    dir: str | None = Field(None, description="bundle folder; default export/<name>, or RUN_DIR/bundle when the "
                            "run directory is not the default runs/<name>")
    objective: Literal["size", "latency", "balanced"] = Field(
        "balanced", description="which verified conversion to keep: the smallest file (size), the fastest (latency), "
        "or the smallest that is not slower than the dense float model (balanced), timed paired on this machine")
    verify: bool = True
    max_accuracy_drop: float | None = Field(
        None, ge=0.0, description="how much of the task's primary metric the .tflite may lose vs Keras on the test "
        "split: points for fractions (accuracy, AUC), % relative for errors (mae); default 2 points or 10%"
    )
    min_agreement: float = Field(
        0.9, ge=0.0, le=1.0, description="export fails when the kept .tflite's outputs agree with the Keras model's "
        "on fewer than this share of test samples (top-1 class, or the task's thresholded comparison); tasks "
        "without classes are held to max_accuracy_drop only")
    threads: int = Field(1, ge=1, description="interpreter threads used for verification")
    detection_postprocess: bool = Field(
        False, description="detection task: append TFLite's TFLite_Detection_PostProcess op (anchors baked in, "
        "per-class NMS with the task's thresholds), so the model outputs detection_boxes, detection_classes, "
        "detection_scores and num_detections; verified against the Keras model's decoded detections")


class DistillationConfig(_Section):
    """Knowledge distillation from the dense baseline (the teacher) while the thinned or sparse model trains.

    ``distillation: {weight: 0.5, temperature: 4.0}`` (optionally ``phases: [sparsity]``). The loss
    of every step is ``(1 - weight) * CE(labels, student) + weight * T^2 * KL(teacher_T || student_T)``
    where ``_T`` are the softmax outputs at temperature ``T``. Off when the section is absent.
    """

    weight: float = Field(0.5, ge=0.0, le=1.0, description="share of the distillation term in the loss")
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="softmax temperature of teacher and student")
    phases: list[Literal["channels", "sparsity", "quantization"]] | None = Field(
        None, description="training phases that distil: channels (fine-tuning after channel pruning), sparsity "
        "(sparse fine-tuning) and/or quantization (QAT/PQAT); default: every one of them the recipe trains")


class TrainingConfig(_Section):
    """Options shared by every training phase."""

    distribution: Literal["none", "mirrored"] = "none"
    shuffle: bool = True


class Recipe(_Section):
    """A whole edgesparse job."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    output_dir: str | None = Field(None, description="run directory; default runs/<name>")
    data: DataConfig = Field(default_factory=PythonDataConfig,
                             description="where the data comes from; none: given to train(..., data=...) in Python")
    model: ModelConfig = Field(default_factory=PythonModelConfig,
                               description="the model to compress; none: given to train(..., model=...) in Python")
    task: TaskConfig = Field(TaskConfig(), description="what the model's outputs mean: auto (inferred from the "
                             "model and the data, and logged with the reason), a kind (classification, binary, "
                             "multilabel, regression, anomaly), {kind, loss, metric, metrics, threshold}, or "
                             "{outputs: {name: {...}}, primary: name}")
    baseline: BaselineConfig = BaselineConfig()
    channels: ChannelsConfig | None = Field(None, description="channel pruning between baseline and sparsity")
    sparsity: SparsityConfig | None = SparsityConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    export: ExportConfig | None = ExportConfig()
    distillation: DistillationConfig | None = Field(
        None, description="distil the dense baseline into the sparse/quantized model; null = off")
    training: TrainingConfig = TrainingConfig()
    sweep: dict[str, list[Any]] | None = Field(
        None, description="grid of dotted recipe paths to values, run by `edgesparse sweep`"
    )
    _base_dir: Path | None = PrivateAttr(default=None)

    _task = field_validator("task", mode="before")(task_before)

    @model_validator(mode="after")
    def _detection_export(self) -> Recipe:
        if self.export is not None and self.export.detection_postprocess and self.task.kind != "detection":
            raise ValueError(f"export.detection_postprocess appends TFLite's detection post-processing to an "
                             f"anchor-based detector, but the task is {self.task.kind}; set `task: {{kind: detection, "
                             "scores: <output>, boxes: <output>}` for an SSD-style model, or drop "
                             "export.detection_postprocess")
        return self

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.sparsity is not None and self.sparsity.method != "magnitude" and \
                self.training.distribution != "none":
            raise ValueError(f"sparsity.method {self.sparsity.method} edits the masks on one worker; use "
                             "training.distribution: none, or sparsity.method: magnitude with mirrored")
        if self.quantization.mode == "pqat" and self.sparsity is None:
            raise ValueError("quantization mode pqat (prune-preserving QAT) needs a sparsity section")
        io = self.export.io if self.export is not None else "float32"
        if io == "int8" and self.quantization.mode == "int16x8":
            raise ValueError("export.io: int8 does not go with quantization.mode: int16x8: its activations are int16 "
                             "and the TFLite converter takes only float32 or int16 inputs and outputs for it; use "
                             "export.io: int16 or float32, or quantization.mode: int8 for int8 I/O")
        if self.quantization.mode == "int16x8" and self.export is not None and self.export.sparse_encoding is True:
            raise ValueError("export.sparse_encoding: true does not go with quantization.mode: int16x8: the TFLite "
                             "converter's sparse encoding rewrites int16x8 biases as int32 and breaks its convolutions "
                             "(measured: wrong outputs); use sparse_encoding: false or auto (int16x8 is then converted "
                             "without it; its dense int8 kernels keep the pruned zeros)")
        if self.quantization.keep_float is not None and io != "float32":
            raise ValueError(f"quantization.keep_float needs export.io: float32, not {io}: the float ops it keeps "
                             "are quantized around by the debugger's quantizer, which leaves the model's inputs and "
                             "outputs float32")
        if io == "int16" and self.quantization.mode != "int16x8":
            raise ValueError(f"export.io: int16 needs quantization.mode: int16x8 (int16 activations), not "
                             f"'{self.quantization.mode}'; use export.io: int8 with int8/qat/pqat, or float32")
        self._check_per_channel()
        if self.sparsity is not None and self.sparsity.target is not None and self.export is None:
            raise ValueError("sparsity.target.bytes is a budget for the exported model.tflite, but the recipe has no "
                             "export section; add `export: {}` or give sparsity.final instead")
        if self.distillation is not None and self.distillation.phases is not None:
            trains = {"channels": self.channels is not None and self.channels.epochs > 0,
                      "sparsity": self.sparsity is not None,
                      "quantization": self.quantization.mode in ("qat", "pqat") and self.quantization.epochs > 0}
            idle = [p for p in self.distillation.phases if not trains[p]]
            if idle or not self.distillation.phases:
                raise ValueError(
                    "distillation.phases names " + (", ".join(idle) if idle else "no phase") + " but that phase "
                    "does not train in this recipe (distillation needs a channels section with epochs > 0, a "
                    "sparsity section and/or quantization mode qat/pqat with epochs > 0); remove it from "
                    "distillation.phases or drop the section")
        return self

    def _check_per_channel(self) -> None:
        """``export.per_channel: false`` is honoured only where a post-training int8 conversion runs."""
        if self.export is None or self.export.per_channel is not False:
            return
        if self.quantization.mode != "int8":
            raise ValueError(f"export.per_channel: false (one int8 weight scale per tensor) is for quantization.mode "
                             f"int8, not {self.quantization.mode}: QAT/PQAT models are trained with per-channel "
                             "scales and the other modes have no int8 weight scales; drop it or use mode int8")
        if self.quantization.keep_float is not None:
            raise ValueError("export.per_channel: false does not go with quantization.keep_float: the conversion "
                             "that keeps ops float is made by TensorFlow's debugger quantizer, per channel; drop one "
                             "of the two")
        if self.sparsity is not None and self.sparsity.target is not None:
            raise ValueError("export.per_channel: false does not go with a size budget (sparsity.target.bytes): the "
                             "budget's sparsity is planned on per-channel trial conversions, so a per-tensor file "
                             "would land below the budget's range; use per_channel: true or auto")


# --------------------------------------------------------------------------------------------
# loading


#: The largest recipe file read (a recipe is a few kB; this refuses /dev/zero-like inputs and accidents).
MAX_RECIPE_BYTES = 1024 * 1024
#: The most YAML nodes a recipe may hold once its aliases are expanded (the shipped recipes hold < 500); a
#: "billion laughs" document of nested aliases is refused instead of being expanded until memory runs out.
MAX_RECIPE_NODES = 100_000


def _expanded_size(root: yaml.Node, source: str) -> int:
    """Count the nodes of the document with every alias expanded, each shared node sized once (memoized).

    Raises:
        RecipeError: the count passes :data:`MAX_RECIPE_NODES`, or an alias refers to itself.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise RecipeError(f"{source}, line {node.start_mark.line + 1}: a YAML alias refers to the node that "
                              "contains it (a recursive structure); write the values out instead.")
        open_nodes.add(key)
        total = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        for child in children:
            total += size(child)
            if total > MAX_RECIPE_NODES:
                raise RecipeError(
                    f"{source}: the recipe expands to more than {MAX_RECIPE_NODES:,} YAML nodes once its aliases "
                    f"(*name) are expanded (limit MAX_RECIPE_NODES; line {child.start_mark.line + 1}). A recipe is a "
                    "few hundred values: remove the nested anchors/aliases and write the values out.")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _node_lines(root: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map every path in a composed YAML document to the (1-based) line it starts on (the tree is bounded by
    :func:`_expanded_size` first)."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
                lines[path + (key,)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map every path in the YAML document to the (1-based) line it starts on."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if root is not None:
        _expanded_size(root, "<recipe>")
    return _node_lines(root)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse a recipe's YAML once: compose (safe loader), bound the alias expansion, construct, map lines.

    Returns:
        The Python data and the line of every path.

    Raises:
        yaml.YAMLError: a syntax error (the caller names the line).
        RecipeError: the expansion passes :data:`MAX_RECIPE_NODES`.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        _expanded_size(root, source)
        lines = _node_lines(root)  # before construction: merge keys (<<) rewrite the mapping nodes
        return loader.construct_document(root), lines
    finally:
        loader.dispose()


def code_references(recipe: Recipe) -> list[str]:
    """The places in a recipe that name Python code it imports and calls (``factory:``, ``custom_objects``).

    A recipe with these runs code, as a Python file does: ``validate`` imports and calls them to check the model.
    """
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                where = f"{path}.{k}" if path else str(k)
                if k in ("factory", "custom_objects") and v:
                    found.append(f"{where}: {v if isinstance(v, str) else ', '.join(map(str, v))}")
                else:
                    walk(v, where)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    walk(recipe.model_dump(mode="json"), "")
    return found


def parse_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" as a string; on a command line it means a number
            return float(value)
        except ValueError:
            pass
    return value


def _size_or_sparsity(raw: Any, touched: set[tuple[Any, ...]], dumped: bool) -> None:
    """An override of ``sparsity.target`` replaces ``final`` and one of ``final`` replaces ``target`` (in place).

    Args:
        raw: The raw recipe mapping, overrides applied.
        touched: The overridden paths.
        dumped: ``raw`` is a dumped recipe (every field present): ``final`` is dropped whenever a target is set.
    """
    sp = raw.get("sparsity") if isinstance(raw, dict) else None
    if not isinstance(sp, dict):
        return
    final_set = any(p[:2] == ("sparsity", "final") for p in touched)
    target_set = any(p[:2] == ("sparsity", "target") for p in touched)
    if final_set and not target_set:
        sp.pop("target", None)
    elif sp.get("target") is not None and (target_set or dumped) and not final_set:
        sp.pop("final", None)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> set[tuple[Any, ...]]:
    """Apply ``key.path=value`` overrides to a raw recipe dict, in place.

    Values are parsed as YAML scalars or flow collections (``0.9``, ``true``, ``[1, 16]``,
    ``{l1: 1e-5}``); ``null`` removes a section.

    Returns:
        The paths that were overridden (for error messages).

    Raises:
        RecipeError: an override is not of the form key.path=value.
    """
    touched: set[tuple[Any, ...]] = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set '{item}' is not of the form key.path=value (e.g. sparsity.final=0.8).")
        parts: list[Any] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not isinstance(part, int) or part >= len(node):
                    raise RecipeError(f"--set '{item}': '{'.'.join(map(str, parts[: i + 1]))}' is not in the recipe.")
                node = node[part]
                continue
            nxt = node.get(part)
            if not isinstance(nxt, (dict, list)):
                nxt = {}
                node[part] = nxt
            node = nxt
        last = parts[-1]
        parsed = parse_value(value)
        if (isinstance(node, list) and isinstance(last, int) and last < len(node)) or isinstance(node, dict):
            node[last] = parsed
        else:
            raise RecipeError(f"--set '{item}': cannot set '{key}' here.")
        touched.add(tuple(parts))
    return touched


def _all_field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Field names of ``model`` and of every model nested in it (for "did you mean")."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for field in model.model_fields.values():
        for sub in _nested_models(field.annotation):
            names |= _all_field_names(sub, seen)
    return names


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        out.extend(_nested_models(arg))
    return out


def _clean_loc(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """Drop pydantic's union tags from an error location, keeping the real recipe path."""
    out: list[Any] = []
    node = raw
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif isinstance(node, (dict, list)):
            # a union tag or a missing key
            if (
                isinstance(node, dict)
                and isinstance(part, str)
                and not any(c in part for c in "[]-")
                and part in _ALL_FIELDS
            ):
                out.append(part)
            continue
        else:
            continue
    return tuple(out)


_ALL_FIELDS: set[str] = set()


def _format_error(err: dict[str, Any], raw: Any, source: str, lines: dict[tuple[Any, ...], int],
                  overridden: set[tuple[Any, ...]]) -> str:
    loc = _clean_loc(tuple(err.get("loc", ())), raw)
    path = ".".join(str(p) for p in loc) or "(top level)"
    where = source
    if loc in overridden:
        where = "--set"
    else:
        for n in range(len(loc), -1, -1):
            if loc[:n] in lines:
                where = f"{source}, line {lines[loc[:n]]}"
                break
    kind = err.get("type", "")
    value = err.get("input")
    msg = err.get("msg", "")
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        allowed = _allowed_keys(loc[:-1])
        suggestion = [c for c in difflib.get_close_matches(str(key), sorted(allowed or _ALL_FIELDS), n=2, cutoff=0.6)
                      if c != key]
        text = f"unknown key '{key}'"
        if suggestion:
            text += f" (did you mean '{suggestion[0]}'?)"
        if allowed:
            text += f"; allowed here: {', '.join(sorted(allowed))}"
        return f"{where}: {path}: {text}"
    if kind == "missing":
        return f"{where}: {path}: required field is missing"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        hint = ""
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        if close:
            hint = f" (did you mean '{close[0]}'?)"
        return f"{where}: {path}: '{value}' is not allowed{hint}; allowed: {', '.join(choices) or expected}"
    if kind in ("union_tag_invalid",):
        ctx = err.get("ctx", {})
        tag = ctx.get("tag", value)
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        close = difflib.get_close_matches(str(tag), choices, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{where}: {path}: unknown name '{tag}'{hint}; known: {', '.join(choices)}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"{where}: {path}: {msg}{shown}"


def _allowed_keys(loc: tuple[Any, ...]) -> set[str]:
    """Field names allowed at ``loc`` (a path into the recipe), best effort."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return set()
        field = model.model_fields.get(part)
        if field is None:
            return set()
        subs = _nested_models(field.annotation)
        if len(subs) != 1:
            return set().union(*(set(s.model_fields) for s in subs)) if subs else set()
        model = subs[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields)
    return set()


def validate_recipe(raw: Any, source: str = "<recipe>", lines: dict[tuple[Any, ...], int] | None = None,
                    overridden: set[tuple[Any, ...]] | None = None) -> Recipe:
    """Validate a raw recipe mapping.

    Raises:
        RecipeError: listing every problem, each with its location.
    """
    if not _ALL_FIELDS:
        _ALL_FIELDS.update(_all_field_names(Recipe))
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping (key: value lines), got {type(raw).__name__}.")
    sources = (("data", ("builtin", "npz", "image_folder", "keras")), ("model", ("builtin", "path", "factory")))
    for section, keys in sources:
        given = [k for k in keys if isinstance(raw.get(section), dict) and k in raw[section]]
        if len(given) > 1:
            line = (lines or {}).get((section,))
            where = f"{source}, line {line}" if line else source
            raise RecipeError(f"{where}: {section}: give one source, not {' and '.join(given)} "
                              f"(one of: {', '.join(keys)}).")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A union reports one error per member; keep the most specific ones.
        msgs: list[str] = []
        for err in errors:
            text = _format_error(dict(err), raw, source, lines or {}, overridden or set())
            if text not in msgs:
                msgs.append(text)
        head = f"the recipe {source} is invalid:" if len(msgs) > 1 else "invalid recipe:"
        raise RecipeError(head + " " + "; ".join(msgs[:8]) + (" ..." if len(msgs) > 8 else "")) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: The YAML file.
        overrides: ``key.path=value`` strings applied before validation.

    Returns:
        The validated recipe; ``recipe_dir(recipe)`` is the folder relative paths resolve against.

    Raises:
        RecipeError: the file is missing, binary or not UTF-8, is not valid YAML, or does not validate.
    """
    from edgesparse.models.filecheck import regular_file

    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe file '{path}' does not exist. Check the path (recipes live in recipes/).")
    if path.is_dir():
        raise RecipeError(f"'{path}' is a folder; give the recipe's .yaml file.")
    regular_file(path, "recipe", MAX_RECIPE_BYTES, error=RecipeError)  # FIFOs, devices, oversize: before reading
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise RecipeError(f"'{path}' is a binary file, not a YAML recipe; give the recipe's .yaml text file "
                          "(e.g. recipes/quickstart.yaml).")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}, line {line_no}: the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); save the recipe as UTF-8 YAML.") from None
    try:
        raw, lines = parse_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}{line}: YAML syntax error: {problem}. Fix the YAML (indentation, ':' after keys, "
                          "quotes).") from None
    if raw is None:
        raise RecipeError(f"{path} is empty; a recipe needs at least name, data and model.")
    overridden = apply_overrides(raw, overrides) if isinstance(raw, dict) else set()
    _size_or_sparsity(raw, overridden, dumped=False)
    recipe = validate_recipe(raw, str(path), lines, overridden)
    set_recipe_dir(recipe, path.resolve().parent)
    return recipe


def recipe_dir(recipe: Recipe) -> Path:
    """The folder relative paths of ``recipe`` resolve against (its file's folder, else cwd)."""
    return recipe._base_dir or Path.cwd()


def set_recipe_dir(recipe: Recipe, folder: Path) -> None:
    """Set the folder relative paths of ``recipe`` resolve against."""
    recipe._base_dir = Path(folder)


def override(recipe: Recipe, overrides: dict[str, Any] | list[str]) -> Recipe:
    """A copy of ``recipe`` with dotted-path overrides applied and re-validated.

    Args:
        recipe: The base recipe.
        overrides: ``{"sparsity.final": 0.8}`` or ``["sparsity.final=0.8"]``.

    Raises:
        RecipeError: the result does not validate.
    """
    raw = recipe.model_dump(mode="json", exclude_none=False)
    items = overrides if isinstance(overrides, list) else [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in overrides.items()
    ]
    touched = apply_overrides(raw, items)
    _size_or_sparsity(raw, touched, dumped=True)
    new = validate_recipe(raw, "<override>", overridden=touched)
    set_recipe_dir(new, recipe_dir(recipe))
    return new


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (written as recipe.lock.yaml in run directories)."""
    data = recipe.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def json_schema() -> dict[str, Any]:
    """The recipe's JSON schema (for editors' YAML support)."""
    return Recipe.model_json_schema()


"""Conversion candidates: convert the final model more than one way, verify and time each, keep the best.

A sparse model can be converted with or without the converter's sparse encoding, and a model meant
for int8 can fall back to float32. Which is best is measured, not assumed: int8 CSR fully-connected
weights make ai-edge-litert's XNNPACK refuse a model (LiteRT's builtin kernels then run it 1.7-2.8x
slower than the dense float model), and at moderate sparsity the encoding can make a file larger.
Each candidate is verified on the test split and timed against the dense float32 .tflite, alternately
in one process by the device runner (robust to the machine's drift), then ``export.objective``
picks one:

* ``size``: the smallest verified file.
* ``latency``: the fastest (lowest paired ratio to dense).
* ``balanced`` (default): the smallest that is not slower than the dense float model (a paired
  median ratio up to ``NOT_SLOWER``, the measurement's noise); when no
  conversion in the requested mode qualifies, the float32 conversions of the pruned model are
  tried too; when none qualifies at all, the fastest.

When every int8 conversion runs but loses more than ``export.max_accuracy_drop`` (int8's one
scale per activation tensor cannot hold features of very different scales), int16x8 (int16
activations, int8 weights) is converted, verified and timed next, with float32 I/O only; then the
objective chooses as above (int16x8 runs on LiteRT's builtin kernels, slower than the dense float
model here, so ``balanced`` and ``latency`` still try the float32 conversions). Every candidate
records why it was tried (``tried_because``) and why it was rejected (``rejected_for``: accuracy or
error), so the log and export.json give the real reason for a fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse import progress
from edgesparse.data.stream import model_outputs
from edgesparse.errors import AccuracyDropError, EdgesparseError, ExportError
from edgesparse.export import keep_float as kf
from edgesparse.export.convert import convert
from edgesparse.export.debugger import OpError, QuantDebugger
from edgesparse.export.equalize import equalize
from edgesparse.export.latency import time_paired
from edgesparse.export.litert import fc_shape_mismatches
from edgesparse.export.modes import CONVERTER_MODES
from edgesparse.export.verify import Verification, verify
from edgesparse.tflite.rewrite import float16_kernels

log = logging.getLogger(__name__)

#: Timed runs of each candidate against the dense model (alternating blocks, one process).
TIMING_RUNS = 100
TIMING_WARMUP = 10
#: A paired median ratio up to this counts as "not slower than dense": the spread of repeated paired
#: measurements on this kind of machine is about 1-3%, so 1.01x is noise, not a slowdown.
NOT_SLOWER = 1.03


@dataclass
class Candidate:
    """One conversion of the final model, with what it measured."""

    mode: str
    sparse_encoding: bool
    data: bytes
    source: str = "final"  # "final" (the model as trained) or "float" (the pruned float model, for fallbacks)
    verification: Verification | None = None
    latency_ratio: float | None = None  # median of the paired ratio candidate / dense float32
    latency_ratio_q1: float | None = None
    latency_ratio_q3: float | None = None
    resolver: str | None = None
    rejected: str | None = None
    rejected_for: str | None = None  # "accuracy" (lost more than export.max_accuracy_drop) | "error"
    tried_because: str = "the requested mode"
    delegation: dict[str, Any] | None = None  # ops XNNPACK took (runner.op_delegation)
    keep_float: list[str] | None = None  # layers whose ops this int8 conversion keeps float32
    per_channel: bool = True  # int8 weight scales per output channel (False: one per tensor)
    equalized: list[str] | None = None  # int16x8: the first layers whose inputs were equalized (export.equalize)

    @property
    def label(self) -> str:
        kept = f", {', '.join(self.keep_float)} kept float" if self.keep_float else ""
        scales = "" if self.per_channel else ", per-tensor scales"
        scales += f", inputs of {', '.join(self.equalized)} equalized" if self.equalized else ""
        return (f"{'float32' if self.mode == 'none' else self.mode}{kept}{scales}, "
                f"sparse encoding {'on' if self.sparse_encoding else 'off'}")

    @property
    def delegated(self) -> str | None:
        """``"5/7"``: ops XNNPACK took of the model's ops, None when not known."""
        d = self.delegation or {}
        return f"{d['delegated']}/{d['total']}" if "total" in d else None

    @property
    def not_slower(self) -> bool:
        return self.latency_ratio is not None and self.latency_ratio <= NOT_SLOWER

    def to_dict(self, chosen: bool) -> dict[str, Any]:
        v = self.verification
        return {"label": self.label, "mode": self.mode, "sparse_encoding": self.sparse_encoding, "source": self.source,
                "bytes": len(self.data), "resolver": self.resolver, "latency_ratio": self.latency_ratio,
                "latency_ratio_q1": self.latency_ratio_q1, "latency_ratio_q3": self.latency_ratio_q3,
                "accuracy": v.accuracy if v else None, "metric": v.metric if v else None,
                "agreement": v.agreement if v else None, "drop": v.drop if v else None,
                "xnnpack_ops": self.delegated, "builtin_ops": (self.delegation or {}).get("builtin"),
                "tried_because": self.tried_because, "keep_float": self.keep_float, "per_channel": self.per_channel,
                "equalized": self.equalized,
                "rejected": self.rejected, "rejected_for": self.rejected_for, "chosen": chosen}


@dataclass
class Sources:
    """The Keras models the candidates convert, and how to verify their conversions."""

    final_model: Any
    float_model: Any | None  # the pruned float model (before QAT); None: no float fallback
    x: Any  # the test split (a Split), or test inputs (a dict by input name for several inputs)
    y: Any  # test targets (None with a Split)
    final_outputs: Any
    representative: Any
    io: str
    verify: bool
    threads: int
    max_drop: float
    task: Any = None  # edgesparse.task.Task
    max_bytes: int | None = None  # sparsity.target.bytes: only candidates that fit are chosen (when one does)
    keep_float: list[str] | str | None = None  # quantization.keep_float
    keep_float_weights: str = "float16"  # quantization.keep_float_weights: float16 stores their kernels in half
    #: the int8 weight scales to convert with: [True] per channel, [False] per tensor, [True, False] both (auto)
    per_channel: tuple[bool, ...] = (True,)
    #: what the int8 debugging found, for export.json: "keep_float" (the selection), "quantization_diagnosis"
    report: dict[str, Any] = field(default_factory=dict)


def _evaluate(c: Candidate, src: Sources, reference: bytes | None, float_outputs: Callable[[], np.ndarray],
              at: str = "") -> None:
    """Verify ``c`` on the test split and time it against the dense model; record a failure as rejection."""
    try:
        broken = fc_shape_mismatches(c.data) if c.sparse_encoding else []
        if broken:
            raise ExportError(
                f"{c.label}: the converter stored int8 FULLY_CONNECTED weights in 16-wide sparse blocks although "
                f"their input depth is no multiple of 16 ({'; '.join(broken)}), which the kernel misreads (a converter "
                "defect): its outputs would be wrong. Skip pruning those layers (sparsity.layers: [{match: "
                "'^NAME$', skip: true}]) to keep the sparse encoding, or export without it.")
        if src.verify:
            outputs = src.final_outputs if c.source == "final" else float_outputs()
            c.verification = verify(c.data, src.x, src.y, outputs, threads=src.threads, label=c.label,
                                    float_model=CONVERTER_MODES.get(c.mode).float_outputs, max_drop_points=src.max_drop,
                                    task=src.task)
        if reference is None:
            return
        r = time_paired(c.data, reference, runs=TIMING_RUNS, warmup=TIMING_WARMUP, threads=src.threads)
        c.latency_ratio, c.latency_ratio_q1 = r["ratio_median"], r["ratio_q1"]
        c.latency_ratio_q3, c.resolver = r["ratio_q3"], r["resolver"]
        c.delegation = r.get("ops") if isinstance(r.get("ops"), dict) and "total" in r["ops"] else c.delegation
    except AccuracyDropError as exc:
        c.rejected, c.rejected_for = str(exc), "accuracy"
        c.verification = exc.verification if isinstance(exc.verification, Verification) else None
    except EdgesparseError as exc:
        c.rejected, c.rejected_for = str(exc), "error"
    finally:
        if c.verification is not None and c.delegation is None:
            c.delegation = c.verification.delegation
        log.info("candidate %s%s: %s B, %s", at, c.label, f"{len(c.data):,}",
                 f"rejected ({c.rejected})" if c.rejected else
                 "not timed" if c.latency_ratio is None else
                 f"{c.latency_ratio:.2f}x the dense model's latency, resolver {c.resolver}{_ops_note(c)}")


def _ops_note(c: Candidate) -> str:
    """``" (XNNPACK took 0 of 7 ops; builtin kernels run CONV_2D x1, ...)"`` when XNNPACK left ops out."""
    d = c.delegation or {}
    if "total" not in d or d["delegated"] == d["total"]:
        return ""
    left = ", ".join(f"{k} x{n}" for k, n in d.get("builtin", {}).items())
    return f" (XNNPACK took {d['delegated']} of {d['total']} ops; builtin kernels run {left})"


def mode_encodings(mode: str, setting: bool | str, *, explain: bool = False) -> list[bool]:
    """The sparse encodings the export converts ``mode`` with under ``export.sparse_encoding: setting``.

    ``auto`` tries both; a mode whose convolutions the converter's sparse encoding breaks (int16x8) is converted
    without it only (with ``explain``, logged: the user asked for auto or for the encoding).
    """
    encodings = [True, False] if setting == "auto" else [bool(setting)]
    if CONVERTER_MODES.get(mode).sparse_encoding or encodings == [False]:
        return encodings
    if explain:
        log.info("%s: the converter's sparse encoding breaks this mode's convolutions (measured; see "
                 "edgesparse.export.modes), so it is converted without it; the pruned zeros stay in its dense int8 "
                 "kernels", mode)
    return [False]


def _convert_and_evaluate(model: Any, modes: list[str], sparse_encoding: bool | str, source: str, src: Sources,
                          reference: bytes | None, float_outputs: Callable[[], np.ndarray],
                          because: str = "the requested mode") -> list[Candidate]:
    """Convert ``model`` in every mode and encoding, verifying and timing each conversion before the next.

    A mode whose conversions the sparse encoding breaks (int16x8) is converted without it only.
    """
    plan = [(mode, enc, mode_per_channel(mode, src)) for mode in modes
            for enc in mode_encodings(mode, sparse_encoding, explain=True)]
    out = []
    for i, (mode, enc, pc) in enumerate(plan, 1):
        label = Candidate(mode=mode, sparse_encoding=enc, data=b"", per_channel=pc).label
        steps = "converting" + (", verifying" if src.verify else "") + (", timing" if reference is not None else "")
        of = "the pruned float model" if source == "float" else "the final model"
        progress.item("export candidate", i, len(plan), f"{label} of {of}: {steps}")
        rep = src.representative if CONVERTER_MODES.get(mode).needs_calibration else None
        c = Candidate(mode=mode, sparse_encoding=enc, source=source, tried_because=because, per_channel=pc, data=b"")
        try:  # a conversion that fails (or crashes in its guarded child process) is a rejected candidate
            c.data = convert(model, mode, sparse_encoding=enc, representative=rep, io=src.io, per_channel=pc)
        except ExportError as exc:
            if mode == "none" and source == "float":
                raise
            c.rejected, c.rejected_for = str(exc), "error"
            log.info("candidate %d/%d %s: rejected (%s)", i, len(plan), label, exc)
        else:
            _evaluate(c, src, reference, float_outputs, at=f"{i}/{len(plan)} ")
        out.append(c)
    return out + _equalized_int16x8(model, out, src, reference, float_outputs, because)


def _equalized_int16x8(model: Any, done: list[Candidate], src: Sources, reference: bytes | None,
                       float_outputs: Callable[[], np.ndarray], because: str) -> list[Candidate]:
    """Each int16x8 conversion once more with its inputs equalized (:mod:`edgesparse.export.equalize`), where the
    first layer's kernel rows differ widely in range; of each pair the less accurate one is set aside (the two
    differ by one MUL and one RESHAPE on the input: the same size within bytes, the same speed)."""
    plain = [c for c in done if c.mode == "int16x8"]
    if not plain or src.representative is None or not src.verify:
        return []
    try:  # an optional candidate: a model it cannot rebuild or convert keeps its plain int16x8 conversions
        eq = equalize(model, src.representative)
    except Exception as exc:  # noqa: BLE001
        log.info("int16x8: equalized inputs not tried: the model could not be rebuilt with them (%s: %s)",
                 type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return []
    if eq is None:
        return []
    what = "; ".join(f"{k} -> {v['layer']} (kernel rows {v['row_spread']:.0f}x apart in range)" for k, v in
                     eq.inputs.items())
    log.info("int16x8: trying the conversion with equalized inputs too: %s", what)
    src.report["equalized_inputs"] = eq.inputs
    out = []
    for base in plain:
        c = Candidate(mode="int16x8", sparse_encoding=base.sparse_encoding, source=base.source, equalized=eq.layers,
                      tried_because=f"{because}; the first layer's kernel rows differ widely in range ({what}), "
                      "which its int8 weights' one scale per output channel cannot hold: the inputs equalized",
                      data=b"")
        try:
            c.data = convert(eq.model, "int16x8", sparse_encoding=base.sparse_encoding,
                             representative=src.representative, io=src.io)
        except EdgesparseError as exc:
            log.info("int16x8 with equalized inputs did not convert: %s", exc)
            continue
        _evaluate(c, src, reference, float_outputs, at="equalized ")
        _set_aside_less_accurate(base, c)
        out.append(c)
    return out


def _extra_drop(base: Candidate, c: Candidate) -> float | None:
    """How much more ``c`` loses than ``base`` when both passed verification (None otherwise)."""
    if base.rejected or c.rejected or base.verification is None or c.verification is None:
        return None
    return c.verification.drop - base.verification.drop


def _set_aside(c: Candidate, why: str) -> None:
    """Reject a passing conversion in favour of a twin (``rejected_for: superseded``)."""
    c.rejected, c.rejected_for = why, "superseded"


def _set_aside_less_accurate(a: Candidate, b: Candidate) -> None:
    """Of two conversions of the same model and size that both passed, reject the less accurate one (ties keep a)."""
    extra = _extra_drop(a, b)
    if extra is None:
        return
    better, worse = (a, b) if extra >= 0 else (b, a)
    assert better.verification is not None and worse.verification is not None
    _set_aside(worse, f"set aside for {better.label}, which is more accurate (drop {better.verification.drop:.2f} "
               f"vs {worse.verification.drop:.2f} {better.verification.unit}) at about the same size")


def mode_per_channel(mode: str, src: Sources) -> bool:
    """Whether ``mode``'s first conversions use per-channel int8 weight scales (per tensor only where asked alone)."""
    return not (mode == "int8" and src.per_channel == (False,))


def _per_tensor_too(candidates: list[Candidate], src: Sources, reference: bytes | None,
                    float_outputs: Callable[[], np.ndarray]) -> list[Candidate]:
    """``export.per_channel: auto`` for objective size: each verified per-channel int8 conversion once more with one
    weight scale per tensor (12 bytes less per output channel), verified and timed like the rest.

    Only conversions that passed are redone: per-tensor scales do not repair an accuracy loss."""
    if src.per_channel != (True, False):
        return []
    passed = [c for c in candidates if c.mode == "int8" and c.per_channel and not c.keep_float and c.rejected is None
              and c.source == "final"]
    out = []
    for i, base in enumerate(passed, 1):
        c = Candidate(mode="int8", sparse_encoding=base.sparse_encoding, per_channel=False, data=b"",
                      tried_because=f"export.per_channel: auto (objective size): {base.label} passed; one weight "
                      "scale per tensor makes the file smaller")
        progress.item("export candidate", i, len(passed), f"{c.label}: converting, verifying")
        c.data = convert(src.final_model, "int8", sparse_encoding=base.sparse_encoding,
                         representative=src.representative, io=src.io, per_channel=False)
        _evaluate(c, src, reference, float_outputs, at=f"per-tensor {i}/{len(passed)} ")
        _per_tensor_within_margin(base, c)
        out.append(c)
    return out


#: How much more a per-tensor conversion may lose than its per-channel twin (the unit's: points, or % relative)
#: and still be kept for its smaller file: bytes are not worth accuracy beyond the measurement's noise.
PER_TENSOR_MARGIN = 0.5


def _per_tensor_within_margin(base: Candidate, c: Candidate) -> None:
    """Set a verified per-tensor conversion aside when it loses more than :data:`PER_TENSOR_MARGIN` beyond ``base``."""
    extra = _extra_drop(base, c)
    if extra is not None and extra > PER_TENSOR_MARGIN:
        assert c.verification is not None
        _set_aside(c, f"set aside for {base.label}: per-tensor scales lose {extra:.2f} {c.verification.unit} more "
                   f"than per-channel ones (export.per_channel: auto allows {PER_TENSOR_MARGIN:g}), not worth "
                   f"its {len(base.data) - len(c.data):,} B")


def choose(candidates: list[Candidate], objective: str, max_bytes: int | None = None) -> Candidate | None:
    """The candidate ``objective`` prefers among the ones that were not rejected (None if all were).

    With ``max_bytes`` (a size budget) only the candidates that fit are considered, when any does; otherwise
    the objective chooses among all (the run then sees the miss and corrects it).
    """
    ok = [c for c in candidates if c.rejected is None]
    if not ok:
        return None
    fits = [c for c in ok if max_bytes is None or len(c.data) <= max_bytes]
    ok = fits or ok
    timed = [c for c in ok if c.latency_ratio is not None]
    fastest = min(timed, key=lambda c: c.latency_ratio or 0.0) if timed else None
    if objective == "latency" and fastest is not None:
        return fastest
    if objective == "balanced":
        fine = [c for c in ok if c.not_slower]
        if fine:
            return min(fine, key=lambda c: len(c.data))
        if fastest is not None:
            return fastest
    return min(ok, key=lambda c: len(c.data))


def select(src: Sources, mode: str, sparse_encoding: bool | str, objective: str,
           dense_bytes: bytes | None) -> tuple[Candidate, list[Candidate]]:
    """Convert, verify and time the candidates; return the chosen one and all of them.

    Without ``dense_bytes`` nothing is timed and the smallest verified candidate is kept.

    Raises:
        ExportError: every candidate failed verification or could not be run.
    """
    float_cache: list[np.ndarray] = []

    def float_outputs() -> np.ndarray:
        if not float_cache:
            model = src.float_model if src.float_model is not None else src.final_model
            float_cache.append(model_outputs(model, src.x))
        return float_cache[0]

    if dense_bytes is None:
        objective = "size"
    log.info("converting (%s, io %s), sparse encoding %s; objective %s", mode, src.io,
             "on and off" if sparse_encoding == "auto" else ("on" if sparse_encoding else "off"), objective)
    quant = _Int8Debug(src) if mode == "int8" else None
    if quant is not None and isinstance(src.keep_float, list):
        candidates = [quant.regex_candidate(dense_bytes, float_outputs)]
    else:
        candidates = _convert_and_evaluate(src.final_model, [mode], sparse_encoding, "final", src, dense_bytes,
                                           float_outputs)
    candidates += _per_tensor_too(candidates, src, dense_bytes, float_outputs)
    best = choose(candidates, objective, src.max_bytes)
    if quant is not None and best is None and src.verify and any(c.rejected_for == "accuracy" for c in candidates):
        best = quant.after_accuracy_loss(candidates, objective, dense_bytes, float_outputs)
    reasons = []
    if _try_int16x8(best, mode, candidates, src):
        reasons.append(fallback_reason(candidates, mode))
        log.info("%s: trying int16x8 (int16 activations, int8 weights; LiteRT's builtin kernels run it)", reasons[0])
        candidates += _convert_and_evaluate(src.final_model, ["int16x8"], sparse_encoding, "final", src, dense_bytes,
                                            float_outputs, because=reasons[0])
        best = choose(candidates, objective, src.max_bytes)
    if _try_float(best, mode, objective, src):
        last = fallback_reason(candidates, best.mode if best is not None else candidates[-1].mode, best)
        why = "; ".join(reasons + [last] if last not in reasons else reasons)
        log.info("%s: trying float32 conversions of the pruned model too", why)
        candidates += _convert_and_evaluate(src.float_model, ["none"], sparse_encoding, "float", src, dense_bytes,
                                            float_outputs, because=why)
        best = choose(candidates, objective, src.max_bytes)
    if quant is not None:
        quant.finish(candidates)
    if best is None:
        diagnosis = src.report.get("quantization_diagnosis")
        raise ExportError("no conversion passed verification: " + " | ".join(str(c.rejected) for c in candidates)
                          + (f". Where int8 loses it: {diagnosis['message']}" if diagnosis else ""))
    return best, candidates


class _Int8Debug:
    """The int8 side of ``quantization.keep_float`` and of the accuracy-loss diagnosis, on one lazy debugger."""

    def __init__(self, src: Sources) -> None:
        self.src = src
        self._dbg: QuantDebugger | None = None
        self.rows: list[OpError] | None = None
        self.selection: kf.Selection | None = None

    @property
    def dbg(self) -> QuantDebugger:
        if self._dbg is None:
            log.info("int8: running TensorFlow's QuantizationDebugger on %s calibration samples",
                     "the first 100" if self.src.representative is not None else "no")
            self._dbg = QuantDebugger(self.src.final_model, self.src.representative)
        return self._dbg

    def score(self, data: bytes) -> tuple[float, float | None]:
        """Degradation and primary metric of an int8 flatbuffer on the test split (no limit applied), with the
        kept-float kernels stored as the candidate will store them (float16 by default)."""
        if self.src.keep_float_weights == "float16":
            data = float16_kernels(data).data
        v = verify(data, self.src.x, self.src.y, self.src.final_outputs, threads=self.src.threads,
                   float_model=False, label="int8, ops kept float", task=self.src.task)
        return v.drop, v.metric

    def candidate(self, sel: kf.Selection, because: str, reference: bytes | None,
                  float_outputs: Callable[[], np.ndarray]) -> Candidate:
        data = sel.data
        if self.src.keep_float_weights == "float16":  # measured below like every candidate
            half = float16_kernels(data)  # in an int8 model the float kernels are the kept ops' own
            data = half.data
            if half.tensors:
                log.info("int8: the kept-float kernels (%s) stored in float16, %s B saved", ", ".join(half.tensors),
                         f"{half.saved_bytes:,}")
        c = Candidate(mode="int8", sparse_encoding=False, data=data, tried_because=because, keep_float=sel.layers)
        progress.item("export candidate", 1, 1, f"{c.label}: verifying" + (", timing" if reference else ""))
        _evaluate(c, self.src, reference, float_outputs)
        return c

    def regex_candidate(self, reference: bytes | None, float_outputs: Callable[[], np.ndarray]) -> Candidate:
        assert isinstance(self.src.keep_float, list)
        self.selection = kf.by_regex(self.dbg, self.src.final_model, self.src.keep_float)
        log.info("int8: keeping %s float (quantization.keep_float)", ", ".join(self.selection.layers))
        return self.candidate(self.selection, "the requested mode, " + self.selection.why, reference, float_outputs)

    def after_accuracy_loss(self, candidates: list[Candidate], objective: str, reference: bytes | None,
                            float_outputs: Callable[[], np.ndarray]) -> Candidate | None:
        """Rank the ops by error; with keep_float auto, add the fewest-float-ops candidate. The best then."""
        self.rows = self.dbg.rows()
        auto = self.src.keep_float == "auto"
        kf.measure_each(self.dbg, self.rows, self.score, cap=kf.MEASURED_OPS if auto else 1)
        if auto:
            reason = fallback_reason(candidates, "int8")

            def accept(sel: kf.Selection) -> bool:  # the candidate as it will be kept (float16 kernels), verified
                c = self.candidate(sel, f"{reason}; quantization.keep_float: auto: {sel.why}", reference,
                                   float_outputs)
                candidates.append(c)
                return c.rejected is None

            self.selection = kf.auto(self.dbg, self.rows, self.score, self.src.max_drop, _int8_drop(candidates),
                                     accept)
            if self.selection is None:
                log.info("keep_float auto: no set of float ops, up to all %d, brings int8 within %g",
                         len(self.rows), self.src.max_drop)
        return choose(candidates, objective, self.src.max_bytes)

    def finish(self, candidates: list[Candidate]) -> None:
        """Record the selection and, when int8 lost accuracy, the diagnosis in ``src.report``."""
        if self.selection is not None:
            self.src.report["keep_float"] = self.selection.to_dict()
        elif self.src.keep_float == "auto":
            self.src.report["keep_float"] = {
                "requested": "auto", "layers": [], "tensors": [],
                "why": ("int8 alone is within export.max_accuracy_drop" if self.rows is None else
                        "no set of float ops, up to every op, brings int8 within export.max_accuracy_drop")}
        if self._dbg is not None:
            self.src.report["op_layers"] = {t: layer for _, t, layer in self._dbg.ops}
        if self.rows is None:
            return
        i16 = [c.verification.drop for c in candidates if c.mode == "int16x8" and c.verification is not None]
        unit = next((c.verification.unit for c in candidates if c.verification is not None), "points")
        self.src.report["quantization_diagnosis"] = kf.diagnose(
            self.rows, int8_drop=_int8_drop(candidates), unit=unit, max_drop=self.src.max_drop,
            int16x8_drop=min(i16) if i16 else None, auto_selection=self.selection)
        log.info("%s", self.src.report["quantization_diagnosis"]["message"])


def _int8_drop(candidates: list[Candidate]) -> float | None:
    """The smallest degradation of the plain int8 conversions (None: none verified)."""
    drops = [c.verification.drop for c in candidates
             if c.mode == "int8" and not c.keep_float and c.verification is not None]
    return min(drops) if drops else None


def fallback_reason(candidates: list[Candidate], mode: str, best: Candidate | None = None) -> str:
    """Why a conversion in another mode than ``mode`` is tried (or was kept): the measured reason, in one clause.

    Args:
        candidates: The candidates so far.
        mode: The mode whose candidates fell short.
        best: The best of them when one passed (then it was too slow, not rejected).
    """
    tried = [c for c in candidates if c.mode == mode]
    if best is not None and best.rejected is None:
        ratio = "not timed" if best.latency_ratio is None else f"{best.latency_ratio:.2f}x"
        return (f"no {mode} conversion runs as fast as the dense float model here (the best, {best.label}: "
                f"{ratio} its latency)")
    if not tried:
        return f"no {mode} conversion was made"
    checked = [c.verification for c in tried if c.verification is not None]
    accuracy = [c for c in tried if c.rejected_for == "accuracy"]
    if len(accuracy) == len(tried):
        drops = sorted(v.drop for v in checked)
        unit = checked[0].unit if checked else ""
        worst = "" if not drops else (f" (lost {drops[0]:.1f} {unit})" if drops[0] == drops[-1] else
                                      f" (lost {drops[0]:.1f} to {drops[-1]:.1f} {unit})")
        return f"every {mode} conversion lost more than export.max_accuracy_drop on the test split{worst}"
    if accuracy:
        return (f"no {mode} conversion passed: {len(accuracy)} lost more than export.max_accuracy_drop, "
                f"{len(tried) - len(accuracy)} failed to convert or run")
    return f"every {mode} conversion failed to run ({tried[0].rejected})"


def _try_int16x8(best: Candidate | None, mode: str, candidates: list[Candidate], src: Sources) -> bool:
    """Whether int16x8 is worth trying: no int8 conversion passed and one lost accuracy (not a converter failure)."""
    if mode != "int8" or best is not None or src.io != "float32" or not src.verify:
        return False
    return any(c.rejected_for == "accuracy" for c in candidates)


def _try_float(best: Candidate | None, mode: str, objective: str, src: Sources) -> bool:
    """Whether the float32 conversions of the pruned model are worth trying as well."""
    if mode == "none" or src.float_model is None or src.io != "float32":
        return False
    if best is None:  # nothing of the asked mode passed (it lost accuracy, or the converter failed or crashed)
        return True
    return objective == "latency" or (objective != "size" and not best.not_slower)

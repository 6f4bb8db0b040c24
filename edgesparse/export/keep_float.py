"""``quantization.keep_float``: some ops float32 in an otherwise int8 model, and why int8 lost accuracy.

* A list of regexes keeps the ops of the layers they match (searched in layer names) float.
* ``auto`` ranks the ops by their quantization error (:class:`~edgesparse.export.debugger.QuantDebugger`,
  worst ``rmse / scale`` first), measures the first :data:`MEASURED_OPS` of them kept float alone on the
  test split, and keeps the fewest ops float that bring the model within ``export.max_accuracy_drop``: the
  best single op when one suffices, else ops added one at a time (measured best first, then by error) until
  a set is within the drop and its candidate passes verification, or no op is left. Every step is logged
  (``keep_float auto i/N: ...``) and listed in export.json's ``keep_float.tried``.
* :func:`diagnose` is what an int8 export that loses too much says: the worst layers with their
  ranges, and the three ways out with the figure each gives where it was cheap to measure.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgesparse import progress
from edgesparse.errors import EdgesparseError, RecipeError
from edgesparse.export.debugger import OpError, QuantDebugger, keras_layer_names

log = logging.getLogger(__name__)

#: ops measured kept float alone (one conversion and one test-split verification each)
MEASURED_OPS = 8

#: scores a flatbuffer: its degradation vs Keras (points for fractions, % for errors) and primary metric
Score = Callable[[bytes], tuple[float, float | None]]


def check_layers(model: Any, keep_float: list[str] | str | None) -> list[str]:
    """The layers ``keep_float``'s regexes match (``[]`` for None or auto).

    Raises:
        RecipeError: a regex matches no layer of the model (the message lists the layers).
    """
    if not isinstance(keep_float, list):
        return []
    names = keras_layer_names(model)
    unmatched = [p for p in keep_float if not any(re.search(p, n) for n in names)]
    if unmatched:
        raise RecipeError(
            "quantization.keep_float: " + ", ".join(f"'{p}'" for p in unmatched)
            + f" {'matches' if len(unmatched) == 1 else 'match'} no layer of model '{model.name}' (the regex is "
            f"searched in layer names). Its layers: {', '.join(names)}. Fix the regex, or use keep_float: auto.")
    return [n for n in names if any(re.search(p, n) for p in keep_float)]


@dataclass
class Selection:
    """The ops a selectively float model keeps float, and how they were chosen."""

    tensors: list[str]
    layers: list[str]
    requested: list[str] | str
    why: str
    drop: float | None = None
    metric: float | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)
    data: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (export.json's ``keep_float``)."""
        return {"requested": self.requested, "layers": self.layers, "tensors": self.tensors, "why": self.why,
                "drop": self.drop, "metric": self.metric, "tried": self.tried}


def by_regex(dbg: QuantDebugger, model: Any, patterns: list[str]) -> Selection:
    """The matched layers' ops kept float (the model's conversion in ``data``).

    Raises:
        RecipeError: a regex matches no layer, or the matched layers have no op of their own in the model.
    """
    layers = check_layers(model, patterns)
    tensors = dbg.tensors_of(layers)
    if not tensors:
        raise RecipeError(f"quantization.keep_float matches layers {', '.join(layers)} but none of them has an op "
                          "of its own in the converted model (the converter folded them into others); keep the "
                          "layer they feed float instead. Ops by layer: "
                          + ", ".join(f"{layer or '?'}: {op}" for op, _, layer in dbg.ops))
    return Selection(tensors=tensors, layers=layers, requested=list(patterns), data=dbg.model(tensors),
                     why="the layers quantization.keep_float matches: " + ", ".join(layers))


def measure_each(dbg: QuantDebugger, rows: list[OpError], score: Score, cap: int = MEASURED_OPS) -> None:
    """Fill ``drop_if_float``/``metric_if_float`` of the first ``cap`` rows: the model with only that op float."""
    for r in rows[:cap]:
        try:
            r.drop_if_float, r.metric_if_float = score(dbg.model([r.tensor]))
        except EdgesparseError:  # a conversion the runtime refuses: left unmeasured
            continue


def auto(dbg: QuantDebugger, rows: list[OpError], score: Score, max_drop: float, int8_drop: float | None,
         accept: Callable[[Selection], bool] | None = None) -> Selection | None:
    """The fewest ops kept float that bring the model within ``max_drop`` (None: not even with every op float).

    The best measured op alone is tried first; then ops are added one at a time (measured best first, then the
    rest worst first by error) until a set is within ``max_drop`` and ``accept`` takes it, or no op is left.

    Args:
        dbg: The debugger of the model.
        rows: Its rows worst first, the first :data:`MEASURED_OPS` measured by :func:`measure_each`.
        score: Scores a flatbuffer on the test split, as the kept candidate will be verified.
        max_drop: ``export.max_accuracy_drop`` in the task's unit.
        int8_drop: The plain int8 model's degradation (for the reason given).
        accept: Verifies a selection within ``max_drop`` as a candidate (False: rejected, keep searching);
            None accepts every one.
    """
    measured = sorted((r for r in rows if r.drop_if_float is not None), key=lambda r: r.drop_if_float or 0.0)
    order = measured + [r for r in rows if r.drop_if_float is None]
    tried: list[dict[str, Any]] = [{"ops": [r.layer or r.tensor], "drop": r.drop_if_float} for r in measured]
    before = "" if int8_drop is None else f"int8 alone loses {int8_drop:.2f}; "

    def offer(chosen: list[OpError], drop: float, metric: float | None, data: bytes, why: str) -> Selection | None:
        layers = list(dict.fromkeys(c.layer or c.tensor for c in chosen))  # a layer may own several ops
        sel = Selection(tensors=[c.tensor for c in chosen], layers=layers, requested="auto", drop=drop,
                        metric=metric, tried=tried, data=data, why=why)
        if accept is None or accept(sel):
            return sel
        tried.append({"ops": layers, "drop": drop, "rejected": "by the candidate's verification"})
        log.info("keep_float auto: %s float passed the search's measure but not the candidate's verification; "
                 "adding the next op", ", ".join(layers))
        return None

    if measured and (measured[0].drop_if_float or 0.0) <= max_drop:
        best = measured[0]
        sel = offer([best], best.drop_if_float or 0.0, best.metric_if_float, dbg.model([best.tensor]),
                    f"{before}keeping one op float is enough: {best.where} (worst first by rmse / scale, "
                    f"measured: {best.drop_if_float:.2f} lost with it float, within {max_drop:g})")
        if sel is not None:
            return sel
    # every op kept float would be the float32 model, which the export's fallback converts anyway
    order = order[:-1] if len(order) == len(dbg.ops) else order
    return _grow(dbg, order, score, max_drop, tried, offer, before)


def _grow(dbg: QuantDebugger, order: list[OpError], score: Score, max_drop: float, tried: list[dict[str, Any]],
          offer: Callable[..., Selection | None], before: str) -> Selection | None:
    """Add ops to the float set one at a time in ``order`` until ``offer`` takes a set within ``max_drop``."""
    chosen: list[OpError] = []
    for i, r in enumerate(order, 1):
        chosen.append(r)
        names = [c.layer or c.tensor for c in chosen]
        if len(chosen) == 1 and r.drop_if_float is not None:
            continue  # measured alone already (and not enough, or not accepted)
        progress.item("keep_float auto", i, len(order), f"{len(chosen)} ops kept float: {', '.join(names)}")
        try:
            data = dbg.model([c.tensor for c in chosen])
            drop, metric = score(data)
        except EdgesparseError as exc:
            tried.append({"ops": names, "drop": None, "error": str(exc)})
            continue
        tried.append({"ops": names, "drop": drop})
        log.info("keep_float auto %d/%d: %s float: %.2f lost (allowed %g)", i, len(order), ", ".join(names), drop,
                 max_drop)
        if drop <= max_drop:
            sel = offer(chosen, drop, metric, data,
                        f"{before}no single op kept float brings it within {max_drop:g}; the {len(chosen)} ops "
                        f"added one at a time (best measured first) do: {drop:.2f} lost")
            if sel is not None:
                return sel
    return None


def diagnose(rows: list[OpError], *, int8_drop: float | None, unit: str, max_drop: float,
             int16x8_drop: float | None = None, auto_selection: Selection | None = None, worst: int = 3
             ) -> dict[str, Any]:
    """What an int8 conversion that lost more than ``max_drop`` says: where, and the three ways out.

    Args:
        rows: The debugger's rows, worst first (the first ones measured when :func:`measure_each` ran).
        int8_drop: The best int8 conversion's degradation.
        unit: The drop's unit ("points" or "%").
        max_drop: ``export.max_accuracy_drop``.
        int16x8_drop: int16x8's degradation, when that fallback was converted and verified.
        auto_selection: ``keep_float: auto``'s selection when it was computed.
        worst: How many layers to name.

    Returns:
        ``{"worst": [rows], "ways_out": {...}, "message": str}``.
    """
    top = rows[:worst]
    first = rows[0] if rows else None
    if auto_selection is not None:
        kf = {"layers": auto_selection.layers, "drop": auto_selection.drop, "measured": True}
        kf_text = f"keeping {', '.join(auto_selection.layers)} float loses {auto_selection.drop:.2f} {unit}"
    elif first is not None and first.drop_if_float is not None:
        kf = {"layers": [first.layer or first.tensor], "drop": first.drop_if_float, "measured": True}
        kf_text = f"keeping {first.layer or first.tensor} float loses {first.drop_if_float:.2f} {unit}"
    else:
        kf, kf_text = {"measured": False}, "not measured"
    i16 = ({"drop": int16x8_drop, "measured": True} if int16x8_drop is not None else {"measured": False})
    i16_text = f"loses {int16x8_drop:.2f} {unit}" if int16x8_drop is not None else "not measured here"
    lost = "" if int8_drop is None else f" loses {int8_drop:.2f} {unit} (allowed {max_drop:g})"
    message = (f"int8{lost}; the ops quantization hurts most (rmse in steps of their int8 output): "
               + ("; ".join(r.where for r in top) if top else "none measured")
               + f". Ways out: quantization.keep_float: [{', '.join(repr(r.layer or r.tensor) for r in top[:1])}] "
               f"or auto ({kf_text}); quantization.mode: int16x8 (int16 activations; {i16_text}); quantization-"
               "aware training, mode qat or pqat (not measured: it trains).")
    return {"worst": [r.to_dict() for r in top], "message": message,
            "ways_out": {"keep_float": kf, "int16x8": i16, "qat": {"measured": False, "why": "needs training"}}}

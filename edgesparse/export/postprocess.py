"""Append TFLite's ``TFLite_Detection_PostProcess`` op to a converted SSD-style detector.

``export.detection_postprocess: true`` ends the exported model the way the TF Object Detection API's SSD
exports end (``export_tflite_graph_tf2.py``): the raw heads (``scores (1, A, C + 1)``, ``boxes (1, A, 4)``)
feed the builtin custom op with the anchors baked in as a constant, and the model's outputs become

* ``detection_boxes`` ``(1, N, 4)`` ``[ymin, xmin, ymax, xmax]`` normalised,
* ``detection_classes`` ``(1, N)`` 0-based foreground class (float, as the op writes it),
* ``detection_scores`` ``(1, N)``,
* ``num_detections`` ``(1,)`` how many of the ``N = max_detections`` rows are filled.

The op is written into the flatbuffer (the converter's ``experimental_implements`` route would need the raw
heads traced again inside one ``tf.function``, for every conversion candidate): a constant anchors tensor in
center-size form ``[yc, xc, h, w]``, the op with its flexbuffer options (scales are the reciprocal encoding
variances, per-class NMS: ``use_regular_nms``), and, for an int8-output model, a DEQUANTIZE in front of each
head. LiteRT's builtin op resolver has the op; the model needs batch 1 (the op decodes one image), so the
input's batch axis is fixed to 1.

Only ``ai_edge_litert.schema_py_generated``, ``flatbuffers`` and numpy are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.boxes import POSTPROCESS_OUTPUTS, VARIANCES, detections_from_outputs, to_center
from edgesparse.errors import ExportError

OP_NAME = "TFLite_Detection_PostProcess"
#: the post-processed model's outputs, in the op's order
OUTPUTS = POSTPROCESS_OUTPUTS



@dataclass(frozen=True)
class PostprocessSettings:
    """The op's options (the defaults suit small detectors; recorded in export.json)."""

    num_classes: int
    max_detections: int = 20
    detections_per_class: int = 20
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    variances: tuple[float, float, float, float] = VARIANCES

    def options(self) -> dict[str, Any]:
        """The op's flexbuffer options, named as the TFLite kernel reads them."""
        v = self.variances
        return {"max_detections": int(self.max_detections), "max_classes_per_detection": 1,
                "detections_per_class": int(self.detections_per_class), "use_regular_nms": True,
                "nms_score_threshold": float(self.score_threshold), "nms_iou_threshold": float(self.iou_threshold),
                "num_classes": int(self.num_classes), "y_scale": 1.0 / v[0], "x_scale": 1.0 / v[1],
                "h_scale": 1.0 / v[2], "w_scale": 1.0 / v[3]}


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _find_output(g: Any, sig: Any, name: str, position: int) -> int:
    """Tensor index of the model output ``name`` (by signature key or tensor name, else by position)."""
    if sig is not None:
        for o in sig.outputs or []:
            key = o.name.decode() if isinstance(o.name, bytes) else str(o.name)
            if key == name or key.endswith("_" + name):
                return int(o.tensorIndex)
    for t in g.outputs:
        if _name(g.tensors[t]).split(":")[0].rsplit("/", 1)[-1] == name:
            return int(t)
    return int(g.outputs[position])


def _add_tensor(m: Any, g: Any, schema: Any, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
    t = schema.TensorT()
    t.name, t.shape, t.type = name, list(shape), schema.TensorType.FLOAT32
    buf = schema.BufferT()
    if data is not None:
        buf.data = np.frombuffer(np.ascontiguousarray(data, dtype="<f4").tobytes(), dtype=np.uint8)
    m.buffers.append(buf)
    t.buffer = len(m.buffers) - 1
    g.tensors.append(t)
    return len(g.tensors) - 1


def _opcode(m: Any, schema: Any, builtin: int, custom: str | None = None) -> int:
    for i, c in enumerate(m.operatorCodes):
        code = max(c.builtinCode, c.deprecatedBuiltinCode)
        cc = c.customCode.decode() if isinstance(c.customCode, bytes) else c.customCode
        if code == builtin and (custom is None or cc == custom):
            return i
    c = schema.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), 1
    if custom is not None:
        c.customCode = custom
    m.operatorCodes.append(c)
    return len(m.operatorCodes) - 1


def append_detection_postprocess(model: bytes, anchors: np.ndarray, settings: PostprocessSettings,
                                 scores: str = "cls", boxes: str = "box",
                                 output_order: Sequence[str] | None = None) -> bytes:
    """The converted detector with ``TFLite_Detection_PostProcess`` appended (see the module docstring).

    Args:
        model: A .tflite flatbuffer whose outputs include the class scores and the encoded boxes.
        anchors: ``(A, 4)`` corner anchors ``[ymin, xmin, ymax, xmax]`` the boxes are encoded against.
        settings: The op's options.
        scores: The class-score output's name (signature key or tensor name).
        boxes: The box output's name.
        output_order: The model's output names in order, used when a name is not found in the file.

    Returns:
        The new flatbuffer, whose four outputs are :data:`OUTPUTS`.

    Raises:
        ExportError: the heads do not match the anchors or the number of classes, or the model has no
            signature or several subgraphs.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    if len(m.subgraphs) != 1:
        raise ExportError(f"detection_postprocess needs a model of one subgraph, this one has {len(m.subgraphs)}; "
                          "export without `detection_postprocess`.")
    g = m.subgraphs[0]
    sig = m.signatureDefs[0] if m.signatureDefs else None
    order = list(output_order or [])
    ti_scores = _find_output(g, sig, scores, order.index(scores) if scores in order else 0)
    ti_boxes = _find_output(g, sig, boxes, order.index(boxes) if boxes in order else 1)
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    _check_heads(list(g.tensors[ti_scores].shape), list(g.tensors[ti_boxes].shape), len(a), settings, scores, boxes)
    box_in, score_in = _as_float(m, g, schema, ti_boxes), _as_float(m, g, schema, ti_scores)
    anchors_t = _add_tensor(m, g, schema, "anchors", [len(a), 4], to_center(a).astype(np.float32))
    n = settings.max_detections
    outs = [_add_tensor(m, g, schema, OUTPUTS[0], [1, n, 4]), _add_tensor(m, g, schema, OUTPUTS[1], [1, n]),
            _add_tensor(m, g, schema, OUTPUTS[2], [1, n]), _add_tensor(m, g, schema, OUTPUTS[3], [1])]
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(m, schema, schema.BuiltinOperator.CUSTOM, OP_NAME)
    op.inputs, op.outputs = [box_in, score_in, anchors_t], outs
    op.customOptions = np.frombuffer(bytes(flexbuffers.Dumps(settings.options())), dtype=np.uint8)
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    g.operators.append(op)
    _set_outputs(g, sig, schema, outs)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _as_float(m: Any, g: Any, schema: Any, ti: int) -> int:
    """Tensor ``ti``, or a float32 copy behind a DEQUANTIZE when it is quantized (int8 outputs)."""
    t = g.tensors[ti]
    if t.type == schema.TensorType.FLOAT32:
        return ti
    out = _add_tensor(m, g, schema, _name(t) + "_float", list(t.shape))
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(m, schema, schema.BuiltinOperator.DEQUANTIZE)
    op.inputs, op.outputs = [ti], [out]
    g.operators.append(op)
    return out


def _check_heads(s_shape: list[int], b_shape: list[int], anchors: int, settings: PostprocessSettings, scores: str,
                 boxes: str) -> None:
    a = range(anchors)
    if len(b_shape) != 3 or b_shape[-1] != 4 or b_shape[1] != len(a):
        raise ExportError(f"detection_postprocess: the box output '{boxes}' is {b_shape}, but the op needs "
                          f"(1, {len(a)}, 4): one encoded box per anchor ({len(a)} anchors in the data).")
    if len(s_shape) != 3 or s_shape[1] != len(a) or s_shape[2] not in (settings.num_classes,
                                                                        settings.num_classes + 1):
        raise ExportError(f"detection_postprocess: the score output '{scores}' is {s_shape}, but the op needs "
                          f"(1, {len(a)}, {settings.num_classes + 1}) (background first) or "
                          f"(1, {len(a)}, {settings.num_classes}).")


def _set_outputs(g: Any, sig: Any, schema: Any, outs: list[int]) -> None:
    """The op's tensors become the model's outputs (and signature outputs); the input's batch axis is 1."""
    g.outputs = outs
    for ti in g.inputs:  # the op decodes one image: batch 1
        t = g.tensors[ti]
        t.shape = [1, *list(t.shape)[1:]]
        if t.shapeSignature is not None:
            t.shapeSignature = [1, *list(t.shapeSignature)[1:]]
    if sig is not None:
        maps = []
        for name, ti in zip(OUTPUTS, outs):
            tm = schema.TensorMapT()
            tm.name, tm.tensorIndex = name, ti
            maps.append(tm)
        sig.outputs = maps


def settings_for(task: Any) -> PostprocessSettings:
    """The op's options from a detection task (its NMS settings, anchors' variances, classes).

    Raises:
        ExportError: the task is not a detector's, or its scores are logits (the op thresholds probabilities).
    """
    if task is None or getattr(task, "kind", None) != "detection":
        kind = "none" if task is None else ("several outputs" if task.multi_output else task.kind)
        raise ExportError(f"export.detection_postprocess appends TFLite's detection post-processing to an anchor-based "
                          f"detector, but this model's task is {kind}, not detection. Set `task: {{kind: detection, "
                          "scores: <output>, boxes: <output>}` for an SSD-style model, or remove "
                          "`export.detection_postprocess`.")
    if task.logits:
        raise ExportError(f"export.detection_postprocess: the scores output '{task.scores}' gives logits, and "
                          f"{OP_NAME} thresholds probabilities; end the scores head in a softmax (background first) "
                          "or a sigmoid.")
    return PostprocessSettings(num_classes=int(task.num_classes), max_detections=int(task.max_detections),
                               detections_per_class=int(task.max_detections),
                               score_threshold=float(task.score_threshold), iou_threshold=float(task.iou_threshold),
                               variances=tuple(task.variances))


def postprocess_and_verify(model: bytes, task: Any, x: Any, y: Any, keras_outputs: Any, *, verify: bool = True,
                           threads: int = 1, max_drop: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """Append the op to the kept conversion and verify its detections against the Keras model's.

    The Keras model's raw outputs are decoded and put through the same per-class NMS in numpy; the file's
    detections must match them (``agreement``: the lower share of either side's confident detections the other
    has) and its mAP@0.5 on the test split must stay within ``max_drop`` points of the Keras model's.

    Args:
        model: The kept .tflite (raw heads).
        task: The detection task (anchors, classes, NMS settings).
        x: Test inputs (arrays, one input).
        y: Test targets (per anchor).
        keras_outputs: The Keras model's raw outputs on ``x``.
        verify: Run the check (else only append).
        threads: Interpreter threads.
        max_drop: Allowed mAP loss in points; None: not enforced.

    Returns:
        The post-processed flatbuffer and export.json's ``detection_postprocess`` entry.

    Raises:
        ExportError: not a detector, or the op does not run.
        AccuracyDropError: the file's mAP is more than ``max_drop`` points below the Keras model's.
    """
    from edgesparse.export.litert import load_interpreter, predict

    settings = settings_for(task)
    data = append_detection_postprocess(model, task.anchors, settings, task.scores, task.boxes,
                                        [h.name for h in task.heads])
    info: dict[str, Any] = {"op": OP_NAME, "outputs": list(OUTPUTS), **settings.options(),
                            "anchors": int(len(task.anchors))}
    if not verify:
        return data, info
    loaded = load_interpreter(data, threads=threads)
    out = predict(loaded, x)
    n = len(out[OUTPUTS[3]]) if isinstance(out, dict) and OUTPUTS[3] in out else 0
    keras_outputs = {k: np.asarray(v)[:n] for k, v in task.outputs_dict(keras_outputs).items()}  # a stream's head
    if not isinstance(out, dict) or set(out) != set(OUTPUTS):
        raise ExportError(f"the post-processed model's outputs are {sorted(out) if isinstance(out, dict) else 1}, "
                          f"not {', '.join(OUTPUTS)}.")
    cmp = task.compare(keras_outputs, out)
    tm, km = task.evaluate(out, y), task.evaluate(keras_outputs, y)
    metric, keras_metric = tm.get("map50"), km.get("map50")
    drop = task.degradation(keras_metric, metric, "map50") if metric is not None and keras_metric is not None \
        else 0.0
    info["verification"] = {"samples": int(len(out[OUTPUTS[3]])), "resolver": loaded.resolver,
                            "map50": metric, "keras_map50": keras_metric, "drop_points": drop,
                            "agreement": cmp["agreement"],
                            "mean_detections": float(np.mean(out[OUTPUTS[3]])) if len(out[OUTPUTS[3]]) else 0.0}
    if max_drop is not None and metric is not None and keras_metric is not None and drop > max_drop:
        _refuse(metric, keras_metric, drop, max_drop, cmp, loaded, n)
    return data, info


def _refuse(metric: float, keras_metric: float, drop: float, max_drop: float, cmp: dict[str, Any], loaded: Any,
            samples: int) -> None:
    """Raise the AccuracyDropError of a post-processed file that loses too much mAP."""
    from edgesparse.errors import AccuracyDropError
    from edgesparse.export.verify import Verification

    result = Verification(samples=samples, accuracy=None, keras_accuracy=None, agreement=cmp["agreement"],
                          max_abs_diff=0.0, resolver=loaded.resolver, fallback_reason=loaded.fallback_reason,
                          float_model=False, metric=metric, keras_metric=keras_metric, metric_name="map50", drop=drop)
    raise AccuracyDropError(f"model.tflite with {OP_NAME}: its mAP@0.5 {metric:.4f} is {drop:.2f} points below the "
                            f"Keras model's {keras_metric:.4f} decoded with the same NMS (export.max_accuracy_drop "
                            f"allows {max_drop:g}; detection agreement {cmp['agreement']:.1%}). Check the NMS "
                            "settings (task.score_threshold, task.iou_threshold), or export without "
                            "`detection_postprocess` and run the NMS yourself.", result)


__all__ = ["OP_NAME", "OUTPUTS", "PostprocessSettings", "append_detection_postprocess", "detections_from_outputs",
           "postprocess_and_verify", "settings_for"]

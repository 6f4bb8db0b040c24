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

from edgesparse.boxes import VARIANCES, to_center
from edgesparse.errors import ExportError

OP_NAME = "TFLite_Detection_PostProcess"
#: the post-processed model's outputs, in the op's order
OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


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
    s_shape, b_shape = list(g.tensors[ti_scores].shape), list(g.tensors[ti_boxes].shape)
    a = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    if len(b_shape) != 3 or b_shape[-1] != 4 or b_shape[1] != len(a):
        raise ExportError(f"detection_postprocess: the box output '{boxes}' is {b_shape}, but the op needs "
                          f"(1, {len(a)}, 4): one encoded box per anchor ({len(a)} anchors in the data).")
    if len(s_shape) != 3 or s_shape[1] != len(a) or s_shape[2] not in (settings.num_classes,
                                                                        settings.num_classes + 1):
        raise ExportError(f"detection_postprocess: the score output '{scores}' is {s_shape}, but the op needs "
                          f"(1, {len(a)}, {settings.num_classes + 1}) (background first) or "
                          f"(1, {len(a)}, {settings.num_classes}).")

    def as_float(ti: int) -> int:
        t = g.tensors[ti]
        if t.type == schema.TensorType.FLOAT32:
            return ti
        out = _add_tensor(m, g, schema, _name(t) + "_float", list(t.shape))
        op = schema.OperatorT()
        op.opcodeIndex = _opcode(m, schema, schema.BuiltinOperator.DEQUANTIZE)
        op.inputs, op.outputs = [ti], [out]
        g.operators.append(op)
        return out

    box_in, score_in = as_float(ti_boxes), as_float(ti_scores)
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
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def detections_from_outputs(outputs: dict[str, np.ndarray]) -> list[Any]:
    """The op's four outputs (keyed by :data:`OUTPUTS`, batch axis first) as one
    :class:`~edgesparse.boxes.Detections` per image."""
    from edgesparse.boxes import Detections

    boxes, classes = np.asarray(outputs[OUTPUTS[0]]), np.asarray(outputs[OUTPUTS[1]])
    scores, count = np.asarray(outputs[OUTPUTS[2]]), np.asarray(outputs[OUTPUTS[3]]).reshape(-1)
    return [Detections(boxes[i, :int(count[i])].astype(np.float32), classes[i, :int(count[i])].astype(np.int64),
                       scores[i, :int(count[i])].astype(np.float32)) for i in range(len(count))]


__all__ = ["OP_NAME", "OUTPUTS", "PostprocessSettings", "append_detection_postprocess", "detections_from_outputs"]

"""The ``detection`` task kind: anchor-based (SSD-style) detectors with a class-score and a box output.

Recipe form::

    task: {kind: detection, scores: cls, boxes: box}      # + variances, score_threshold, iou_threshold ...

* ``scores`` ``(A, C + 1)`` softmax (or logits) with column 0 the background, or ``(A, C)`` sigmoid scores;
* ``boxes`` ``(A, 4)`` encoded against the data's anchors (``[ty, tx, th, tw]``, variances ``[0.1, 0.1, 0.2,
  0.2]`` by default; see :mod:`edgesparse.boxes`);
* targets per anchor: ``y_<scores>`` ``(A,)`` class ids, 0 = background, and ``y_<boxes>`` ``(A, 4)`` encoded
  boxes (zeros on background anchors); the anchors ``(A, 4)`` come with the data (``anchors`` in the npz, or
  the built-in ``shape_boxes`` scenes).

Training loss: cross-entropy with 3:1 hard-negative mining (per image, the negatives with the highest loss,
three per positive) plus Huber on the positive anchors' boxes, each normalised by the image's positives. A
positive anchor's box target is never exactly zero in practice (that would be an object equal to its anchor),
which is how the box loss tells positives from the background without reading the other output.

Metrics (numpy): ``map50`` (primary, higher is better, a fraction: points) is the mean over classes of the AP at
IoU 0.5 of decoded boxes after per-class NMS, by pycocotools' COCOeval against the objects recovered from the
targets; ``recall`` is the share of positive anchors whose top class is the target's and ``box_error`` the mean
absolute error of their decoded box corners (image fractions), both on positive anchors only, never diluted by
the background anchors that make up ~97% of an image. The guards and the health check's chance level use mAP.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse import boxes as B
from edgesparse.errors import DataError, RecipeError
from edgesparse.task import Head, OutputInfo, Task

#: metric -> (direction, unit) of this kind
DETECTION_METRICS: dict[str, tuple[str, str]] = {
    "map50": ("higher", "fraction"),
    "recall": ("higher", "fraction"),
    "box_error": ("lower", "value"),
}
SCORES_KIND, BOXES_KIND = "detection", "boxes"
POSTPROCESS_OUTPUTS = B.POSTPROCESS_OUTPUTS


@dataclass
class DetectionTask(Task):
    """A detector's two heads (scores, boxes), the anchors and the decoding settings."""

    anchors: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    num_classes: int = 1
    background: bool = True  # scores have a background column first (softmax); False: C sigmoid columns
    logits: bool = False
    variances: tuple[float, float, float, float] = B.VARIANCES
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 20
    negative_ratio: float = 3.0

    # ---- identity --------------------------------------------------------------------------
    @property
    def scores(self) -> str:
        return next(h.name for h in self.heads if h.kind == SCORES_KIND)

    @property
    def boxes(self) -> str:
        return next(h.name for h in self.heads if h.kind == BOXES_KIND)

    @property
    def kind(self) -> str:
        return "detection"

    @property
    def metric_key(self) -> str:
        return "map50"

    @property
    def guard_key(self) -> str:
        return "map50"

    @property
    def direction(self) -> str:
        return "higher"

    def _key(self, head: Head, metric: str) -> str:
        return metric

    @staticmethod
    def unit(metric_key: str) -> str:
        found = DETECTION_METRICS.get(metric_key.rsplit("/", 1)[-1])
        return "points" if found is None or found[1] == "fraction" else "%"

    def direction_of(self, metric_key: str) -> str:
        return DETECTION_METRICS.get(metric_key.rsplit("/", 1)[-1], ("higher", ""))[0]

    # ---- decoding --------------------------------------------------------------------------
    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Scores as probabilities (softmax / sigmoid of logits)."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.logits:
            return s
        if not self.background:
            return 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def detections(self, outputs: Any) -> list[B.Detections]:
        """Per image, its detections: decoded + per-class NMS of raw outputs, or the post-processing op's."""
        if isinstance(outputs, Mapping) and POSTPROCESS_OUTPUTS[0] in outputs:
            return B.detections_from_outputs(dict(outputs))
        outs = self.outputs_dict(outputs)
        scores, enc = self.probabilities(outs[self.scores]), np.asarray(outs[self.boxes])
        return [B.detect(scores[i], enc[i], self.anchors, self.num_classes, self.score_threshold,
                         self.iou_threshold, self.max_detections, variances=self.variances) for i in range(len(enc))]

    def objects(self, targets: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per image, the objects recovered from its per-anchor targets: boxes and 1-based classes."""
        ys = self.targets_dict(targets)
        cls, enc = np.asarray(ys[self.scores]), np.asarray(ys[self.boxes])
        found = [B.ground_truth(cls[i], enc[i], self.anchors, self.variances) for i in range(len(cls))]
        return [f[0] for f in found], [f[1] for f in found]

    def predicted_class_ids(self, scores: np.ndarray) -> np.ndarray:
        """Each anchor's top class id (0 background) from raw scores."""
        p = self.probabilities(scores)
        if self.background:
            return p.argmax(axis=-1)
        return np.where(p.max(axis=-1) >= 0.5, p.argmax(axis=-1) + 1, 0)

    # ---- scoring ---------------------------------------------------------------------------
    def evaluate(self, outputs: Any, targets: Any, inputs: Any = None) -> dict[str, float]:
        """``map50`` and, for raw outputs, ``recall`` and ``box_error`` on positive anchors."""
        ys = self.targets_dict(targets)
        n = len(ys[self.scores])
        if not n:
            return {}
        gt_boxes, gt_classes = self.objects(targets)
        result: dict[str, float] = {}
        m = B.mean_average_precision(self.detections(outputs), gt_boxes, gt_classes, self.num_classes)
        if m is not None:
            result["map50"] = m
        if isinstance(outputs, Mapping) and POSTPROCESS_OUTPUTS[0] in outputs:
            return result
        outs = self.outputs_dict(outputs)
        cls = np.asarray(ys[self.scores]).reshape(n, -1).astype(np.int64)
        pos = cls > 0
        if pos.any():
            pred = self.predicted_class_ids(outs[self.scores])
            result["recall"] = float(np.mean(pred[pos] == cls[pos]))
            anchors = np.broadcast_to(self.anchors, (*cls.shape, 4))[pos]
            got = B.decode(np.asarray(outs[self.boxes])[pos], anchors, self.variances)
            want = B.decode(np.asarray(ys[self.boxes])[..., :4][pos], anchors, self.variances)
            result["box_error"] = float(np.mean(np.abs(got.astype(np.float64) - want)))
        return result

    def compare(self, keras_out: Any, tflite_out: Any) -> dict[str, Any]:
        """Detections of both models matched (same class, IoU >= 0.5): ``agreement`` is the lower of the shares of
        each side's confident detections (score >= 0.5) the other has; raw outputs also their differences."""
        kd, td = self.detections(keras_out), self.detections(tflite_out)
        agreement = min(_shared(kd, td), _shared(td, kd))
        heads: dict[str, dict[str, float | None]] = {}
        op = [isinstance(o, Mapping) and POSTPROCESS_OUTPUTS[0] in o for o in (keras_out, tflite_out)]
        named: list[tuple[str, bool]] = []
        if all(op):  # two runs of the op (deploy: device vs host): its four outputs compared as they are
            named = [(n, n == POSTPROCESS_OUTPUTS[1]) for n in POSTPROCESS_OUTPUTS]
            ko, to = dict(keras_out), dict(tflite_out)
        elif not any(op):  # raw heads on both sides
            named = [(h.name, h.kind == SCORES_KIND) for h in self.heads]
            ko, to = self.outputs_dict(keras_out), self.outputs_dict(tflite_out)
        if named:  # (raw heads vs the op's detections: only the detections compare)
            for name, classes in named:
                k, t = np.asarray(ko[name], np.float64), np.asarray(to[name], np.float64)
                diff = np.abs(k - t)
                scale = max(float(np.max(np.abs(k))) if k.size else 0.0, 1e-12)
                heads[name] = {"agreement": agreement if classes else None,
                               "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                               "max_rel_diff": float(diff.max() / scale) if diff.size else 0.0}
        return {"agreement": agreement,
                "max_abs_diff": max((float(v["max_abs_diff"] or 0.0) for v in heads.values()), default=0.0),
                "max_rel_diff": max((float(v["max_rel_diff"] or 0.0) for v in heads.values()), default=0.0),
                "heads": heads or None}

    def loss_value(self, outputs: Any, targets: Any, inputs: Any = None) -> float:
        """The training loss in numpy: mined cross-entropy plus Huber on positives, per image, averaged."""
        outs, ys = self.outputs_dict(outputs), self.targets_dict(targets)
        p = np.clip(self.probabilities(outs[self.scores]), 1e-12, 1 - 1e-12)
        cls = np.asarray(ys[self.scores]).reshape(p.shape[:2]).astype(np.int64)
        if self.background:
            ce = -np.log(np.take_along_axis(p, cls[..., None], axis=-1)[..., 0])
        else:
            onehot = np.eye(self.num_classes + 1)[cls][..., 1:]
            ce = -(onehot * np.log(p) + (1 - onehot) * np.log(1 - p)).sum(axis=-1)
        pos = cls > 0
        npos = pos.sum(axis=1)
        neg = np.where(pos, -np.inf, ce)
        rank = np.argsort(np.argsort(-neg, axis=1, kind="stable"), axis=1)
        k = np.minimum(self.negative_ratio * np.maximum(npos, 1), (~pos).sum(axis=1))[:, None]
        hard = ~pos & (rank < k)
        d = np.abs(np.asarray(outs[self.boxes], np.float64) - np.asarray(ys[self.boxes], np.float64)[..., :4])
        hub = np.where(d < 1.0, 0.5 * d * d, d - 0.5).sum(axis=-1)
        per = ((ce * (pos | hard)).sum(axis=1) + (hub * pos).sum(axis=1)) / np.maximum(npos, 1)
        return float(per.mean())

    def trivial_outputs(self, y_train: Any, n: int) -> dict[str, np.ndarray]:
        """What a model that ignores its input outputs: every anchor's class frequencies and mean box target."""
        ys = self.targets_dict(y_train)
        cls = np.asarray(ys[self.scores]).reshape(len(ys[self.scores]), -1).astype(np.int64)
        freq = np.stack([(cls == c).mean(axis=0) for c in range(self.num_classes + 1)], axis=-1)
        freq = np.clip(freq, 1e-6, 1.0)
        scores = freq / freq.sum(axis=-1, keepdims=True) if self.background else freq[..., 1:]
        if self.logits:
            scores = np.log(scores) if self.background else np.log(scores / (1 - np.clip(scores, 0, 1 - 1e-6)))
        box = np.asarray(ys[self.boxes], np.float64)[..., :4].mean(axis=0)
        return {self.scores: np.broadcast_to(scores, (n, *scores.shape)).copy(),
                self.boxes: np.broadcast_to(box, (n, *box.shape)).copy()}

    # ---- Keras -----------------------------------------------------------------------------
    def keras_loss(self) -> Any:
        losses = {SCORES_KIND: _mined_cross_entropy(self), BOXES_KIND: _positive_huber()}
        return [losses[h.kind] for h in self.heads]

    def keras_metrics(self) -> Any:
        return [[] for _ in self.heads]

    # ---- persistence -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = super().to_json()
        d["kind"] = "detection"
        d["detection"] = {
            "scores": self.scores, "boxes": self.boxes, "num_classes": self.num_classes,
            "background": self.background, "logits": self.logits, "variances": list(self.variances),
            "score_threshold": self.score_threshold, "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections, "negative_ratio": self.negative_ratio,
            "anchors": np.asarray(self.anchors, dtype=np.float32).astype(np.float64).tolist(),  # exact
        }
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DetectionTask:
        base = Task.from_json({**d, "kind": "multi"})  # the heads, read as the base reads them
        det = d["detection"]
        return cls(heads=base.heads, primary=base.primary, reason=base.reason, input_names=base.input_names,
                   anchors=np.asarray(det["anchors"], dtype=np.float32), num_classes=int(det["num_classes"]),
                   background=bool(det["background"]), logits=bool(det["logits"]),
                   variances=tuple(det["variances"]),
                   score_threshold=float(det["score_threshold"]), iou_threshold=float(det["iou_threshold"]),
                   max_detections=int(det["max_detections"]), negative_ratio=float(det["negative_ratio"]))


def _shared(a: list[B.Detections], b: list[B.Detections], min_score: float = 0.5) -> float:
    """Share of ``a``'s confident detections that ``b`` has too (same class, IoU >= 0.5); 1.0 when ``a`` has none."""
    total = found = 0
    for da, db in zip(a, b):
        keep = da.scores >= min_score
        total += int(keep.sum())
        if not keep.any():
            continue
        overlaps = B.iou(da.boxes[keep], db.boxes) if len(db) else np.zeros((int(keep.sum()), 0))
        same = da.classes[keep][:, None] == db.classes[None, :] if len(db) else overlaps.astype(bool)
        found += int(np.sum(((overlaps >= 0.5) & same).any(axis=1))) if overlaps.size else 0
    return 1.0 if total == 0 else found / total


def _mined_cross_entropy(task: DetectionTask) -> Any:
    """Keras loss of the score output: cross-entropy of positives and of the hardest negatives (``ratio`` per
    positive, at least ``ratio`` per image), over the image's positives."""
    from edgesparse import _tf

    tf = _tf.tf()
    ratio, background, logits = task.negative_ratio, task.background, task.logits
    classes = task.num_classes

    def detection_cross_entropy(y_true: Any, y_pred: Any) -> Any:
        shape = tf.shape(y_pred)
        y = tf.cast(tf.reshape(y_true, shape[:2]), tf.int32)
        if background:
            ce = _sparse_ce(tf, y, y_pred, logits)
        else:
            onehot = tf.one_hot(y - 1, classes, dtype=y_pred.dtype)
            p = tf.sigmoid(y_pred) if logits else y_pred
            p = tf.clip_by_value(p, 1e-7, 1.0 - 1e-7)
            ce = -tf.reduce_sum(onehot * tf.math.log(p) + (1.0 - onehot) * tf.math.log(1.0 - p), axis=-1)
        pos = y > 0
        posf = tf.cast(pos, ce.dtype)
        npos = tf.reduce_sum(posf, axis=1)
        neg_loss = tf.where(pos, tf.fill(tf.shape(ce), tf.constant(-1.0, ce.dtype)), ce)
        rank = tf.argsort(tf.argsort(neg_loss, axis=1, direction="DESCENDING", stable=True), axis=1, stable=True)
        nneg = tf.reduce_sum(1.0 - posf, axis=1)
        k = tf.minimum(ratio * tf.maximum(npos, 1.0), nneg)
        hard = tf.logical_and(tf.logical_not(pos), tf.cast(rank, ce.dtype) < k[:, None])
        keep = tf.cast(tf.logical_or(pos, hard), ce.dtype)
        return tf.reduce_sum(ce * keep, axis=1) / tf.maximum(npos, 1.0)

    return detection_cross_entropy


def _sparse_ce(tf: Any, y: Any, y_pred: Any, logits: bool) -> Any:
    if logits:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=y_pred)
    p = tf.clip_by_value(tf.gather(y_pred, y, batch_dims=2), 1e-7, 1.0)
    return -tf.math.log(p)


def _positive_huber() -> Any:
    """Keras loss of the box output: Huber (delta 1) summed over the 4 offsets of positive anchors (non-zero
    targets), over the image's positives."""
    from edgesparse import _tf

    tf = _tf.tf()

    def detection_box_huber(y_true: Any, y_pred: Any) -> Any:
        y = tf.cast(y_true[..., :4], y_pred.dtype)
        pos = tf.cast(tf.reduce_any(tf.not_equal(y, 0.0), axis=-1), y_pred.dtype)
        d = tf.abs(y_pred - y)
        hub = tf.reduce_sum(tf.where(d < 1.0, 0.5 * d * d, d - 0.5), axis=-1)
        return tf.reduce_sum(hub * pos, axis=1) / tf.maximum(tf.reduce_sum(pos, axis=1), 1.0)

    return detection_box_huber


# --------------------------------------------------------------------------------------------
# resolution


def _output(outputs: Sequence[OutputInfo], name: str | None, field_: str) -> OutputInfo:
    names = [o.name for o in outputs]
    if name is None:
        raise RecipeError(f"task detection needs `{field_}:` naming the model's {field_} output (one of "
                          f"{', '.join(names)}), e.g. task: {{kind: detection, scores: cls, boxes: box}}.")
    for o in outputs:
        if o.name == name:
            return o
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise RecipeError(f"task.{field_} '{name}'{hint} is not an output of the model; its outputs are "
                      f"{', '.join(names)}.")


def resolve_detection(cfg: Any, outputs: Sequence[OutputInfo], targets: Mapping[str, np.ndarray | None],
                      anchors: Any, input_names: tuple[str, ...] = ()) -> DetectionTask:
    """Resolve ``task: {kind: detection, scores: ..., boxes: ...}`` against the model, the targets and the anchors.

    Raises:
        RecipeError: ``scores``/``boxes`` missing or not outputs, a model with other outputs, heads that are not
            ``(A, K)`` / ``(A, 4)``.
        DataError: no anchors, anchors whose count does not match the heads, targets of the wrong shape, or a
            class id beyond the scores' width.
    """
    so = _output(outputs, getattr(cfg, "scores", None), "scores")
    bo = _output(outputs, getattr(cfg, "boxes", None), "boxes")
    if so.name == bo.name:
        raise RecipeError(f"task.scores and task.boxes both name '{so.name}'; a detector has two outputs.")
    extra = [o.name for o in outputs if o.name not in (so.name, bo.name)]
    if extra:
        raise RecipeError(f"task detection takes a model with exactly the scores and boxes outputs; this one also has "
                          f"{', '.join(extra)}.")
    if len(so.shape) != 2 or so.shape[1] is None:
        raise RecipeError(f"task detection: the scores output '{so.name}' is {tuple(so.shape)} per image; it must be "
                          "(anchors, classes + 1) with column 0 the background (or (anchors, classes) sigmoid).")
    if len(bo.shape) != 2 or bo.shape[1] != 4:
        raise RecipeError(f"task detection: the boxes output '{bo.name}' is {tuple(bo.shape)} per image; it must be "
                          "(anchors, 4) encoded offsets [ty, tx, th, tw].")
    if anchors is None:
        raise DataError("task detection needs the anchors the box targets are encoded against: store `anchors` "
                        "(A, 4) [ymin, xmin, ymax, xmax] in the npz, return them as 'anchors' beside the splits of a "
                        "data factory, or use the built-in scenes (data: {builtin: shape_boxes}).")
    a = np.asarray(anchors, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != 4:
        raise DataError(f"the anchors are {a.shape}; they must be (A, 4) boxes [ymin, xmin, ymax, xmax].")
    for o in (so, bo):
        if o.shape[0] is not None and o.shape[0] != len(a):
            raise DataError(f"the data has {len(a)} anchors but the model's output '{o.name}' predicts for "
                            f"{o.shape[0]} ({tuple(o.shape)}); the heads need one row per anchor, in the anchors' "
                            "order.")
    sigmoid = so.activation == "sigmoid"
    units = int(so.shape[1])
    num_classes = units if sigmoid else units - 1
    if num_classes < 1:
        raise RecipeError(f"task detection: the scores output '{so.name}' has {units} column(s): a softmax needs the "
                          "background column and at least one class.")
    _check_targets(so, bo, targets, len(a), num_classes, sigmoid)
    heads = _heads(outputs, so)
    reason = (f"task detection (from the recipe): scores '{so.name}' {units} columns "
              f"({'sigmoid' if sigmoid else 'background + ' + str(num_classes) + ' classes'}), boxes '{bo.name}', "
              f"{len(a)} anchors")
    return DetectionTask(heads=tuple(heads), primary=so.name, reason=reason, input_names=tuple(input_names),
                         anchors=a, num_classes=num_classes, background=not sigmoid,
                         logits=so.activation not in ("softmax", "sigmoid"),
                         variances=tuple(getattr(cfg, "variances", None) or B.VARIANCES),
                         score_threshold=float(getattr(cfg, "score_threshold", 0.05)),
                         iou_threshold=float(getattr(cfg, "iou_threshold", 0.5)),
                         max_detections=int(getattr(cfg, "max_detections", 20)),
                         negative_ratio=float(getattr(cfg, "negative_ratio", 3.0)))


def _heads(outputs: Sequence[OutputInfo], so: OutputInfo) -> list[Head]:
    """The two heads in the model's output order: scores (kind ``detection``) and boxes (kind ``boxes``)."""
    heads = []
    for o in outputs:
        kind = SCORES_KIND if o.name == so.name else BOXES_KIND
        metric, direction = ("map50", "higher") if kind == SCORES_KIND else ("box_error", "lower")
        heads.append(Head(name=o.name, kind=kind, loss="detection", metric=metric,
                          metrics=("map50", "recall", "box_error") if kind == SCORES_KIND else (),
                          direction=direction, logits=so.activation not in ("softmax", "sigmoid")
                          if kind == SCORES_KIND else False, units=int(o.shape[1] or 0)))
    return heads


def _check_targets(so: OutputInfo, bo: OutputInfo, targets: Mapping[str, np.ndarray | None], anchors: int,
                   num_classes: int, sigmoid: bool) -> None:
    """Per-anchor targets of the right shapes, class ids within the scores' width.

    Raises:
        DataError: targets missing, of the wrong shape, or class ids beyond the scores.
    """
    a = range(anchors)
    units = int(so.shape[1] or 0)
    y_cls, y_box = targets.get(so.name), targets.get(bo.name)
    if y_cls is None or y_box is None:
        raise DataError(f"task detection needs targets y_{so.name} (N, A) class ids (0 background) and y_{bo.name} "
                        "(N, A, 4) encoded boxes.")
    y_cls, y_box = np.asarray(y_cls), np.asarray(y_box)
    if y_cls.reshape(len(y_cls), -1).shape[1] != len(a):
        raise DataError(f"y_{so.name} has {tuple(y_cls.shape[1:])} per sample; it must be (A,) = ({len(a)},) class "
                        "ids, one per anchor, 0 for background.")
    if y_box.shape[1:] != (len(a), 4):
        raise DataError(f"y_{bo.name} has {tuple(y_box.shape[1:])} per sample; it must be ({len(a)}, 4) encoded "
                        "boxes, one per anchor.")
    if y_cls.size and (int(y_cls.max()) > num_classes or int(y_cls.min()) < 0):
        raise DataError(f"y_{so.name} holds class ids {int(y_cls.min())}..{int(y_cls.max())}, but the scores output "
                        f"'{so.name}' has {units} columns ({num_classes} classes"
                        f"{'' if sigmoid else ' + the background'}): class ids must be 0 (background) to "
                        f"{num_classes}.")


__all__ = ["DETECTION_METRICS", "POSTPROCESS_OUTPUTS", "DetectionTask", "resolve_detection"]

"""The ``segmentation`` task kind: per-pixel classes, scored by mean IoU.

An output ``(H, W, K)`` is a softmax (or logits) over ``K`` classes per pixel; ``(H, W, 1)`` is a sigmoid
(or a logit) for a binary mask (classes 0 and 1). Targets are ``(H, W)`` class maps (``(H, W, 1)`` too), or
``(H, W, K)`` one-hot maps, turned into class maps when the data is read. Pixels labelled ``ignore_index``
(e.g. 255, the border of VOC masks) count in no metric and no loss.

Metrics (fractions, higher is better, degrading in points): ``miou`` (the primary: the mean over classes of
intersection over union, a class counted when it occurs in the targets or the predictions), ``pixel_accuracy``,
and per-class ``iou_<c>`` in the summary. TFLite and Keras outputs are compared by pixel agreement (the share of
pixels with the same predicted class).

Numpy only (the Keras loss is built lazily through ``_tf``); the task package imports this module, never
the other way round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse.errors import DataError, RecipeError

METRICS = ("miou", "pixel_accuracy")
#: per-class IoU keys in :func:`evaluate`'s result: ``iou_0``, ``iou_1`` ...
CLASS_IOU_PREFIX = "iou_"


def is_class_iou(metric: str) -> bool:
    """Whether ``metric`` is a per-class IoU key (``iou_2``)."""
    return metric.startswith(CLASS_IOU_PREFIX) and metric[len(CLASS_IOU_PREFIX):].isdigit()


def num_classes(units: int) -> int:
    """Classes of a head with ``units`` channels (one sigmoid channel: background and foreground)."""
    return max(int(units), 2)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -60, 60)))


def predicted_map(out: np.ndarray, units: int, logits: bool, threshold: float = 0.5) -> np.ndarray:
    """Each pixel's class ``(N, H, W)``: argmax over the class axis, or the thresholded sigmoid of one channel."""
    out = np.asarray(out)
    if units > 1:
        return np.argmax(out, axis=-1)
    p = out.astype(np.float64).reshape(out.shape[:3])
    return ((_sigmoid(p) if logits else p) >= threshold).astype(np.int64)


def target_map(y: np.ndarray, units: int) -> np.ndarray:
    """Targets as ``(N, H, W)`` class ids: class maps as they are, ``(N, H, W, 1)`` squeezed, one-hot maps
    by their argmax (a pixel with no class set keeps -1, which no metric counts)."""
    y = np.asarray(y)
    if y.ndim == 4 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim == 4:
        ids = np.argmax(y, axis=-1).astype(np.int64)
        ids[y.max(axis=-1) <= 0] = -1
        return ids
    return np.rint(y).astype(np.int64) if y.dtype.kind == "f" else y.astype(np.int64)


def confusion(pred: np.ndarray, target: np.ndarray, classes: int, ignore_index: int | None) -> np.ndarray:
    """``classes x classes`` pixel counts (rows: target, columns: prediction); ignored and unlabelled pixels
    (``ignore_index``, anything outside ``0..classes-1``) are left out."""
    t = target.reshape(-1)
    p = np.asarray(pred).reshape(-1).astype(np.int64)
    keep = (t >= 0) & (t < classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    p = np.clip(p[keep], 0, classes - 1)
    return np.bincount(classes * t[keep] + p, minlength=classes * classes).reshape(classes, classes)


def scores(conf: np.ndarray) -> dict[str, float]:
    """``miou``, ``pixel_accuracy`` and ``iou_<c>`` from a confusion matrix.

    A class that occurs neither in the targets nor in the predictions has no IoU (it is absent from the result
    and from the mean); with no labelled pixel at all the result is empty.
    """
    conf = conf.astype(np.float64)
    total = conf.sum()
    if total <= 0:
        return {}
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    result: dict[str, float] = {"pixel_accuracy": float(tp.sum() / total)}
    ious = {c: float(tp[c] / union[c]) for c in range(len(conf)) if union[c] > 0}
    result["miou"] = float(np.mean(list(ious.values()))) if ious else 0.0
    result.update({f"{CLASS_IOU_PREFIX}{c}": v for c, v in ious.items()})
    return result


def evaluate(out: np.ndarray, y: np.ndarray, units: int, logits: bool, threshold: float,
             ignore_index: int | None) -> dict[str, float]:
    """Every segmentation metric of one head (see :func:`scores`)."""
    if not len(out):
        return {}
    pred = predicted_map(out, units, logits, threshold)
    return scores(confusion(pred, target_map(y, units), num_classes(units), ignore_index))


def agreement(a: np.ndarray, b: np.ndarray, units: int, logits: bool, threshold: float) -> float:
    """Pixel agreement: the share of pixels both outputs give the same class."""
    if not len(a):
        return 1.0
    return float(np.mean(predicted_map(a, units, logits, threshold) == predicted_map(b, units, logits, threshold)))


def loss_value(out: np.ndarray, y: np.ndarray, units: int, logits: bool, ignore_index: int | None) -> float:
    """Mean per-pixel cross-entropy over labelled pixels (numpy, for sensitivity analysis)."""
    o = np.asarray(out, dtype=np.float64)
    t = target_map(y, units)
    keep = (t >= 0) & (t < num_classes(units))
    if ignore_index is not None:
        keep &= t != ignore_index
    if not keep.any():
        return 0.0
    if units == 1:
        q = np.clip(_sigmoid(o[..., 0]) if logits else o[..., 0], 1e-12, 1 - 1e-12)[keep]
        tb = t[keep].astype(np.float64)
        return float(np.mean(-(tb * np.log(q) + (1 - tb) * np.log(1 - q))))
    if logits:
        e = np.exp(o - o.max(axis=-1, keepdims=True))
        o = e / e.sum(axis=-1, keepdims=True)
    p = np.take_along_axis(o, np.clip(t, 0, units - 1)[..., None], axis=-1)[..., 0]
    return float(np.mean(-np.log(np.clip(p[keep], 1e-12, 1.0))))


def trivial_output(y: np.ndarray, units: int, logits: bool, ignore_index: int | None, n: int,
                   shape: tuple[int, ...]) -> np.ndarray:
    """What a model that ignores its input outputs: every pixel gets the training maps' class frequencies (so
    every pixel is the majority class)."""
    t = target_map(y, units).reshape(-1)
    classes = num_classes(units)
    keep = (t >= 0) & (t < classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    prior = np.bincount(t[keep], minlength=classes).astype(np.float64)
    prior = (prior + 1e-6) / (prior.sum() + 1e-6 * classes)
    if units == 1:
        p1 = np.clip(prior[1], 1e-6, 1 - 1e-6)
        const = np.array([np.log(p1 / (1 - p1)) if logits else p1])
    else:
        const = np.log(prior) if logits else prior
    return np.broadcast_to(const, (n, *shape[:2], len(const))).astype(np.float32).copy()


# ---- data ------------------------------------------------------------------------------------------------


def _int_like(y: np.ndarray) -> bool:
    if y.dtype.kind in "iub":
        return True
    return y.dtype.kind == "f" and bool(np.isfinite(y).all()) and bool(np.equal(np.mod(y, 1), 0).all())


def looks_like_class_maps(y: np.ndarray | None) -> bool:
    """``(N, H, W)`` / ``(N, H, W, 1)`` integer maps, or ``(N, H, W, K)`` one-hot maps."""
    if y is None or y.ndim not in (3, 4) or y.dtype.kind not in "biuf":
        return False
    if y.ndim == 3 or y.shape[-1] == 1:
        return _int_like(y)
    return bool(np.isin(y, (0, 1)).all()) and bool((y.sum(axis=-1) <= 1).all())


def check_shape(name: str, out_shape: tuple[int | None, ...], y: np.ndarray) -> None:
    """Raise when class-map targets do not match a spatial output.

    Raises:
        DataError: the maps' height/width differ from the output's, or one-hot maps have another class count.
    """
    hw = tuple(int(d) for d in out_shape[:2] if d is not None)
    units = int(out_shape[-1] or 1)
    got = tuple(y.shape[1:3])
    if len(out_shape) != 3:
        raise DataError(f"task segmentation needs an output of shape (H, W, classes), but output '{name}' has shape "
                        f"{tuple(out_shape)}; give the model a per-pixel output, or choose another task.")
    if y.ndim not in (3, 4):
        raise DataError(f"task segmentation for output '{name}' {tuple(out_shape)} needs class maps (N, H, W) or "
                        f"one-hot maps (N, H, W, {units}), but the targets have shape {tuple(y.shape)}.")
    if len(hw) == 2 and got != hw:
        raise DataError(f"the class-map targets for output '{name}' are {got[0]}x{got[1]} but the output is "
                        f"{hw[0]}x{hw[1]} ({tuple(out_shape)}); resize the masks to the output (nearest neighbour) or "
                        "change the model so its output has the masks' size.")
    if y.ndim == 4 and y.shape[-1] not in (1, units):
        raise DataError(f"the one-hot targets for output '{name}' have {y.shape[-1]} classes but the output has "
                        f"{units}; give the model one channel per class, or store class maps (N, H, W).")


def check_labels(name: str, y: np.ndarray, units: int, ignore_index: int | None, split: str) -> None:
    """Raise when a class map holds ids the output cannot predict (``ignore_index`` aside).

    Raises:
        DataError: an id outside ``0..K-1``.
    """
    t = target_map(y, units)
    if ignore_index is not None:
        t = t[t != ignore_index]
    t = t[t != -1] if np.asarray(y).ndim == 4 and np.asarray(y).shape[-1] > 1 else t
    if not t.size:
        return
    lo, hi, k = int(t.min()), int(t.max()), num_classes(units)
    if lo < 0 or hi >= k:
        ignore = f" (ignore_index {ignore_index} aside)" if ignore_index is not None else ""
        raise DataError(f"{split} class maps for output '{name}' hold ids in [{lo}, {hi}]{ignore} but the output "
                        f"predicts {k} classes (0..{k - 1}); give the model one channel per class, fix the masks, or "
                        "set task.ignore_index to the id of unlabelled pixels.")


def infer(name: str, out_shape: tuple[int | None, ...], activation: str, y: np.ndarray | None) -> str | None:
    """The reason a spatial output with class-map targets is a segmentation head, else None.

    Raises:
        DataError: class maps whose height/width do not match the spatial output.
    """
    if y is None or len(out_shape) != 3 or not looks_like_class_maps(y):
        return None
    units = int(out_shape[-1] or 1)
    if activation not in ("softmax", "sigmoid", "linear") or (units == 1 and activation == "softmax"):
        return None
    check_shape(name, out_shape, y)
    what = "one-hot maps" if y.ndim == 4 and y.shape[-1] > 1 else "class maps"
    how = (f"a {activation} over {units} classes per pixel" if units > 1 else
           f"one {'sigmoid' if activation == 'sigmoid' else 'logit'} channel per pixel (a binary mask)")
    return f"output '{name}' {tuple(out_shape)} is {how} and the targets are {what}: segmentation"


def convert(y: np.ndarray, units: int) -> np.ndarray:
    """Targets as the loss takes them: ``(N, H, W)`` int64 class ids (``(N, H, W, 1)`` float 0/1 for a sigmoid)."""
    t = target_map(y, units)
    if units == 1:
        return t[..., None].astype(np.float32)
    return t


def convert_tf(y: Any, units: int) -> Any:
    """:func:`convert` of one streamed sample, in tf ops."""
    from edgesparse import _tf

    tf = _tf.tf()
    if y.shape.rank == 3 and (y.shape[-1] or 1) > 1:
        y = tf.where(tf.reduce_max(y, axis=-1) > 0, tf.argmax(y, axis=-1), tf.constant(-1, tf.int64))
    elif y.shape.rank == 3:
        y = y[..., 0]
    y = tf.cast(tf.round(tf.cast(y, tf.float32)), tf.int64)
    return tf.cast(y[..., None], tf.float32) if units == 1 else y


def keras_loss(units: int, logits: bool, ignore_index: int | None) -> Any:
    """Per-pixel cross-entropy (sparse over classes, ignoring ``ignore_index``; binary for one sigmoid channel).

    Raises:
        RecipeError: ``ignore_index`` with a one-channel sigmoid output.
    """
    from edgesparse import _tf

    losses = _tf.keras().losses
    if units == 1:
        if ignore_index is not None:
            raise RecipeError("task.ignore_index needs a softmax (or logits) over classes; a one-channel sigmoid mask "
                              "cannot skip pixels. Give the model two output channels with a softmax, or drop "
                              "ignore_index.")
        return losses.BinaryCrossentropy(from_logits=logits)
    return losses.SparseCategoricalCrossentropy(from_logits=logits, ignore_class=ignore_index)


def keras_metrics(units: int, logits: bool, threshold: float) -> list[Any]:
    """Per-pixel accuracy while training (the guards read the numpy mIoU)."""
    from edgesparse import _tf

    if units > 1:
        return ["accuracy"]
    thr = threshold if not logits else float(np.log(threshold / (1 - threshold)))
    return [_tf.keras().metrics.BinaryAccuracy(name="accuracy", threshold=thr)]

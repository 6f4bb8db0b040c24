"""``model: {builtin: ssd_tiny}``: a tiny SSD-style detector for the generated ``shape_boxes`` scenes.

Two feature maps (strides 4 and 8); on each a 3x3 class head (``anchors_per_location * (C + 1)`` channels)
and a 3x3 box head (``anchors_per_location * 4``), each reshaped to one row per anchor and concatenated
over the maps: outputs ``cls`` ``(A, C + 1)`` softmax (column 0 the background) and ``box`` ``(A, 4)``
encoded offsets (see :mod:`edgesparse.boxes`). The anchor order (map, row, column, ratio) is that of
:func:`edgesparse.boxes.ssd_anchors`. Train it with ``task: {kind: detection, scores: cls, boxes: box}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgesparse import _tf
from edgesparse.models.zoo import ZooEntry, register


class SSDTinyConfig(ZooEntry):
    """``model: {builtin: ssd_tiny, filters: [16, 32, 32], anchors_per_location: 2}``."""

    builtin: Literal["ssd_tiny"]
    filters: tuple[int, int, int] = (16, 32, 32)
    anchors_per_location: int = Field(2, ge=1, le=9, description="anchors at each location of each map (the "
                                      "data's aspect ratios: 2 for shape_boxes)")


@register("ssd_tiny", SSDTinyConfig)
def ssd_tiny(cfg: SSDTinyConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build the detector; ``num_classes`` counts the foreground classes (the data's class names)."""
    keras = _tf.keras()
    layers = keras.layers
    k, c = cfg.anchors_per_location, num_classes + 1
    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(cfg.filters[0], 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    f1 = layers.Conv2D(cfg.filters[1], 3, strides=2, padding="same", activation="relu", name="block1")(x)
    f2 = layers.Conv2D(cfg.filters[2], 3, strides=2, padding="same", activation="relu", name="block2")(f1)
    cls_parts, box_parts = [], []
    for i, f in enumerate((f1, f2), start=1):
        cls_map = layers.Conv2D(k * c, 3, padding="same", name=f"cls_head{i}")(f)
        box_map = layers.Conv2D(k * 4, 3, padding="same", name=f"box_head{i}")(f)
        rows = int(f.shape[1]) * int(f.shape[2]) * k  # static: the converter then knows the anchor count
        cls_parts.append(layers.Reshape((rows, c), name=f"cls_rows{i}")(cls_map))
        box_parts.append(layers.Reshape((rows, 4), name=f"box_rows{i}")(box_map))
    logits = layers.Concatenate(axis=1, name="cls_logits")(cls_parts)
    cls = layers.Softmax(name="cls")(logits)
    box = layers.Concatenate(axis=1, name="box")(box_parts)
    return keras.Model(inputs, [cls, box], name="ssd_tiny")


__all__ = ["SSDTinyConfig", "ssd_tiny"]

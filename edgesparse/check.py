"""Check that a recipe can run, without training: what ``edgesparse validate`` does after the schema.

The schema (pydantic) only knows the recipe's text. :func:`check_recipe` resolves what the text
points at: it loads the data (files exist, npz arrays present and consistent), builds or loads the
model, checks that the model's input takes the data's samples and that it has an output per class,
and makes the sparsity plan (per-layer overrides must match layers, block patterns must divide the
kernels they prune). Every problem is the same typed error ``train`` would raise later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.data import load_dataset
from edgesparse.data.factory import on_sys_path
from edgesparse.data.indices import check_integer_inputs
from edgesparse.errors import DataError
from edgesparse.models import build_model, describe
from edgesparse.recipe import Recipe, recipe_dir
from edgesparse.task import Head, OutputInfo, TaskConfig, resolve_task
from edgesparse.task import segmentation as seg
from edgesparse.train.compile import input_names, output_info
from edgesparse.train.sparsity import plan_sparsity

log = logging.getLogger("edgesparse.run")


@dataclass
class CheckReport:
    """What :func:`check_recipe` resolved."""

    data: dict[str, Any]
    model: dict[str, Any]
    plan: list[dict[str, Any]] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One human line per finding (printed by ``edgesparse validate``).

        The data line names classes only when an output predicts classes (else the targets' shapes); the
        model line lists every input and output (name, units, kind) when the model has several.
        """
        d, m = self.data, self.model
        heads = list(self.task.get("outputs") or []) if self.task else []
        inputs = _shapes_text(d.get("input_shapes")) or str(tuple(d["input_shape"]))
        if not heads or any(h.get("kind") == "classification" for h in heads):
            targets = f"{d['num_classes']} classes"
        else:
            targets = "targets " + (_shapes_text(d.get("target_shapes")) or "(none)")
        # several inputs: the model's describe() keeps the first only; the data's shapes were checked against it
        model_inputs = inputs if d.get("input_shapes") else str(tuple(m["input_shape"]))
        out = [
            f"data: {d['name']} train/val/test = {d['train']}/{d['validation']}/{d['test']}, input {inputs}, {targets}",
            (f"model: {m['name']} ({m['params']:,} params), input {model_inputs} -> "
             f"{_outputs_text(m, heads)}: fits the data"),
        ]
        if self.task:
            t = self.task
            kind = t["kind"] if t["kind"] != "multi" else "several outputs (" + ", ".join(
                f"{h['name']} {h['kind']}" for h in heads) + f"; primary {t.get('primary')})"
            out.insert(1, f"task: {kind}, metric {str(t['metric']).replace('/', ' ')} ({t['direction']} is better): "
                          f"{t['reason']}")
        if self.plan:
            pruned = [lp for lp in self.plan if lp["prune"]]
            groups: dict[str, list[str]] = {}
            for lp in pruned:
                groups.setdefault(f"{lp['target']:.0%} {lp['pattern']}", []).append(lp["name"])
            out.append(f"sparsity plan: {len(pruned)} layers pruned: "
                       + "; ".join(f"{how}: {_names(names)}" for how, names in groups.items()))
            notes: dict[str, list[str]] = {}
            for lp in self.plan:
                if lp["note"] and lp["note"] != "not prunable":
                    notes.setdefault(lp["note"], []).append(lp["name"])
            out += [f"  {_names(names)}: {note}" for note, names in notes.items()]
        return out


def _shapes_text(shapes: Any) -> str:
    """``{"img": [8, 8, 1], "meta": [3]}`` -> ``img (8, 8, 1), meta (3,)``; a list -> its tuple (``[]``: scalar)."""
    def one(shape: Any) -> str:
        return str(tuple(shape)) if len(shape) else "scalar"

    if isinstance(shapes, dict):
        return ", ".join(f"{k} {one(v)}" for k, v in shapes.items())
    return one(shapes) if shapes is not None else ""


def _outputs_text(model: dict[str, Any], heads: list[dict[str, Any]]) -> str:
    """What the model outputs: ``10 outputs``, ``1 output (regression)``, ``2 outputs: cls (4 classes), box (4)``."""
    def one(h: dict[str, Any]) -> str:
        units = int(h.get("units") or 1)
        if h.get("kind") == "classification":
            return f"{units} classes"
        return f"{units} {h.get('kind')} unit{'s' if units != 1 else ''}"

    if len(heads) > 1:
        return f"{len(heads)} outputs: " + ", ".join(f"{h['name']} ({one(h)})" for h in heads)
    if heads and heads[0].get("kind") != "classification":
        return one(heads[0])
    shape = model.get("output_shape") or [0]
    return f"{shape[-1]} outputs"


def _names(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _shape_ok(expected: tuple[Any, ...], got: tuple[int, ...]) -> bool:
    return len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))


#: samples of a streamed split read to infer the task and check the labels (the whole split when in memory)
PROBE_SAMPLES = 4096


def _probe(split: Any) -> Any:
    """A split's targets, or those of the first :data:`PROBE_SAMPLES` samples of a stream."""
    return split.targets_in_memory(PROBE_SAMPLES)


def _check_dtypes(data: Any) -> None:
    """Streamed inputs must be numbers (a string or variant element cannot feed a model)."""
    if not data.train.is_stream:
        return
    specs = data.train.element_spec[0]
    for name, spec in (specs.items() if isinstance(specs, dict) else [("x", specs)]):
        if not (spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype.is_bool):
            raise DataError(f"the training stream's input {name} has dtype {spec.dtype.name}; the model takes numbers: "
                            "decode and cast the elements to float32 in the factory (e.g. with Dataset.map).")


def check_model_fits_data(model: Any, data: Any) -> None:
    """Fail when the data cannot feed the model (inputs), or its targets do not fit the task's outputs.

    Args:
        model: A tf_keras model.
        data: A :class:`~edgesparse.data.Dataset` (bound to a task, or not yet).

    Raises:
        DataError: the samples' shape differs from the model's input, an input has no array, or class labels
            exceed the outputs.
    """
    names = input_names(model)
    got_shapes = data.train.input_shapes()
    _check_dtypes(data)
    if isinstance(got_shapes, dict):
        missing = [n for n in names if n not in got_shapes]
        if missing:
            raise DataError(
                f"the model '{model.name}' has inputs {', '.join(names)} but the data has no array for "
                f"{', '.join(missing)} (found: {', '.join(got_shapes)}); store x_<input name> for every input "
                "(a stream's x: a dict keyed by input name).")
        for n, spec in zip(names, model.inputs):
            expected, got = tuple(spec.shape[1:]), tuple(got_shapes[n])
            if not _shape_ok(expected, got):
                raise DataError(f"the data's '{n}' samples have shape {got} but the model's input '{n}' expects "
                                f"{expected}; reshape x_{n} or build the model for this input.")
    else:
        if len(model.inputs) > 1:
            raise DataError(f"the model '{model.name}' has {len(model.inputs)} inputs ({', '.join(names)}) but the "
                            "data has one array x; store one array x_<input name> per input instead (a stream's x: a "
                            "dict keyed by input name).")
        expected = tuple(model.input_shape[1:])
        got = tuple(got_shapes)
        if not _shape_ok(expected, got):
            raise DataError(
                f"the data's samples have shape {got} but the model '{model.name}' expects {expected}. "
                "Resize the data (image_size/channels in the data section) or build the model for this input."
            )
    check_integer_inputs(model, data, list(names))
    task = data.task
    if task is None:
        return
    _check_class_maps(task, data)
    for h in task.heads:
        if h.kind != "classification":
            continue
        for split in (data.train, data.val, data.test):
            if not split.n:
                continue
            y = _probe(split)
            y = y[h.name] if isinstance(y, dict) else y
            if len(y) and (int(np.max(y)) >= h.units or int(np.min(y)) < 0):
                seen = f" (in its first {len(y)} samples)" if split.is_stream else ""
                raise DataError(
                    f"{split.name} labels range over [{int(np.min(y))}, {int(np.max(y))}]{seen} but the model "
                    f"'{model.name}' has {h.units} outputs (classes 0..{h.units - 1}). Give the model one output per "
                    "class, or fix the labels.")


def _check_class_maps(task: Any, data: Any) -> None:
    """Segmentation heads: every class id of every split within the output's classes."""
    for h in task.heads:
        if h.kind != "segmentation":
            continue
        for split in (data.train, data.val, data.test):
            if split.n:
                y = _probe(split)
                seg.check_labels(h.name, y[h.name] if isinstance(y, dict) else y, h.units, h.ignore_index,
                                 split.name)


def _targets(y: Any, outputs: list[OutputInfo]) -> dict[str, np.ndarray | None]:
    if isinstance(y, dict):
        unknown = [k for k in y if k not in {o.name for o in outputs}]
        if unknown:
            raise DataError(f"the data has targets y_{', y_'.join(unknown)} but the model's outputs are "
                            f"{', '.join(o.name for o in outputs)}; name each target array y_<output name>.")
        return {o.name: y.get(o.name) for o in outputs}
    if len(outputs) > 1:
        raise DataError(f"the model has {len(outputs)} outputs ({', '.join(o.name for o in outputs)}) but the data has "
                        "one target array y; store y_<output name> for every output.")
    return {outputs[0].name: y}


def _convert(head: Head, y: np.ndarray) -> np.ndarray:
    """Targets in the form the head's loss takes: class indices, 0/1 floats, float values."""
    y = np.asarray(y)
    if head.kind == "segmentation":  # class maps (N, H, W); (N, H, W, 1) floats for a sigmoid mask
        return seg.convert(y, head.units)
    if head.kind == "detection":  # per-anchor class ids
        return y.astype(np.int64)
    if head.kind == "classification":
        if y.ndim == 2 and y.shape[1] > 1:
            return y.argmax(axis=1).astype(np.int64)  # one-hot rows
        return y.reshape(len(y)).astype(np.int64)
    if head.kind in ("binary", "multilabel"):
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"task {head.kind} for output '{head.name}' needs 0/1 labels, found values "
                            f"{sorted(np.unique(y))[:5]}; use task classification for class indices.")
        return y.reshape(len(y), head.units).astype(np.float32)
    if head.kind == "anomaly":
        return y.reshape(len(y)).astype(np.int64) if y.ndim <= 2 and y.size == len(y) else y.astype(np.float32)
    return y.astype(np.float32)


def _convert_tf(head: Head, y: Any) -> Any:
    """:func:`_convert` of one streamed sample, in tf ops."""
    tf = _tf.tf()
    if head.kind == "segmentation":
        return seg.convert_tf(y, head.units)
    if head.kind == "classification":
        if y.shape.rank == 1 and (y.shape[0] or 0) > 1:
            return tf.argmax(y, output_type=tf.int64)
        return tf.cast(tf.reshape(y, []), tf.int64)
    if head.kind in ("binary", "multilabel"):
        return tf.reshape(tf.cast(y, tf.float32), [head.units])
    if head.kind == "anomaly":
        return tf.cast(tf.reshape(y, []), tf.int64) if y.shape.num_elements() == 1 else tf.cast(y, tf.float32)
    return tf.cast(y, tf.float32)


def _fit_rank(model: Any, data: Any) -> Any:
    """Drop the channel axis that loading gave 3-D arrays (grey images) when the model takes sequences.

    ``(N, T, C)`` arrays are read as grey images and get a channel axis, ``(N, T, C, 1)``; a Conv1D model
    takes ``(T, C)``: that axis is removed again, for every split (a stream's samples too).
    """
    shapes_ = data.train.input_shapes()
    names = input_names(model)
    ranks: dict[str | None, int]
    if isinstance(shapes_, dict):
        ranks = {n: len(spec.shape) - 1 for n, spec in zip(names, model.inputs)}
    elif len(model.inputs) == 1:
        ranks = {None: len(model.inputs[0].shape) - 1}
    else:
        return data

    def drop(shape: list[Any], rank: int) -> bool:
        return len(shape) == rank + 1 and shape[-1] == 1

    todo = {k for k, r in ranks.items()
            if (k is None or k in shapes_) and drop(list(shapes_[k] if k is not None else shapes_), r)}
    if not todo:
        return data

    def fix(x: Any, y: Any) -> tuple[Any, Any]:  # arrays or one streamed sample's tensors alike
        if isinstance(x, dict):
            return {k: v[..., 0] if k in todo and len(v.shape) > 1 else v for k, v in x.items()}, y
        return (x[..., 0] if len(x.shape) > 1 else x), y

    return replace(data, train=data.train.map(fix, fix), val=data.val.map(fix, fix), test=data.test.map(fix, fix))


def bind_task(model: Any, data: Any, cfg: TaskConfig | None) -> Any:
    """Resolve the recipe's ``task:`` against the model and the data; return the data bound to it.

    Targets are converted to what each head trains on (one-hot rows become class indices, 0/1 labels
    floats shaped like the output); the inferred task and its reason are logged. A streamed split is
    inferred from its first :data:`PROBE_SAMPLES` samples and converted sample by sample as it is read.

    Raises:
        RecipeError: the task contradicts the model's outputs or cannot be inferred.
        DataError: the targets fit no task, or do not match the model's outputs.
    """
    if data.train.n == 0:
        raise DataError("the training split is empty; give the data at least one training sample.")
    if data.test.n == 0:
        raise DataError("the test split is empty; the reported figures come from it, so give it samples.")
    data = _fit_rank(model, data)
    outputs = output_info(model)
    y_train = _probe(data.train)
    y_test = _probe(data.test)
    anomaly_like = cfg is not None and (cfg.kind == "anomaly" or
                                        any(h.kind == "anomaly" for h in (cfg.outputs or {}).values()))
    unlabelled = not isinstance(y_train, dict) and np.asarray(y_train).ndim == 1 and not np.any(y_train) \
        and len(outputs) == 1 and not data.multi_input and tuple(outputs[0].shape) == tuple(data.input_shape)
    targets = _targets(None if unlabelled else y_train, outputs)
    test_labels = not isinstance(y_test, dict) and len(np.unique(np.asarray(y_test))) == 2
    if anomaly_like and not test_labels:
        raise DataError("task anomaly needs a labelled test split: store x_test (normal and anomalous samples) and "
                        "y_test (0 normal, 1 anomalous) in the npz, beside x (normal samples only).")
    x_shape = None if data.multi_input else tuple(data.input_shape)
    task = resolve_task(cfg, outputs, targets, input_names(model), x_shape, test_labels,
                        anchors=getattr(data, "anchors", None))
    log.info("task: %s, metric %s (%s is better): %s", task.kind if not task.multi_output else
             "several outputs (" + ", ".join(f"{h.name} {h.kind}" for h in task.heads) + ")",
             task.metric_name, task.direction, task.reason)
    single_anomaly = task.kind == "anomaly" and not task.multi_output

    def conv_np(x: Any, y: Any) -> tuple[Any, Any]:
        if single_anomaly:
            return x, np.asarray(y).reshape(len(y)).astype(np.int64)
        ys = task.targets_dict(y)
        out = {h.name: _convert(h, ys[h.name]) for h in task.heads}
        return x, out if task.multi_output else out[task.heads[0].name]

    def conv_tf(x: Any, y: Any) -> tuple[Any, Any]:
        if single_anomaly:
            return x, _tf.tf().cast(_tf.tf().reshape(y, []), _tf.tf().int64)
        ys = y if isinstance(y, dict) else {task.heads[0].name: y}
        out = {h.name: _convert_tf(h, ys[h.name]) for h in task.heads}
        return x, out if task.multi_output else out[task.heads[0].name]

    if data.train.is_stream:  # the probe's labels must already be what the task needs (0/1 for binary ...)
        conv_np(None, y_train)
    bound = data.with_task(task, train=data.train.map(conv_np, conv_tf), val=data.val.map(conv_np, conv_tf),
                           test=data.test.map(conv_np, conv_tf))
    check_model_fits_data(model, bound)
    return bound


def check_recipe(recipe: Recipe) -> CheckReport:
    """Resolve the recipe's data and model and plan its sparsity, without training anything.

    Args:
        recipe: A validated recipe (relative paths resolve against its folder).

    Returns:
        What was found: data splits, model, per-layer sparsity plan.

    Raises:
        DataError: the data cannot be loaded or does not fit the model.
        ModelError: the model cannot be built or loaded, or cannot be pruned.
        RecipeError: a sparsity override matches no layer, or a block pattern does not divide a kernel.
    """
    base = recipe_dir(recipe)
    with on_sys_path(base):  # a task metric or loss module next to the recipe imports, as in a run
        data = load_dataset(recipe.data, recipe.seed, base_dir=base)
        model = build_model(recipe.model, tuple(data.input_shape), data.num_classes, base)
        data = bind_task(model, data, recipe.task)
    report = CheckReport(data=data.describe(), model=describe(model), task=data.task.to_json())
    if recipe.sparsity is not None:
        steps = data.steps_per_epoch(recipe.data.batch_size)
        report.plan = plan_sparsity(model, recipe.sparsity, steps).to_dict()["layers"]
    return report

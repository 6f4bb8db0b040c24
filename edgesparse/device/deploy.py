"""``edgesparse deploy``: put a bundle on a device and prove the model runs there.

The bundle (model.tflite, export.json, labels.txt, the verification batch, runner.py) is copied to
the target; the runner runs the verification batch there, and every output is compared with the same
runner's on the host, by output name, the way the bundle's task says (``task`` in export.json):
agreement for heads with classes (top-1 for classification, thresholded for binary and multilabel),
max absolute and relative differences for every head. With labels the device's outputs are scored
by the task's metrics (accuracy, mae, auc ...), computed here with numpy. A bundle without a task
(exported before the task layer) is a single-output classifier, as it always was.

The batch goes as ``verify_x.npy`` for a single-input model and ``verify_x.npz`` (one array per input,
named after it) for several inputs.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import manifest
from edgesparse.boxes import POSTPROCESS_OUTPUTS
from edgesparse.data.arrays import model_feed
from edgesparse.device.emulation import latency_label
from edgesparse.device.targets import parse_target
from edgesparse.errors import DeviceError
from edgesparse.summary import SUMMARY_FILE, read_summary
from edgesparse.task import Task, classification, unwrapped_name
from edgesparse.tflite import inspect_tflite

#: How the task was found, when export.json has none.
LEGACY_TASK = "no task in export.json (a bundle from before the task layer): a single-output classifier"


@dataclass
class DeployResult:
    """Where the bundle went and how the device's outputs compare with the host's.

    ``agreement`` is the lowest agreement of the heads with classes (None when no head has classes);
    ``outputs`` holds each output's comparison by name. ``metric`` names the task's primary metric;
    ``device_accuracy``/``host_accuracy`` stay for single-output classification and binary bundles.
    """

    target: dict[str, Any]
    remote_dir: str
    files: list[str]
    samples: int
    device_accuracy: float | None
    host_accuracy: float | None
    agreement: float | None  # lowest share of samples whose classes match the host's (heads with classes)
    checksum_match: bool  # every output bit-for-bit (rounded) identical
    device: dict[str, Any]
    host: dict[str, Any]
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # why device and host outputs differ, when they do
    metric: str | None = None  # the primary metric as people read it: accuracy, mae, cls accuracy
    metric_key: str | None = None  # its key in device_metrics: accuracy, mae, cls/accuracy
    device_metric: float | None = None
    host_metric: float | None = None
    device_metrics: dict[str, float] = field(default_factory=dict)
    host_metrics: dict[str, float] = field(default_factory=dict)
    max_abs_diff: float = 0.0  # over every output
    max_rel_diff: float = 0.0
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per output: kind, agreement, diffs, checksum
    task: dict[str, Any] | None = None  # the task the comparison followed (Task.to_json)
    task_source: str = "export.json"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        """One line for people: samples, agreement and/or max abs diff, identical outputs, the metric on both sides."""
        parts = [f"verification batch: {self.samples} samples"]
        if self.agreement is not None:
            parts.append(f"{_agreement_words(self)} with host {self.agreement:.2%}")
        if any(o.get("agreement") is None for o in self.outputs.values()):  # heads without classes
            parts.append(f"max abs diff with host {self.max_abs_diff:.3g}")
        parts.append(f"outputs identical: {'yes' if self.checksum_match else 'no'}")
        if self.device_metric is not None and self.metric:
            task = Task.from_json(self.task) if self.task else None

            def fmt(v: float | None) -> str:
                return task.fmt(v, self.metric_key) if task else ("—" if v is None else f"{v:.4g}")

            parts.append(f"{self.metric} on device {fmt(self.device_metric)} (host {fmt(self.host_metric)})")
        return ", ".join(parts)


def _agreement_words(res: DeployResult) -> str:
    """``top-1 agreement`` (classification), ``thresholded agreement`` (binary, multilabel) or ``class agreement``."""
    kinds = {o["kind"] for o in res.outputs.values() if o.get("agreement") is not None}
    if kinds == {"classification"}:
        return "top-1 agreement"
    return "class agreement" if "classification" in kinds else "thresholded agreement"


def find_bundle(source: str | Path) -> tuple[Path, Path]:
    """The bundle folder and model of a RUN_DIR, a bundle folder or a .tflite file.

    Raises:
        DeviceError: nothing deployable was found.
    """
    p = Path(source)
    if p.is_file():
        return p.parent, p
    if p.is_dir():
        if (p / SUMMARY_FILE).exists():
            tfl = read_summary(p).tflite
            model = Path(tfl.path) if tfl else None
            if model is not None and model.is_file():
                return model.parent, model
        if (p / "model.tflite").is_file():
            return p, p / "model.tflite"
    raise DeviceError(
        f"nothing to deploy at '{p}': give a run directory with an exported model, an export bundle "
        "(folder with model.tflite) or a .tflite file."
    )


def deploy(
    source: str | Path,
    target: str,
    *,
    dest: str | None = None,
    profile: bool = False,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    target_options: dict[str, Any] | None = None,
    resolver: str = "auto",
    host_python: str | None = None,
) -> DeployResult:
    """Copy a bundle to ``target``, run its verification batch there and compare with the host.

    Args:
        source: RUN_DIR, bundle folder or .tflite file.
        target: ``"local"``, ``"ssh://user@host[:port][/dir]"`` or ``"adb[://serial]"``.
        dest: Remote folder (default: the target's own default).
        profile: Also measure latency on the device.
        threads: Threads for the device run.
        runs: Timed runs when profiling.
        warmup: Warm-up runs when profiling.
        target_options: Extra target options (identity file, known_hosts, ...).
        resolver: The runner's ``--resolver`` on both sides: ``auto`` (XNNPACK, falling back to the
            builtin kernels) or ``builtin``. Bit-identical outputs need the same kernels on both sides:
            XNNPACK's int8 kernels differ by one quantization step between runtime versions, the
            builtin ones do not (measured: tflite-runtime 2.14 on aarch64 vs ai-edge-litert 2.3 on x86).
        host_python: The Python that computes the host's reference outputs (default: this one). Give
            one with the device's runtime and version to tell the device's architecture apart from
            its runtime version when outputs differ.

    Returns:
        The comparison: per output by name, overall, and the task's metrics on both sides.

    Raises:
        DeviceError: the device cannot be reached or cannot run the model, or export.json's task names
            other outputs than the model has.
    """
    bundle, model = find_bundle(source)
    if Path(source).is_dir():  # a bundle must be whole: its manifest present, its files the exported ones
        manifest.check(bundle, DeviceError)
    else:
        manifest.check_beside(model, DeviceError)
    task, task_source = bundle_task(bundle)
    tgt = parse_target(target, **(target_options or {}))
    local = parse_target("local", python=host_python)
    batch = _verification_batch(bundle, model)
    device, host, files, remote_dir = _run_on_both(tgt, local, bundle, model, dest, batch, profile=profile,
                                                   threads=threads, runs=runs, warmup=warmup, resolver=resolver)
    result = _compare(tgt.describe(), remote_dir, files, batch, device, host, profile, task, task_source)
    result.notes = _difference_notes(result)
    return result


def bundle_task(bundle: Path) -> tuple[Task | None, str]:
    """The task in the bundle's export.json, and where it came from.

    Returns:
        ``(task, "export.json")``, or ``(None, LEGACY_TASK)`` for a bundle without one (the caller makes
        the single-output classifier once it knows the output's name and size).

    Raises:
        DeviceError: export.json is unreadable or its task is malformed.
    """
    info_path = bundle / "export.json"
    if not info_path.exists():
        return None, LEGACY_TASK
    try:
        info = json.loads(info_path.read_text())
        raw = info.get("task") if isinstance(info, dict) else None
        return (Task.from_json(raw), "export.json") if raw else (None, LEGACY_TASK)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"cannot read the task in {info_path} ({exc}); re-export the bundle with "
                          "`edgesparse export RUN_DIR`.") from None


#: What deploy keeps of each side's runner JSON.
_RUN_FACTS = ("runtime", "resolver", "threads", "init_ms", "peak_rss_bytes", "machine", "cpu_model", "python",
              "emulated", "emulation")


@dataclass
class _Batch:
    """The verification batch as it is pushed: the file, the inputs by name, the labels by output (or None)."""

    path: Path
    inputs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray] | None
    tmp: tempfile.TemporaryDirectory[str]


def _verification_batch(bundle: Path, model: Path) -> _Batch:
    """Write verify.npz's inputs as the runner's ``--input`` (random samples without verify.npz).

    One input goes as ``verify_x.npy`` (what every runner version reads), several as ``verify_x.npz``
    keyed by input name.
    """
    tmp = tempfile.TemporaryDirectory(prefix="edgesparse-deploy-")
    inputs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] | None = None
    verify = bundle / "verify.npz"
    if verify.exists():
        with np.load(verify) as z:
            if "x" in z.files:
                inputs["x"] = model_feed(z["x"])
            else:
                inputs = {k[2:]: model_feed(z[k]) for k in z.files if k.startswith("x_")}
            if "y" in z.files:
                labels = {"": z["y"]}  # the single head, named once the outputs are known
            elif any(k.startswith("y_") for k in z.files):
                labels = {k[2:]: z[k] for k in z.files if k.startswith("y_")}
        if not inputs:
            raise DeviceError(f"{verify} holds no inputs (no x or x_<input> arrays); re-export the bundle with "
                              "`edgesparse export RUN_DIR`.")
    else:
        rng = np.random.default_rng(0)
        for i, d in enumerate(inspect_tflite(model).to_dict()["inputs"]):
            shape = [int(s) for s in d["shape"]]
            inputs[str(d.get("name") or f"input_{i}")] = rng.random((8, *shape[1:]), dtype=np.float32)
        if len(inputs) == 1:
            inputs = {"x": next(iter(inputs.values()))}
    if len(inputs) == 1:
        path = Path(tmp.name) / "verify_x.npy"
        np.save(path, next(iter(inputs.values())))
    else:
        path = Path(tmp.name) / "verify_x.npz"
        np.savez(path, **inputs)  # type: ignore[arg-type]
    return _Batch(path=path, inputs=inputs, labels=labels, tmp=tmp)


def _decode_outputs(result: dict[str, Any], side: str) -> dict[str, np.ndarray]:
    """The runner's ``outputs.by_name`` values (``--return-outputs``) as float32 arrays by output name.

    Raises:
        DeviceError: the runner returned no values (an old runner, or it did not run the batch).
    """
    by_name = (result.get("outputs") or {}).get("by_name") or {}
    arrays = {}
    for name, entry in by_name.items():
        if "float32_base64" not in entry:
            break
        raw = base64.b64decode(entry["float32_base64"])
        arrays[name] = np.frombuffer(raw, dtype="<f4").reshape([int(s) for s in entry["shape"]]).astype(np.float32)
    if not arrays or len(arrays) != len(by_name):
        raise DeviceError(
            f"the runner on the {side} returned no output values for the verification batch, so it did not run it "
            "(or it is an older runner.py left in the folder). Re-run with --debug and check the device's Python "
            "and runtime."
        )
    return arrays


#: Prefixes tfmot's wrappers give output layers (a QAT model keeps ``quant_cls`` in its signature).
def head_names(task: Task | None, names: list[str]) -> dict[str, str]:
    """The runner's output names -> the task's head names.

    Exact names first; a name with a tfmot wrapper's prefix (``quant_cls``) is the head without it
    (``cls``); a single output is the single head whatever its name. A detector exported with
    ``detection_postprocess`` keeps the op's four output names.

    Raises:
        DeviceError: the model's outputs are not the outputs the task names.
    """
    if task is None or (len(task.heads) == 1 and len(names) == 1):
        return {n: (task.heads[0].name if task else n) for n in names}
    if task.kind == "detection" and sorted(names) == sorted(POSTPROCESS_OUTPUTS):
        return {n: n for n in names}
    heads = [h.name for h in task.heads]
    mapping = {n: unwrapped_name(n, heads) for n in names}
    if sorted(mapping.values()) != sorted(heads):
        raise DeviceError(f"the model's outputs are named {', '.join(sorted(names))} but export.json's task names "
                          f"{', '.join(heads)}; the bundle's model.tflite and export.json do not belong together. "
                          "Re-export the bundle with `edgesparse export RUN_DIR`.")
    return mapping


def _task_for(task: Task | None, outputs: dict[str, np.ndarray]) -> Task:
    """The bundle's task, or a classifier over the single output for bundles without one.

    Raises:
        DeviceError: a bundle without a task whose model has several outputs.
    """
    if task is not None:
        return task
    names = list(outputs)
    if len(names) != 1:
        raise DeviceError(f"export.json has no task, and the model has {len(names)} outputs ({', '.join(names)}); "
                          "a bundle without a task is read as a single-output classifier. Re-export the bundle "
                          "with `edgesparse export RUN_DIR` so export.json records the task.")
    out = outputs[names[0]]
    return classification(max(int(out.shape[-1]) if out.ndim > 1 else 1, 2), name=names[0])


def _scores(task: Task, outputs: dict[str, np.ndarray], batch: _Batch) -> dict[str, float]:
    """The task's metrics of ``outputs`` against the labels (empty without labels)."""
    if batch.labels is None:
        return {}
    labels = batch.labels
    if set(labels) == {""}:
        labels = {task.heads[0].name: labels[""]}
    missing = [h.name for h in task.heads if h.name not in labels]
    if missing:
        return {}
    inputs: Any = next(iter(batch.inputs.values())) if len(batch.inputs) == 1 else batch.inputs
    n = len(next(iter(outputs.values())))
    return task.evaluate(outputs, {k: v[:n] for k, v in labels.items()},
                         inputs[:n] if isinstance(inputs, np.ndarray) else inputs)


def _compare(target: dict[str, Any], remote_dir: str, files: list[Path], batch: _Batch, device: dict[str, Any],
             host: dict[str, Any], profile: bool, task: Task | None, task_source: str) -> DeployResult:
    """Compare the device's outputs with the host's on the same batch, by output name, as the task says."""
    d_raw, h_raw = _decode_outputs(device, "device"), _decode_outputs(host, "host")
    if sorted(d_raw) != sorted(h_raw):
        raise DeviceError(f"the device named the model's outputs {', '.join(sorted(d_raw))} but the host "
                          f"{', '.join(sorted(h_raw))}; the two runners read different models.")
    names = head_names(task, list(d_raw))
    d_out = {names[n]: a for n, a in d_raw.items()}
    h_out = {names[n]: a for n, a in h_raw.items()}
    task = _task_for(task, d_out)
    n_batch = len(next(iter(batch.inputs.values())))
    n_dev = {len(v) for v in d_out.values()}
    if n_dev != {n_batch} or any(len(v) != n_batch for v in h_out.values()):
        raise DeviceError(
            f"the device returned {sorted(n_dev)} outputs per head for a batch of {n_batch}; the runner on the device "
            "did not run the verification batch. Re-run with --debug and check the device's Python and runtime."
        )
    cmp = task.compare(h_out, d_out)
    d_checks = {names[n]: e["checksum"] for n, e in (device["outputs"].get("by_name") or {}).items()}
    h_checks = {names[n]: e["checksum"] for n, e in (host["outputs"].get("by_name") or {}).items()}
    per_head = cmp["heads"] or {task.heads[0].name: {k: cmp[k] for k in ("agreement", "max_abs_diff",
                                                                            "max_rel_diff")}}
    kinds = {h.name: h.kind for h in task.heads}  # a post-processed detector's outputs are the op's, not heads
    outputs = {name: {"kind": kinds.get(name, "detections"), **values,
                      "checksum_match": d_checks[name] == h_checks[name]} for name, values in per_head.items()}
    d_metrics, h_metrics = _scores(task, d_out, batch), _scores(task, h_out, batch)
    single_classes = not task.multi_output and task.kind in ("classification", "binary")
    return DeployResult(
        target=target,
        remote_dir=remote_dir,
        files=[f.name for f in files] + ["runner.py"],
        samples=n_batch,
        device_accuracy=d_metrics.get("accuracy") if single_classes else None,
        host_accuracy=h_metrics.get("accuracy") if single_classes else None,
        agreement=cmp["agreement"],
        checksum_match=all(o["checksum_match"] for o in outputs.values()),
        device={k: device.get(k) for k in _RUN_FACTS},
        host={k: host.get(k) for k in _RUN_FACTS},
        profile=_profile_facts(device) if profile else None,
        metric=task.metric_name,
        metric_key=task.metric_key,
        device_metric=d_metrics.get(task.metric_key),
        host_metric=h_metrics.get(task.metric_key),
        device_metrics=d_metrics,
        host_metrics=h_metrics,
        max_abs_diff=float(cmp["max_abs_diff"]),
        max_rel_diff=float(cmp["max_rel_diff"]),
        outputs=outputs,
        task=task.to_json(),
        task_source=task_source,
    )


def _what_differs(res: DeployResult) -> str:
    """The difference in the task's terms: agreement per head with classes, max abs diff for the others."""
    parts = []
    for name, o in res.outputs.items():
        label = f"{name} " if len(res.outputs) > 1 else ""
        if o.get("agreement") is not None and o["agreement"] < 1.0:
            how = "top-1" if o["kind"] == "classification" else "thresholded"
            parts.append(f"{label}{how} agreement {o['agreement']:.2%}")
        elif not o["checksum_match"]:
            same = "same classes, " if o.get("agreement") is not None else ""
            parts.append(f"{label}{same}max abs diff {o['max_abs_diff']:.3g}")
    text = "; ".join(parts) or "outputs not bit-identical"
    if res.agreement == 1.0 and all(o.get("agreement") is not None for o in res.outputs.values()):
        text = ("same top-1 classes, outputs not bit-identical" if len(res.outputs) == 1
                and next(iter(res.outputs.values()))["kind"] == "classification" else
                f"same classes, outputs not bit-identical ({text})")
    if res.metric and res.device_metric is not None and res.host_metric is not None \
            and res.device_metric != res.host_metric:
        text += f"; {res.metric} {res.device_metric:.4g} on the device vs {res.host_metric:.4g} on the host"
    return text


def _difference_notes(res: DeployResult) -> list[str]:
    """Say what a disagreement between device and host means, and how to tell where it comes from."""
    if res.checksum_match and res.agreement in (None, 1.0):
        return []
    d, h = res.device.get("runtime") or {}, res.host.get("runtime") or {}
    dr, hr = f"{d.get('name')} {d.get('version')}", f"{h.get('name')} {h.get('version')}"
    what = _what_differs(res)
    if dr != hr:
        builtin = "" if res.device.get("resolver") == "builtin" else ", and with --resolver builtin on both sides"
        return [f"device and host outputs differ ({what}): the device ran {dr}, the host {hr}. Different runtime "
                "versions run different kernels; to tell the device's CPU from its runtime version, compare with the "
                f"same runtime on the host (--host-python PYTHON with {d.get('name')}=={d.get('version')}){builtin}."]
    return [f"device and host outputs differ ({what}) with the same runtime {dr}: the device's CPU computes "
            "differently (an emulator, or a runtime built with other kernels for it)."]


def _profile_facts(device: dict[str, Any]) -> dict[str, Any]:
    """The device's latency figures, labelled when they were measured on an emulated CPU."""
    facts = {k: device.get(k) for k in ("latency_ms", "runs", "warmup", "threads")}
    facts["latency_label"] = latency_label(device)
    return facts


def _run_on_both(tgt: Any, local: Any, bundle: Path, model: Path, dest: str | None, batch: _Batch, *, profile: bool,
                 threads: int, runs: int, warmup: int, resolver: str) -> tuple[dict[str, Any], dict[str, Any],
                                                                               list[Path], str]:
    """Push the bundle with its verification batch, run the batch on the device and on this host.

    Returns:
        ``(device_json, host_json, files_pushed, remote_dir)``; both JSONs carry every output's values.
    """
    temporary = dest is None and tgt.name == "local"  # the local target's own temporary copy: removed after
    remote_dir = None
    try:
        with batch.tmp:
            files = [model, batch.path, *(f for f in (bundle / "export.json", bundle / "labels.txt") if f.exists())]
            remote_dir = tgt.push(files, dest)
            device = tgt.run_runner(model, threads=threads, runs=runs if profile else 1,
                                    warmup=warmup if profile else 0, input_batch=batch.path, remote_dir=remote_dir,
                                    resolver=resolver, return_outputs=True)
            host = local.run_runner(model, threads=threads, runs=1, warmup=0, input_batch=batch.path,
                                    resolver=resolver, return_outputs=True)
    finally:
        if temporary and remote_dir:
            shutil.rmtree(remote_dir, ignore_errors=True)
    return device, host, files, remote_dir

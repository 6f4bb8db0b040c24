"""``edgesparse deploy``: put a bundle on a device and prove the model runs there.

The bundle (model.tflite, export.json, labels.txt, the verification batch as .npy, runner.py) is
copied to the target; the runner runs the verification batch there, and its predictions are
compared with the same runner's on the host and with the labels.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.device.emulation import latency_label
from edgesparse.device.targets import parse_target
from edgesparse.errors import DeviceError
from edgesparse.summary import SUMMARY_FILE, read_summary
from edgesparse.tflite import inspect_tflite


@dataclass
class DeployResult:
    """Where the bundle went and how the device's outputs compare with the host's."""

    target: dict[str, Any]
    remote_dir: str
    files: list[str]
    samples: int
    device_accuracy: float | None
    host_accuracy: float | None
    agreement: float  # share of samples whose top-1 class matches the host's
    checksum_match: bool  # bit-for-bit (rounded) identical outputs
    device: dict[str, Any]
    host: dict[str, Any]
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # why device and host outputs differ, when they do

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        target: "local", "ssh://user@host[:port][/dir]" or "adb[://serial]".
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
        The comparison.

    Raises:
        DeviceError: the device cannot be reached or cannot run the model.
    """
    bundle, model = find_bundle(source)
    tgt = parse_target(target, **(target_options or {}))
    local = parse_target("local", python=host_python)
    device, host, files, labels, remote_dir = _run_on_both(tgt, local, bundle, model, dest, profile=profile,
                                                           threads=threads, runs=runs, warmup=warmup,
                                                           resolver=resolver)
    result = _compare(tgt.describe(), remote_dir, files, labels, device, host, profile)
    result.notes = _difference_notes(result)
    return result


#: What deploy keeps of each side's runner JSON.
_RUN_FACTS = ("runtime", "resolver", "threads", "init_ms", "peak_rss_bytes", "machine", "cpu_model", "python",
              "emulated", "emulation")


def _compare(target: dict[str, Any], remote_dir: str, files: list[Path], labels: Any, device: dict[str, Any],
             host: dict[str, Any], profile: bool) -> DeployResult:
    """Compare the device's predictions and output checksum with the host's on the same batch."""
    d_out = device.get("outputs") or {}
    h_out = host.get("outputs") or {}
    d_pred = np.asarray(d_out.get("argmax") or [])
    h_pred = np.asarray(h_out.get("argmax") or [])
    if len(d_pred) != len(h_pred) or not len(d_pred):
        raise DeviceError(
            f"the device returned {len(d_pred)} predictions for a batch of {len(h_pred)}; the runner on the device "
            "did not run the verification batch. Re-run with --debug and check the device's Python and runtime."
        )
    result = DeployResult(
        target=target,
        remote_dir=remote_dir,
        files=[f.name for f in files] + ["runner.py"],
        samples=len(d_pred),
        device_accuracy=float(np.mean(d_pred == labels[: len(d_pred)])) if labels is not None else None,
        host_accuracy=float(np.mean(h_pred == labels[: len(h_pred)])) if labels is not None else None,
        agreement=float(np.mean(d_pred == h_pred)),
        checksum_match=d_out.get("checksum") == h_out.get("checksum"),
        device={k: device.get(k) for k in _RUN_FACTS},
        host={k: host.get(k) for k in _RUN_FACTS},
        profile=_profile_facts(device) if profile else None,
    )
    return result


def _difference_notes(res: DeployResult) -> list[str]:
    """Say what a disagreement between device and host means, and how to tell where it comes from."""
    if res.agreement == 1.0 and res.checksum_match:
        return []
    d, h = res.device.get("runtime") or {}, res.host.get("runtime") or {}
    dr, hr = f"{d.get('name')} {d.get('version')}", f"{h.get('name')} {h.get('version')}"
    what = (f"top-1 agreement {res.agreement:.2%}" if res.agreement < 1.0
            else "same top-1 classes, outputs not bit-identical")
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


def _run_on_both(tgt: Any, local: Any, bundle: Path, model: Path, dest: str | None, *, profile: bool, threads: int,
                 runs: int, warmup: int, resolver: str) -> tuple[dict[str, Any], dict[str, Any], list[Path], Any, str]:
    """Push the bundle with its verification batch, run the batch on the device and on this host.

    Returns:
        ``(device_json, host_json, files_pushed, labels_or_None, remote_dir)``.
    """
    with tempfile.TemporaryDirectory(prefix="edgesparse-deploy-") as tmp:
        batch = Path(tmp) / "verify_x.npy"
        labels = None
        verify = bundle / "verify.npz"
        if verify.exists():
            with np.load(verify) as z:
                np.save(batch, z["x"].astype(np.float32))
                labels = z["y"]
        else:
            shape = _input_shape(model)
            np.save(batch, np.random.default_rng(0).random((8, *shape[1:]), dtype=np.float32))
        files = [model, batch, *(f for f in (bundle / "export.json", bundle / "labels.txt") if f.exists())]
        remote_dir = tgt.push(files, dest)
        device = tgt.run_runner(model, threads=threads, runs=runs if profile else 1, warmup=warmup if profile else 0,
                                input_batch=batch, remote_dir=remote_dir, resolver=resolver)
        host = local.run_runner(model, threads=threads, runs=1, warmup=0, input_batch=batch, resolver=resolver)
    return device, host, files, labels, remote_dir


def _input_shape(model: Path) -> list[int]:
    info = inspect_tflite(model).to_dict()
    return [int(d) for d in info["inputs"][0]["shape"]]

"""``adb`` / ``adb://SERIAL``: an Android device reached with the Android Debug Bridge.

Files go to ``/data/local/tmp/edgesparse`` (writable by adb's shell user). The runner runs there
when ``adb shell`` finds a Python (``command -v python3``: a rooted device or one whose shell PATH
reaches Termux' Python; or ``python=`` given explicitly); otherwise TFLite's ``benchmark_model``
binary for the device's ABI (``benchmark_binary=``) is pushed and its log parsed into the same
JSON. ``adb push`` takes remote paths verbatim; ``adb shell`` commands are strings for the device's
shell, so every path in them is quoted with ``shlex.quote``.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse.device.benchmark_model import build_benchmark_command, delegate_failure, parse_benchmark_output
from edgesparse.device.targets.base import (
    RUNNER,
    TARGETS,
    TargetSpec,
    check_options,
    folder_runner_args,
    interpret_runner_output,
    measured_files,
    run_process,
)
from edgesparse.errors import DeviceError, ProfileError

ADB_HINT = " (Debian/Ubuntu: sudo apt install adb; or Android SDK platform-tools)"


def adb_devices() -> dict[str, str]:
    """Serial -> state (``device``, ``unauthorized``, ``offline`` ...) of what ``adb devices`` lists.

    Empty when adb is not installed or does not answer.
    """
    if shutil.which("adb") is None:
        return {}
    try:
        proc = run_process(["adb", "devices"], what="adb devices", timeout=30)
    except DeviceError:
        return {}
    out: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("*"):
            out[parts[0]] = parts[1]
    return out


def list_adb_devices() -> list[str]:
    """Serials of attached devices ready for use (state ``device``); empty when adb is missing."""
    return [serial for serial, state in adb_devices().items() if state == "device"]


@dataclass
class ADBTarget:
    """An Android device: the runner through a device Python, or the ``benchmark_model`` binary."""

    serial: str | None = None
    benchmark_binary: str | None = None
    python: str | None = None
    dest: str = "/data/local/tmp/edgesparse"
    last: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"adb://{self.serial}" if self.serial else "adb"

    def check(self) -> str:
        """The serial to talk to.

        Raises:
            DeviceError: adb is missing, no device is ready, the serial is not attached, or several
                devices are attached and none was chosen.
        """
        if shutil.which("adb") is None:
            raise DeviceError(f"the `adb` tool is not installed on this machine{ADB_HINT}.")
        states = adb_devices()
        ready = [s for s, state in states.items() if state == "device"]
        if self.serial:
            if self.serial not in states:
                raise DeviceError(f"Android device '{self.serial}' is not attached (`adb devices` lists: "
                                  f"{', '.join(states) or 'none'}). Check the cable or `adb connect HOST:PORT`.")
            if states[self.serial] != "device":
                raise DeviceError(f"Android device '{self.serial}' is {states[self.serial]}: "
                                  + ("accept the USB debugging prompt on its screen." if states[self.serial] ==
                                     "unauthorized" else "reconnect it or restart adb (`adb kill-server`)."))
            return self.serial
        if not ready:
            extra = f" ({', '.join(f'{s}: {st}' for s, st in states.items())})" if states else ""
            raise DeviceError(f"no Android device is ready: `adb devices` lists none{extra}. Connect one with USB "
                              "debugging enabled (and accept its prompt), or use `adb connect HOST:PORT`.")
        if len(ready) > 1:
            raise DeviceError(f"several Android devices are attached ({', '.join(ready)}); choose one with "
                              f"--target adb://SERIAL, e.g. adb://{ready[0]}.")
        return ready[0]

    def _adb(self, *args: str, timeout: float = 600) -> Any:
        serial = self.check()
        return run_process(["adb", "-s", serial, *args], what=f"adb {args[0]}", timeout=timeout, install_hint=ADB_HINT)

    def _shell(self, command: str, timeout: float = 600) -> Any:
        return self._adb("shell", command, timeout=timeout)

    def _push_file(self, local: Path, remote: str) -> None:
        proc = self._adb("push", str(local), remote)
        if proc.returncode != 0:
            raise DeviceError(f"adb push {local} {remote} failed: {proc.stderr.decode(errors='replace').strip()}")

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        """Copy ``files`` and the runner into ``dest`` (default ``/data/local/tmp/edgesparse``)."""
        folder = (dest or self.dest).rstrip("/") or "/"
        proc = self._shell(f"mkdir -p {shlex.quote(folder)}")
        if proc.returncode != 0:
            raise DeviceError(f"cannot create {folder} on {self.name}: "
                              f"{(proc.stdout + proc.stderr).decode(errors='replace').strip()}. "
                              "/data/local/tmp is the folder adb's shell user may write.")
        for f in [*map(Path, files), RUNNER]:
            self._push_file(f, f"{folder}/{f.name}")
        return folder

    def _device_python(self) -> str:
        if self.python:
            return self.python
        proc = self._shell("command -v python3 || command -v python || true", timeout=60)
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines and lines[-1].startswith("/") else ""

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 600, api: str = "interpreter", min_seconds: float = 0.0,
                   paired: Path | None = None, return_outputs: bool = False) -> dict[str, Any]:
        """Run the runner (or benchmark_model) on the device (see :class:`~edgesparse.device.targets.base.Target`)."""
        folder = remote_dir or self.push(measured_files(model, input_batch, paired))
        python = self._device_python()
        if python:
            args = folder_runner_args(model, input_batch=input_batch, paired=paired, threads=threads, runs=runs,
                                      warmup=warmup, resolver=resolver, input_shape=input_shape, api=api,
                                      min_seconds=min_seconds, return_outputs=return_outputs)
            cmd = (f"cd {shlex.quote(folder)} && {shlex.quote(python)} runner.py "
                   + " ".join(shlex.quote(a) for a in args))
            proc = self._shell(cmd, timeout=timeout)
            self.last = interpret_runner_output(proc.stdout.decode(errors="replace"),
                                                proc.stderr.decode(errors="replace"), proc.returncode, self.name,
                                                python)
            return self.last
        return self._run_benchmark_model(Path(model), folder, threads=threads, runs=runs, warmup=warmup,
                                         resolver=resolver, input_batch=input_batch, input_shape=input_shape,
                                         timeout=timeout, api=api, min_seconds=min_seconds, paired=paired)

    def _run_benchmark_model(self, model: Path, folder: str, *, threads: int, runs: int, warmup: int, resolver: str,
                             input_batch: Path | None, input_shape: Sequence[int] | None,
                             timeout: float, api: str = "interpreter", min_seconds: float = 0.0,
                             paired: Path | None = None) -> dict[str, Any]:
        if not self.benchmark_binary:
            raise DeviceError(f"{self.name} has no Python on adb's shell PATH, so the runner cannot run there. Give "
                              "--benchmark-binary PATH (TFLite's benchmark_model built for the device's ABI, e.g. "
                              "android_aarch64_benchmark_model), or --python with the path of a device Python that "
                              "has numpy and ai-edge-litert.")
        if input_batch is not None:
            raise DeviceError(f"benchmark_model only times the model; it cannot return outputs for a verification "
                              f"batch, so {self.name} needs a device Python (--python) for deploy checks.")
        if paired is not None:
            raise DeviceError(f"benchmark_model times one model per process; paired timing on {self.name} needs a "
                              "device Python (--python).")
        if api != "interpreter":
            raise DeviceError(f"benchmark_model times the Interpreter API only; --api {api} on {self.name} needs a "
                              "device Python (--python) with ai-edge-litert.")
        if input_shape:
            raise ProfileError("benchmark_model needs input names for --input-shape; profile dynamic-shape models "
                               "with a device Python (--python) instead.")
        binary = Path(self.benchmark_binary).expanduser()
        if not binary.is_file():
            raise DeviceError(f"the benchmark binary {binary} does not exist.")
        remote_bin = f"{folder}/benchmark_model"
        self._push_file(binary, remote_bin)
        self._shell(f"chmod 755 {shlex.quote(remote_bin)}", timeout=60)
        reason = None
        use_xnnpack = resolver != "builtin"
        while True:
            cmd = build_benchmark_command(remote_bin, f"{folder}/{model.name}", threads=threads, runs=runs,
                                          warmup=warmup, use_xnnpack=use_xnnpack, min_secs=min_seconds)
            proc = self._shell(" ".join(shlex.quote(c) for c in cmd), timeout=timeout)
            text = (proc.stdout + proc.stderr).decode(errors="replace")
            failure = delegate_failure(text)
            if use_xnnpack and resolver == "auto" and (proc.returncode != 0 or "Inference timings" not in text) \
                    and failure:
                reason, use_xnnpack = failure, False  # same fallback as the runner's resolver "auto"
                continue
            break
        try:
            result = parse_benchmark_output(text)
        except DeviceError as exc:
            raise ProfileError(f"{self.name} cannot run {model.name} with benchmark_model: {exc}") from None
        result.update(resolver="xnnpack" if use_xnnpack else "builtin", delegate_fallback_reason=reason,
                      threads=threads, warmup=warmup)
        self.last = result
        return result

    def describe(self) -> dict[str, Any]:
        """Device model, ABI/machine and (when the runner ran) Python and runtime."""
        d: dict[str, Any] = {"name": self.name}
        proc = self._shell("getprop ro.product.model; uname -m; getprop ro.build.version.release", timeout=60)
        lines = [ln.strip() for ln in proc.stdout.decode(errors="replace").splitlines()]
        if len(lines) >= 3:
            d.update(host=lines[0], machine=lines[1], android=lines[2])
        if self.last:
            d.update(python=self.last.get("python"), runtime=self.last.get("runtime"))
        return d


@TARGETS.register("adb")
def _adb_target(spec: TargetSpec, **options: Any) -> ADBTarget:
    opts = check_options("adb", options, ["python", "benchmark_binary"])
    return ADBTarget(serial=spec.host, benchmark_binary=opts.get("benchmark_binary"), python=opts.get("python"))

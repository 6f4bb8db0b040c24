"""What every target shares: the Target protocol, the registry, the runner's arguments and its JSON.

The runner (``edgesparse/device/runner.py``) always answers with one JSON object, errors included;
:func:`interpret_runner_output` turns its error kinds into the typed errors of edgesparse, so a
missing runtime on a Raspberry Pi reads the same as one on this machine.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgesparse._registry import Registry
from edgesparse.errors import DeviceError, ProfileError

#: The runner, copied next to the model on every target.
RUNNER = Path(__file__).resolve().parents[1] / "runner.py"


@runtime_checkable
class Target(Protocol):
    """Somewhere the runner runs: this machine, a board over SSH, an Android device over adb."""

    @property
    def name(self) -> str:
        """The target as the user wrote it (``local``, ``ssh://pi@host:22``, ``adb://SERIAL``)."""

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 600, api: str = "interpreter", min_seconds: float = 0.0,
                   paired: Path | None = None, return_outputs: bool = False) -> dict[str, Any]:
        """Run the runner on ``model`` there; return its parsed JSON.

        ``api`` is the runner's ``--api`` (``interpreter`` or ``compiled``); ``min_seconds`` its
        ``--min-seconds``; ``paired`` a reference model timed alternately with ``model`` in the
        same process (``--paired``); ``return_outputs`` puts the ``input_batch``'s output values in the
        JSON (``--return-outputs``: every output by name, float32 as base64). ``remote_dir`` names a
        folder :meth:`push` already filled (model, batch and runner); without it the files are copied first.

        Raises:
            DeviceError: the target cannot be reached or has no Python/runtime.
            ProfileError: the model cannot be run there (bad file, missing ops, dynamic shape).
        """

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        """Copy ``files`` and the runner to ``dest`` (the target's default folder if None); return the folder."""

    def describe(self) -> dict[str, Any]:
        """``name``, ``host``, ``machine`` (uname -m), ``python`` and ``runtime`` {name, version}."""


@dataclass(frozen=True)
class TargetSpec:
    """A target string split into its parts (``scheme://user@host:port/path``)."""

    text: str
    scheme: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None


#: Target kinds: a factory ``(spec, **options) -> Target`` per scheme.
TARGETS: Registry[Callable[..., Target]] = Registry("target", DeviceError)


def check_options(kind: str, options: dict[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """Keep the options a target kind takes; a set option it does not take is a clear error.

    Raises:
        DeviceError: an option was given that does not apply to this kind of target.
    """
    extra = sorted(k for k, v in options.items() if k not in known and v not in (None, False, ""))
    if extra:
        raise DeviceError(f"option(s) {', '.join(extra)} do not apply to {kind} targets; they take: "
                          f"{', '.join(known) or 'no options'}.")
    return {k: v for k, v in options.items() if k in known and v is not None}


def runner_args(model: str, *, threads: int, runs: int, warmup: int, resolver: str,
                input_batch: str | None = None, input_shape: Sequence[int] | None = None,
                api: str = "interpreter", min_seconds: float = 0.0, paired: str | None = None,
                return_outputs: bool = False) -> list[str]:
    """The runner's command-line arguments (without the interpreter and script)."""
    args = [model, "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--resolver", resolver]
    if api != "interpreter":
        args += ["--api", api]
    if min_seconds:
        args += ["--min-seconds", repr(float(min_seconds))]
    if paired:
        args += ["--paired", paired]
    if input_batch:
        args += ["--input", input_batch]
        if return_outputs:
            args.append("--return-outputs")
    if input_shape:
        args += ["--input-shape", ",".join(str(int(d)) for d in input_shape)]
    return args


def measured_files(model: Path, input_batch: Path | None = None, paired: Path | None = None) -> list[Path]:
    """The files one runner call needs on the target (``push`` adds the runner itself)."""
    return [Path(f) for f in (model, input_batch, paired) if f is not None]


def folder_runner_args(model: Path, *, input_batch: Path | None = None, paired: Path | None = None,
                       **measure: Any) -> list[str]:
    """:func:`runner_args` for a call made inside the folder ``push`` filled: every file by its name there."""
    def name(f: Path | None) -> str | None:
        return None if f is None else Path(f).name

    return runner_args(Path(model).name, input_batch=name(input_batch), paired=name(paired), **measure)


def no_runtime_fix(python: str) -> str:
    """The exact commands that give ``python`` a TFLite runtime."""
    return (f"run `{python} -m pip install ai-edge-litert` on the device (Raspberry Pi OS: "
            f"`{python} -m pip install tflite-runtime 'numpy<2'`). Where pip refuses the system Python "
            "(externally-managed-environment), make a virtual environment first: `python3 -m venv ~/edgesparse-venv "
            "&& ~/edgesparse-venv/bin/pip install tflite-runtime 'numpy<2'` and pass --python "
            "~/edgesparse-venv/bin/python")


def parse_runner_json(stdout: str) -> dict[str, Any] | None:
    """The last JSON object line the runner printed (runtimes may print their own lines first)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def interpret_runner_output(stdout: str, stderr: str, returncode: int, where: str,
                            python: str = "python3") -> dict[str, Any]:
    """Parse the runner's JSON; turn its error kinds into DeviceError / ProfileError.

    Args:
        stdout: The runner's standard output.
        stderr: Its standard error (quoted when there is no JSON).
        returncode: Its exit code.
        where: The target's name, for messages.
        python: The interpreter that ran it, for the install command in messages.

    Returns:
        The runner's result.

    Raises:
        DeviceError: no Python or no runtime on the device, or the runner did not report at all.
        ProfileError: the model cannot be run (bad file, missing ops, dynamic shape, bad argument).
    """
    result = parse_runner_json(stdout)
    if result is None:
        raise _no_report(stderr, returncode, where, python)
    if "error" not in result:
        return result
    kind, error = result.get("kind"), result["error"]
    device = _device_words(where, result)
    if kind == "no_runtime":
        if result.get("wrong_architecture"):
            raise DeviceError(f"{device}: the TFLite runtime or numpy installed for `{python}` was built for another "
                              f"CPU architecture than the device's ({result.get('machine', '?')}): {error}. A virtual "
                              "environment copied from another machine does not work; make it on the device. To fix "
                              f"it, {no_runtime_fix(python)}.")
        if result.get("missing") == "numpy":
            raise DeviceError(f"{device} has no TFLite runtime for `{python}`: numpy is missing (every TFLite "
                              f"runtime needs it): {error}. "
                              f"To fix it, {no_runtime_fix(python)}.")
        raise DeviceError(f"{device} has no TFLite runtime for `{python}`: {error}. "
                          f"To fix it, {no_runtime_fix(python)}.")
    if kind == "load_failed" and "find op for builtin opcode" in error:
        raise ProfileError(_old_runtime_message(device, python, result))
    if kind == "dynamic_shape":
        raise ProfileError(f"{error}.")
    if kind == "bad_argument":
        raise ProfileError(f"the runner on {where} refused its arguments: {error}.")
    if kind == "load_failed":
        raise ProfileError(f"{where} cannot run the model: {error}. If the file is a valid .tflite and ops are "
                           "missing, the device's runtime is older than the converter: upgrade it "
                           "(pip install -U ai-edge-litert / tflite-runtime) or export with fewer op types.")
    raise ProfileError(f"the runner on {where} failed ({kind}): {error}")


def _no_report(stderr: str, returncode: int, where: str, python: str) -> DeviceError:
    """The error for a runner that printed no JSON: it crashed, could not start, or said nothing."""
    tail = " | ".join(stderr.strip().splitlines()[-3:]) or "(no output)"
    if returncode in (139, -11, 134, -6):  # SIGSEGV / SIGABRT, through a shell (128 + n) or directly (-n)
        return DeviceError(f"the runner on {where} crashed "
                          f"({'segmentation fault' if returncode in (139, -11) else 'abort'}, "
                          f"exit code {returncode}) inside `{python}`'s TFLite runtime: {tail}. "
                          "Try another runtime "
                          f"version on the device, e.g. `{python} -m pip install "
                          "'ai-edge-litert==2.1.*' 'numpy<2'` "
                          "or `tflite-runtime==2.14.0` (ai-edge-litert 2.2 and 2.3 crash this way under qemu).")
    if returncode in (126, 127):
        return DeviceError(f"{where} cannot start `{python}` ({tail}). Install Python 3 on the device "
                          "(Debian/Raspberry Pi OS: sudo apt install python3) or give its path with --python.")
    return DeviceError(f"the runner on {where} did not report (exit code {returncode}): {tail}. Check that "
                      f"`{python}` is Python >= 3.7 and has numpy and a TFLite runtime.")


def _device_words(where: str, result: dict[str, Any]) -> str:
    """``ssh://pi@host:22 (aarch64, Python 3.11)``: the device and what the runner saw of it."""
    facts = [str(result[k]) for k in ("machine",) if result.get(k)]
    if result.get("python"):
        facts.append(f"Python {result['python']}")
    return f"{where} ({', '.join(facts)})" if facts else where


def _old_runtime_message(device: str, python: str, result: dict[str, Any]) -> str:
    """The device's runtime is older than the converter: which op and version it lacks, and the upgrade."""
    import re

    error = result["error"]
    runtime = result.get("runtime") or {}
    have = f"{runtime.get('name', 'its TFLite runtime')} {runtime.get('version', '')}".strip()
    found = re.search(r"opcode '([^']+)' version '(\d+)'", error)
    op = f"op {found.group(1)} version {found.group(2)}" if found else "an op version of this model"
    return (f"{device} cannot open the model: {have} does not know {op}, which the converter used ({error}). "
            f"The device's runtime is older than the converter: upgrade it with `{python} -m pip install -U "
            f"ai-edge-litert` (Raspberry Pi OS with Python 3.11: `{python} -m pip install -U ai-edge-litert "
            "'numpy<2'`; tflite-runtime stops at 2.14), or convert with an older TensorFlow.")


def run_process(cmd: Sequence[str], *, what: str, timeout: float, stdin: bytes | None = None,
                install_hint: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run a local program (argument list, never a shell); missing program / timeout -> DeviceError."""
    try:
        return subprocess.run(list(cmd), input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise DeviceError(f"`{cmd[0]}` is not installed on this machine{install_hint}.") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} did not finish within {timeout:.0f} s; raise the timeout or use fewer "
                          "runs.") from None

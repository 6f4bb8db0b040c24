"""Where the runner runs: ``local``, ``ssh://user@host[:port][/dest/dir]``, ``adb[://serial]``.

SSH uses OpenSSH's own ``ssh`` binary (argument lists, never a local shell) rather than a Python
SSH library: the user's ~/.ssh/config, agent, ProxyJump and known_hosts work as they do on their
command line, host keys are checked by OpenSSH itself, and no dependency is added. Files go over
the same channel as a tar stream (``tar -x`` on the device), so one connection copies a bundle
and no remote path is ever parsed by scp. Every remote path is quoted with ``shlex.quote``.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from edgesparse._registry import Registry
from edgesparse.errors import DeviceError, ProfileError

RUNNER = Path(__file__).with_name("runner.py")
TARGETS: Registry[Callable[..., Any]] = Registry("target", DeviceError)


def _runner_args(model: str, *, threads: int, runs: int, warmup: int, resolver: str,
                 input_batch: str | None, input_shape: Sequence[int] | None) -> list[str]:
    args = [model, "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--resolver", resolver]
    if input_batch:
        args += ["--input", input_batch]
    if input_shape:
        args += ["--input-shape", ",".join(str(int(d)) for d in input_shape)]
    return args


def interpret_runner_output(stdout: str, stderr: str, returncode: int, where: str) -> dict[str, Any]:
    """Parse the runner's JSON; turn its error kinds into DeviceError / ProfileError.

    Raises:
        DeviceError: no runtime on the device, or the runner did not run at all.
        ProfileError: the model cannot be run (bad file, missing ops, dynamic shape, bad argument).
    """
    line = next((ln for ln in reversed(stdout.strip().splitlines()) if ln.startswith("{")), "")
    try:
        result = json.loads(line) if line else None
    except json.JSONDecodeError:
        result = None
    if result is None:
        tail = " | ".join(stderr.strip().splitlines()[-3:]) or "(no output)"
        raise DeviceError(f"the runner on {where} did not report (exit code {returncode}): {tail}")
    if "error" in result:
        kind = result.get("kind")
        if kind == "no_runtime":
            raise DeviceError(f"{where} has no TFLite runtime for its Python: {result['error']}. "
                              f"Install one on the device: {result.get('fix')}")
        if kind == "dynamic_shape":
            raise ProfileError(f"{result['error']} (e.g. --input-shape 1,96,96,3).")
        if kind == "load_failed":
            raise ProfileError(f"{where} cannot run the model: {result['error']}. If ops are missing, the device's "
                               "runtime is older than the converter: upgrade it or export with fewer op types.")
        raise ProfileError(f"runner on {where}: {result['error']}")
    return result


@dataclass
class LocalTarget:
    """The runner as a subprocess of this Python (its peak RSS is the model's, not the host's TF)."""

    python: str = sys.executable
    name: str = "local"
    last: dict[str, Any] = field(default_factory=dict)

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        folder = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="edgesparse-local-"))
        folder.mkdir(parents=True, exist_ok=True)
        for f in [*files, RUNNER]:
            if Path(f).resolve() != (folder / Path(f).name).resolve():
                shutil.copy2(f, folder / Path(f).name)
        return str(folder)

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 900) -> dict[str, Any]:
        model_path = str(Path(remote_dir) / Path(model).name) if remote_dir else str(model)
        batch = str(Path(remote_dir) / Path(input_batch).name) if (remote_dir and input_batch) else (
            str(input_batch) if input_batch else None)
        cmd = [self.python, str(RUNNER), *_runner_args(model_path, threads=threads, runs=runs, warmup=warmup,
                                                       resolver=resolver, input_batch=batch, input_shape=input_shape)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        self.last = interpret_runner_output(proc.stdout, proc.stderr, proc.returncode, "this machine")
        return self.last

    def describe(self) -> dict[str, Any]:
        import platform

        d = {"name": self.name, "host": platform.node(), "machine": platform.machine(),
             "python": platform.python_version()}
        if self.last:
            d["runtime"] = self.last.get("runtime")
        return d


@dataclass
class SSHTarget:
    """A Linux board (Raspberry Pi ...) reached with OpenSSH."""

    user: str | None
    host: str
    port: int = 22
    dest: str = "~/edgesparse"
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    python: str = "python3"
    connect_timeout: int = 10
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"ssh://{who}{self.host}:{self.port}"

    def _options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}",
                "-p", str(self.port)]
        if self.identity:
            opts += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return opts

    def _ssh(self, command: str, stdin: bytes | None = None, timeout: float = 900) -> subprocess.CompletedProcess[bytes]:
        if shutil.which("ssh") is None:
            raise DeviceError("the `ssh` client is not installed on this machine (Debian/Ubuntu: apt install openssh-client).")
        target = f"{self.user}@{self.host}" if self.user else self.host
        try:
            proc = subprocess.run(["ssh", *self._options(), target, command], input=stdin, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.name} did not answer within {timeout:.0f} s.") from None
        if proc.returncode == 255:
            raise self._connection_error(proc.stderr.decode(errors="replace"))
        return proc

    def _connection_error(self, stderr: str) -> DeviceError:
        text = stderr.strip()
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return DeviceError(f"the host key of {self.host}:{self.port} has CHANGED since it was recorded in known_hosts. "
                               "If the device was reinstalled, remove the old key with `ssh-keygen -R` and connect again; "
                               "otherwise someone may be intercepting the connection.")
        if "Host key verification failed" in text or "No ED25519 host key is known" in text or "host key is known" in text:
            return DeviceError(f"{self.host}:{self.port} is not in known_hosts, so its identity cannot be checked. Connect "
                               "once with `ssh` to verify and record its key, or pass --accept-new-host-key to trust it on "
                               "first use.")
        if "Permission denied" in text or "Too many authentication failures" in text:
            return DeviceError(f"{self.name} refused the login ({text.splitlines()[-1]}). Check the user name and that "
                               "your public key is in the device's ~/.ssh/authorized_keys (ssh-copy-id), or give --identity.")
        if any(s in text for s in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                                   "Name or service not known", "Network is unreachable", "Connection closed")):
            return DeviceError(f"cannot reach {self.host}:{self.port} ({text.splitlines()[-1]}). Check that the device is "
                               "on, its address and port, and that sshd runs on it.")
        return DeviceError(f"ssh to {self.name} failed: {text.splitlines()[-1] if text else 'no message'}")

    def _remote_path(self, path: str) -> str:
        """Quote a remote path; a leading ~/ stays expandable."""
        if path == "~":
            return '"$HOME"'
        if path.startswith("~/"):
            return '"$HOME"/' + shlex.quote(path[2:])
        return shlex.quote(path)

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        folder = dest or self.dest
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in [*files, RUNNER]:
                tar.add(str(f), arcname=Path(f).name)
        q = self._remote_path(folder)
        proc = self._ssh(f"mkdir -p -- {q} && tar -xf - -C {q} && cd -- {q} && pwd", stdin=buf.getvalue())
        if proc.returncode != 0:
            raise DeviceError(f"copying to {self.name}:{folder} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode().strip().splitlines()[-1]

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 900) -> dict[str, Any]:
        if remote_dir is None:
            remote_dir = self.push([Path(model)] + ([Path(input_batch)] if input_batch else []))
        args = _runner_args(Path(model).name, threads=threads, runs=runs, warmup=warmup, resolver=resolver,
                            input_batch=Path(input_batch).name if input_batch else None, input_shape=input_shape)
        command = f"cd -- {shlex.quote(remote_dir)} && {shlex.quote(self.python)} runner.py " + " ".join(
            shlex.quote(a) for a in args)
        proc = self._ssh(command, timeout=timeout)
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode == 127 or "not found" in stderr and not proc.stdout:
            raise DeviceError(f"{self.name} has no `{self.python}`. Install Python 3 on the device "
                              "(sudo apt install python3 python3-numpy) or give its path with --python.")
        self.last = interpret_runner_output(proc.stdout.decode(errors="replace"), stderr, proc.returncode, self.name)
        return self.last

    def describe(self) -> dict[str, Any]:
        d = {"name": self.name, "host": self.host, "port": self.port}
        if self.last:
            d.update(machine=self.last.get("machine"), python=self.last.get("python"), runtime=self.last.get("runtime"))
        return d


@dataclass
class ADBTarget:
    """An Android device: the runner through Termux-style python, or the benchmark_model binary."""

    serial: str | None = None
    benchmark_binary: str | None = None
    python: str | None = None
    dest: str = "/data/local/tmp/edgesparse"
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"adb://{self.serial}" if self.serial else "adb"

    def _adb(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        cmd = ["adb", *(["-s", self.serial] if self.serial else []), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def check(self) -> None:
        """Fail clearly when adb or a device is missing."""
        if shutil.which("adb") is None:
            raise DeviceError("the `adb` tool is not installed (Debian/Ubuntu: apt install adb; or Android platform-tools).")
        devices = list_adb_devices()
        if not devices:
            raise DeviceError("no Android device is attached (`adb devices` lists none). Connect one with USB debugging "
                              "enabled, or use `adb connect HOST:PORT`.")
        if self.serial and self.serial not in devices:
            raise DeviceError(f"device '{self.serial}' is not attached; attached: {', '.join(devices)}.")

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        self.check()
        folder = dest or self.dest
        self._adb("shell", f"mkdir -p {shlex.quote(folder)}")
        for f in [*files, RUNNER]:
            proc = self._adb("push", str(f), f"{folder}/{Path(f).name}")
            if proc.returncode != 0:
                raise DeviceError(f"adb push {f} failed: {proc.stderr.strip()}")
        return folder

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 900) -> dict[str, Any]:
        from edgesparse.device.benchmark_model import build_benchmark_command, parse_benchmark_output

        folder = remote_dir or self.push([Path(model)] + ([Path(input_batch)] if input_batch else []))
        python = self.python or self._adb("shell", "command -v python3 || command -v python").stdout.strip()
        if python:
            args = _runner_args(Path(model).name, threads=threads, runs=runs, warmup=warmup, resolver=resolver,
                                input_batch=Path(input_batch).name if input_batch else None, input_shape=input_shape)
            cmd = f"cd {shlex.quote(folder)} && {shlex.quote(python)} runner.py " + " ".join(shlex.quote(a) for a in args)
            proc = self._adb("shell", cmd, timeout=timeout)
            self.last = interpret_runner_output(proc.stdout, proc.stderr, proc.returncode, self.name)
            return self.last
        if not self.benchmark_binary:
            raise DeviceError(f"{self.name} has no python; give --benchmark-binary PATH (TFLite's benchmark_model for "
                              "the device's ABI) or install Termux with python and ai-edge-litert.")
        remote_bin = f"{folder}/benchmark_model"
        self._adb("push", self.benchmark_binary, remote_bin)
        self._adb("shell", f"chmod +x {shlex.quote(remote_bin)}")
        cmd = build_benchmark_command(remote_bin, f"{folder}/{Path(model).name}", threads=threads, runs=runs,
                                      warmup=warmup)
        proc = self._adb("shell", " ".join(shlex.quote(c) for c in cmd), timeout=timeout)
        self.last = parse_benchmark_output(proc.stdout + proc.stderr)
        self.last["threads"] = threads
        return self.last

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.last:
            d.update(machine=self.last.get("machine"), runtime=self.last.get("runtime"))
        return d


def list_adb_devices() -> list[str]:
    """Serials of attached devices in state 'device' (empty when adb is missing)."""
    if shutil.which("adb") is None:
        return []
    try:
        out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("\tdevice") or ln.split()[-1:] == ["device"]]


@TARGETS.register("local")
def _local(spec: Any, **options: Any) -> LocalTarget:
    return LocalTarget(python=options.get("python") or sys.executable)


@TARGETS.register("ssh")
def _ssh(spec: Any, **options: Any) -> SSHTarget:
    if not spec.hostname:
        raise DeviceError("an ssh target needs a host: ssh://user@host[:port][/dest/dir]")
    dest = unquote(spec.path) if spec.path and spec.path != "/" else "~/edgesparse"
    try:
        port = spec.port or 22
    except ValueError:
        raise DeviceError("the port in the ssh target is not a number: ssh://user@host:PORT/dir") from None
    return SSHTarget(user=unquote(spec.username) if spec.username else None, host=spec.hostname, port=port, dest=dest,
                     identity=options.get("identity"), known_hosts=options.get("known_hosts"),
                     accept_new_host_key=bool(options.get("accept_new_host_key")),
                     python=options.get("python") or "python3",
                     connect_timeout=int(options.get("connect_timeout") or 10))


@TARGETS.register("adb")
def _adb_target(spec: Any, **options: Any) -> ADBTarget:
    return ADBTarget(serial=spec.netloc or None, benchmark_binary=options.get("benchmark_binary"),
                     python=options.get("python"))


def parse_target(target: str, **options: Any) -> Any:
    """A target from its string form.

    Args:
        target: "local", "ssh://user@host[:port][/dest/dir]", "adb" or "adb://SERIAL".
        **options: identity, known_hosts, accept_new_host_key, python, benchmark_binary, connect_timeout.

    Raises:
        DeviceError: unknown scheme (the known ones are listed).
    """
    text = target.strip()
    scheme = text.split("://", 1)[0] if "://" in text else text
    spec = urlparse(text if "://" in text else f"{text}://")
    options = {k: v for k, v in options.items() if v is not None}
    return TARGETS.get(scheme)(spec, **options)

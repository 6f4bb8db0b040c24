"""The emulated Raspberry Pi of ``.ci/pi-emulator.sh`` for the tests marked ``pi``.

The session fixture :func:`pi_device` runs ``.ci/pi-emulator.sh start`` (which builds the arm64 root
file system once, about 4-5 minutes, and caches it) and ``stop`` at the end of the session, unless
the emulator was already running before the tests (then it is left running). The script's last
line is the target arguments, used as they are.

Where the emulator cannot run (not root, no binfmt_misc: the script exits 3) the ``pi`` tests skip
with its reason, except when ``EDGESPARSE_PI_REQUIRED=1`` (``.ci/run`` sets it when it runs as root):
then they fail, so CI cannot skip them silently.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "pi-emulator.sh"


@dataclass
class PiDevice:
    """A running emulated Pi: the CLI arguments that reach it and where its files are on this machine."""

    args: list[str]  # --target ssh://... --identity ... --known-hosts ... --python ...
    rootfs: Path  # the device's root file system, seen from this machine

    @property
    def target(self) -> str:
        return self.args[self.args.index("--target") + 1]

    def option(self, flag: str) -> str:
        return self.args[self.args.index(flag) + 1]

    def options(self, **override: str | None) -> dict[str, str | None]:
        """The target options of :func:`edgesparse.device.targets.parse_target`."""
        opts: dict[str, str | None] = {"identity": self.option("--identity"),
                                       "known_hosts": self.option("--known-hosts"),
                                       "python": self.option("--python")}
        opts.update(override)
        return opts

    def cli_args(self, python: str | None = None) -> list[str]:
        if python is None:
            return list(self.args)
        args = list(self.args)
        args[args.index("--python") + 1] = python
        return args

    def processes(self) -> list[str]:
        """Command lines of the processes running inside the device (sshd and its sessions)."""
        root = os.path.realpath(self.rootfs)
        out = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                if os.readlink(p / "root") != root:
                    continue
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
        return out


def required() -> bool:
    """In CI as root (``.ci/run`` sets ``EDGESPARSE_PI_REQUIRED=1``) what the device tests need must be there."""
    return os.environ.get("EDGESPARSE_PI_REQUIRED") == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with ``reason``; fail with it where the tests are required to run (CI as root)."""
    if required():
        pytest.fail(f"EDGESPARSE_PI_REQUIRED=1 and {reason}", pytrace=False)
    pytest.skip(reason)


#: Written into the rootfs by .ci/pi-emulator.sh when ai-edge-litert did not install on the device (pip's log).
LITERT_MISSING = "etc/edgesparse/litert-missing.log"


def litert_python(pi: PiDevice, python: str) -> str:
    """``python`` (the device's ai-edge-litert venv) if the build made it; else skip, or fail in CI, with why."""
    if (pi.rootfs / python.lstrip("/")).exists():
        return python
    log = pi.rootfs / LITERT_MISSING
    why = log.read_text()[-3000:] if log.exists() else "no log (the rootfs was built by an older script?)"
    skip_or_fail(f"the emulated Pi has no {python} (ai-edge-litert did not install when .ci/pi-emulator.sh built "
                 f"{pi.rootfs}; delete it to rebuild): {why}")


def device_python() -> str:
    """A Python on this machine shaped like Raspberry Pi OS's: tflite-runtime 2.14 with numpy<2.

    ``EDGESPARSE_DEVICE_PYTHON``, else the venv ``.ci/system-deps.sh`` makes (``EDGESPARSE_DEVICE_VENV``, default
    ~/.cache/edgesparse/device-venv). Missing: skip, or fail in CI as root, with the script's install log.
    """
    explicit = os.environ.get("EDGESPARSE_DEVICE_PYTHON")
    venv = Path(os.environ.get("EDGESPARSE_DEVICE_VENV") or Path.home() / ".cache/edgesparse/device-venv")
    path = explicit or str(venv / "bin" / "python")
    if os.access(path, os.X_OK):
        return path
    log = Path(f"{venv}.install.log")
    why = log.read_text()[-3000:] if log.exists() else "no install log: run `bash .ci/system-deps.sh`"
    skip_or_fail(f"no tflite-runtime 2.14 device Python at {path} (set EDGESPARSE_DEVICE_PYTHON, or run "
                 f"`bash .ci/system-deps.sh`): {why}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def pi_device() -> Iterator[PiDevice]:
    """The emulated Pi, started for the session (skips where it cannot run, fails where it must)."""
    env = dict(os.environ)
    rootfs = Path(env.get("EDGESPARSE_PI_ROOTFS", Path.home() / ".cache/edgesparse/pi-rootfs"))
    running = _script("status", env, 60).returncode == 0
    if not running:
        env.setdefault("EDGESPARSE_PI_PORT", str(_free_port()))
    proc = _script("start", env, 1500)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        if proc.returncode == 3 and not required():
            pytest.skip(f"no emulated Raspberry Pi on this machine: {reason}")
        pytest.fail(f".ci/pi-emulator.sh start failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}",
                    pytrace=False)
    args = shlex.split(proc.stdout.strip().splitlines()[-1])
    try:
        yield PiDevice(args=args, rootfs=rootfs)
    finally:
        if not running:
            _script("stop", env, 120)

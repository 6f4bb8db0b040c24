"""A real OpenSSH server on 127.0.0.1 for the SSH target tests (throw-away host and user keys).

Use it from pytest through the session fixture :func:`sshd_server` (``tests/conftest.py`` imports
it), or from a script with ``with start_sshd(tmp_dir) as server: ...``. The server runs as the
current user (root in CI: ``PermitRootLogin prohibit-password``), accepts only the generated
``identity`` key, has no PAM and no strict modes (the keys live in a temporary folder), and is
stopped when the fixture or the ``with`` block ends. Without ``/usr/sbin/sshd`` the tests FAIL
with the command that installs it (``bash .ci/system-deps.sh``): CI must not skip them silently.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
INSTALL = "run `bash .ci/system-deps.sh` (installs openssh-server and openssh-client from Debian)"


@dataclass
class SSHServer:
    """A running sshd and the files a client needs to talk to it."""

    port: int
    user: str
    identity: Path  # the private key the server accepts
    other_identity: Path  # a key the server does not accept
    known_hosts: Path  # holds the server's real host key
    empty_known_hosts: Path  # holds nothing: the host is unknown
    changed_known_hosts: Path  # holds a different key for the same [127.0.0.1]:port
    log: Path  # sshd's own log (-e), for debugging failures

    @property
    def target(self) -> str:
        """The edgesparse target string (without a folder)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesparse-test", "-f", str(path)],
                   check=True, capture_output=True)


def _write_config(tmp: Path, port: int) -> Path:
    config = tmp / "sshd_config"
    lines = [
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {tmp / 'host_key'}", f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "X11Forwarding no", "AllowTcpForwarding no", "LogLevel ERROR", "MaxStartups 50", "MaxAuthTries 6",
        # OpenSSH >= 9.8 penalises a source address after failed logins; the wrong-key test would
        # then lock 127.0.0.1 out for the tests after it. Older servers do not know the option.
        "PerSourcePenalties no",
    ]
    config.write_text("\n".join(lines) + "\n")
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0 and "PerSourcePenalties" in check.stderr:
        config.write_text("\n".join(lines[:-1]) + "\n")
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd rejected the test configuration: {check.stderr.strip()}")
    return config


@contextlib.contextmanager
def start_sshd(tmp: Path) -> Iterator[SSHServer]:
    """Run sshd on 127.0.0.1:<free port> with keys generated in ``tmp``; stop it on exit.

    Raises:
        RuntimeError: sshd or ssh-keygen is not installed, or sshd did not start.
    """
    if not os.path.exists(SSHD):
        raise RuntimeError(f"the OpenSSH server ({SSHD}) is not installed: {INSTALL}.")
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        raise RuntimeError(f"the OpenSSH client (ssh, ssh-keygen) is not installed: {INSTALL}.")
    tmp = Path(tmp)
    for name in ("host_key", "user_key", "other_key"):
        _keygen(tmp / name)
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    with contextlib.suppress(OSError):  # privilege-separation directory; only root needs (and may make) it
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = _write_config(tmp, port)
    log_path = tmp / "sshd.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd exited with code {proc.returncode}: {log_path.read_text().strip()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("sshd did not start listening within 15 s") from None
                    time.sleep(0.05)
            host = f"[127.0.0.1]:{port}"
            key_type, key = (tmp / "host_key.pub").read_text().split()[:2]
            other_type, other = (tmp / "other_key.pub").read_text().split()[:2]
            (tmp / "known_hosts").write_text(f"{host} {key_type} {key}\n")
            (tmp / "empty_known_hosts").write_text("")
            (tmp / "changed_known_hosts").write_text(f"{host} {other_type} {other}\n")
            yield SSHServer(port=port, user=getpass.getuser(), identity=tmp / "user_key",
                            other_identity=tmp / "other_key", known_hosts=tmp / "known_hosts",
                            empty_known_hosts=tmp / "empty_known_hosts",
                            changed_known_hosts=tmp / "changed_known_hosts", log=log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real sshd on 127.0.0.1 for the whole test session (fails, never skips, when sshd is missing)."""
    try:
        with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)

"""A real OpenSSH server on 127.0.0.1 for the SSH target tests (throw-away host and user keys)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SSHServer:
    port: int
    user: str
    identity: Path  # private key the server accepts
    other_identity: Path  # a key the server does not accept
    known_hosts: Path  # contains the server's host key
    empty_known_hosts: Path

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def start_sshd(tmp: Path) -> Iterator[SSHServer]:
    """Run sshd on 127.0.0.1:<free port> with keys generated in ``tmp``; stop it on exit.

    Raises:
        RuntimeError: sshd is not installed or did not start.
    """
    if not os.path.exists(SSHD):
        raise RuntimeError("OpenSSH server not installed: run `bash .ci/system-deps.sh` (installs openssh-server).")
    for name in ("host_key", "user_key", "other_key"):
        _keygen(tmp / name)
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\nMaxStartups 50\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    with open(tmp / "sshd.log", "w") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 15
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd exited: {(tmp / 'sshd.log').read_text()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("sshd did not start listening within 15 s") from None
                    time.sleep(0.1)
            host_pub = (tmp / "host_key.pub").read_text().split()
            (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
            (tmp / "empty_known_hosts").write_text("")
            yield SSHServer(port=port, user=getpass.getuser(), identity=tmp / "user_key",
                            other_identity=tmp / "other_key", known_hosts=tmp / "known_hosts",
                            empty_known_hosts=tmp / "empty_known_hosts")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    try:
        with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))

"""``ssh://user@host[:port][/dest/dir]``: a Linux board (Raspberry Pi ...) reached with OpenSSH.

Why OpenSSH's own ``ssh`` binary and not a Python SSH library (paramiko, asyncssh): the user's
``~/.ssh/config`` (host aliases, users, ports), ssh-agent and hardware keys, ``ProxyJump`` bastions
and ``known_hosts`` all work exactly as on their command line; host keys are checked by OpenSSH
itself (``StrictHostKeyChecking=yes`` unless the user accepts new keys); and edgesparse gains no
dependency. It runs as an argument list (never a local shell), with ``BatchMode=yes`` so it can
never stop to ask for a password or a host-key confirmation.

Files are not copied with ``scp``: they travel as one tar stream over the same ``ssh`` connection
(``mkdir -p DEST && tar -xf - -C DEST`` on the device). One connection copies a whole bundle, and
no remote path is handed to scp, whose legacy mode re-parses paths in the remote shell and whose
SFTP mode (OpenSSH >= 9) treats ``~`` differently. Remote commands are strings for the remote
shell, so every path in them goes through ``shlex.quote`` (a leading ``~/`` becomes ``"$HOME"/``).
"""

from __future__ import annotations

import hashlib
import io
import shlex
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from edgesparse.errors import DeviceError

SSH_OPTIONS = ("identity", "known_hosts", "accept_new_host_key", "python", "connect_timeout")
_UNREACHABLE = ("Connection refused", "timed out", "No route to host", "Could not resolve", "Name or service not known",
                "Network is unreachable", "Connection closed", "Connection reset", "kex_exchange_identification",
                "Temporary failure in name resolution")


def remote_path(path: str) -> str:
    """Quote a path for the remote shell; a leading ``~`` or ``~/`` still means the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:]) if path[2:] else '"$HOME"'
    return shlex.quote(path)


def remote_deadline(command: str, seconds: float) -> str:
    """``command`` for the remote shell, stopped on the device after ``seconds`` (coreutils/busybox ``timeout``).

    Killing the local ``ssh`` on a time-out does not stop a remote command that has no terminal, so
    the device enforces the deadline itself (SIGTERM, then SIGKILL 5 s later); a device without
    ``timeout`` runs the command as before.
    """
    limit = max(1, int(seconds))
    return (f"if command -v timeout >/dev/null 2>&1; then timeout -k 5 {limit} sh -c {shlex.quote(command)}; "
            f"else {command}; fi")


@dataclass
class SSHTarget:
    """A board reached with ``ssh``; the runner runs there with ``python`` (default ``python3``)."""

    user: str | None
    host: str
    port: int = 22
    dest: str = "~/edgesparse"
    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    python: str = "python3"
    connect_timeout: int = 10
    last: dict[str, Any] = field(default_factory=dict, repr=False)
    _pushed: dict[str, str] = field(default_factory=dict, repr=False)
    _described: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        who = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{who}{host}:{self.port}"

    # ---- the ssh command ------------------------------------------------------------------------

    def ssh_command(self, remote_command: str) -> list[str]:
        """The full local ``ssh`` argument list that runs ``remote_command`` on the device."""
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}",
                "-p", str(self.port)]
        if self.identity:
            opts += ["-i", str(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={Path(self.known_hosts).expanduser()}"]
        destination = f"{self.user}@{self.host}" if self.user else self.host
        return ["ssh", *opts, "--", destination, remote_command]

    def _ssh(self, remote_command: str, *, stdin: bytes | None = None, timeout: float = 600,
             what: str = "the ssh command") -> Any:
        if self.identity and not Path(self.identity).expanduser().is_file():
            raise DeviceError(f"the SSH identity file {self.identity} does not exist; give the private key that "
                              f"{self.host} accepts (--identity ~/.ssh/id_ed25519), or leave it out to use your "
                              "ssh-agent and ~/.ssh/config.")
        proc = run_process(self.ssh_command(remote_command), stdin=stdin, timeout=timeout,
                           what=f"{what} on {self.name}",
                           install_hint=" (Debian/Ubuntu: sudo apt install openssh-client)")
        if proc.returncode == 255:  # ssh's own failure; a remote command's codes are passed through
            raise self._connection_error(proc.stderr.decode(errors="replace"))
        return proc

    def _connection_error(self, stderr: str) -> DeviceError:
        lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("@@@")]
        last = lines[-1] if lines else "no message"
        where = f"{self.host}:{self.port}"
        known = self.known_hosts or "~/.ssh/known_hosts"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or ("Host key for" in stderr and "has changed" in stderr):
            return DeviceError(
                f"the host key of {where} has CHANGED since it was recorded in {known}, so ssh refused to connect. "
                f"If the device was reinstalled, remove the old key with `ssh-keygen -f {known} -R '[{self.host}]:"
                f"{self.port}'` and connect again; otherwise someone may be intercepting the connection.")
        if "Host key verification failed" in stderr or "host key is known" in stderr:
            return DeviceError(
                f"{where} is not in {known}, so its identity cannot be checked (StrictHostKeyChecking=yes). Record "
                f"its key first: `ssh-keyscan -p {self.port} {self.host} >> {known}` (compare the fingerprint with "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the device), or pass --accept-new-host-key "
                "to trust it on first use.")
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            who = self.user or "your user name"
            return DeviceError(
                f"{self.name} refused the login ({last}). Check that the user name ({who}) is right and that your "
                "public key is in the device's ~/.ssh/authorized_keys (`ssh-copy-id "
                f"-p {self.port} {self.user + '@' if self.user else ''}{self.host}`), or give the matching private "
                "key with --identity.")
        if any(s in stderr for s in _UNREACHABLE):
            return DeviceError(
                f"cannot reach {where} ({last}). Check that the device is on and on the network, the address and "
                "port, and that its SSH server runs (Raspberry Pi OS: `sudo systemctl enable --now ssh`).")
        return DeviceError(f"ssh to {self.name} failed: {last}")

    # ---- Target ---------------------------------------------------------------------------------

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        """Copy ``files`` and the runner into ``dest`` on the device (created); return its absolute path."""
        folder = dest or self.dest
        buf = io.BytesIO()
        try:
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for f in [*map(Path, files), RUNNER]:
                    tar.add(str(f), arcname=f.name, recursive=False)
        except OSError as exc:
            raise DeviceError(f"cannot read {exc.filename} to copy it to {self.name}: {exc.strerror}") from None
        q = remote_path(folder)
        proc = self._ssh(f"mkdir -p -- {q} && tar -xf - -C {q} && cd -- {q} && pwd", stdin=buf.getvalue(),
                         what="copying files")
        if proc.returncode != 0:
            raise DeviceError(f"copying to {self.name}:{folder} failed: "
                              f"{proc.stderr.decode(errors='replace').strip() or 'exit code ' + str(proc.returncode)}."
                              " Check that the folder is writable and that the device has `tar`.")
        return proc.stdout.decode(errors="replace").strip().splitlines()[-1]

    def _ensure_pushed(self, files: list[Path]) -> str:
        """Push unless these exact files (by content hash) are already in the default folder."""
        key = hashlib.sha256()
        for f in [*files, RUNNER]:
            key.update(f.name.encode() + b"\0" + f.read_bytes())
        digest = key.hexdigest()
        if digest not in self._pushed:
            self._pushed[digest] = self.push(files)
        return self._pushed[digest]

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 600, api: str = "interpreter", min_seconds: float = 0.0,
                   paired: Path | None = None, return_outputs: bool = False) -> dict[str, Any]:
        """Run the runner on the device (see :class:`~edgesparse.device.targets.base.Target`)."""
        if remote_dir is None:
            remote_dir = self._ensure_pushed(measured_files(model, input_batch, paired))
        args = folder_runner_args(model, input_batch=input_batch, paired=paired, threads=threads, runs=runs,
                                  warmup=warmup, resolver=resolver, input_shape=input_shape, api=api,
                                  min_seconds=min_seconds, return_outputs=return_outputs)
        command = (f"cd -- {remote_path(remote_dir)} && exec {remote_path(self.python)} runner.py "
                   + " ".join(shlex.quote(a) for a in args))
        proc = self._ssh(remote_deadline(command, timeout), timeout=timeout + 30, what="the runner")
        if proc.returncode in (124, 137) and not proc.stdout.strip():
            raise DeviceError(f"the runner on {self.name} did not finish within {timeout:.0f} s and was stopped on "
                              "the device (nothing is left running there); raise the timeout or use fewer runs. An "
                              "emulated or very slow board needs more time.")
        self.last = interpret_runner_output(proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                                            proc.returncode, self.name, self.python)
        return self.last

    def describe(self) -> dict[str, Any]:
        """Host, machine, Python and runtime of the device (the runner's ``--describe``, sent over stdin)."""
        if self._described is None:
            proc = self._ssh(f"{remote_path(self.python)} - --describe", stdin=RUNNER.read_bytes(), timeout=120,
                             what="describing the device")
            self._described = interpret_runner_output(proc.stdout.decode(errors="replace"),
                                                      proc.stderr.decode(errors="replace"), proc.returncode,
                                                      self.name, self.python)
        return {"name": self.name, "port": self.port, **self._described}


@TARGETS.register("ssh")
def _ssh_target(spec: TargetSpec, **options: Any) -> SSHTarget:
    if not spec.host:
        raise DeviceError(f"an ssh target needs a host: ssh://user@host[:port][/dest/dir], not `{spec.text}`.")
    opts = check_options("ssh", options, SSH_OPTIONS)
    dest = spec.path or "~/edgesparse"
    if dest.startswith("/~"):  # ssh://pi@host/~/models: a folder under the remote home
        dest = dest[1:]
    return SSHTarget(user=spec.user, host=spec.host, port=spec.port or 22, dest=dest,
                     identity=opts.get("identity"), known_hosts=opts.get("known_hosts"),
                     accept_new_host_key=bool(opts.get("accept_new_host_key")),
                     python=opts.get("python") or "python3",
                     connect_timeout=int(opts.get("connect_timeout") or 10))

"""Where the runner runs: ``local``, ``ssh://user@host[:port][/dest/dir]``, ``adb`` or ``adb://SERIAL``.

Each kind of target is a module registered in :data:`TARGETS` under its scheme; :func:`parse_target`
splits the string and hands it to the registered factory. All targets follow the
:class:`~edgesparse.device.targets.base.Target` protocol: ``push`` a bundle, ``run_runner`` on a
model (the runner's JSON comes back, its errors as DeviceError/ProfileError), ``describe`` the device.
Only the standard library is imported here: no TensorFlow, no numpy.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

# Importing each kind's module registers it in TARGETS.
from edgesparse.device.targets.adb import ADBTarget, adb_devices, list_adb_devices
from edgesparse.device.targets.base import (
    RUNNER,
    TARGETS,
    Target,
    TargetSpec,
    interpret_runner_output,
    runner_args,
)
from edgesparse.device.targets.local import LocalTarget
from edgesparse.device.targets.ssh import SSHTarget
from edgesparse.errors import DeviceError

__all__ = [
    "RUNNER",
    "TARGETS",
    "ADBTarget",
    "LocalTarget",
    "SSHTarget",
    "Target",
    "TargetSpec",
    "adb_devices",
    "interpret_runner_output",
    "list_adb_devices",
    "parse_target",
    "runner_args",
    "split_target",
]


def split_target(text: str) -> TargetSpec:
    """Split ``scheme://user@host:port/path`` (or a bare scheme such as ``local``) into its parts.

    Percent-escapes are decoded (``%20`` in a folder is a space). For ``adb://SERIAL`` the serial is
    kept verbatim in ``host`` (network serials such as ``192.168.1.5:5555`` included).

    Raises:
        DeviceError: an empty string or a port that is not a number.
    """
    text = text.strip()
    if not text:
        raise DeviceError("empty target; use local, ssh://user@host[:port][/dest/dir], adb or adb://SERIAL.")
    if "://" not in text:
        return TargetSpec(text=text, scheme=text.lower())
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "adb":
        return TargetSpec(text=text, scheme=scheme, host=unquote(parts.netloc) or None)
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"the port in `{text}` is not a number between 0 and 65535: write "
                          f"{scheme}://user@host:PORT/dir.") from None
    path = unquote(parts.path) if parts.path not in ("", "/") else None
    return TargetSpec(text=text, scheme=scheme, user=unquote(parts.username) if parts.username else None,
                      host=parts.hostname or None, port=port, path=path)


def parse_target(target: str, **options: Any) -> Any:
    """A target from its string form.

    Args:
        target: ``local``, ``ssh://user@host[:port][/dest/dir]``, ``adb`` or ``adb://SERIAL``.
        **options: Target options; ``None`` values are ignored. ssh: ``identity``, ``known_hosts``,
            ``accept_new_host_key``, ``python``, ``connect_timeout``; adb: ``python``,
            ``benchmark_binary``; local: ``python``.

    Returns:
        An object following the :class:`Target` protocol.

    Raises:
        DeviceError: unknown kind (the known ones are listed, with a "did you mean"), a malformed
            address, or an option the kind does not take.
    """
    spec = split_target(target)
    return TARGETS.get(spec.scheme)(spec, **{k: v for k, v in options.items() if v is not None})

"""Sending trials to a Ray cluster: connect (with a fast reachability check) before anything trains."""

from __future__ import annotations

import logging
from typing import Any

from edgesparse.sweep.grid import SweepError


def check_ray(address: str) -> Any:
    """Connect to a Ray cluster before anything trains.

    Raises:
        SweepError: ray is not installed or the address is unreachable.
    """
    try:
        import ray
    except ImportError:
        raise SweepError("--ray needs the ray package: pip install 'edgesparse[ray]'.") from None
    if ray.is_initialized():
        return ray
    _check_reachable(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        raise SweepError(f"cannot connect to the Ray cluster at '{address}': {str(exc).splitlines()[0]}. "
                         "Start one with "
                         "`ray start --head` and pass the address it prints (e.g. 127.0.0.1:6379).") from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connect to the cluster's address first: ray.init itself waits minutes on a dead address."""
    import socket
    from urllib.parse import urlparse

    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        raise SweepError(f"'{address}' is not a Ray address (host:port or ray://host:port).")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc}). Start one with "
                         "`ray start --head` and pass the address it prints, or drop --ray to run here.") from None

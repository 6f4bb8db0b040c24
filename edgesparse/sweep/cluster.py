"""Sending trials to a Ray cluster: connect (with a fast reachability check) before anything trains."""

from __future__ import annotations

import logging
from pathlib import Path
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
        raise connect_error(address, exc) from None
    return ray


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def connect_error(address: str, exc: BaseException) -> SweepError:
    """What a failed ``ray.init`` says: the cause Ray gave (first line of each chained error), and the way out.

    A cluster with token authentication (Ray's default for ``ray start --head`` from 2.52 on) refuses a
    driver without its token: that cause is named, with where the token goes.
    """
    chain = _chain(exc)
    causes = "; ".join(dict.fromkeys(f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
                                     for e in chain))
    auth = any("authenticat" in type(e).__name__.lower() or "authenticat" in str(e).lower()
               or "auth token" in str(e).lower() for e in chain)
    if auth:
        return SweepError(
            f"the Ray cluster at '{address}' refused this process: it requires token authentication and this "
            f"process has no valid token ({causes}). Give it the cluster's token: `export RAY_AUTH_MODE=token` and "
            "`export RAY_AUTH_TOKEN=<token>` (or the token in ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH); on the "
            "head node `ray get-auth-token` prints it. Every worker node needs the same token.")
    return SweepError(f"cannot connect to the Ray cluster at '{address}' ({causes}). Check the address (`ray status` "
                      "on the head prints it, e.g. 127.0.0.1:6379), or start a cluster with `ray start --head`; "
                      "--ray local starts one in this process.")


def check_shared_paths(ray: Any, paths: list[Path]) -> None:
    """Every node of the cluster must see the sweep directory and the recipe's folder at the same absolute paths.

    Trials read the shared dense baseline, the data and the model from there and write their run directories
    there. A marker file is written in each folder and looked for by one task on every alive node.

    Raises:
        SweepError: a node does not see a folder (the cluster has no shared filesystem at those paths).
    """
    import os
    import uuid

    markers = []
    for folder in paths:
        marker = folder / f".edgesparse-ray-check-{uuid.uuid4().hex[:12]}"
        marker.write_text("visible")
        markers.append(marker)
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        def visible(names: list[str]) -> tuple[str, list[str]]:
            import socket

            return socket.gethostname(), [n for n in names if not os.path.exists(n)]

        remote = ray.remote(num_cpus=0)(visible)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        names = [str(m) for m in markers]
        answers = ray.get([remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                           .remote(names) for node in nodes])
    finally:
        for m in markers:
            m.unlink(missing_ok=True)
    for host, missing in answers:
        if missing:
            folders = ", ".join(str(Path(m).parent) for m in missing)
            raise SweepError(
                f"the Ray node '{host}' does not see {folders}: trials read the shared baseline, data and model "
                "and write their run directories there, so every node needs those folders at the same absolute "
                "paths (a shared filesystem such as NFS, mounted alike). Mount it on every node, or run the sweep "
                "on this machine (--workers N) or with --ray local.")


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

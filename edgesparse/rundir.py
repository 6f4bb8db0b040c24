"""Run-directory and bundle ownership: one process at a time, and nothing followed out through a symlink.

A run holds an OS file lock (``fcntl.flock``) on its run directory (``RUN_DIR/.edgesparse.lock``) and on its
bundle (``.<bundle name>.lock`` beside the bundle folder, so the bundle's own files stay the model's) for its
whole life; the kernel releases it when the process ends, however it ends (kill -9 included), so a stale lock
never needs breaking and ``--force`` never breaks a live one.

Deleting or writing inside a run directory goes through :func:`inside`, which refuses a path that passes a
symbolic link below the run directory: a planted ``backup -> /elsewhere`` must not make a run delete or write
``/elsewhere``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from edgesparse.errors import RunDirError

__all__ = ["LOCK_NAME", "bundle_lock_path", "held_by", "inside", "lock", "lock_bundle", "remove_tree", "unlink"]

#: The lock file inside a run directory.
LOCK_NAME = ".edgesparse.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs there are not locked
    fcntl = None  # type: ignore[assignment]


def bundle_lock_path(bundle: Path) -> Path:
    """The lock file of a bundle folder: beside it, so the bundle holds only what deploy pushes."""
    return bundle.parent / f".{bundle.name}.lock"


def held_by(lock_file: Path) -> str:
    """Who holds a lock, as recorded in its file ("process N since T"), or "another process"."""
    try:
        pid, _, since = lock_file.read_text(encoding="utf-8").strip().partition(" ")
    except OSError:
        return "another process"
    return f"process {pid} since {since}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def _flock(lock_file: Path, what: str, folder: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise RunDirError(f"cannot create the lock file '{lock_file}' of the {what} '{folder}' "
                          f"({exc.strerror or exc}); check that the folder is writable and that '{lock_file}' is "
                          "not a symbolic link.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"the {what} '{folder}' is in use by {held_by(lock_file)} (it holds the lock {lock_file}). Wait for "
                "that run to finish, or use another folder (-o DIR, or export.dir for a bundle); --force does not "
                "take a folder from a running process.") from None
        since = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {since}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock; the file stays (deleting it would race a new locker)


def lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the run directory's lock (created with the folder) for the ``with`` block.

    Raises:
        RunDirError: another live process holds it ("in use by process N since T").
    """
    return _flock(Path(run_dir) / LOCK_NAME, "run directory", Path(run_dir))


def lock_bundle(bundle: Path) -> contextlib.AbstractContextManager[None]:
    """Hold a bundle folder's lock (the file beside it) for the ``with`` block.

    Raises:
        RunDirError: another live process holds it.
    """
    return _flock(bundle_lock_path(Path(bundle)), "bundle folder", Path(bundle))


def inside(root: Path, path: Path) -> Path:
    """Check that ``path`` lies in ``root`` without passing a symbolic link (``root`` itself may be one).

    Args:
        root: The run directory or bundle folder.
        path: A path below it about to be written or deleted.

    Returns:
        ``path``.

    Raises:
        RunDirError: ``path`` is not below ``root``, or a component from ``root`` down to ``path`` is a symlink.
    """
    root, path = Path(root), Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise RunDirError(f"'{path}' is not inside '{root}'; edgesparse writes only inside its folders.") from None
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise RunDirError(
                f"'{current}' is a symbolic link (to '{os.readlink(current)}'); edgesparse does not delete or write "
                f"through links inside '{root}', so that nothing outside it is touched. Remove the link "
                f"(rm '{current}') and run again.")
    return path


def remove_tree(root: Path, path: Path) -> None:
    """Delete the folder ``path`` below ``root`` (missing is fine), never following a symlink out of ``root``.

    Raises:
        RunDirError: the path passes a symbolic link (see :func:`inside`).
    """
    inside(root, path)
    if path.exists():
        shutil.rmtree(path)


def unlink(root: Path, path: Path) -> None:
    """Delete the file ``path`` below ``root`` (missing is fine); a link is refused, not followed.

    Raises:
        RunDirError: the path passes a symbolic link.
    """
    inside(root, path)
    path.unlink(missing_ok=True)

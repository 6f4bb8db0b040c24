"""Faults as messages: what the CLI says when the machine, a file or the data fails rather than edgesparse.

:func:`describe` turns the faults a user can fix (a full disk, a permission, a corrupt data file, an overflowing
field in a hostile file, memory) into one paragraph that names the file and the fix; everything else is
unexpected and :func:`unexpected` writes its traceback to a log file and says where, in one line.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import re
import tempfile
import traceback
from pathlib import Path

__all__ = ["describe", "unexpected"]

_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)
_TOKEN = re.compile(r"[^\s'\"(){}\[\];,]+")


def _paths(text: str) -> list[str]:
    """File paths in a TensorFlow message, longest first (device names such as /job:localhost/... left out)."""
    found = {t.rstrip(".") for t in _TOKEN.findall(text) if "/" in t and ":" not in t and not t.startswith("__")}
    return sorted(found, key=len, reverse=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tf_kind(exc: BaseException) -> str | None:
    """The TensorFlow error class name (without importing TensorFlow), or None."""
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("tensorflow") and cls.__name__.endswith("Error"):
            return cls.__name__
    return None


def _os_fault(code: int | None, where: str, detail: str) -> str | None:
    if code in _SPACE:
        return (f"no space left on the device while writing {where} ({detail}). Free space there (df -h) or write "
                "elsewhere (-o DIR for the run, export.dir for the bundle), then run the same command with --resume: "
                "finished phases and per-epoch checkpoints were kept, and a bundle is only replaced whole.")
    if code in _ACCESS:
        return (f"permission denied while writing or reading {where} ({detail}). Fix the folder's permissions (or "
                "make it writable: a read-only file system refuses every write), or choose another folder with -o "
                "DIR / export.dir.")
    if code == errno.EFBIG:
        return (f"a file grew past the size limit of this process or file system while writing {where} ({detail}); "
                "raise the limit (ulimit -f) or write elsewhere.")
    return None


def describe(exc: BaseException) -> str | None:
    """One paragraph for a fault the user can fix, or None when the exception is unexpected.

    Args:
        exc: The exception a command raised (not an EdgesparseError: those carry their own message).

    Returns:
        The message (without the "Error: " prefix), or None.
    """
    if isinstance(exc, OSError):
        where = f"'{exc.filename}'" if exc.filename else "a file"
        return _os_fault(exc.errno, where, exc.strerror or _first_line(exc))
    kind = _tf_kind(exc)
    if kind is not None:
        text = _first_line(exc)
        paths = _paths(str(exc))
        where = f"'{paths[0]}'" if paths else "a file of the run"
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return _os_fault(errno.ENOSPC, where, text[:300])
        if "Permission denied" in str(exc) or "Read-only file system" in str(exc):
            return _os_fault(errno.EACCES, where, text[:300])
        if kind == "DataLossError" or "corrupted record" in str(exc) or "truncated record" in str(exc):
            return (f"a data file is corrupt or truncated ({text[:300]}){f': {where}' if paths else ''}. Re-copy or "
                    "re-create the file (a TFRecord damaged mid-shard cannot be read past the damage), or leave it out "
                    "of the recipe's file pattern.")
    if isinstance(exc, OverflowError):
        return (f"a value in the input file is too large to handle ({_first_line(exc)}): a field such as a tensor "
                "dimension of 2^31 or more, which no real model has. The file is corrupt or not what it claims to be; "
                "re-export or re-copy it.")
    if isinstance(exc, MemoryError):
        return ("the process ran out of memory. Use a smaller batch_size, data.limit, or a machine with more "
                "memory; a path that reads forever (a device such as /dev/zero) is refused by the loaders.")
    return None


def unexpected(exc: BaseException) -> str:
    """Write the traceback of an unexpected exception to a log file; return the one line the CLI prints.

    Returns:
        "unexpected <Type>: <first line>. ... --debug ... (traceback in <log path>)".
    """
    log_dir = Path(os.environ.get("EDGESPARSE_LOG_DIR") or tempfile.gettempdir())
    log = log_dir / f"edgesparse-error-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        log.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), encoding="utf-8")
        where = f"; traceback in {log}"
    except OSError:
        where = ""
    return (f"unexpected {type(exc).__name__}: {_first_line(exc)[:300]}. Re-run with --debug to see the traceback"
            f"{where}.")

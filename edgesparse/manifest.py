"""Whole bundles: export.json is the manifest, written last, with every other file's sha256.

A bundle is built in a temporary folder beside its destination and renamed into place
(:func:`build`), so a full disk or a kill leaves the old bundle or none, never half of one.
Readers (``deploy``, ``profile`` and ``inspect`` of a bundle's model) call :func:`check` and refuse a
folder whose manifest is missing or whose files differ from it. A bundle exported before manifests
existed (export.json without ``files``) is read as before: there is nothing to check it against.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesparse.errors import EdgesparseError, ExportError

__all__ = ["MANIFEST", "build", "check", "check_beside", "manifest_files", "sha256_file"]

MANIFEST = "export.json"
#: Files that only a bundle holds: a folder with one of them but no manifest is half a bundle.
BUNDLE_FILES = ("verify.npz",)


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def build(bundle: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``bundle`` to write the bundle's files in; on success write nothing else
    (the caller writes export.json last with :func:`manifest_files`) and swap it into place.

    The old bundle (if any) is moved aside, the new one renamed in, and the old one deleted; a failure at any
    point before the swap deletes the temporary folder and leaves the old bundle as it was.

    Raises:
        ExportError: the folder beside the bundle cannot be written (full disk, permissions), naming it.
    """
    bundle = Path(bundle)
    if bundle.is_symlink():  # the user's own link to the bundle: build beside the folder it names
        bundle = bundle.resolve()
    bundle.parent.mkdir(parents=True, exist_ok=True)
    tmp = bundle.parent / f".{bundle.name}.building-{os.getpid()}"
    old = bundle.parent / f".{bundle.name}.replaced-{os.getpid()}"
    for stale in [*bundle.parent.glob(f".{bundle.name}.building-*"), *bundle.parent.glob(f".{bundle.name}.replaced-*")]:
        if not _alive(stale.name.rpartition("-")[2]):  # left by a process that was killed while writing
            shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if bundle.exists() and not _only_bundle_files(bundle):
            _replace_files(tmp, bundle)  # a folder the user keeps other things in: never moved or deleted
        else:
            if bundle.exists():
                os.replace(bundle, old)
            os.replace(tmp, bundle)
    except OSError as exc:
        raise ExportError(
            f"cannot write the bundle '{bundle}': {exc.strerror or exc} ({exc.filename or tmp}). "
            + ("The disk is full: free space or choose another export.dir, then run `edgesparse export RUN_DIR`. "
               if exc.errno == 28 else "Check the folder's permissions and free space, or choose another export.dir. ")
            + "The previous bundle, if any, was left as it was.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


#: What an export writes into a bundle (any other entry means the folder is also used for something else).
WRITTEN = frozenset({"model.tflite", "dense.tflite", "verify.npz", "labels.txt", MANIFEST})


def _only_bundle_files(folder: Path) -> bool:
    return all(p.name in WRITTEN and p.is_file() and not p.is_symlink() for p in folder.iterdir())


def _replace_files(tmp: Path, bundle: Path) -> None:
    """Move the new files over the old ones in place: the old manifest first removed, the new one last, so a
    reader never takes a mix of old and new files for a whole bundle (a link in the way is replaced, its target
    never written)."""
    (bundle / MANIFEST).unlink(missing_ok=True)
    for name in WRITTEN - {MANIFEST}:
        if not (tmp / name).exists() and ((bundle / name).is_file() or (bundle / name).is_symlink()):
            (bundle / name).unlink()  # a stale file the new export does not have (labels of an older export)
    for path in sorted(tmp.iterdir()):
        if path.name != MANIFEST:
            os.replace(path, bundle / path.name)
    os.replace(tmp / MANIFEST, bundle / MANIFEST)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def manifest_files(folder: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every file in ``folder`` except the manifest (export.json's ``files``)."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def check(bundle: Path, error: type[EdgesparseError] = ExportError) -> dict[str, Any]:
    """Check that ``bundle`` is a whole bundle: export.json present and every file it lists unchanged.

    Args:
        bundle: The bundle folder.
        error: The error class the caller's command raises (DeviceError for deploy, ProfileError...).

    Returns:
        export.json's content.

    Raises:
        error: export.json is missing or unreadable, or a listed file is missing or its sha256 differs.
    """
    bundle = Path(bundle)
    info_path = bundle / MANIFEST
    redo = "re-export it with `edgesparse export RUN_DIR` (the bundle was not written whole: a full disk, a kill, " \
           "or a file changed since)"
    if not info_path.is_file():
        raise error(f"'{bundle}' is not a whole bundle: it has no {MANIFEST} (the manifest written last); {redo}.")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {info_path} ({exc}); {redo}.") from None
    if not isinstance(info, dict):
        raise error(f"{info_path} is not a JSON object; {redo}.")
    files = info.get("files")
    if not isinstance(files, dict):
        return info  # a bundle from before manifests: nothing to check against
    for name, digest in files.items():
        path = bundle / str(name)
        if not path.is_file():
            raise error(f"'{bundle}' is missing {name}, which its {MANIFEST} lists; {redo}.")
        if sha256_file(path) != digest:
            raise error(f"'{path}' differs from the file the bundle was exported with (its sha256 is not the one "
                        f"in {MANIFEST}); {redo}.")
    return info


def check_beside(model: Path, error: type[EdgesparseError] = ExportError) -> dict[str, Any] | None:
    """Check the bundle a model file sits in, when it sits in one.

    A .tflite whose folder has export.json, or verify.npz (which only an export writes),
    is part of a bundle and must be whole (see :func:`check`); a .tflite on its own is just a model.

    Returns:
        export.json's content, or None for a model outside any bundle.

    Raises:
        error: the model sits in half a bundle, or the bundle's files differ from its manifest.
    """
    folder = Path(model).parent
    if (folder / MANIFEST).exists() or any((folder / name).exists() for name in BUNDLE_FILES):
        return check(folder, error)
    return None

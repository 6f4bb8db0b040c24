"""Model-file safety: what a model file is allowed to be, and what its configuration may contain.

Loading a Keras file can run Python code stored in it (a ``Lambda`` layer's marshalled bytecode) or
instantiate any class some imported package registered. The decision to refuse reads the *parsed*
configuration (JSON decoding undoes ``\\u004c``-style spellings) at every nesting level, for all three
formats (.keras, .h5, SavedModel), before any Keras loader sees the file. Only regular files (or a
SavedModel folder) are opened: a FIFO would block forever and a device such as ``/dev/zero`` never ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesparse.errors import ModelError

__all__ = ["MAX_CONFIG_BYTES", "check_config", "check_path", "file_configs", "regular_file"]

#: The largest model configuration (JSON text) read; real configs are a few hundred kB at most.
MAX_CONFIG_BYTES = 64 * 1024 * 1024

#: Layer classes that are not in ``keras.layers`` but are part of Keras itself.
_KERAS_INTERNAL = frozenset({"Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda",
                             "TensorFlowOpLayer", "InputLayer"})


def regular_file(path: Path, what: str, max_bytes: int | None = None, *, allow_dir: bool = False,
                 error: type[Exception] = ModelError) -> os.stat_result:
    """Stat ``path`` (without opening it) and refuse anything but a regular file (or a folder).

    Args:
        path: The path a user gave.
        what: What the file should be, for the message ("model file", "recipe").
        max_bytes: Largest size accepted, checked before reading.
        allow_dir: Accept a directory (a SavedModel folder).
        error: The error class to raise.

    Returns:
        The stat result (symlinks followed).

    Raises:
        error: the path is missing, a FIFO, socket or device, a folder (unless allowed) or too large.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise error(f"{what} '{path}' does not exist. Check the path.") from None
    except OSError as exc:
        raise error(f"cannot read the {what} '{path}': {exc.strerror or exc}. Check its permissions.") from None
    if stat.S_ISDIR(st.st_mode):
        if allow_dir:
            return st
        raise error(f"the {what} '{path}' is a folder; give the file itself.")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise error(f"the {what} '{path}' is {kind}, not a regular file; reading it could block or never end. "
                    "Give the path of a regular file.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"the {what} '{path}' is {st.st_size:,} bytes, over the limit of {max_bytes:,} bytes; "
                    f"give the right file (a {what} is much smaller than that).")
    return st


def check_path(path: Path) -> None:
    """Refuse a model path that is not a regular file or a SavedModel folder (before anything opens it).

    Raises:
        ModelError: a FIFO, device, socket or missing path.
    """
    regular_file(path, "model file", allow_dir=True)


def file_configs(path: Path) -> list[Any] | None:
    """The parsed JSON configurations stored in a model file, without building anything.

    Args:
        path: A .keras (zip) or .h5 file, or a SavedModel folder (checked with :func:`check_path`).

    Returns:
        One parsed configuration per stored config (a SavedModel has one per object), or None when the file
        holds no Keras configuration (a plain TF SavedModel, or not a Keras file).

    Raises:
        ModelError: a configuration is present but is not valid JSON or is too large.
    """
    texts = list(_config_texts(path))
    if not texts:
        return None
    parsed = []
    for text in texts:
        try:
            parsed.append(json.loads(text))
        except ValueError as exc:
            raise ModelError(f"'{path}' holds a model configuration that is not valid JSON ({exc}); the file is "
                             "damaged or not a Keras model.") from None
    return parsed


def _config_texts(path: Path) -> Iterator[str]:
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        if not meta.exists():
            return
        regular_file(meta, "SavedModel metadata", MAX_CONFIG_BYTES)
        from tf_keras.protobuf import saved_metadata_pb2

        proto = saved_metadata_pb2.SavedMetadata()
        try:
            proto.ParseFromString(meta.read_bytes())
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError
            raise ModelError(f"'{meta}' is not a valid Keras SavedModel metadata file ({exc}).") from None
        for node in proto.nodes:
            if node.metadata:
                yield node.metadata
        return
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError:
        return
    if is_zip:
        with zipfile.ZipFile(path) as zf:
            if "config.json" not in zf.namelist():
                return
            if zf.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise ModelError(f"'{path}': config.json is over {MAX_CONFIG_BYTES:,} bytes; not a model config.")
            yield zf.read("config.json").decode("utf-8", errors="replace")
        return
    try:
        import h5py

        with h5py.File(path, "r") as f:
            cfg = f.attrs.get("model_config")
    except Exception:  # noqa: BLE001 - not HDF5: the caller says it is not a model file
        return
    if cfg is None:
        return
    text = cfg.decode("utf-8", errors="replace") if isinstance(cfg, bytes) else str(cfg)
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelError(f"'{path}': model_config is over {MAX_CONFIG_BYTES:,} bytes; not a model config.")
    yield text


def _walk(obj: Any, parent_key: str | None = None) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every dict in a parsed config, with whether it sits where a layer does (layers, layer, cell...)."""
    stack: list[tuple[Any, str | None]] = [(obj, parent_key)]
    while stack:
        item, key = stack.pop()
        if isinstance(item, dict):
            yield item, key in ("layers", "layer", "backward_layer", "cell", "cells")
            for k, v in item.items():
                stack.append((v, str(k)))
        elif isinstance(item, list):
            for v in item:
                stack.append((v, key))


def _known_layer_names() -> frozenset[str]:
    from edgesparse import _tf

    names = set(_KERAS_INTERNAL)
    names.update(n for n in dir(_tf.keras().layers) if n[:1].isupper())
    with contextlib.suppress(Exception):  # Keras 3 absent: tf_keras names only
        names.update(n for n in dir(_tf.keras3().layers) if n[:1].isupper())
    return frozenset(names)


def check_config(configs: list[Any], path: Path, *, trust_code: bool, custom_names: set[str]) -> None:
    """Refuse configurations that would run code when loaded, unless the user trusts the file.

    A ``Lambda`` layer anywhere (any nesting level, any spelling JSON allows) needs ``trust_code``. A layer
    whose class is not part of Keras (a custom or registered class) must be named in ``custom_objects``
    (or the file trusted): otherwise a class some imported package registered would be instantiated.

    Raises:
        ModelError: naming the layer and what to set.
    """
    if trust_code:
        return
    known: frozenset[str] | None = None
    for config in configs:
        for node, is_layer in _walk(config):
            cls = node.get("class_name")
            if not isinstance(cls, str):
                continue
            if cls == "Lambda" or node.get("function_type") == "lambda":
                raise ModelError(
                    f"'{path}' contains Lambda layers, whose Python code would run when the model is loaded. "
                    "Only if you trust the file, set `trust_code: true` in the model section.")
            if not is_layer or cls in custom_names:
                continue
            module = node.get("module")
            registered = node.get("registered_name")
            if isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras") and (
                    not isinstance(registered, str) or ">" not in registered):
                continue
            if isinstance(registered, str) and registered.startswith("edgesparse>"):
                continue
            known = known if known is not None else _known_layer_names()
            if cls in known and (module is None or str(module).split(".")[0] in ("keras", "tf_keras")):
                continue
            where = f" (module {module!r})" if module else ""
            raise ModelError(
                f"'{path}' contains a layer of the custom class '{cls}'{where}, which is not part of Keras: loading "
                "it would create an object from code outside the file's config. Name the class you trust in the "
                f"model section, `custom_objects: [\"your.module:{cls}\"]`, or set `trust_code: true` if you trust "
                "the file.")

"""``{factory: "pkg.module:function", kwargs: {...}}``: splits built by the user's own Python function.

The function is called with ``kwargs`` (and ``seed=`` when it takes a ``seed`` argument) and returns the mapping
described in :mod:`edgesparse.data.objects`: ``train``, ``validation`` and ``test``, each a ``tf.data.Dataset`` of
unbatched ``(x, y)`` elements (streamed, never materialised) or an ``(x, y)`` tuple of arrays. The module is
imported from the installed packages, from ``PYTHONPATH``, or from the recipe's folder. ``validation_split``,
``test_split`` and ``limit`` do not apply: the function decides the splits.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from edgesparse.data.dataset import Dataset
from edgesparse.data.objects import dataset_from_objects
from edgesparse.data.registry import SourceConfig, data_source
from edgesparse.errors import DataError


class FactoryConfig(SourceConfig):
    """``{factory: "pkg.module:function", kwargs: {n: 20000}, batch_size: 64}``."""

    factory: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="'package.module:function' returning the splits")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the function")


@contextlib.contextmanager
def on_sys_path(folder: Path | None) -> Iterator[None]:
    """Modules in ``folder`` (the recipe's) import while the block runs: a data factory, a task metric or loss.

    The folder goes after the installed packages' folders, so a file next to the recipe never shadows one of them.
    """
    entry = None if folder is None else str(Path(folder).expanduser().absolute())
    added = entry is not None and entry not in sys.path
    if added:
        sys.path.append(str(entry))
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(str(entry))


def import_factory(spec: str, base_dir: Path | None) -> Any:
    """Import ``pkg.module:function`` (the recipe's folder is searched too).

    Raises:
        DataError: it does not import, or is not callable.
    """
    module_name, _, attr = spec.partition(":")
    try:
        with on_sys_path(base_dir):
            obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DataError(f"data factory '{spec}': cannot import module '{module_name}' ({exc}). Check the name, and "
                        "that the module is installed, on PYTHONPATH or in the recipe's folder.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(f"data factory '{spec}': module '{module_name}' has no attribute '{attr}'.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(f"data factory '{spec}' is a {type(obj).__name__}, not a function; give the function that "
                        "returns the splits.")
    return obj


@data_source("factory", FactoryConfig)
def load_factory(cfg: FactoryConfig, seed: int, base_dir: Path | None) -> Dataset:
    """Call the factory and check what it returns.

    Raises:
        DataError: the factory does not import, is not callable, raises, or returns something else than the splits.
    """
    fn = import_factory(cfg.factory, base_dir)
    kwargs = dict(cfg.kwargs)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "seed" in params:
        kwargs.setdefault("seed", seed)
    try:
        result = fn(**kwargs)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: report it as a data error, naming the factory
        raise DataError(f"data factory '{cfg.factory}' raised {type(exc).__name__}: {exc}") from exc
    name = cfg.factory.rpartition(":")[2]
    return dataset_from_objects(result, name, f"data factory '{cfg.factory}'",
                                {"factory": cfg.factory, "kwargs": {k: repr(v) for k, v in cfg.kwargs.items()}})


__all__ = ["FactoryConfig", "import_factory", "load_factory", "on_sys_path"]

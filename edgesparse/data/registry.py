"""The data source registries and the fields every source shares.

A source is a pydantic model (the recipe's ``data:`` form, told apart by one key such as ``npz``)
plus a loader function. :func:`data_source` registers both under the key; :func:`builtin` does the
same for the ``builtin`` source's named data sets. :func:`data_config_type` then builds the
discriminated union the recipe schema uses, so adding a source is one decorated function and one
model, with no if-chain to extend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from edgesparse.errors import DataError


class Loaded(NamedTuple):
    """What a loader returns; :mod:`edgesparse.data.split` turns it into a :class:`Dataset`.

    ``x`` is float32 with a channel axis for images (or a dict of arrays by model input name), ``y`` the
    targets (int64 class indices or 0/1 labels, float32 values, or a dict by output name; ``None`` for an
    autoencoder's unlabelled normal samples). ``x_test`` and ``y_test`` are ``None`` unless the source
    has its own test set.
    """

    name: str
    x: Any
    y: Any
    x_test: Any
    y_test: Any
    class_names: list[str]


#: a source's loader: arrays to split (:class:`Loaded`), or a finished :class:`~edgesparse.data.Dataset`
Loader = Callable[[Any, int, Path | None], Any]


class SourceConfig(BaseModel):
    """Fields every data source has (defaults are written here only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_split: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of all samples used for validation")
    test_split: float = Field(0.2, ge=0.0, lt=1.0, description="fraction held out as the test split (ignored "
                                                                "when the source has its own test set)")
    batch_size: int = Field(64, gt=0)
    shuffle_buffer: int | None = Field(None, gt=0, description="samples in a streamed training split's shuffle "
                                                                 "buffer (default: what 64 MB holds, at least a batch)")
    limit: int | None = Field(None, gt=0, description="cap on the total number of samples, taken stratified")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> SourceConfig:
        total = self.validation_split + self.test_split
        if total >= 1.0:
            raise ValueError(
                f"validation_split + test_split = {total:g} leaves no training data; keep their sum below 1 "
                "(e.g. validation_split: 0.1, test_split: 0.2)"
            )
        return self


class BuiltinSource(SourceConfig):
    """Base of the ``{builtin: <name>}`` configs; each built-in narrows ``builtin`` to its name."""

    builtin: str


def path_str(value: Any) -> Any:
    """Before-validator for path fields: accept ``pathlib.Path`` objects from Python callers."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


ImageSize = Union[Annotated[int, Field(gt=0)], tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]]


def hw(size: ImageSize) -> tuple[int, int]:
    """``(height, width)`` of an ``image_size`` given as an int or ``[h, w]``."""
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resolve(path: str, base_dir: Path | None) -> Path:
    """A recipe path: ``~`` expanded, relative paths taken from ``base_dir`` (the recipe's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


#: source key -> config model; a recipe's ``data:`` mapping holds exactly one of these keys
DATA_SOURCES: dict[str, type[BaseModel]] = {}
#: built-in data set name -> config model (the ``builtin`` source's own registry)
BUILTINS: dict[str, type[BuiltinSource]] = {}
_LOADERS: dict[type[BaseModel], Loader] = {}


def data_source(key: str, config: type[SourceConfig]) -> Callable[[Loader], Loader]:
    """Register ``config`` under the recipe key ``key``, and the decorated function as its loader.

    Args:
        key: The key that identifies the source in the recipe (``npz``, ``image_folder`` ...).
        config: Its pydantic model; must have a field named ``key``.
    """
    if key in DATA_SOURCES or key == "builtin":
        raise ValueError(f"data source '{key}' registered twice")
    if key not in config.model_fields:
        raise ValueError(f"{config.__name__} has no field '{key}', so it cannot be told apart by it")

    def deco(loader: Loader) -> Loader:
        DATA_SOURCES[key] = config
        _LOADERS[config] = loader
        return loader

    return deco


def builtin(name: str, config: type[BuiltinSource]) -> Callable[[Loader], Loader]:
    """Register a built-in data set: ``{builtin: name}`` validates with ``config``, loads with the function."""
    if name in BUILTINS:
        raise ValueError(f"builtin data set '{name}' registered twice")

    def deco(loader: Loader) -> Loader:
        BUILTINS[name] = config
        _LOADERS[config] = loader
        DATA_SOURCES.setdefault("builtin", BuiltinSource)
        return loader

    return deco


def loader_for(cfg: BaseModel) -> Loader:
    """The loader registered for a validated config.

    Raises:
        DataError: ``cfg`` is not a registered source config.
    """
    try:
        return _LOADERS[type(cfg)]
    except KeyError:
        raise DataError(
            f"{type(cfg).__name__} is not a registered data source config; validate the data section with "
            f"pydantic.TypeAdapter(DataConfig) (sources: {', '.join(DATA_SOURCES)})."
        ) from None


def source_key(value: Any) -> str | None:
    """The discriminating key of a raw ``data:`` mapping (or a validated config), ``None`` if not exactly one."""
    if isinstance(value, dict):
        keys = [k for k in DATA_SOURCES if k in value]
        return keys[0] if len(keys) == 1 else None
    for key, cls in DATA_SOURCES.items():
        if isinstance(value, cls):
            return key
    return None


def _builtin_tag(value: Any) -> str | None:
    # str() so that `builtin: null` or a number is reported as an unknown name, not "no tag".
    tag = value.get("builtin") if isinstance(value, dict) else getattr(value, "builtin", None)
    return None if tag is None and not isinstance(value, dict) else str(tag)


def _tag(key: str) -> str:
    # Not the key itself: a union tag in an error location must not look like a recipe field,
    # or error locations would point at `data.builtin` for a problem in `data.image_size`.
    return f"source={key}"


def _source_tag(value: Any) -> str | None:
    key = source_key(value)
    return _tag(key) if key else None


def data_config_type() -> Any:
    """Build ``DataConfig``: a union of the registered sources, picked by which key is present."""
    keys = list(DATA_SOURCES)
    members: list[Any] = []
    for key, cls in DATA_SOURCES.items():
        if key == "builtin":
            inner = Union[tuple(Annotated[c, Tag(n)] for n, c in BUILTINS.items())]  # type: ignore[valid-type]
            members.append(Annotated[Annotated[inner, Discriminator(_builtin_tag)], Tag(_tag(key))])
        else:
            members.append(Annotated[cls, Tag(_tag(key))])
    listed = ", ".join(keys[:-1]) + f" or {keys[-1]}" if len(keys) > 1 else keys[0]
    return Annotated[
        Union[tuple(members)],  # built at run time: no `|` form
        Discriminator(
            _source_tag,
            custom_error_type="data_source",
            custom_error_message=f"the data section needs exactly one source key: {listed} "
                                 "(e.g. {builtin: digits} or {npz: data.npz})",
        ),
    ]


__all__ = [
    "BUILTINS", "DATA_SOURCES", "BuiltinSource", "ImageSize", "Loaded", "Loader", "SourceConfig",
    "builtin", "data_config_type", "data_source", "hw", "loader_for", "path_str", "resolve", "source_key",
]

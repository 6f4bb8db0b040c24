"""Model sources: the built-in zoo, model files, and Python factories.

Recipe forms::

    model: {builtin: small_cnn}                     # see edgesparse.models.zoo for options
    model: {path: model.keras, trust_code: false, custom_objects: ["pkg.mod:MyLayer"]}  # tf_keras or Keras 3
    model: {factory: "pkg.module:build", kwargs: {width: 2}}
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from edgesparse import _tf
from edgesparse.errors import ModelError
from edgesparse.models.attention import KeywordTransformerConfig
from edgesparse.models.recurrent import RNNClassifierConfig
from edgesparse.models.ssd import SSDTinyConfig
from edgesparse.models.unet import UNetTinyConfig
from edgesparse.models.zoo import (
    ZOO,
    AutoencoderConfig,
    DSCNNConfig,
    MLPConfig,
    MobileNetV2Config,
    ResNetConfig,
    SmallCNNConfig,
)

__all__ = ["ZOO", "ModelConfig", "PythonModelConfig", "build_model", "describe", "import_object", "prepare_model"]


class PathModelConfig(BaseModel):
    """``model: {path: model.keras}`` — a .keras, .h5 or SavedModel directory.

    Loading never executes Python code stored in the file (Lambda layers) unless ``trust_code``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    trust_code: bool = False
    custom_objects: tuple[str, ...] = ()


class FactoryModelConfig(BaseModel):
    """``model: {factory: "pkg.module:function", kwargs: {...}}``.

    The function returns a tf_keras or a Keras 3 model (translated to tf_keras). If it accepts
    ``input_shape`` / ``num_classes`` they are passed from the data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    factory: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PythonModelConfig(BaseModel):
    """``model: {python: name}`` — the model object given to ``train(..., model=...)`` (a recipe without a model
    section gets this when the call supplies the model). Building it without the object is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    python: str = Field("model", min_length=1)


BuiltinModelConfig = Annotated[
    Union[
        Annotated[SmallCNNConfig, Tag("small_cnn")],
        Annotated[MLPConfig, Tag("mlp")],
        Annotated[MobileNetV2Config, Tag("mobilenet_v2")],
        Annotated[DSCNNConfig, Tag("ds_cnn")],
        Annotated[ResNetConfig, Tag("resnet")],
        Annotated[AutoencoderConfig, Tag("autoencoder")],
        Annotated[SSDTinyConfig, Tag("ssd_tiny")],
        Annotated[RNNClassifierConfig, Tag("rnn_classifier")],
        Annotated[KeywordTransformerConfig, Tag("keyword_transformer")],
        Annotated[UNetTinyConfig, Tag("unet_tiny")],
    ],
    Discriminator(lambda v: v.get("builtin") if isinstance(v, dict) else getattr(v, "builtin", None)),
]

_SOURCE_KEYS = ("builtin", "path", "factory", "python")


def _model_source(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in _SOURCE_KEYS:
            if key in value:
                return key
        return None
    for key, cls in (("path", PathModelConfig), ("factory", FactoryModelConfig), ("python", PythonModelConfig)):
        if isinstance(value, cls):
            return key
    return "builtin"


ModelConfig = Annotated[
    Union[
        Annotated[BuiltinModelConfig, Tag("builtin")],
        Annotated[PathModelConfig, Tag("path")],
        Annotated[FactoryModelConfig, Tag("factory")],
        Annotated[PythonModelConfig, Tag("python")],
    ],
    Discriminator(_model_source, custom_error_type="model_source",
                  custom_error_message="the model section needs one of the keys builtin, path or factory"),
]


def import_object(spec: str, what: str = "object") -> Any:
    """Import ``"pkg.module:attr"``.

    Raises:
        ModelError: the module or attribute does not exist.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelError(f"'{spec}' is not of the form 'package.module:name' ({what}).")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import module '{module_name}' for {what} '{spec}': {exc}. "
            "Check the name and that the module is on PYTHONPATH (run from its folder or pip install it)."
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"module '{module_name}' has no attribute '{attr}' ({what} '{spec}').")
        obj = getattr(obj, part)
    return obj


def build_model(cfg: Any, input_shape: tuple[int, ...], num_classes: int, base_dir: Path | None = None) -> Any:
    """Build or load the model a recipe names.

    Args:
        cfg: A validated model config (one of the ``ModelConfig`` members).
        input_shape: The data's input shape without the batch axis.
        num_classes: Number of classes in the data.
        base_dir: Folder relative model paths are resolved against (the recipe's folder).

    Returns:
        A functional or Sequential tf_keras model (Keras 3 models translated, nested sub-models
        inlined).

    Raises:
        ModelError: the model cannot be built or loaded.
    """
    if isinstance(cfg, PythonModelConfig):
        raise ModelError(f"the recipe's model '{cfg.python}' is a Python object (model: {{python: ...}}), which only "
                         "exists in the process that has it: pass it as edgesparse.train(recipe, model=...), or give "
                         "the recipe a model section such as {path: model.keras} or {builtin: small_cnn}.")
    if isinstance(cfg, PathModelConfig):
        model = _load_file(cfg, base_dir)
    elif isinstance(cfg, FactoryModelConfig):
        model = _from_factory(cfg, input_shape, num_classes)
    else:
        _config_cls, builder = ZOO.get(cfg.builtin)
        if num_classes < 2 and cfg.builtin not in ("autoencoder", "ssd_tiny"):
            raise ModelError(
                f"the built-in model '{cfg.builtin}' is a classifier (an output per class) but the data's targets are "
                "not class labels (fractional or continuous values, or a single class). Store class indices, or "
                "bring your own model for regression (model: {path: ...} or {factory: ...}).")
        model = builder(cfg, tuple(input_shape), num_classes)
    return prepare_model(model, trust_code=bool(getattr(cfg, "trust_code", False)))


def prepare_model(model: Any, trust_code: bool = False) -> Any:
    """Bring any Keras model a user brings into the form the training stages need.

    Keras 3 models are translated to tf_keras, subclassed models are refused with what works
    instead, dict outputs become a list named by their keys (:mod:`edgesparse.models.outputs`), and nested
    functional/Sequential sub-models are inlined so their layers can be pruned
    (each step checked on random inputs).

    Raises:
        ModelError: not a Keras model, a subclassed model, or a translation that fails its check.
    """
    from edgesparse.models import keras3
    from edgesparse.models.flatten import flatten_nested
    from edgesparse.models.outputs import as_list_outputs

    if keras3.is_keras3_model(model):
        model = keras3.from_keras3(as_list_outputs(model, _tf.keras3()), trust_code=trust_code)
    keras = _tf.keras()
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__name__
        raise ModelError(f"the model is a {kind}, not a Keras model (tf_keras or Keras 3).")
    if not keras3.is_graph_model(model):
        raise keras3.subclassed_error(model)
    return flatten_nested(as_list_outputs(model, keras))  # dict outputs: a list named by the keys


def _from_factory(cfg: FactoryModelConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    fn = import_object(cfg.factory, "model factory")
    if not callable(fn):
        raise ModelError(f"model factory '{cfg.factory}' is not callable.")
    kwargs = dict(cfg.kwargs)
    params: Mapping[str, Any]
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "input_shape" in params:
        kwargs.setdefault("input_shape", tuple(input_shape))
    if "num_classes" in params:
        kwargs.setdefault("num_classes", num_classes)
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code, report it as a model error
        raise ModelError(f"model factory '{cfg.factory}' raised {type(exc).__name__}: {exc}") from exc


def _load_file(cfg: PathModelConfig, base_dir: Path | None) -> Any:
    from edgesparse.models import filecheck

    path = Path(cfg.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists() and not path.is_symlink():
        raise ModelError(f"model file '{path}' does not exist. Check `model.path` in the recipe.")
    filecheck.check_path(path)  # FIFOs, devices, sockets refused before anything opens them
    if path.is_file() and path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            f"'{path}' is not a Keras model file: expected a .keras or .h5 file or a SavedModel folder."
        )
    configs = filecheck.file_configs(path)
    if configs is None and path.is_file():
        raise ModelError(f"'{path}' is not a Keras model file (no model configuration found in it).")
    custom = {}
    for spec in cfg.custom_objects:
        obj = import_object(spec, "custom object")
        custom[spec.partition(":")[2].split(".")[-1]] = obj
    filecheck.check_config(configs or [], path, trust_code=cfg.trust_code, custom_names=set(custom))
    from edgesparse.models.keras3 import is_keras3_file, load_keras3_file

    if path.is_file() and is_keras3_file(path):
        from keras.src.saving.serialization_lib import SafeModeScope as Keras3SafeMode

        with Keras3SafeMode(not cfg.trust_code):  # .h5 gets the guard safe_mode gives .keras
            return load_keras3_file(path, trust_code=cfg.trust_code, custom_objects=custom)
    keras = _tf.keras()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        kwargs: dict[str, Any] = {"compile": False, "custom_objects": custom}
        if path.suffix == ".keras":
            kwargs["safe_mode"] = not cfg.trust_code
        with SafeModeScope(not cfg.trust_code):  # .h5 and SavedModel: the guard safe_mode gives .keras
            return keras.models.load_model(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = ""
        if "Unknown layer" in msg or "Could not locate" in msg:
            hint = " Name the custom layer classes with `custom_objects: [\"pkg.mod:Layer\"]`."
        raise ModelError(f"cannot load the model from '{path}': {msg}.{hint}") from exc


def describe(model: Any) -> dict[str, Any]:
    """JSON-able description of a model (name, params, layers, input and output shapes)."""
    return {
        "name": model.name,
        "params": int(model.count_params()),
        "layers": len(model.layers),
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
    }

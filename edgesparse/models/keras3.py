"""Keras 3 models in, Keras 3 models out: translation to and from tf_keras (Keras 2).

tensorflow-model-optimization only prunes tf_keras models. A Keras 3 model (a ``.keras``/``.h5``
file written by Keras 3, or a factory returning one) is loaded with Keras 3 itself, its graph is
replayed with the equivalent tf_keras layers (configurations mapped, weights copied layer by layer),
and both models are run on the same random inputs: the translation is only accepted when their
outputs agree within ``tolerance`` (1e-5, float32). :func:`to_keras3` does the reverse for the
finished model, checked the same way.

Supported: every layer class of the Keras applications (convolutions incl. depthwise/separable,
Dense, Batch/LayerNormalization, activations incl. hard_silu/swish/gelu, pooling, merges, Reshape,
Rescaling, Normalization, padding/cropping, Dropout, Flatten, Permute, Softmax/ReLU/Activation, the
applications' LayerScale and CustomScaleLayer), the recurrent layers LSTM, GRU, SimpleRNN (rolled or unrolled,
``return_sequences`` either way; tf_keras's ``implementation`` option is dropped, it computes the same function)
and Bidirectional wrappers of them, MultiHeadAttention (self and cross attention: options and projection
weights), Embedding, GlobalAveragePooling1D, Keras 3 arithmetic on tensors (``x + 3.0``) including numpy
constants (``x + positional_table`` stays that constant), nested
functional/Sequential sub-models and, with ``trust_code``, Lambda layers. Anything else raises a
:class:`~edgesparse.errors.ModelError` naming the layer and its class.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _io, _tf
from edgesparse._activations import KERAS3_TO_TF_KERAS, TF_KERAS_TO_KERAS3
from edgesparse.errors import ModelError
from edgesparse.models import graph as _graph

__all__ = ["TOLERANCE", "from_keras3", "is_keras3_file", "is_keras3_model", "max_output_diff", "to_keras3"]

#: Largest absolute output difference accepted between a model and its translation (float32).
TOLERANCE = 1e-5

#: Attribute set on tf_keras models translated from Keras 3 (the run writes Keras 3 back for them).
KERAS3_TAG = "_edgesparse_from_keras3"

_WAY_OUT = (
    "Build the model with tf_keras instead (`import tf_keras as keras`; same API) and save it from there, "
    "or replace the layer with built-in Keras layers."
)

# Base-layer keyword arguments every tf_keras/Keras 3 layer accepts through **kwargs.
_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                "activity_regularizer", "autocast", "input_dim", "dynamic"}
# Options without an equivalent on the other side that are harmless at these values.
_HARMLESS = {"rms_scaling": False, "lora_rank": None, "lora_alpha": None, "quantization_config": None,
             "synchronized": False, "optional": False, "renorm": False, "renorm_clipping": None,
             "renorm_momentum": 0.99, "seed": None, "gamma_regularizer": None, "beta_regularizer": None,
             "sparse": False, "ragged": False, "fused": None, "virtual_batch_size": None, "adjustment": None,
             "groups": 1}


def is_keras3_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model (without importing Keras 3 unless it is loaded)."""
    import sys

    keras3 = sys.modules.get("keras")
    if keras3 is None or not str(getattr(keras3, "__version__", "")).startswith("3"):
        return False
    return isinstance(obj, keras3.Model)


def is_keras3_file(path: Path) -> bool:
    """Whether a ``.keras`` or ``.h5`` file was written by Keras 3 (read from its metadata)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if "metadata.json" not in zf.namelist():
                    return False
                meta = json.loads(zf.read("metadata.json"))
            return str(meta.get("keras_version", "")).startswith("3")
        if path.is_file():
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
            version = version.decode() if isinstance(version, bytes) else str(version or "")
            return version.startswith("3")
    except Exception:  # noqa: BLE001 - not readable: the regular loader reports it
        return False
    return False


def is_graph_model(model: Any) -> bool:
    """Functional or Sequential (a layer graph tfmot can clone), as opposed to subclassed."""
    kind = type(model).__name__
    if kind in ("Functional", "Sequential"):
        return True
    return bool(getattr(model, "_is_graph_network", False))


def subclassed_error(model: Any) -> ModelError:
    """The error for a subclassed model: what works instead."""
    kind = f"{type(model).__module__}.{type(model).__name__}"
    return ModelError(
        f"the model '{getattr(model, 'name', '?')}' is a subclassed Keras model ({kind}): its layers are "
        "created in Python code (call()), not as a layer graph, so tensorflow-model-optimization cannot "
        "wrap them for pruning and edgesparse cannot clone or export it. What works: (1) a functional "
        "model (keras.Model(inputs, outputs)) or a keras.Sequential; (2) a `factory:` that builds one — "
        "e.g. build the same layers functionally in the factory; (3) keep your subclassed blocks as "
        "layers inside a functional model: edgesparse prunes the prunable layers (Conv, Dense) of the "
        "functional graph, and reports the subclassed blocks as not pruned."
    )


# ---- configuration mapping -------------------------------------------------------------------

def _clean(value: Any, activations: dict[str, str]) -> Any:
    """Serialized objects in the other Keras's format -> plain ``{class_name, config}`` dicts."""
    if isinstance(value, dict):
        if "class_name" in value and "config" in value:
            cn = value["class_name"]
            if "DTypePolicy" in cn:
                return value["config"].get("name", "float32")
            if cn == "__tensor__":
                return np.asarray(value["config"]["value"], dtype=value["config"].get("dtype"))
            return {"class_name": cn, "config": _clean(value["config"], activations)}
        return {k: _clean(v, activations) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, activations) for v in value]
    return value


def _fit_config(cls: Any, cfg: dict[str, Any], activations: dict[str, str], layer: Any) -> dict[str, Any]:
    """Map a layer config onto ``cls``'s constructor: drop initializers and harmless extra options."""
    out: dict[str, Any] = {}
    params = inspect.signature(cls.__init__).parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in cfg.items():
        if key.endswith("_initializer"):
            continue  # the weights are copied: initializers would only cost compatibility
        if key == "implementation" or (key == "zero_output_for_mask" and key not in params):
            # tf_keras LSTM/GRU's kernel layout choice (1 or 2) computes the same function; zero_output_for_mask
            # (tf_keras sets it inside Bidirectional) only acts on masked steps, which Keras 3 zeroes anyway
            continue
        value = _clean(value, activations)
        if key == "activation" and isinstance(value, dict) and value.get("class_name") == "function":
            value = value["config"]  # a registered function, e.g. 'edgesparse>hard_silu'
        if key == "activation" and isinstance(value, str):
            value = activations.get(value, value)
        if key in params or (accepts_kwargs and key in _BASE_KWARGS):
            out[key] = value
            continue
        if key in _HARMLESS and (value == _HARMLESS[key] or value in (None, False)):
            continue
        if value is None or value is False:
            continue
        raise ModelError(
            f"layer '{layer.name}' ({type(layer).__name__}) has the option {key}={value!r}, which the "
            f"target Keras's {cls.__name__} does not have. {_WAY_OUT}"
        )
    return out


def _unsupported(layer: Any, why: str = "") -> ModelError:
    kind = f"{type(layer).__module__}.{type(layer).__name__}"
    return ModelError(
        f"layer '{layer.name}' of class {kind} cannot be translated between Keras 3 and tf_keras"
        f"{': ' + why if why else ''}. Supported: the built-in Keras layers (the classes the Keras "
        f"applications use), Keras 3 tensor arithmetic, nested functional/Sequential models and Lambda "
        f"layers with `trust_code: true`. {_WAY_OUT}"
    )


def _bidirectional(layer: Any, target: Any, activations: dict[str, str], name: str) -> Any:
    """A Bidirectional wrapper for the ``target`` Keras: its two recurrent layers translated one by one.

    Its nested config carries each Keras's own initializer and policy serializations, so it is not passed on
    whole; the forward and backward layers are rebuilt from their own (filtered) configs instead.
    """
    def make(sub: Any, prefix: str) -> Any:
        cls = getattr(target.layers, type(sub).__name__, None)
        if cls is None or not issubclass(type(sub), _rnn_base(sub)):
            raise _unsupported(layer, f"its {prefix}layer is a {type(sub).__name__}, not a built-in recurrent layer")
        cfg = sub.get_config()
        cfg.pop("batch_input_shape", None)
        cfg["name"] = str(cfg.get("name", sub.name)).removeprefix(prefix)
        return cls.from_config(_fit_config(cls, cfg, activations, sub))

    cfg = layer.get_config()
    try:
        return target.layers.Bidirectional(make(layer.forward_layer, "forward_"),
                                           backward_layer=make(layer.backward_layer, "backward_"),
                                           merge_mode=cfg.get("merge_mode", "concat"), name=name)
    except (TypeError, ValueError) as exc:
        raise _unsupported(layer, f"its recurrent layers do not translate ({type(exc).__name__}: {exc})") from exc


def _attention(layer: Any, cls: Any, activations: dict[str, str], name: str) -> Any:
    """A MultiHeadAttention for the other Keras, made from its options (not ``from_config``).

    tf_keras's ``from_config`` needs the query/key/value shapes its own config records (Keras 3's has none);
    the layer is built by its first call in the replayed graph, with the same projection weights in the same
    order (query, key, value, output: kernels ``(d, heads, key_dim)``), which are then copied.
    """
    cfg = layer.get_config()
    for key in ("query_shape", "key_shape", "value_shape", "batch_input_shape"):
        cfg.pop(key, None)
    cfg["name"] = name
    if cfg.get("output_shape") is not None and not isinstance(cfg["output_shape"], int):
        cfg["output_shape"] = tuple(cfg["output_shape"])
    try:
        return cls(**_fit_config(cls, cfg, activations, layer))
    except (TypeError, ValueError) as exc:
        raise _unsupported(layer, f"its options do not translate ({type(exc).__name__}: {exc})") from exc


def _rnn_base(layer: Any) -> type:
    """The RNN base class of the Keras ``layer`` belongs to (tf_keras or Keras 3)."""
    module = type(layer).__module__
    base: type = _tf.keras().layers.RNN if module.startswith("tf_keras") else _tf.keras3().layers.RNN
    return base


# ---- Keras 3 -> tf_keras ------------------------------------------------------------------------

def _k3_op(entry: _graph.Entry) -> Any:
    tf = _tf.tf()
    ops = {"Add": tf.math.add, "Subtract": tf.math.subtract, "Multiply": tf.math.multiply,
           "Divide": tf.math.truediv, "TrueDivide": tf.math.truediv, "Maximum": tf.math.maximum,
           "Minimum": tf.math.minimum, "Negative": tf.math.negative, "Sqrt": tf.math.sqrt,
           "Square": tf.math.square, "Abs": tf.math.abs, "Exp": tf.math.exp}
    fn = ops.get(type(entry.live).__name__)
    if fn is None:
        raise _unsupported(entry.live, "this Keras 3 operation has no tf_keras translation")

    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise _unsupported(entry.live, f"keyword arguments {sorted(kwargs)} are not translated")
        return fn(*args)

    return call


def _tfk_app_layers() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from tf_keras.src.applications.convnext import LayerScale

        out["LayerScale"] = LayerScale
    except ImportError:  # pragma: no cover - depends on the tf_keras version
        pass
    try:
        from tf_keras.src.applications.inception_resnet_v2 import CustomScaleLayer

        out["CustomScaleLayer"] = CustomScaleLayer
    except ImportError:  # pragma: no cover
        pass
    return out


def _k3_layer(entry: _graph.Entry, trust_code: bool) -> Any:
    tk = _tf.keras()
    layer = entry.live
    module = type(layer).__module__
    name = type(layer).__name__
    if is_keras3_model(layer):
        return _k3_model_to_tfk(layer, trust_code)
    if module.startswith("keras.src.ops"):
        return _k3_op(entry)
    if name == "Lambda":
        if not trust_code:
            raise ModelError(
                f"layer '{layer.name}' is a Lambda layer, whose Python code would run in edgesparse. Only if "
                "you trust the model, set `trust_code: true` in the model section."
            )
        return tk.layers.Lambda(layer.function, arguments=dict(layer.arguments or {}), name=layer.name)
    if name == "Bidirectional" and module.startswith("keras.src.layers"):
        return _bidirectional(layer, tk, KERAS3_TO_TF_KERAS, layer.name)
    app = _tfk_app_layers()
    if name in app and module.startswith("keras.src.applications"):
        cls = app[name]
    elif module.startswith("keras.src.layers") and hasattr(tk.layers, name):
        cls = getattr(tk.layers, name)
    else:
        raise _unsupported(layer)
    if name == "MultiHeadAttention":
        return _attention(layer, cls, KERAS3_TO_TF_KERAS, layer.name)
    cfg = _fit_config(cls, layer.get_config(), KERAS3_TO_TF_KERAS, layer)
    try:
        return cls.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - report which layer could not be made
        raise _unsupported(layer, f"tf_keras rejects its configuration ({type(exc).__name__}: {exc})") from exc


def _build(graph: _graph.Graph, keras_mod: Any, make_layer: Any, name: str | None = None) -> Any:
    """Replay ``graph`` into a new ``keras_mod`` functional model and copy the weights."""
    made_inputs: dict[str, Any] = {}

    def make_input(e: _graph.Entry) -> Any:
        shape, dtype = e.input_spec  # type: ignore[misc]
        t = keras_mod.Input(batch_shape=tuple(shape), dtype=dtype, name=_safe_name(e.name, keras_mod))
        made_inputs[e.name] = t
        return t

    outputs, pairs = _graph.replay(graph, make_layer, make_input)
    inputs = [made_inputs[r.layer] for r in graph.inputs]
    model = keras_mod.Model(inputs[0] if len(inputs) == 1 else inputs,
                            outputs[0] if graph.single_output and len(outputs) == 1 else outputs,
                            name=_safe_name(name or graph.name, keras_mod))
    _graph.copy_weights(pairs, f"translating '{graph.name}'")
    return model


def _safe_name(name: str, keras_mod: Any) -> str:
    # Keras 3 forbids '/' in names; flattened sub-model layers are called 'backbone/conv1' in tf_keras.
    return name.replace("/", ".") if keras_mod is not _tf.keras() else name


def _k3_model_to_tfk(model: Any, trust_code: bool) -> Any:
    if not is_graph_model(model):
        raise subclassed_error(model)
    return _build(_graph.graph_keras3(model), _tf.keras(), lambda e: _k3_layer(e, trust_code))


# ---- tf_keras -> Keras 3 ------------------------------------------------------------------------

_TF_OPS_TO_K3 = {"__operators__.add": "add", "math.add": "add", "math.subtract": "subtract",
                 "__operators__.sub": "subtract", "math.multiply": "multiply", "math.truediv": "divide",
                 "math.maximum": "maximum", "math.minimum": "minimum", "math.negative": "negative",
                 "math.sqrt": "sqrt", "math.square": "square", "math.abs": "abs", "math.exp": "exp",
                 "nn.relu6": "relu6", "nn.relu": "relu", "math.sigmoid": "sigmoid"}


def _constant(value: Any) -> Any:
    """A constant operand tf_keras serialized as nested lists (e.g. a positional table): a float32/int array."""
    if not isinstance(value, (list, tuple)):
        return value
    a = np.asarray(value)
    return a.astype(np.float32) if a.dtype == np.float64 else a


def _tfk_layer(entry: _graph.Entry) -> Any:
    k3 = _tf.keras3()
    layer = entry.live
    name = type(layer).__name__
    module = type(layer).__module__
    tk = _tf.keras()
    if isinstance(layer, tk.Model):
        if not is_graph_model(layer):
            raise subclassed_error(layer)
        return _build(_graph.graph_tf_keras(layer), k3, _tfk_layer)
    if name in ("TFOpLambda", "SlicingOpLambda"):
        fn_name = layer.get_config().get("function")
        op = _TF_OPS_TO_K3.get(fn_name)
        if op is None:
            raise _unsupported(layer, f"the TensorFlow operation {fn_name} has no Keras 3 translation")
        k3_fn = getattr(k3.ops, op)

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop("name", None)
            extra = [_constant(kwargs.pop(k)) for k in ("y",) if k in kwargs]
            if kwargs:
                raise _unsupported(layer, f"keyword arguments {sorted(kwargs)} are not translated")
            return k3_fn(*args, *extra)

        return call
    if name == "Lambda":
        try:
            shape = tuple(layer.output_shape[1:])  # Keras 3 cannot always infer it
        except (AttributeError, RuntimeError, TypeError):
            shape = None
        return k3.layers.Lambda(layer.function, output_shape=shape, arguments=dict(layer.arguments or {}),
                                name=_safe_name(layer.name, k3))
    if name == "Bidirectional" and module.startswith("tf_keras.src.layers"):
        return _bidirectional(layer, k3, TF_KERAS_TO_KERAS3, _safe_name(layer.name, k3))
    if name in ("LayerScale", "CustomScaleLayer") and "applications" in module:
        import importlib

        mod = "convnext" if name == "LayerScale" else "inception_resnet_v2"
        cls = getattr(importlib.import_module(f"keras.src.applications.{mod}"), name)
    elif module.startswith("tf_keras.src.layers") and hasattr(k3.layers, name):
        cls = getattr(k3.layers, name)
    else:
        raise _unsupported(layer)
    if name == "MultiHeadAttention":
        return _attention(layer, cls, TF_KERAS_TO_KERAS3, _safe_name(layer.name, k3))
    cfg = layer.get_config()
    cfg["name"] = _safe_name(cfg.get("name", layer.name), k3)
    cfg.pop("batch_input_shape", None)
    if name == "BatchNormalization" and isinstance(cfg.get("axis"), list) and len(cfg["axis"]) == 1:
        cfg["axis"] = cfg["axis"][0]  # Keras 3 takes one int
    cfg = _fit_config(cls, cfg, TF_KERAS_TO_KERAS3, layer)
    try:
        return cls.from_config(cfg)
    except Exception as exc:  # noqa: BLE001
        raise _unsupported(layer, f"Keras 3 rejects its configuration ({type(exc).__name__}: {exc})") from exc


# ---- checks and entry points --------------------------------------------------------------------

def _random_inputs(model: Any, seed: int = 0, batch: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = [batch] + [d if d is not None else 32 for d in list(t.shape)[1:]]
        dtype = str(getattr(t.dtype, "name", t.dtype))
        if "int" in dtype:
            out.append(rng.integers(0, 8, size=shape).astype(dtype))
        else:
            out.append(rng.uniform(-1.0, 1.0, size=shape).astype("float32"))
    return out


def _predict(model: Any, xs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(xs[0] if len(xs) == 1 else xs, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def max_output_diff(reference: Any, candidate: Any, seed: int = 0) -> float:
    """Largest absolute output difference of two models on the same random inputs."""
    xs = _random_inputs(reference, seed)
    a, b = _predict(reference, xs), _predict(candidate, xs)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    return max(float(np.max(np.abs(x.astype("float64") - y.astype("float64")))) if x.size else 0.0
               for x, y in zip(a, b))


def check_same(reference: Any, candidate: Any, what: str, tolerance: float = TOLERANCE) -> float:
    """Raise unless the two models compute the same function on random inputs.

    Returns:
        The measured largest absolute difference.

    Raises:
        ModelError: the outputs differ by more than ``tolerance``.
    """
    diff = max_output_diff(reference, candidate)
    if not diff <= tolerance:
        raise ModelError(
            f"{what}: the translated model's outputs differ from the original's by up to {diff:.3g} on random "
            f"inputs (allowed {tolerance:g}), so it is not the same model. A layer behaves differently in "
            f"the two Keras versions. {_WAY_OUT}"
        )
    return diff


def from_keras3(model: Any, trust_code: bool = False, tolerance: float = TOLERANCE) -> Any:
    """Translate a Keras 3 model into an equivalent tf_keras model (checked on random inputs).

    Args:
        model: A Keras 3 functional or Sequential model.
        trust_code: Allow Lambda layers (their Python functions are reused).
        tolerance: Largest absolute output difference accepted.

    Returns:
        A tf_keras functional model with the same weights, tagged as coming from Keras 3.

    Raises:
        ModelError: subclassed model, unsupported layer, or outputs that differ.
    """
    _tf.keras3()
    if not is_graph_model(model):
        raise subclassed_error(model)
    translated = _k3_model_to_tfk(model, trust_code)
    diff = check_same(model, translated, f"translating the Keras 3 model '{model.name}' to tf_keras", tolerance)
    setattr(translated, KERAS3_TAG, True)
    translated._edgesparse_translation_diff = diff  # noqa: SLF001 - recorded for the run's summary
    return translated


def load_keras3_file(path: Path, trust_code: bool = False, custom_objects: dict[str, Any] | None = None) -> Any:
    """Load a Keras 3 ``.keras``/``.h5`` file with Keras 3 and translate it (see :func:`from_keras3`).

    Raises:
        ModelError: the file cannot be read by Keras 3, or the model cannot be translated.
    """
    k3 = _tf.keras3()
    try:
        kwargs: dict[str, Any] = {"compile": False, "custom_objects": custom_objects or {}}
        if path.suffix == ".keras":
            kwargs["safe_mode"] = not trust_code
        model = k3.saving.load_model(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"'{path}' was written by Keras 3 (its metadata says so) and Keras 3 cannot load it: {msg}. "
            "Name custom layer classes with `custom_objects: [\"pkg.mod:Layer\"]`."
        ) from exc
    return from_keras3(model, trust_code)


def to_keras3(tf_keras_model: Any, path: str | Path, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Write a tf_keras model as an equivalent Keras 3 ``.keras`` file, checked on random inputs.

    Layer names containing '/' (layers of flattened sub-models, ``backbone/conv1``) become
    ``backbone.conv1``: Keras 3 does not allow '/' in names.

    Args:
        tf_keras_model: A functional or Sequential tf_keras model without training wrappers.
        path: The ``.keras`` file to write (atomically).
        tolerance: Largest absolute output difference accepted, between the tf_keras model and the
            Keras 3 model loaded back from the file.

    Returns:
        ``{"path": str, "max_abs_diff": float, "keras_version": str}``.

    Raises:
        ModelError: the model cannot be translated, or the file's model computes something else.
    """
    k3 = _tf.keras3()
    if not is_graph_model(tf_keras_model):
        raise subclassed_error(tf_keras_model)
    model = _build(_graph.graph_tf_keras(tf_keras_model), k3, _tfk_layer)
    path = Path(path)
    with _io.atomic_path(path, suffix=".keras") as tmp:
        tmp.unlink()
        try:
            model.save(str(tmp))
            loaded = k3.saving.load_model(str(tmp), compile=False, safe_mode=False)
            diff = check_same(tf_keras_model, loaded, f"writing '{path.name}' as a Keras 3 model", tolerance)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a Lambda whose code does not survive the file
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"the Keras 3 model written to '{path.name}' does not load back and run in Keras 3 "
                f"({type(exc).__name__}: {msg}). Lambda layers whose code uses names from their module are the "
                "usual cause; replace them with built-in layers."
            ) from exc
    return {"path": str(path), "max_abs_diff": diff, "keras_version": k3.__version__}

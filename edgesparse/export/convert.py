"""Keras -> TFLite conversion.

Recurrent models (LSTM, GRU, SimpleRNN, Bidirectional, rolled or unrolled) are converted from a copy whose
inputs have a static batch of 1: only then does the converter fuse a Keras LSTM into TFLite's
UNIDIRECTIONAL_SEQUENCE_LSTM (a Bidirectional LSTM becomes two of them) and lower a rolled GRU/SimpleRNN
to the builtin WHILE op; with a dynamic batch it emits TensorList ops that need Flex (measured, TF 2.21). The
converted signature then takes one sample per invoke (export.json's verification says ``batch: 1``), and the fused
LSTM keeps its state in variable tensors between invokes, so every runner resets them between samples
(:func:`edgesparse.device.runner.reset_state`).

TF 2.21's converter crashes the process (SIGSEGV, exit 139) calibrating the WHILE loop of a rolled GRU or
SimpleRNN for an integer mode; those conversions run in a child process so that a crash becomes an
:class:`~edgesparse.errors.ExportError` (a rejected candidate), never a lost run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.errors import EdgesparseError, ExportError, ModelError
from edgesparse.export.modes import CONVERTER_MODES, configure_converter

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_converter() -> Any:
    """Silence the converter's C++ chatter on fd 2 (it bypasses Python logging)."""
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def convert(
    model: Any,
    mode: str = "none",
    *,
    sparse_encoding: bool = False,
    representative: Iterable[np.ndarray] | None = None,
    io: str = "float32",
    per_channel: bool = True,
    _guarded: bool = False,
) -> bytes:
    """Convert a (stripped) tf_keras model to a TFLite flatbuffer.

    A recurrent model is converted with a static batch of 1 (see the module doc), in a child process for the
    integer modes that can crash the converter.

    Args:
        model: The model; pruning wrappers must already be stripped.
        mode: Quantization mode (see :mod:`edgesparse.export.modes`).
        sparse_encoding: Use the converter's sparse weight encoding
            (``Optimize.EXPERIMENTAL_SPARSITY``): CSR or block storage plus DENSIFY ops.
        representative: Calibration samples for integer modes.
        io: "float32" or "int8" inputs/outputs.
        per_channel: int8 weight scales per output channel (default) or, False, per tensor.

    Returns:
        The flatbuffer bytes.

    Raises:
        ExportError: the converter failed.
    """
    tf = _tf.tf()
    if recurrent_layers(model):
        model = static_batch_model(model)
        if not _guarded and _crash_prone(model, mode):
            return _convert_in_child(model, mode, sparse_encoding=sparse_encoding, representative=representative,
                                     io=io, per_channel=per_channel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure_converter(converter, mode, sparse_encoding=sparse_encoding, representative=representative, io=io,
                        per_channel=per_channel)
    try:
        import warnings

        with warnings.catch_warnings(), quiet_converter():
            warnings.simplefilter("ignore")
            return bytes(converter.convert())
    except EdgesparseError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the TFLite converter failed ({mode}, sparse_encoding={sparse_encoding}): {first}. "
            "Check that every layer has a TFLite builtin op, or try another quantization mode."
        ) from exc


def _walk(model: Any) -> list[Any]:
    """Every layer of ``model``, nested models' layers included (a Bidirectional counts once, as itself)."""
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers") and not isinstance(layer, _tf.keras().layers.Bidirectional):
            out += _walk(layer)
    return out


def recurrent_layers(model: Any) -> list[Any]:
    """The recurrent layers of a tf_keras model (LSTM, GRU, SimpleRNN, any RNN, Bidirectional wrappers)."""
    layers = _tf.keras().layers
    return [la for la in _walk(model) if isinstance(la, (layers.RNN, layers.Bidirectional))]


def check_recurrent(model: Any) -> None:
    """Refuse what a batch-1 TFLite signature cannot run: stateful RNNs and inputs without a fixed length.

    Raises:
        ModelError: a stateful recurrent layer, or a recurrent model input with an unknown (None) axis besides
            the batch.
    """
    rnns = recurrent_layers(model)
    if not rnns:
        return
    for la in rnns:
        inner = getattr(la, "forward_layer", la)
        if getattr(la, "stateful", False) or getattr(inner, "stateful", False):
            raise ModelError(
                f"layer '{la.name}' ({type(la).__name__}) is stateful (stateful=True): it carries its state from one "
                "batch to the next, which training, pruning and per-sample verification cannot reproduce. Rebuild "
                "it with stateful=False (the default); the exported model is run one sample at a time with its "
                "state reset between samples.")
    for t in model.inputs:
        shape = list(t.shape)[1:]
        if any(d is None for d in shape):
            raise ModelError(
                f"input '{t.name.split(':')[0]}' has shape {tuple(t.shape)}: a recurrent model needs a fixed "
                "sequence length (no None axis besides the batch) to convert to TFLite's fused recurrent ops. "
                "Pad or crop your sequences to one length and build the model with keras.Input((LENGTH, FEATURES)); "
                "variable-length (ragged) inputs are not supported.")


def static_batch_model(model: Any) -> Any:
    """A copy of ``model`` (same layer names and weights) whose inputs have a static batch of 1.

    Raises:
        ModelError: see :func:`check_recurrent`.
    """
    check_recurrent(model)
    keras = _tf.keras()
    if all(t.shape[0] == 1 for t in model.inputs):
        return model
    ins = [keras.Input(batch_size=1, shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
           for t in model.inputs]
    copy = keras.models.clone_model(model, input_tensors=ins if len(ins) > 1 else ins[0])
    copy.set_weights(model.get_weights())
    return copy


def signature_batch(model: Any) -> int | None:
    """The batch the converted signature takes: 1 for recurrent models (see module doc), None (any) otherwise."""
    return 1 if recurrent_layers(model) else None


def _crash_prone(model: Any, mode: str) -> bool:
    """Whether converting ``model`` in ``mode`` is the case known to crash the converter (see module doc)."""
    if mode == "none" or not CONVERTER_MODES.get(mode).needs_calibration:
        return False
    layers = _tf.keras().layers
    for la in recurrent_layers(model):
        inner = getattr(la, "forward_layer", la)
        if not getattr(inner, "unroll", False) and not isinstance(getattr(inner, "cell", None), layers.LSTMCell):
            return True
    return False


#: seconds a child conversion may take
CHILD_TIMEOUT = 1800


def _convert_in_child(model: Any, mode: str, *, sparse_encoding: bool, representative: Iterable[np.ndarray] | None,
                      io: str, per_channel: bool) -> bytes:
    """Run :func:`convert` on ``model`` in a fresh Python process; a crash there raises ExportError."""
    with tempfile.TemporaryDirectory(prefix="edgesparse-convert-") as tmp:
        path = os.path.join(tmp, "model.keras")
        try:
            model.save(path)
        except Exception as exc:  # a model Keras cannot save (custom objects) converts here, unguarded
            log.info("cannot save the model for a guarded conversion (%s); converting in this process", exc)
            return convert(model, mode, sparse_encoding=sparse_encoding, representative=representative, io=io,
                           per_channel=per_channel)
        if isinstance(representative, dict):  # several inputs: arrays by input name
            named: dict[str, Any] = {"in:" + str(k): np.asarray(v) for k, v in representative.items()}
            np.savez(os.path.join(tmp, "rep.npz"), **named)
        elif representative is not None:
            np.savez(os.path.join(tmp, "rep.npz"), x=np.stack([np.asarray(r) for r in representative]))
        out = os.path.join(tmp, "model.tflite")
        args = [sys.executable, "-m", "edgesparse.export.convert", path, out, mode, str(int(sparse_encoding)), io,
                str(int(per_channel))]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or [""]
            if proc.returncode < 0 or proc.returncode == 139:
                sig = -proc.returncode if proc.returncode < 0 else 11
                raise ExportError(
                    f"the TFLite converter crashed (signal {sig}) converting this model for {mode} "
                    f"(sparse_encoding={sparse_encoding}); the crash was contained in a child process. Known case: "
                    "TF 2.21 calibrating a rolled GRU/SimpleRNN (WHILE loop) for an integer mode. Use an LSTM, "
                    "unroll=True on the recurrent layer, or quantization.mode float16/none for this model.")
            raise ExportError(f"the TFLite converter failed ({mode}, sparse_encoding={sparse_encoding}) in its child "
                              f"process (exit {proc.returncode}): {tail[0][:400]}")
        with open(out, "rb") as f:
            return f.read()


def _child_main(argv: list[str]) -> int:
    """``python -m edgesparse.export.convert MODEL OUT MODE SPARSE IO PER_CHANNEL``: one guarded conversion."""
    path, out, mode, sparse, io_, per_channel = argv
    model = _tf.keras().models.load_model(path, compile=False)
    rep: Any = None
    rep_path = os.path.join(os.path.dirname(path), "rep.npz")
    if os.path.exists(rep_path):
        with np.load(rep_path) as z:
            rep = {k[3:]: z[k] for k in z.files if k.startswith("in:")} or list(z["x"])
    data = convert(model, mode, sparse_encoding=bool(int(sparse)), representative=rep, io=io_,
                   per_channel=bool(int(per_channel)), _guarded=True)
    with open(out, "wb") as f:
        f.write(data)
    return 0


def convert_smallest(
    model: Any,
    mode: str = "none",
    *,
    representative: Iterable[np.ndarray] | None = None,
    io: str = "float32",
) -> tuple[bytes, bool, dict[str, int]]:
    """Convert with and without the sparse encoding and keep the smaller flatbuffer.

    The converter's sparse encoding stores a value plus index arrays per non-zero: for int8
    weights at moderate sparsity (about 50%) the indices cost more than the dropped zeros and the
    encoded file is *larger* (measured: MobileNetV2 int8 at 50%, 740,152 B encoded vs 625,080 B
    plain). Ties keep the sparse encoding.

    Returns:
        ``(flatbuffer, sparse_encoding_used, {"sparse": bytes, "plain": bytes})``.

    Raises:
        ExportError: the converter failed.
    """
    rep = list(representative) if representative is not None else None
    sparse = convert(model, mode, sparse_encoding=True, representative=rep, io=io)
    plain = convert(model, mode, sparse_encoding=False, representative=rep, io=io)
    sizes = {"sparse": len(sparse), "plain": len(plain)}
    return (sparse, True, sizes) if len(sparse) <= len(plain) else (plain, False, sizes)


if __name__ == "__main__":  # the guarded conversion's child process
    sys.exit(_child_main(sys.argv[1:]))

"""Recurrent layers (issue 29, recurrent half): Keras 3 translation, batch-1 conversion to fused ops, state reset,
refusals, tfmot pruning of RNN cells, a contained converter crash, and the shipped HAR LSTM recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before TensorFlow: it picks tf_keras)
from edgesparse import _tf
from edgesparse.errors import ExportError, ModelError


def _tfk_model(kind: str, steps: int = 12, features: int = 5, seed: int = 0) -> Any:
    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((steps, features), name="window")
    if kind == "lstm":
        x = keras.layers.LSTM(16, name="rnn")(inp)
    elif kind == "gru":
        x = keras.layers.GRU(16, name="rnn")(inp)
    else:  # stacked: Bidirectional LSTM with sequences, then LSTM
        x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), name="bi")(inp)
        x = keras.layers.LSTM(8, name="rnn")(x)
    return keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="head")(x))


def _ops(data: bytes) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    return {str(o["op_name"]) for o in it._get_ops_details()}  # noqa: SLF001


@pytest.fixture(scope="module")
def lstm_case() -> dict[str, Any]:
    from edgesparse.export.convert import convert

    model = _tfk_model("lstm")
    x = np.random.default_rng(0).normal(size=(24, 12, 5)).astype(np.float32)
    return {"model": model, "x": x, "keras": model.predict(x, verbose=0), "tflite": convert(model, "none")}


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn", "bidirectional"])
def test_keras3_recurrent_translation_is_equal_both_ways(tmp_path: Path, kind: str) -> None:
    """Keras 3 LSTM/GRU/SimpleRNN/Bidirectional -> tf_keras -> Keras 3 file: outputs equal within 1e-5."""
    from edgesparse.models import keras3 as k3m

    k3 = _tf.keras3()
    inp = k3.Input((10, 4))
    if kind == "bidirectional":
        x = k3.layers.Bidirectional(k3.layers.LSTM(6, return_sequences=True))(inp)
        x = k3.layers.Bidirectional(k3.layers.GRU(5), merge_mode="sum")(x)
    else:
        cls = {"lstm": k3.layers.LSTM, "gru": k3.layers.GRU, "simple_rnn": k3.layers.SimpleRNN}[kind]
        x = cls(7, return_sequences=True)(inp)
        x = cls(5, unroll=True)(x)
    model = k3.Model(inp, k3.layers.Dense(3)(x))
    tfk = k3m.from_keras3(model)
    assert k3m.max_output_diff(model, tfk) <= k3m.TOLERANCE
    back = k3m.to_keras3(tfk, tmp_path / "final_keras3.keras")  # LSTM/GRU's implementation=2 no longer blocks it
    assert back["max_abs_diff"] <= k3m.TOLERANCE and (tmp_path / "final_keras3.keras").is_file()


def test_lstm_converts_to_fused_op_with_batch_one(lstm_case: dict[str, Any]) -> None:
    ops = _ops(lstm_case["tflite"])
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops, ops
    assert not any("Flex" in o or "TensorList" in o or o == "CUSTOM" for o in ops), ops
    from edgesparse.export.verify import verify

    v = verify(lstm_case["tflite"], lstm_case["x"], np.zeros(24, np.int64), lstm_case["keras"])
    assert v.batch == 1 and v.state_reset
    assert v.max_abs_diff < 1e-5 and v.agreement == 1.0


def test_fused_lstm_state_is_reset_between_samples(lstm_case: dict[str, Any]) -> None:
    """Without a reset the fused LSTM carries its state into the next sample; the runner's engine resets it."""
    from edgesparse.device import runner

    interp = runner.import_runtime().interpreter_cls(model_content=lstm_case["tflite"])
    interp.allocate_tensors()
    engine = runner.InterpreterEngine(interp)
    assert engine.stateful
    x, ref = lstm_case["x"], lstm_case["keras"]
    carried = []
    for i in range(len(x)):  # no reset: what a plain loop over the interpreter does
        engine.set_inputs([x[i:i + 1]])
        engine.run()
        carried.append(engine.output(0).copy())
    drift = float(np.abs(np.concatenate(carried) - ref).max())
    reset = runner.run_batch(engine, x)[0]
    assert float(np.abs(reset - ref).max()) < 1e-5 < drift


def test_stateful_and_variable_length_rnns_are_refused() -> None:
    from edgesparse.export.convert import check_recurrent

    keras = _tf.keras()
    inp = keras.Input((None, 3))
    ragged = keras.Model(inp, keras.layers.LSTM(4)(inp))
    with pytest.raises(ModelError, match="fixed sequence length"):
        check_recurrent(ragged)
    inp = keras.Input((6, 3), batch_size=2)
    stateful = keras.Model(inp, keras.layers.GRU(4, stateful=True, name="g")(inp))
    with pytest.raises(ModelError, match=r"'g' .*stateful"):
        check_recurrent(stateful)


def test_rolled_gru_integer_conversion_crash_is_contained() -> None:
    """TF 2.21 crashes (SIGSEGV) calibrating a rolled GRU for int8: the guarded child process turns it into an
    ExportError naming the crash, and this process goes on (the float conversion uses the builtin WHILE op)."""
    from edgesparse.export.convert import convert

    model = _tfk_model("gru")
    assert "WHILE" in _ops(convert(model, "none"))
    rep = list(np.random.default_rng(1).normal(size=(8, 12, 5)).astype(np.float32))
    try:
        data = convert(model, "int8", representative=rep)
    except ExportError as exc:
        assert "crashed" in str(exc) or "failed" in str(exc), exc
    else:  # a converter that no longer crashes: the guarded result must be a working model
        assert _ops(data)


def test_rnn_cells_are_planned_and_pruned_with_both_kernels() -> None:
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train import sparsity
    from edgesparse.train.coverage import parameter_stats

    model = _tfk_model("stacked")
    cfg = SparsityConfig.model_validate({"final": 0.8, "start": 0, "end": 1, "frequency": 1, "epochs": 1,
                                         "pattern": "block:1x4", "layers": [{"match": "^head$", "skip": True}]})
    plan = sparsity.plan_sparsity(model, cfg, steps_per_epoch=4)
    by = {lp.name: lp for lp in plan.layers}
    rnn = model.get_layer("rnn")
    assert by["rnn"].prune and by["rnn"].weights == rnn.cell.kernel.shape.num_elements() + \
        rnn.cell.recurrent_kernel.shape.num_elements()
    assert "recurrent kernel" in by["rnn"].note and by["rnn"].pattern == "block:1x4"
    assert not by["bi"].prune and "Bidirectional" in by["bi"].note
    slot = sparsity._slot(rnn, by["rnn"], cfg)  # ERK reads (inputs + units) x gates*units: the 4 gates count
    assert slot.shape == (16 + 8, 4 * 8)
    pruned = sparsity.apply_pruning(model, cfg, plan)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(16, 12, 5)).astype(np.float32)
    y = np.arange(16) % 4
    step = _tf.tfmot().sparsity.keras.UpdatePruningStep()
    pruned.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[step])
    stripped = sparsity.strip(pruned)
    r = stripped.get_layer("rnn").cell
    for w in (r.kernel, r.recurrent_kernel):
        assert np.mean(np.asarray(w) == 0) == pytest.approx(0.8, abs=0.02)
    measured = sparsity.measure_sparsity(stripped, [lp.name for lp in plan.pruned])
    stats = parameter_stats(stripped, measured)
    assert measured["layers"]["rnn"] == pytest.approx(0.8, abs=0.02)
    assert stats["pruned_kernel_params"] == by["rnn"].weights


@pytest.mark.slow
def test_har_lstm_recipe_end_to_end(tmp_path: Path) -> None:
    """The shipped recipe, shrunk: train -> prune 80% -> int8 fused LSTM -> export -> verify -> deploy locally."""
    from edgesparse.recipe import load_recipe
    from edgesparse.run import train
    from tests.conftest import ROOT
    from tests.test_task import _deploy_locally

    r = load_recipe(ROOT / "recipes" / "har_lstm.yaml", [
        "data.samples=900", "data.timesteps=32", "model.units=48", "baseline.epochs=25", "sparsity.epochs=15",
        "sparsity.end=6", "sparsity.on_drop=warn", "export.sparse_encoding=false", "export.per_channel=true",
        f"output_dir={tmp_path / 'run'}",
        f"export.dir={tmp_path / 'bundle'}"])
    result = train(r)
    s = result.summary
    exported = json.loads((tmp_path / "bundle" / "export.json").read_text())
    assert s.tflite is not None and s.tflite.quantization == "int8", exported["candidates"]
    assert s.baseline.metric is not None and s.baseline.metric > 0.6  # 6 classes: chance 1/6
    v = exported["verification"]
    assert v["batch"] == 1 and v["state_reset"], v
    assert exported["signature"] == {"batch": 1, "state_reset_between_samples": True}
    assert s.model.coverage is not None and s.model.coverage >= 0.9, s.model
    data = (tmp_path / "bundle" / "model.tflite").read_bytes()
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in _ops(data)
    assert len(data) <= exported["dense"]["bytes"] / 2, (len(data), exported["dense"])
    _deploy_locally(result)


@pytest.mark.slow
def test_gru_whose_int8_conversion_crashes_falls_back_to_float_not_a_lost_run(tmp_path: Path) -> None:
    """A rolled GRU's int8 conversions crash the converter (TF 2.21): each is a rejected candidate naming why, and
    the run keeps a verified float32 conversion of the pruned model (objective size too) instead of failing."""
    from edgesparse.recipe import load_recipe
    from edgesparse.run import train
    from tests.conftest import ROOT

    r = load_recipe(ROOT / "recipes" / "har_lstm.yaml", [
        "model.cell=gru", "data.samples=300", "data.timesteps=16", "model.units=16", "baseline.epochs=3",
        "baseline.on_broken=warn", "sparsity.epochs=2", "sparsity.end=1", "sparsity.on_drop=warn",
        "export.sparse_encoding=false", "export.per_channel=true", "export.min_agreement=0",
        f"output_dir={tmp_path / 'run'}", f"export.dir={tmp_path / 'bundle'}"])
    result = train(r)
    exported = json.loads((tmp_path / "bundle" / "export.json").read_text())
    kept = result.summary.tflite
    assert kept is not None
    int8 = [c for c in exported["candidates"] if c.get("mode") == "int8"]
    assert int8, exported["candidates"]
    if kept.quantization == "none":  # the converter crashed on int8 (as TF 2.21 does): float32 kept, with reasons
        assert all(c.get("rejected") for c in int8), int8
        assert any("crash" in str(c.get("rejected")) or "fail" in str(c.get("rejected")) for c in int8), int8
        assert any("float32" in w or "int8" in w for w in result.warnings), result.warnings
    else:  # a converter that no longer crashes: the int8 file was verified
        assert kept.quantization == "int8"


def test_measuring_a_model_with_a_bidirectional_layer_skips_it() -> None:
    """Bidirectional is not pruned; measuring sparsity must not read its unbuilt template layer (was an
    AttributeError: 'LSTMCell' object has no attribute 'kernel', after the sparsity phase of a real run)."""
    from edgesparse.train.sparsity import measure_sparsity

    stats = measure_sparsity(_tfk_model("bidirectional"))
    assert "bi" not in stats["layers"] and {"rnn", "head"} <= set(stats["layers"])


def test_keras3_recurrent_layer_after_bidirectional_is_pruned(tmp_path: Path) -> None:
    """Keras 3 records training=False on a GRU called after a Bidirectional; translated as is, tfmot's wrapper never
    updated the GRU's masks (0% sparsity after a whole sparsity phase). The translation drops that flag."""
    from edgesparse.models import prepare_model

    k3, keras, tfmot = _tf.keras3(), _tf.keras(), _tf.tfmot()
    inp = k3.Input((12, 3))
    h = k3.layers.Bidirectional(k3.layers.LSTM(8, return_sequences=True))(inp)
    h = k3.layers.GRU(8, name="gru")(h)
    path = tmp_path / "seq.keras"
    k3.Model(inp, k3.layers.Dense(3, name="head")(h)).save(path)
    model = prepare_model(k3.models.load_model(path))
    sched = tfmot.sparsity.keras.ConstantSparsity(0.8, 0, frequency=1)
    pruned = keras.models.clone_model(model, clone_function=lambda lyr: tfmot.sparsity.keras.prune_low_magnitude(
        lyr, pruning_schedule=sched) if lyr.name == "gru" else lyr.__class__.from_config(lyr.get_config()))
    pruned.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(32, 12, 3)).astype(np.float32)
    pruned.fit(x, np.zeros((32, 3), np.float32), epochs=1, batch_size=16, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    kernel = tfmot.sparsity.keras.strip_pruning(pruned).get_layer("gru").weights[0].numpy()
    assert float((kernel == 0).mean()) == pytest.approx(0.8, abs=0.02)

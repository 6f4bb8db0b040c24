"""The device runner as a real subprocess on real converted models (no mocks of LiteRT).

Models: ``tiny_tflite`` from conftest (dense float; sparse int8 with float I/O whose block-sparse
FULLY_CONNECTED XNNPACK refuses in ai-edge-litert 2.3), plus, built here, an int8 model with int8
input/output tensors, a model with dynamic spatial dimensions and a float model with a CUMSUM
(an op XNNPACK does not run) between two layers it does.
"""

from __future__ import annotations

import ast
import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.device import runner as runner_module

RUNNER = Path(runner_module.__file__).resolve()
NO_RUNTIME_FIX = "pip install ai-edge-litert  (or on Raspberry Pi OS: pip install tflite-runtime 'numpy<2')"


def run(*args: str, python: str = sys.executable, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """Run the runner; return its exit code and the ONE JSON object it printed on stdout."""
    proc = subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got: {proc.stdout!r} / stderr {proc.stderr[-500:]}"
    return proc.returncode, json.loads(lines[0])


@pytest.fixture(scope="module")
def extra_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An int8-in/int8-out model (with its Keras original) and a dynamic-shape model, converted for real."""
    from edgesparse import _tf

    tf, keras = _tf.tf(), _tf.keras()
    keras.utils.set_random_seed(1)
    tmp = tmp_path_factory.mktemp("runner_models")
    rng = np.random.default_rng(1)

    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    rep = rng.random((32, 6, 6, 2), dtype=np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rep)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_io = tmp / "int8_io.tflite"
    int8_io.write_bytes(conv.convert())
    batch = rng.random((7, 6, 6, 2), dtype=np.float32)
    np.save(tmp / "batch_6x6x2.npy", batch)

    # CUMSUM, which XNNPACK does not run, between a convolution and a fully-connected layer
    cum_in = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu")(cum_in)
    x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(x)
    cumsum_model = keras.Model(cum_in, keras.layers.Dense(5)(keras.layers.Flatten()(x)))
    cumsum = tmp / "cumsum.tflite"
    cumsum.write_bytes(tf.lite.TFLiteConverter.from_keras_model(cumsum_model).convert())

    dyn_in = keras.Input((None, None, 1))
    y = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(dyn_in)
    dyn_model = keras.Model(dyn_in, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(y)))
    dynamic = tmp / "dynamic.tflite"
    dynamic.write_bytes(tf.lite.TFLiteConverter.from_keras_model(dyn_model).convert())
    return {"int8_io": int8_io, "keras_int8_io": model, "batch_6x6x2": tmp / "batch_6x6x2.npy",
            "batch_values": batch, "dynamic": dynamic, "cumsum": cumsum}


# ---- measurements -----------------------------------------------------------------------------


def test_dense_model_reports_latency_memory_and_runtime(tiny_tflite: dict[str, Path]) -> None:
    code, out = run(str(tiny_tflite["dense"]), "--runs", "30", "--warmup", "3", "--threads", "2")
    assert code == 0
    lat = out["latency_ms"]
    assert set(lat) == {"mean", "median", "p90", "p99", "min", "max", "std"}
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert len(out["samples_ms"]) == out["runs"] == 30 and out["warmup"] == 3 and out["threads"] == 2
    assert out["init_ms"] > 0 and out["first_invoke_ms"] > 0
    assert 0 < out["baseline_rss_bytes"] <= out["runtime_rss_bytes"] <= out["peak_rss_bytes"]
    assert out["model_rss_bytes"] == out["peak_rss_bytes"] - out["runtime_rss_bytes"]
    assert out["runtime"]["name"] == "ai_edge_litert" and out["runtime"]["version"][0].isdigit()
    assert out["resolver"] == "xnnpack" and out["delegate_fallback_reason"] is None
    assert out["input"] == {"shape": [1, 8, 8, 1], "dtype": "float32"}
    assert out["outputs"] is None and out["model_bytes"] == tiny_tflite["dense"].stat().st_size


def test_int8_io_model_quantizes_the_float_batch_and_dequantizes_outputs(extra_models: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    saved = tmp_path / "outputs.npy"
    code, out = run(str(extra_models["int8_io"]), "--runs", "3", "--warmup", "0",
                    "--input", str(extra_models["batch_6x6x2"]), "--save-outputs", str(saved))
    assert code == 0 and out["input"] == {"shape": [1, 6, 6, 2], "dtype": "int8"}
    outputs = np.load(saved)
    expected = extra_models["keras_int8_io"].predict(extra_models["batch_values"], verbose=0)
    assert outputs.shape == expected.shape == (7, 5) and outputs.dtype == np.float32
    # int8 quantization of a softmax: within a few output steps (1/256) of the float model
    np.testing.assert_allclose(outputs, expected, atol=0.05)
    summary = out["outputs"]
    assert summary["count"] == 7 and summary["argmax"] == [int(i) for i in outputs.argmax(axis=1)]
    # one output: the single-output keys stay at the top, and the same figures are under its name
    assert out["inputs"] == [{"name": out["inputs"][0]["name"], **out["input"]}] and len(summary["names"]) == 1
    assert summary["by_name"][summary["names"][0]]["checksum"] == summary["checksum"]
    assert summary["by_name"][summary["names"][0]]["shape"] == [7, 5] and out["output_names"] == summary["names"]
    assert "float32_base64" not in summary["by_name"][summary["names"][0]]  # values only with --return-outputs
    rounded = (np.round(outputs, 4) + np.float32(0.0)).astype(np.float32)
    assert summary["checksum"] == hashlib.sha256(rounded.tobytes()).hexdigest()
    assert summary["sum"] == pytest.approx(float(outputs.sum()), rel=1e-6)
    again = run(str(extra_models["int8_io"]), "--runs", "1", "--input", str(extra_models["batch_6x6x2"]))[1]
    assert again["outputs"]["checksum"] == summary["checksum"]  # stable from run to run


def test_sparse_int8_fc_falls_back_to_builtin_and_records_why(tiny_tflite: dict[str, Path]) -> None:
    code, auto = run(str(tiny_tflite["int8"]), "--runs", "5", "--input", str(tiny_tflite["batch"]))
    assert code == 0
    if auto["runtime"]["version"].startswith("2.3"):
        # ai-edge-litert 2.3's XNNPACK refuses the block-sparse int8 FULLY_CONNECTED at allocation
        assert auto["resolver"] == "builtin"
    if auto["resolver"] == "builtin":
        assert "failed to delegate" in auto["delegate_fallback_reason"]
        assert any("failed attempt" in n for n in auto["notes"])
    else:  # a runtime whose XNNPACK takes (or skips) the sparse layer
        assert auto["delegate_fallback_reason"] is None
    builtin = run(str(tiny_tflite["int8"]), "--runs", "5", "--resolver", "builtin", "--input",
                  str(tiny_tflite["batch"]))[1]
    assert builtin["resolver"] == "builtin" and builtin["delegate_fallback_reason"] is None
    assert builtin["outputs"]["checksum"] == auto["outputs"]["checksum"]
    assert auto["outputs"]["count"] == 12


# ---- which ops XNNPACK took ------------------------------------------------------------------


def test_float_model_is_fully_delegated_and_builtin_resolver_delegates_nothing(tiny_tflite: dict[str, Path]) -> None:
    ops = run(str(tiny_tflite["dense"]), "--runs", "2")[1]["ops"]
    # CONV_2D, RESHAPE, FULLY_CONNECTED x2, SOFTMAX: one XNNPACK partition takes them all
    assert ops == {"total": 5, "delegated": 5, "partitions": 1, "builtin": {}}
    ops = run(str(tiny_tflite["dense"]), "--runs", "2", "--resolver", "builtin")[1]["ops"]
    assert ops == {"total": 5, "delegated": 0, "partitions": 0,
                   "builtin": {"FULLY_CONNECTED": 2, "CONV_2D": 1, "RESHAPE": 1, "SOFTMAX": 1}}


def test_an_op_xnnpack_lacks_splits_the_model_into_two_partitions(extra_models: dict[str, Any]) -> None:
    out = run(str(extra_models["cumsum"]), "--runs", "2")[1]
    assert out["resolver"] == "xnnpack"
    assert out["ops"] == {"total": 4, "delegated": 3, "partitions": 2, "builtin": {"CUMSUM": 1}}


def test_refused_sparse_int8_model_runs_every_op_on_builtin_kernels(tiny_tflite: dict[str, Path]) -> None:
    out = run(str(tiny_tflite["int8"]), "--runs", "2")[1]
    ops = out["ops"]
    # QUANTIZE, DENSIFY x2, CONV_2D, RESHAPE, FULLY_CONNECTED x2, SOFTMAX, DEQUANTIZE
    assert ops["total"] == 9 and sum(ops["builtin"].values()) == 9 - ops["delegated"]
    if out["runtime"]["version"].startswith("2.3"):  # XNNPACK refused the block-sparse int8 FC
        assert out["resolver"] == "builtin"
    if out["resolver"] == "builtin":
        assert ops["delegated"] == 0 and ops["partitions"] == 0 and ops["builtin"]["DENSIFY"] == 2


def test_ops_degrade_to_a_reason_without_the_node_listing() -> None:
    ops = runner_module.op_delegation(object())  # an Interpreter without the wrapper's node calls
    assert set(ops) == {"unavailable"} and "does not list its nodes" in ops["unavailable"]


def test_describe_names_python_machine_and_runtime() -> None:
    code, out = run("--describe")
    assert code == 0 and out["python"] == ".".join(map(str, sys.version_info[:3]))
    assert out["machine"] and out["runtime"]["name"] == "ai_edge_litert" and out["numpy"] == np.__version__


# ---- errors are JSON with a kind and an exit code ---------------------------------------------


def test_dynamic_shape_needs_input_shape(extra_models: dict[str, Any]) -> None:
    code, out = run(str(extra_models["dynamic"]), "--runs", "2")
    assert code == 2 and out["kind"] == "dynamic_shape" and "--input-shape" in out["error"]
    code, out = run(str(extra_models["dynamic"]), "--runs", "2", "--input-shape", "1,12,10,1")
    assert code == 0 and out["input"]["shape"] == [1, 12, 10, 1]
    code, out = run(str(extra_models["dynamic"]), "--runs", "2", "--input-shape", "1,12,10,3")
    assert code == 2 and out["kind"] == "bad_argument" and "does not fit" in out["error"]


@pytest.mark.parametrize("content", [b"junk" * 100, b""])
def test_garbage_model_is_load_failed(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    code, out = run(str(bad))
    assert code == 4 and out["kind"] == "load_failed" and out["error"]


def test_missing_model_is_load_failed(tmp_path: Path) -> None:
    code, out = run(str(tmp_path / "nope.tflite"))
    assert code == 4 and out["kind"] == "load_failed" and "not found" in out["error"]


@pytest.mark.parametrize("args", [["--runs", "0"], ["--threads", "0"], ["--warmup", "-1"], ["--threads", "two"],
                                  ["--input-shape", "1,a"], ["--resolver", "gpu"], ["--no-such-flag"]])
def test_bad_arguments_are_json(tiny_tflite: dict[str, Path], args: list[str]) -> None:
    code, out = run(str(tiny_tflite["dense"]), *args)
    assert code == 2 and out["kind"] == "bad_argument" and out["error"]


def test_batch_of_the_wrong_shape_is_a_bad_argument(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 9, 9, 1), dtype=np.float32))
    code, out = run(str(tiny_tflite["dense"]), "--runs", "1", "--input", str(wrong))
    assert code == 2 and out["kind"] == "bad_argument" and "(8, 8, 1)" in out["error"]
    not_npy = tmp_path / "batch.npy"
    not_npy.write_text("not numpy")
    code, out = run(str(tiny_tflite["dense"]), "--runs", "1", "--input", str(not_npy))
    assert code == 2 and out["kind"] == "bad_argument"


def test_no_runtime_names_the_pip_command(tiny_tflite: dict[str, Path]) -> None:
    # -I -S: this same Python without site-packages, so neither numpy nor any runtime is importable
    proc = subprocess.run([sys.executable, "-I", "-S", str(RUNNER), str(tiny_tflite["dense"])],
                          capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout)
    assert proc.returncode == 3 and out["kind"] == "no_runtime" and out["fix"] == NO_RUNTIME_FIX
    assert sys.executable in out["error"]


# ---- the runner stays portable ----------------------------------------------------------------


def test_runner_is_python37_syntax_and_imports_nothing_from_edgesparse() -> None:
    tree = ast.parse(RUNNER.read_text(), feature_version=(3, 7))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    third_party = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow"}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert "edgesparse" not in imported
    assert imported <= stdlib | third_party, imported - stdlib - third_party


def _find_python(version: str) -> str | None:
    """An installed interpreter of ``version`` (PATH or pyenv), or None."""
    pyenv = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python")))
    candidates = [f"python{version}", *pyenv]
    for c in candidates:
        try:
            proc = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if proc.returncode == 0 and proc.stdout.strip() == str(tuple(int(v) for v in version.split("."))):
            return c
    return None


def test_runner_runs_under_python37(tiny_tflite: dict[str, Path]) -> None:
    python = _find_python("3.7")
    if python is None:
        pytest.skip("no Python 3.7 interpreter on this machine (PATH or ~/.pyenv)")
    code, out = run("--describe", python=python)
    assert code == 0 and out["python"].startswith("3.7.")
    code, out = run(str(tiny_tflite["dense"]), "--runs", "2", python=python)
    assert (code, out.get("kind")) in ((0, None), (3, "no_runtime"))  # a bare 3.7 has no numpy: still JSON


def test_tflite_runtime_with_numpy1_gives_the_same_outputs(tiny_tflite: dict[str, Path]) -> None:
    from tests.pi import device_python

    python = device_python()  # skips (or fails in CI as root) with why
    code, device = run(str(tiny_tflite["int8"]), "--runs", "5", "--input", str(tiny_tflite["batch"]), python=python)
    assert code == 0, device
    assert device["runtime"]["name"] == "tflite_runtime" and int(device["numpy"].split(".")[0]) < 2
    host = run(str(tiny_tflite["int8"]), "--runs", "5", "--input", str(tiny_tflite["batch"]))[1]
    assert device["outputs"]["checksum"] == host["outputs"]["checksum"]
    assert device["outputs"]["argmax"] == host["outputs"]["argmax"]
    # tflite-runtime 2.14 lists its nodes too; its XNNPACK takes no int8 op (x86-64 wheel, measured)
    assert device["ops"]["total"] == host["ops"]["total"] == 9
    assert sum(device["ops"]["builtin"].values()) == 9 - device["ops"]["delegated"]
    dense = run(str(tiny_tflite["dense"]), "--runs", "2", python=python)[1]
    assert dense["ops"] == {"total": 5, "delegated": 5, "partitions": 1, "builtin": {}}


# ---- the CompiledModel API, longer windows and drift -------------------------------------------


def test_compiled_api_gives_the_interpreters_outputs(extra_models: dict[str, Any], tiny_tflite: dict[str, Path]) -> None:
    batch = str(extra_models["batch_6x6x2"])
    code, compiled = run(str(extra_models["int8_io"]), "--api", "compiled", "--runs", "25", "--input", batch)
    assert code == 0, compiled
    interp = run(str(extra_models["int8_io"]), "--runs", "3", "--input", batch)[1]
    assert compiled["api"] == "compiled" and compiled["resolver"] == "litert_cpu"
    assert interp["api"] == "interpreter" and interp["resolver"] == "xnnpack"
    assert isinstance(compiled["fully_accelerated"], bool)
    # int8 in and out: the float batch is quantized with the model's own scale and zero point both ways
    assert compiled["input"] == {"shape": [1, 6, 6, 2], "dtype": "int8"}
    assert compiled["outputs"]["checksum"] == interp["outputs"]["checksum"]
    assert compiled["runs"] == len(compiled["samples_ms"]) == 25 and compiled["latency_ms"]["median"] > 0
    code, dense = run(str(tiny_tflite["dense"]), "--api", "compiled", "--runs", "5", "--input",
                      str(tiny_tflite["batch"]))
    assert code == 0 and dense["outputs"]["count"] == 12


@pytest.mark.parametrize("args, needle", [(["--api", "compiled", "--resolver", "builtin"], "--resolver builtin"),
                                          (["--api", "tpu"], "invalid choice"),
                                          (["--min-seconds", "-1"], "--min-seconds")])
def test_api_and_window_arguments_are_checked(tiny_tflite: dict[str, Path], args: list[str], needle: str) -> None:
    code, out = run(str(tiny_tflite["dense"]), *args)
    assert code == 2 and out["kind"] == "bad_argument" and needle in out["error"]


def test_compiled_api_refuses_dynamic_shapes_with_the_fix(extra_models: dict[str, Any]) -> None:
    code, out = run(str(extra_models["dynamic"]), "--api", "compiled")
    assert code == 2 and out["kind"] == "dynamic_shape" and "--input-shape" in out["error"]
    code, out = run(str(extra_models["dynamic"]), "--api", "compiled", "--input-shape", "1,5,5,1")
    assert code == 2 and "--api interpreter" in out["error"]


def test_min_seconds_keeps_timing_past_runs(tiny_tflite: dict[str, Path]) -> None:
    code, out = run(str(tiny_tflite["dense"]), "--runs", "5", "--min-seconds", "0.3")
    assert code == 0 and out["min_seconds"] == 0.3
    # a tiny model takes well under a millisecond: 0.3 s of timing is far more than 5 runs
    assert out["runs"] == len(out["samples_ms"]) > 5
    assert sum(out["samples_ms"]) < 0.3 * 1000 + 50  # the window is not wildly overshot
    exact = run(str(tiny_tflite["dense"]), "--runs", "7")[1]
    assert exact["runs"] == 7 and exact["min_seconds"] == 0.0


def test_stability_reports_the_drift_of_chunk_medians() -> None:
    steady = runner_module.stability([1.0] * 50)
    assert steady == {"chunks": 5, "chunk_medians": [1.0] * 5, "drift_pct": 0.0}
    # the machine slows down halfway: the chunk medians show the step, drift = (2 - 1) / median 1.5
    slowed = runner_module.stability([1.0] * 50 + [2.0] * 50)
    assert slowed["chunk_medians"] == [1.0, 1.0, 1.5, 2.0, 2.0]
    assert slowed["drift_pct"] == pytest.approx(100 / 1.5)
    assert runner_module.stability([1.0] * 19) is None  # too few samples for five chunks


def test_runner_output_carries_stability(tiny_tflite: dict[str, Path]) -> None:
    out = run(str(tiny_tflite["dense"]), "--runs", "40")[1]
    st = out["stability"]
    assert st["chunks"] == 5 and len(st["chunk_medians"]) == 5 and st["drift_pct"] >= 0
    med = out["latency_ms"]["median"]
    assert st["drift_pct"] == pytest.approx((max(st["chunk_medians"]) - min(st["chunk_medians"])) / med * 100)


def test_paired_timing_compares_two_models_in_one_process(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    code, out = run(str(tiny_tflite["int8"]), "--paired", str(tiny_tflite["dense"]), "--runs", "100")
    assert code == 0, out
    p = out["paired"]
    assert p["reference"] == "dense.tflite" and p["blocks"] == 20 and p["runs_per_block"] == 5
    assert 0 < p["ratio_q1"] <= p["ratio_median"] <= p["ratio_q3"]
    assert p["median_ms"] > 0 and p["reference_median_ms"] > 0
    assert any("--paired" in n for n in out["notes"])
    # a model against itself lands inside the band export's balanced rule calls "not slower" (NOT_SLOWER, 1.03):
    # otherwise a conversion as fast as dense would be judged slower. Pairing cancels the machine's drift (measured
    # here: 0.989-1.008 over 12 repeats while unpaired latency drifted 15-30%), so the band holds without retries.
    from edgesparse.export.candidates import NOT_SLOWER

    same = run(str(tiny_tflite["dense"]), "--paired", str(tiny_tflite["dense"]), "--runs", "400")[1]["paired"]
    assert 1 / NOT_SLOWER <= same["ratio_median"] <= NOT_SLOWER, same
    code, out = run(str(tiny_tflite["dense"]), "--paired", str(tmp_path / "missing.tflite"))
    assert code == 4 and "--paired" in out["error"]
    assert run(str(tiny_tflite["dense"]), "--runs", "5")[1]["paired"] is None

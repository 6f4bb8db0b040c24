"""Deploy, the runner and profile with several inputs and outputs and with tasks other than classification.

Real tiny tf_keras models converted with ``edgesparse.export.convert.convert``, bundles written the way
``edgesparse.export`` writes them (model.tflite, export.json with the task, verify.npz from
``verify_arrays``), deployed to the ``local`` target (a folder on this machine, the real runner as a
subprocess on both sides). The two-input model's inputs are ``img`` and ``meta`` and its outputs ``cls``
and ``box``: the converter orders its tensors ``meta, img`` and ``box, cls``, so only feeding and reading
by name gives the Keras outputs. The labels are the Keras model's own predictions (``cls``: its top-1
class; ``box``: its values), so the device scores 100% / ~0 only when every output reaches its head:
swapping ``cls`` and ``box`` (same shape) would show as a wrong accuracy and a large mae.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgesparse.data.stream import Split
from edgesparse.device import runner as runner_module
from edgesparse.device.deploy import LEGACY_TASK, deploy
from edgesparse.errors import DeviceError
from edgesparse.export import verify_arrays
from edgesparse.task import OutputInfo, Task, resolve_task

RUNNER = Path(runner_module.__file__).resolve()
N = 12  # verification samples


def _runner(*args: str, python: str = sys.executable) -> dict[str, Any]:
    proc = subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-500:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _bundle(folder: Path, model: Any, x: Any, y: Any, task: Task | None, keras_out: Any) -> Path:
    """A bundle as edgesparse.export writes it (no task -> an export.json from before the task layer)."""
    from edgesparse.export.convert import convert

    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(convert(model, "none"))
    data = SimpleNamespace(test=Split(x, y, name="test"), task=task)
    np.savez_compressed(folder / "verify.npz", **verify_arrays(data, keras_out, N))  # type: ignore[arg-type]
    info: dict[str, Any] = {"name": folder.name, "quantization": "none"}
    if task is not None:
        info["task"] = task.to_json()
    (folder / "export.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four bundles: two inputs/two outputs, regression, binary, and an old single-output classifier."""
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    tmp = tmp_path_factory.mktemp("deploy_task")
    out: dict[str, Any] = {}

    img, meta = keras.Input((6, 6, 1), name="img"), keras.Input((3,), name="meta")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(img)), meta])
    multi = keras.Model([img, meta], [keras.layers.Dense(4, activation="softmax", name="cls")(h),
                                      keras.layers.Dense(4, name="box")(h)])
    x = {"img": rng.random((N, 6, 6, 1), dtype=np.float32), "meta": rng.random((N, 3), dtype=np.float32) * 4}
    k_cls, k_box = multi.predict([x["img"], x["meta"]], verbose=0)
    y = {"cls": k_cls.argmax(axis=1), "box": k_box}
    task = resolve_task(None, [OutputInfo("cls", (4,), "softmax"), OutputInfo("box", (4,), "linear")], y,
                        input_names=("img", "meta"))
    assert [hd.kind for hd in task.heads] == ["classification", "regression"]
    out["multi"] = _bundle(tmp / "multi", multi, x, y, task, {"cls": k_cls, "box": k_box})
    out["multi_keras"] = {"cls": k_cls, "box": k_box, "x": x}
    # quantization-aware: tfmot names the output layers quant_cls / quant_box, and the signature keeps those names
    qat = _tf.tfmot().quantization.keras.quantize_model(multi)
    q_cls, q_box = qat.predict([x["img"], x["meta"]], verbose=0)
    out["qat"] = _bundle(tmp / "qat", qat, x, {"cls": q_cls.argmax(axis=1), "box": q_box}, task,
                         {"cls": q_cls, "box": q_box})

    inp = keras.Input((5,), name="features")
    reg = keras.Model(inp, keras.layers.Dense(2, name="value")(keras.layers.Dense(8, activation="relu")(inp)))
    xr = rng.random((N, 5), dtype=np.float32)
    k_reg = reg.predict(xr, verbose=0)
    yr = k_reg + np.float32(0.25)  # every prediction 0.25 off: mae 0.25 on both sides
    task = resolve_task(None, [OutputInfo("value", (2,), "linear")], {"value": yr}, input_names=("features",))
    out["regression"] = _bundle(tmp / "regression", reg, xr, yr, task, k_reg)

    inp = keras.Input((5,), name="features")
    binary = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="prob")(inp))
    xb = rng.normal(size=(N, 5)).astype(np.float32)
    k_bin = binary.predict(xb, verbose=0)
    yb = (k_bin[:, 0] >= 0.5).astype(np.int64)
    yb[0] = 1 - yb[0]  # one wrong label: accuracy (N-1)/N on both sides
    task = resolve_task(None, [OutputInfo("prob", (1,), "sigmoid")], {"prob": yb}, input_names=("features",))
    assert task.kind == "binary"
    out["binary"] = _bundle(tmp / "binary", binary, xb, yb, task, k_bin)
    out["binary_accuracy"] = float(np.mean((k_bin[:, 0] >= 0.5) == yb))

    inp = keras.Input((8,), name="frames")
    auto = keras.Model(inp, keras.layers.Dense(8, name="reconstruction")(keras.layers.Dense(3)(inp)))
    xa = rng.random((N, 8), dtype=np.float32)
    ya = np.arange(N) % 2  # 0 normal, 1 anomalous
    xa[ya == 1] *= 3  # anomalies reconstruct worse
    task = resolve_task(None, [OutputInfo("reconstruction", (8,), "linear")], {"reconstruction": None},
                        input_names=("frames",), x_shape=(8,), has_test_labels=True)
    assert task.kind == "anomaly"
    k_auto = auto.predict(xa, verbose=0)
    out["anomaly"] = _bundle(tmp / "anomaly", auto, xa, ya, task, k_auto)
    out["anomaly_auc"] = task.evaluate(k_auto, ya, xa)["auc"]

    inp = keras.Input((4, 4, 1))
    clf = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp)))
    xc = rng.random((N, 4, 4, 1), dtype=np.float32)
    k_clf = clf.predict(xc, verbose=0)
    yc = rng.integers(0, 3, N)
    out["legacy"] = _bundle(tmp / "legacy", clf, xc, yc, None, k_clf)
    out["legacy_accuracy"] = float(np.mean(k_clf.argmax(axis=1) == yc))
    return out


def test_runner_feeds_and_reads_two_inputs_and_outputs_by_name(bundles: dict[str, Any], tmp_path: Path) -> None:
    """Keras order img, meta / cls, box; TFLite order meta, img / box, cls: by name the outputs are Keras's."""
    model, keras_out = bundles["multi"] / "model.tflite", bundles["multi_keras"]
    x = keras_out["x"]
    batch = tmp_path / "batch.npz"
    np.savez(batch, img=x["img"], meta=x["meta"])  # keyed by input name, in the Keras order
    saved = tmp_path / "out.npz"
    res = _runner(str(model), "--runs", "3", "--warmup", "1", "--input", str(batch), "--save-outputs", str(saved),
                  "--return-outputs")
    assert [i["name"] for i in res["inputs"]] == ["meta", "img"]  # the converter's alphabetical order
    assert sorted(res["output_names"]) == ["box", "cls"] and res["latency_ms"]["median"] > 0
    outs = res["outputs"]
    assert outs["count"] == N and sorted(outs["by_name"]) == ["box", "cls"] and "argmax" not in outs
    with np.load(saved) as z:
        for name in ("cls", "box"):
            np.testing.assert_allclose(z[name], keras_out[name], atol=1e-5)
            decoded = np.frombuffer(__import__("base64").b64decode(outs["by_name"][name]["float32_base64"]), "<f4")
            np.testing.assert_array_equal(decoded.reshape(N, 4), z[name])
            assert outs["by_name"][name]["shape"] == [N, 4]
    # verify.npz's own names (x_img, x_meta) are read too, and timing alone fills every input with random values
    verify_names = _runner(str(model), "--runs", "1", "--input", str(bundles["multi"] / "verify.npz"))
    assert verify_names["outputs"]["checksum"] == outs["checksum"]
    assert _runner(str(model), "--runs", "2")["outputs"] is None
    compiled = _runner(str(model), "--runs", "1", "--api", "compiled", "--input", str(batch))["outputs"]["by_name"]
    assert {n: e["checksum"] for n, e in compiled.items()} == {n: e["checksum"] for n, e in outs["by_name"].items()}


def test_runner_refuses_a_npy_batch_for_two_inputs_and_a_npy_path_for_two_outputs(bundles: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    model = str(bundles["multi"] / "model.tflite")
    one = tmp_path / "one.npy"
    np.save(one, np.zeros((2, 3), np.float32))
    proc = subprocess.run([sys.executable, str(RUNNER), model, "--input", str(one)], capture_output=True, text=True)
    err = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2 and "2 inputs (meta, img)" in err["error"] and ".npz" in err["error"]
    proc = subprocess.run([sys.executable, str(RUNNER), model, "--input", str(bundles["multi"] / "verify.npz"),
                           "--save-outputs", str(tmp_path / "o.npy")], capture_output=True, text=True)
    assert proc.returncode == 2 and "ending in .npz" in json.loads(proc.stdout.strip().splitlines()[-1])["error"]


def test_runner_tflite_runtime_214_reads_the_same_names(bundles: dict[str, Any]) -> None:
    """tflite-runtime 2.14 (Raspberry Pi OS's runtime) has signature runners: the same names, the same outputs."""
    from tests.pi import device_python

    python = device_python()
    if python is None:
        pytest.skip("no tflite-runtime device Python: run `bash .ci/system-deps.sh` or set EDGESPARSE_DEVICE_PYTHON")
    args = (str(bundles["multi"] / "model.tflite"), "--runs", "1", "--input", str(bundles["multi"] / "verify.npz"))
    device, host = _runner(*args, python=python), _runner(*args)
    assert device["runtime"]["name"] == "tflite_runtime"
    assert device["inputs"] == host["inputs"] and sorted(device["output_names"]) == ["box", "cls"]
    for name in ("cls", "box"):
        assert device["outputs"]["by_name"][name]["checksum"] == host["outputs"]["by_name"][name]["checksum"]


def test_deploy_two_inputs_two_outputs_compares_each_head_by_name(bundles: dict[str, Any], tmp_path: Path) -> None:
    res = deploy(bundles["multi"], "local", dest=str(tmp_path / "device"))
    assert res.samples == N and res.checksum_match and res.notes == []
    assert res.outputs["cls"]["kind"] == "classification" and res.outputs["cls"]["agreement"] == 1.0
    assert res.outputs["box"]["kind"] == "regression" and res.outputs["box"]["agreement"] is None
    assert res.outputs["box"]["max_abs_diff"] == 0.0 and res.agreement == 1.0
    # the labels are the Keras outputs: only outputs read by name score 100% and ~0
    assert res.device_metrics["cls/accuracy"] == 1.0 and res.device_metrics["box/mae"] < 1e-5
    assert res.device_metrics == res.host_metrics
    assert res.metric == "cls accuracy" and res.device_metric == 1.0 and res.task_source == "export.json"
    assert res.device_accuracy is None  # accuracy keys are for single-output classifiers
    assert "verify_x.npz" in res.files
    line = res.summary_line()
    assert "top-1 agreement with host 100.00%" in line and "max abs diff with host 0" in line
    assert "cls accuracy on device 100.00% (host 100.00%)" in line


def test_deploy_maps_a_qat_models_wrapper_names_to_its_heads(bundles: dict[str, Any], tmp_path: Path) -> None:
    names = _runner(str(bundles["qat"] / "model.tflite"), "--runs", "1")["output_names"]
    assert sorted(names) == ["quant_box", "quant_cls"]  # what the task calls box and cls
    res = deploy(bundles["qat"], "local", dest=str(tmp_path / "device"))
    assert sorted(res.device["runtime"]) == ["name", "version"] and sorted(res.outputs) == ["box", "cls"]
    assert res.device_metrics["cls/accuracy"] == 1.0 and res.device_metrics["box/mae"] < 0.05
    assert res.outputs["cls"]["agreement"] == 1.0 and res.checksum_match


def test_deploy_regression_names_its_metric_and_has_no_agreement(bundles: dict[str, Any], tmp_path: Path) -> None:
    res = deploy(bundles["regression"], "local", dest=str(tmp_path / "device"))
    assert res.agreement is None and res.checksum_match and res.max_abs_diff == 0.0
    assert res.metric == "mae" and res.device_metric == pytest.approx(0.25, abs=1e-5)
    assert res.device_metric == res.host_metric and "mse" in res.device_metrics
    assert res.device_accuracy is None and list(res.outputs) == ["value"]
    line = res.summary_line()
    assert "agreement" not in line and "mae on device 0.25" in line and "outputs identical: yes" in line


def test_deploy_binary_thresholds_and_scores_accuracy(bundles: dict[str, Any], tmp_path: Path) -> None:
    res = deploy(bundles["binary"], "local", dest=str(tmp_path / "device"))
    assert res.outputs["prob"]["kind"] == "binary" and res.agreement == 1.0 and res.checksum_match
    assert res.metric == "accuracy" and res.device_accuracy == res.device_metric == bundles["binary_accuracy"]
    assert res.device_accuracy == pytest.approx((N - 1) / N)
    assert "auc" in res.device_metrics and "thresholded agreement with host 100.00%" in res.summary_line()


def test_deploy_anomaly_scores_the_reconstruction_against_the_inputs(bundles: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    res = deploy(bundles["anomaly"], "local", dest=str(tmp_path / "device"))
    assert res.agreement is None and res.outputs["reconstruction"]["kind"] == "anomaly" and res.checksum_match
    assert res.metric == "auc" and res.device_metric == pytest.approx(bundles["anomaly_auc"], abs=1e-6)
    assert {"auc", "pauc", "reconstruction_mse"} <= set(res.device_metrics) and res.device_accuracy is None


def test_deploy_bundle_without_a_task_is_the_single_output_classifier_it_was(bundles: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    res = deploy(bundles["legacy"], "local", dest=str(tmp_path / "device"))
    assert res.task_source == LEGACY_TASK and res.files[:2] == ["model.tflite", "verify_x.npy"]
    assert res.samples == N and res.agreement == 1.0 and res.checksum_match and res.notes == []
    assert res.device_accuracy == res.host_accuracy == bundles["legacy_accuracy"]
    assert res.metric == "accuracy" and res.device_metric == res.device_accuracy
    line = res.summary_line()
    assert line.startswith(f"verification batch: {N} samples, top-1 agreement with host 100.00%, outputs identical: "
                           "yes, accuracy on device") and "max abs diff" not in line


def test_deploy_refuses_a_task_naming_other_outputs(bundles: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "mismatched"
    shutil.copytree(bundles["multi"], bundle)
    info = json.loads((bundle / "export.json").read_text())
    info["task"]["outputs"][1]["name"] = "boxes"
    (bundle / "export.json").write_text(json.dumps(info))
    with pytest.raises(DeviceError, match=r"named box, cls but export\.json's task names cls, boxes"):
        deploy(bundle, "local", dest=str(tmp_path / "device"))


def test_profile_times_a_model_with_two_inputs(bundles: dict[str, Any]) -> None:
    from edgesparse.profile.measure import profile

    report = profile([bundles["multi"] / "model.tflite"], runs=3, warmup=1)
    row = report.rows()[0]
    assert row["latency_ms"]["median"] > 0 and row["runs"] == 3
    assert [i["name"] for i in report.measurements[0].runner["inputs"]] == ["meta", "img"]

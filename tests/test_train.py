"""End-to-end training runs and their failure modes, on tiny real models and real data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import DataError, InterruptedRun, ModelError, RecipeError, TrainError
from edgesparse.recipe import validate_recipe
from edgesparse.run import train
from tests.conftest import ROOT, tiny_recipe, write_recipe


def test_summary_has_the_documented_keys(trained_run: Any) -> None:
    on_disk = json.loads((trained_run.run_dir / "summary.json").read_text())
    assert on_disk["schema_version"] == 2
    assert on_disk["task"]["kind"] == "classification" and on_disk["task"]["metric"] == "accuracy"
    assert on_disk["model"]["metric"] == on_disk["model"]["accuracy"] == on_disk["model"]["metrics"]["accuracy"]
    for path in ("baseline.accuracy", "baseline.metric", "model.metric", "tflite.metric", "task.direction", "baseline.tflite_bytes", "model.accuracy", "model.sparsity", "tflite.path",
                 "tflite.bytes", "tflite.gzip_bytes", "tflite.accuracy", "tflite.agreement", "versions.tensorflow",
                 "versions.tfmot", "sparsity.plan", "sparsity.achieved.layers", "quantization.mode", "timing.train_seconds",
                 "data.test", "training.replicas", "warnings"):
        node = on_disk
        for part in path.split("."):
            assert part in node, path
            node = node[part]
    assert on_disk["tflite"]["bytes"] == Path(trained_run.summary.tflite.path).stat().st_size
    # the typed summary reads back what was written
    from edgesparse.summary import read_summary

    assert read_summary(trained_run.run_dir) == trained_run.summary


def test_run_directory_contents(trained_run: Any) -> None:
    run = trained_run.run_dir
    for name in ("recipe.lock.yaml", "baseline.keras", "sparse.keras", "final.weights.h5", "history.csv", "state.json"):
        assert (run / name).exists(), name
    assert list((run / "logs").glob("sparsity/**/*")), "TensorBoard logs missing"
    assert list((run / "logs" / "pruning").glob("**/*tfevents*")), "pruning summaries missing"
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("phase,epoch")
    assert {line.split(",")[0] for line in history[1:]} == {"baseline", "sparsity", "quantization"}


def test_pruning_reaches_target_and_pqat_keeps_it(trained_run: Any) -> None:
    s = trained_run.summary
    assert s.sparsity is not None and s.sparsity.achieved.layers
    for layer, got in s.sparsity.achieved.layers.items():
        assert got >= (0.5 if layer == "logits" else 0.75) - 0.01, layer  # logits: conftest.LOGITS_HALF
    q = s.quantization
    assert q.mode == "pqat" and q.sparsity_preserved
    assert q.sparsity_before is not None and q.sparsity_after is not None
    assert q.sparsity_after >= q.sparsity_before - 0.01


def test_baseline_stays_dense(trained_run: Any) -> None:
    from edgesparse.run import load_model
    from edgesparse.train.sparsity import measure_sparsity

    dense = load_model(trained_run.run_dir / "baseline.keras")
    assert measure_sparsity(dense)["overall"] < 0.01


def test_tflite_is_smaller_and_verified(trained_run: Any) -> None:
    s = trained_run.summary
    tfl, model = s.tflite, s.model
    # a 3-epoch tiny CNN on digits (about 94%), pruned to 75% in 2 epochs + 1 PQAT epoch (about 50%): both far
    # above chance (10%), which a pipeline that scrambled or reset the weights would fall to
    assert s.baseline.accuracy >= 0.8 and model.accuracy >= 0.35
    assert tfl.bytes * 2 < s.baseline.tflite_bytes
    assert tfl.gzip_bytes < tfl.bytes
    assert tfl.agreement >= 0.95  # the int8 .tflite predicts what the Keras model predicts
    assert tfl.resolver in ("xnnpack", "builtin")
    assert tfl.densify_ops >= 1
    assert abs(tfl.accuracy - model.accuracy) * 100 <= 2.0
    # sparse_encoding auto, objective size: both encodings were made, verified and timed against dense.tflite;
    # the smaller was kept
    info = json.loads((Path(trained_run.summary.tflite.path).parent / "export.json").read_text())
    assert info["sparse_encoding_choice"]["requested"] == "auto" and info["objective"] == "size"
    pqat = [c for c in info["candidates"] if c["mode"] == "pqat"]
    assert {c["sparse_encoding"] for c in pqat} == {True, False}
    assert all(c["latency_ratio"] > 0 and c["resolver"] in ("xnnpack", "builtin") for c in pqat)
    chosen = [c for c in info["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["bytes"] == tfl.bytes == info["model"]["bytes"]
    assert chosen[0]["bytes"] == min(c["bytes"] for c in pqat) and chosen[0]["sparse_encoding"]


def test_schedule_steps_fall_inside_training(tmp_path: Path) -> None:
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.train.sparsity import plan_sparsity

    recipe = validate_recipe(tiny_recipe(tmp_path, sparsity={"start": 1, "end": 2, "epochs": 3, "frequency": 7}))
    data = load_dataset(recipe.data, 0)
    model = build_model(recipe.model, data.input_shape, 10)
    spe = int(np.ceil(len(data.x_train) / 64))
    plan = plan_sparsity(model, recipe.sparsity, spe)
    assert plan.begin_step == spe
    assert plan.end_step <= 2 * spe and (plan.end_step - plan.begin_step) % plan.frequency == 0
    assert plan.end_step < 3 * spe


def test_layer_overrides_and_block_pattern(tmp_path: Path) -> None:
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.train.sparsity import plan_sparsity

    recipe = validate_recipe(tiny_recipe(tmp_path, sparsity={
        "pattern": "block:1x16", "layers": [{"match": "^conv1$", "skip": True}, {"match": "logits", "final": 0.5}]}))
    data = load_dataset(recipe.data, 0)
    plan = plan_sparsity(build_model(recipe.model, data.input_shape, 10), recipe.sparsity, 10)
    by = {lp.name: lp for lp in plan.layers}
    assert not by["conv1"].prune and "skipped" in by["conv1"].note
    assert by["conv2"].pattern == "unstructured" and "2-D" in by["conv2"].note
    assert by["fc1"].pattern == "block:1x16" and by["fc1"].target == 0.75
    assert by["logits"].target == 0.5


def _run(tmp_path: Path, **sections: Any) -> Any:
    return train(validate_recipe(tiny_recipe(tmp_path, **sections)))


def test_labels_outside_model_outputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="5 outputs"):
        _run(tmp_path, model={"factory": "tests.factories:five_outputs"})


def test_data_shape_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\(8, 8, 1\).*\(16, 16, 1\)"):
        _run(tmp_path, model={"factory": "tests.factories:wrong_input"})


def test_model_without_prunable_layer(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, model={"factory": "tests.factories:no_prunable_layer"}, baseline={"epochs": 0})
    with pytest.raises(ModelError, match="no layer tfmot can prune"):
        train(validate_recipe(recipe))


def test_keras3_model_from_a_factory_is_translated(tmp_path: Path) -> None:
    from edgesparse.models import build_model

    recipe = validate_recipe(tiny_recipe(tmp_path, model={"factory": "tests.factories:keras3_model"}))
    model = build_model(recipe.model, (8, 8, 1), 10)
    assert type(model).__module__.startswith("tf_keras") and model._edgesparse_translation_diff <= 1e-5


def test_model_file_missing_or_not_keras(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        _run(tmp_path, model={"path": str(tmp_path / "missing.keras")})
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not a model")
    with pytest.raises(ModelError, match="not a Keras model"):
        _run(tmp_path, model={"path": str(bogus)})
    with pytest.raises(ModelError, match=r"\.keras or \.h5"):
        _run(tmp_path, model={"path": str(write_recipe(tmp_path, {}, "model.txt"))})


def test_lambda_layers_need_trust_code(tmp_path: Path) -> None:
    from tests.factories import with_lambda

    path = tmp_path / "lam.h5"
    with_lambda(str(path))
    with pytest.raises(ModelError, match="trust_code"):
        _run(tmp_path, model={"path": str(path)}, baseline={"epochs": 0}, sparsity=None, export=None)
    result = _run(tmp_path, model={"path": str(path), "trust_code": True},  # untrained: at chance, go on anyway
                  baseline={"epochs": 0, "on_broken": "warn"}, sparsity=None, export=None)
    s = result.summary
    assert s.baseline.params == 8 * 8 * 10 + 10  # the file's own Dense layer, loaded (not rebuilt)
    assert s.model.accuracy == s.baseline.accuracy  # no phase changed the trusted model
    assert s.sparsity is None and s.tflite is None


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecipeError, match="cannot write to the output directory"):
        _run(tmp_path, output_dir=str(blocker / "run"))


def test_sparsity_shortfall_fails_or_warns(tmp_path: Path) -> None:
    """A model whose kernels were not pruned (here: the dense model itself) is caught by the check."""
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.train.sparsity import check_sparsity, measure_sparsity, plan_sparsity

    recipe = validate_recipe(tiny_recipe(tmp_path))
    data = load_dataset(recipe.data, 0)
    dense = build_model(recipe.model, data.input_shape, 10)
    plan = plan_sparsity(dense, recipe.sparsity, 20)
    measured = measure_sparsity(dense, [lp.name for lp in plan.pruned])
    with pytest.raises(TrainError, match="short of the target"):
        check_sparsity(measured, plan, 0.01, "fail")
    warnings = check_sparsity(measured, plan, 0.01, "warn")
    assert len(warnings) == len(plan.pruned) and "target 75.0%" in warnings[0]


def test_regularization_and_int8_export(tmp_path: Path) -> None:
    result = _run(tmp_path, sparsity={"regularization": {"l1": 1e-5}},
                  quantization={"mode": "int8"}, export={"io": "int8"})
    s = result.summary
    assert s.tflite.bytes * 2 < s.baseline.tflite_bytes
    # int8 in and out: agreement next to accuracy (a collapsed model agrees with itself), scored on the test split
    assert s.model.accuracy > 0.5 and s.tflite.accuracy is not None, s.model  # 10 classes
    assert s.tflite.agreement >= 0.9 and abs(s.tflite.accuracy - s.model.accuracy) <= 0.05, s.tflite


def test_cli_interrupt_then_resume(tmp_path: Path) -> None:
    """Ctrl-C mid-run: exit 1, a message, no half-written model; --resume finishes the run."""
    recipe = tiny_recipe(tmp_path, baseline={"epochs": 40}, export=None)
    path = write_recipe(tmp_path, recipe)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    history = tmp_path / "run" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (history.exists() and history.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "baseline.keras").exists()
    assert not list((tmp_path / "run").glob(".*.keras*")), "temporary files left behind"
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resume: baseline phase continues from epoch " in done.stdout, done.stdout  # issue 9: say where
    rows = [r for r in (tmp_path / "run" / "history.csv").read_text().splitlines()[1:] if r.startswith("baseline")]
    assert len(rows) == 40  # resumed: every epoch once, none repeated


@pytest.mark.slow
def test_quickstart_recipe_end_to_end(tmp_path: Path) -> None:
    """The README's quickstart, exactly as shipped (about 40 s): verified, small and accurate."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "edgesparse.cli", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                           "-o", str(tmp_path / "run"), "--set", f"export.dir={tmp_path / 'bundle'}"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dense vs final" in proc.stdout
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["baseline"]["accuracy"] >= 0.97
    assert (s["baseline"]["accuracy"] - s["tflite"]["accuracy"]) * 100 <= 1.0
    assert s["baseline"]["tflite_bytes"] / s["tflite"]["bytes"] >= 14
    assert s["tflite"]["agreement"] >= 0.99
    # README quotes the kept file's paired latency: export.objective balanced keeps none slower than dense
    # (measured 0.39x for the pqat 1x16-block file; NOT_SLOWER is the measurement's noise)
    from edgesparse.export.candidates import NOT_SLOWER

    ratio = s["tflite"]["latency_ratio"]
    assert s["tflite"]["objective"] == "balanced" and ratio is not None and 0 < ratio <= NOT_SLOWER, s["tflite"]
    assert f"latency {ratio:.2f}x the dense float model's (paired" in " ".join(proc.stdout.split())


def test_headline_figures_are_read_through_the_pqat_wrappers(trained_run: Any) -> None:
    """QAT wrappers own the kernels and add quantizer ranges: all parameters are still counted once."""
    m = trained_run.summary.to_json()["model"]
    assert m["all_params"] == trained_run.summary.to_json()["baseline"]["params"]
    assert 0.9 < m["coverage"] <= 1.0
    assert m["sparsity_pruned_kernels"] >= 0.72  # 75% everywhere but the 320 logits weights at 50%
    assert m["sparsity_all_params"] <= m["sparsity_pruned_kernels"]


def test_cosine_schedule_decays_the_learning_rate_per_epoch(tmp_path: Path) -> None:
    """``optimizer.schedule: cosine``: epoch e of E trains at lr * (1 + cos(pi * e / E)) / 2, recorded per epoch."""
    import math

    from edgesparse.data import Dataset
    from edgesparse.recipe import OptimizerConfig
    from edgesparse import _tf
    from edgesparse.train import fit

    keras = _tf.keras()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 2, 64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    data = Dataset.from_arrays("toy", x, y, x[:16], y[:16], x[:16], y[:16], 2, [])
    seen: list[float] = []

    class Lr(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seen.append(float(keras.backend.get_value(self.model.optimizer.learning_rate)))

    cfg = OptimizerConfig(learning_rate=0.01, schedule="cosine")
    fit.run_phase("baseline", model, data, epochs=4, optimizer=cfg, batch_size=16, seed=0, run_dir=tmp_path,
                  history=fit.History(tmp_path / "h.csv"), resume=False, extra_callbacks=[Lr()])
    want = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert np.allclose(seen, want, rtol=1e-5), (seen, want)
    seen.clear()
    fit.run_phase("baseline", model, data, epochs=2, optimizer=OptimizerConfig(learning_rate=0.01), batch_size=16,
                  seed=0, run_dir=tmp_path, history=fit.History(tmp_path / "h2.csv"), resume=False,
                  extra_callbacks=[Lr()])
    constant = list(seen)
    assert np.allclose(constant, [0.01, 0.01])
    with pytest.raises(ValueError, match="schedule"):
        OptimizerConfig(schedule="step")  # type: ignore[arg-type]


# ---- options end to end through train(): each checked on what it must change -------------------------------


def _pruned_kernels(run_dir: Path, names: list[str]) -> dict[str, np.ndarray]:
    from edgesparse.run import load_model

    model = load_model(run_dir / "sparse.keras")
    return {n: model.get_layer(n).kernel.numpy() for n in names}


def test_l1_regularization_shrinks_the_kept_weights_against_the_same_run_without_it(tmp_path: Path) -> None:
    """``sparsity.regularization.l1``: the same seed, data and schedule with and without the penalty; with it the
    pruned layers' kept weights are clearly smaller (sum of |w|), and the model still learns."""
    runs = {}
    for name, reg in (("plain", None), ("l1", {"l1": 1e-2})):
        # Adam moves a weight by about the learning rate per step whatever the penalty: a strong l1 and a high
        # rate make its effect measurable in 3 epochs (at 1e-3 and 5e-4 it moved the FC kernel by 4%)
        sp: dict[str, Any] = {"final": 0.5, "epochs": 3, "optimizer": {"learning_rate": 0.003}}
        if reg:
            sp["regularization"] = reg
        runs[name] = _run(tmp_path / name, sparsity=sp, export=None)
    names = [lp["name"] for lp in runs["l1"].summary.to_json()["sparsity"]["plan"]["layers"] if lp["prune"]]
    assert names
    norms = {k: {n: float(np.abs(w).sum()) for n, w in _pruned_kernels(r.run_dir, names).items()}
             for k, r in runs.items()}
    # the baseline is the same in both runs: only the penalty differs
    assert runs["l1"].summary.baseline.accuracy == runs["plain"].summary.baseline.accuracy
    # measured: fc1 (8,192 weights) 152 vs 409, conv2 0.80x, logits 0.84x; conv1's 36 input weights, which the
    # data pulls hardest, are not smaller
    total = {k: sum(v.values()) for k, v in norms.items()}
    assert total["l1"] < 0.7 * total["plain"] and norms["l1"]["fc1"] < 0.6 * norms["plain"]["fc1"], norms
    # the penalty is part of the training loss the history records
    loss = {k: [float(r.split(",")[2]) for r in (v.run_dir / "history.csv").read_text().splitlines()[1:]
                if r.startswith("sparsity")] for k, v in runs.items()}
    assert all(a > b for a, b in zip(loss["l1"], loss["plain"], strict=True)), loss
    assert runs["l1"].summary.model.accuracy > 0.3, runs["l1"].summary.model  # 10 classes: it still learns


def test_2_by_4_pattern_is_read_back_from_the_exported_tflite(tmp_path: Path) -> None:
    """``pattern: {m_by_n: [2, 4]}``: every group of 4 consecutive inputs of a pruned kernel holds at most 2
    non-zeros in the exported .tflite's tensor (decoded by edgesparse.tflite), and the file verifies."""
    from edgesparse.tflite import inspect_tflite

    result = _run(tmp_path, sparsity={"pattern": {"m_by_n": [2, 4]}, "final": 0.5})
    s = result.summary
    plan = {lp["name"]: lp for lp in s.to_json()["sparsity"]["plan"]["layers"]}
    two_four = [n for n, lp in plan.items() if lp["prune"] and lp["pattern"] == "m_by_n:2x4"]
    assert set(two_four) == {"conv2", "fc1", "logits"}, plan
    # conv1 has one input channel, no group of 4: pruned unstructured and saying why (tfmot would prune nothing)
    conv1 = plan["conv1"]
    assert conv1["prune"] and conv1["pattern"] == "unstructured" and "groups of 4" in conv1["note"], conv1
    info = inspect_tflite(s.tflite.path)
    checked = []
    for w in info.weights:
        layer = next((n for n in two_four if f"/{n}/" in w.name or w.name.startswith(f"{n}/")), None)
        if layer is None or w.role != "weight":
            continue
        arr = info.arrays[w.tensor_index]
        groups = (arr.reshape(*arr.shape[:-1], arr.shape[-1] // 4, 4) != 0).sum(axis=-1)  # TFLite: inputs last
        assert groups.max() <= 2, (w.name, groups.max())
        assert w.sparsity >= 0.5 - 1e-6, (w.name, w.sparsity)
        checked.append(layer)
    assert set(checked) == set(two_four), ([w.name for w in info.weights], two_four)
    assert s.tflite.accuracy is not None and s.tflite.agreement is not None and s.tflite.agreement >= 0.99
    assert abs(s.tflite.accuracy - s.model.accuracy) <= 0.01


def test_policy_xnnpack_prunes_only_what_xnnpack_runs_sparse_and_the_export_qualifies(tmp_path: Path) -> None:
    """``policy: xnnpack`` on a model tfmot's PruneForLatencyOnXNNPack accepts: the 1x1 convolutions are pruned,
    the stem and classifier skipped by the policy; the float .tflite passes XNNPACK's sparse-inference check, runs
    on XNNPACK and computes the Keras model's outputs. (This small model does not learn the shapes in a few
    epochs, so accuracy is not the point; the float outputs must match to 1e-4.)"""
    from edgesparse.tflite import footprint

    result = _run(tmp_path, data={"builtin": "shapes", "image_size": 16, "num_classes": 4, "samples_per_class": 60,
                                  "batch_size": 32},
                  model={"factory": "tests.factories:xnnpack_mobile"},
                  baseline={"epochs": 1, "on_broken": "warn"},  # at chance after 1 epoch: the health check warns
                  sparsity={"policy": "xnnpack", "final": 0.8}, export={"sparse_encoding": True, "objective": "size"})
    s = result.summary
    plan = {lp["name"]: lp for lp in s.to_json()["sparsity"]["plan"]["layers"]}
    assert plan["expand"]["prune"] and plan["project"]["prune"], plan
    for name in ("stem", "logits"):
        assert not plan[name]["prune"] and plan[name]["note"] == "skipped by policy xnnpack", plan[name]
    assert not plan["depthwise"]["prune"] and plan["depthwise"]["note"].startswith("not prunable")
    for name in ("expand", "project"):
        assert s.sparsity is not None and s.sparsity.achieved.layers[name] >= 0.79
    check = footprint(s.tflite.path).xnnpack_sparse
    assert check["eligible"], check["reasons"]
    assert s.tflite.resolver == "xnnpack" and s.tflite.densify_ops and s.tflite.densify_ops >= 2
    assert s.tflite.max_abs_diff is not None and s.tflite.max_abs_diff <= 1e-4, s.tflite


@pytest.mark.parametrize("mode", ["qat", "dynamic", "float16"])
def test_quantization_mode_through_train_exports_that_mode_and_verifies(tmp_path: Path, mode: str) -> None:
    """``quantization.mode`` qat / dynamic / float16 end to end: the kept file is in that mode (its weights' dtype
    read back from the .tflite), verified against the Keras model, and the model learned."""
    from edgesparse.tflite import inspect_tflite

    quant: dict[str, Any] = {"mode": mode, "epochs": 1} if mode == "qat" else {"mode": mode}
    # objective size: keep the mode's own conversion (balanced may fall back to float32 when it is not faster)
    s = _run(tmp_path, quantization=quant, export={"objective": "size"}).summary
    assert s.tflite is not None and s.tflite.quantization == mode
    info = inspect_tflite(s.tflite.path)
    # dynamic range quantization leaves tensors under 1,024 elements float (the 32x10 logits kernel)
    kernels = [w for w in info.weights if w.role == "weight" and len(w.shape) >= 2
               and (mode != "dynamic" or w.elements >= 1024)]
    assert {t.dtype for t in info.inputs} == {"float32"} and kernels
    want = {"float16": "float16", "dynamic": "int8", "qat": "int8"}[mode]
    assert {w.dtype for w in kernels} == {want}, [(w.name, w.dtype) for w in kernels]
    if mode == "qat":  # integer compute: activations quantized inside the model
        assert info.op_counts.get("QUANTIZE", 0) >= 1
    else:  # float compute: no quantized activations
        assert "QUANTIZE" not in info.op_counts
    assert s.tflite.bytes * (1.5 if mode == "float16" else 2) < s.baseline.tflite_bytes
    assert s.model.accuracy > 0.3, s.model  # 10 classes; 75% pruned in 2 epochs (about 50%)
    assert s.tflite.accuracy is not None and s.tflite.agreement is not None
    assert abs(s.tflite.accuracy - s.model.accuracy) <= (0.01 if mode == "float16" else 0.03), s.tflite
    assert s.tflite.agreement >= (0.99 if mode == "float16" else 0.95), s.tflite
    if mode == "float16":
        assert s.tflite.max_abs_diff is not None and s.tflite.max_abs_diff < 1e-2


def _weight_scales(path: str) -> dict[str, int]:
    """How many int8 scales each int8 weight tensor of a .tflite has (read by LiteRT)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path)
    return {d["name"]: len(d["quantization_parameters"]["scales"]) for d in interp.get_tensor_details()
            if d["dtype"] == np.int8 and len(d["shape"]) >= 2 and len(d["quantization_parameters"]["scales"])
            and not d["name"].startswith("serving_default")}


def test_per_channel_auto_with_objective_size_keeps_the_smaller_per_tensor_file(tmp_path: Path) -> None:
    """export.per_channel auto, objective size, int8: each verified per-channel conversion is converted again with one
    weight scale per tensor; the smallest verified file is kept, and its weight tensors really have one scale each
    (read back by LiteRT), 12 bytes less per output channel than the per-channel file of the same encoding."""
    s = _run(tmp_path, quantization={"mode": "int8"}, export={"objective": "size"}).summary
    assert s.tflite is not None and s.tflite.quantization == "int8"
    info = json.loads((Path(s.tflite.bundle) / "export.json").read_text())
    per_channel = {c["sparse_encoding"]: c for c in info["candidates"] if c["per_channel"]}
    per_tensor = {c["sparse_encoding"]: c for c in info["candidates"] if not c["per_channel"]}
    assert set(per_tensor) == {enc for enc, c in per_channel.items() if c["rejected"] is None} and per_tensor
    for enc, c in per_tensor.items():
        assert c["bytes"] < per_channel[enc]["bytes"] and "per-tensor scales" in c["label"], c
        assert "export.per_channel: auto" in c["tried_because"]
    chosen = next(c for c in info["candidates"] if c["chosen"])
    assert chosen["bytes"] == min(c["bytes"] for c in info["candidates"] if c["rejected"] is None)
    assert info["per_channel"] == chosen["per_channel"]
    assert not chosen["per_channel"], info["candidates"]  # on this CNN per-tensor scales keep int8's accuracy
    scales = _weight_scales(s.tflite.path)
    assert scales and set(scales.values()) == {1}, scales
    assert abs(s.tflite.accuracy - s.model.accuracy) <= 0.03, s.tflite


def test_per_channel_options_follow_the_setting_objective_and_budget() -> None:
    from edgesparse.export import per_channel_options
    from edgesparse.recipe import ExportConfig

    def opts(mode: str = "int8", budget: int | None = None, **cfg: Any) -> tuple[bool, ...]:
        return per_channel_options(ExportConfig(**cfg), mode, budget)

    assert opts(objective="size") == (True, False)
    assert opts(objective="balanced") == opts(objective="latency") == (True,)
    assert opts(objective="size", budget=50_000) == (True,)  # the budget is planned on per-channel conversions
    assert opts(objective="balanced", per_channel=False) == (False,)
    assert opts(objective="size", per_channel=True) == (True,)
    assert opts("int16x8", objective="size") == opts("qat", objective="size") == (True,)


@pytest.mark.parametrize(("sections", "match"), [
    ({"quantization": {"mode": "qat"}}, "per_channel: false.*int8, not qat"),
    ({"quantization": {"mode": "int8", "keep_float": ["fc"]}}, "does not go with quantization.keep_float"),
    ({"quantization": {"mode": "int8", "keep_float": "auto"}}, "does not go with quantization.keep_float"),
    ({"quantization": {"mode": "int8"}, "budget": 20000}, "does not go with a size budget"),
])
def test_per_tensor_scales_where_they_would_be_ignored_are_refused(tmp_path: Path, sections: dict[str, Any],
                                                                   match: str) -> None:
    budget = sections.pop("budget", None)
    recipe = tiny_recipe(tmp_path, export={"per_channel": False}, **sections)
    if budget is not None:
        recipe["sparsity"].pop("final")
        recipe["sparsity"]["target"] = {"bytes": budget}
    with pytest.raises(RecipeError, match=match):
        validate_recipe(recipe)

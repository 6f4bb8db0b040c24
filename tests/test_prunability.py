"""The fastest Keras applications of benchmarks/prunability.py, in both flavours, as tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
def test_mobilenet_v3_small_prunes_exports_and_verifies(tmp_path: Path, flavour: str) -> None:
    from benchmarks.prunability import run_one

    row = run_one("MobileNetV3Small", flavour, tmp_path)
    assert row["passed"], row["reason"]
    assert row["coverage"] > 0.5 and row["sparsity_all"] > 0.25
    assert row["sparse_bytes"] < row["dense_bytes"]
    if flavour == "keras3":
        assert row["translation_diff"] <= 1e-5 and row["keras3_back"] <= 1e-5

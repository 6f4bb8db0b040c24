"""edgesparse: a Keras model to a small, fast, verified sparse TFLite model for edge CPUs.

The public API (imported lazily, so ``import edgesparse`` stays light and never loads TensorFlow)::

    from edgesparse import load_recipe, train, export, profile, deploy, sweep, inspect_tflite

    recipe = load_recipe("recipes/quickstart.yaml", ["baseline.epochs=5"])
    result = train(recipe, run_dir="runs/api")        # RunResult: run_dir, summary (RunSummary), warnings
    print(result.summary.tflite.bytes, result.summary.model.accuracy)
    report = profile([result.run_dir], runs=50)        # ProfileReport
    print(inspect_tflite(result.summary.tflite.path).densify_ops)

Five API names are also the names of modules (``train``, ``export``, ``profile``, ``sweep``, ``analyze``):
on this package they always mean the functions; import the subpackages' modules by their full
name (``from edgesparse.train import sparsity``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from edgesparse.analyze import SensitivityReport, analyze
    from edgesparse.check import check_recipe
    from edgesparse.device.deploy import DeployResult, deploy
    from edgesparse.export import ExportResult
    from edgesparse.profile.measure import ProfileReport, profile
    from edgesparse.quant_analysis import QuantizationReport, analyze_quantization
    from edgesparse.recipe import Recipe, load_recipe
    from edgesparse.run import LoadedRun, RunResult, export, load_run, train
    from edgesparse.summary import RunSummary, read_summary
    from edgesparse.sweep import SweepResult, sweep
    from edgesparse.tflite import Footprint, ModelInspection, footprint, inspect_tflite

_API = {
    "analyze": "edgesparse.analyze",
    "SensitivityReport": "edgesparse.analyze",
    "analyze_quantization": "edgesparse.quant_analysis",
    "QuantizationReport": "edgesparse.quant_analysis",
    "load_recipe": "edgesparse.recipe",
    "check_recipe": "edgesparse.check",
    "Recipe": "edgesparse.recipe",
    "train": "edgesparse.run",
    "export": "edgesparse.run",
    "load_run": "edgesparse.run",
    "RunResult": "edgesparse.run",
    "LoadedRun": "edgesparse.run",
    "RunSummary": "edgesparse.summary",
    "read_summary": "edgesparse.summary",
    "ExportResult": "edgesparse.export",
    "inspect_tflite": "edgesparse.tflite",
    "footprint": "edgesparse.tflite",
    "Footprint": "edgesparse.tflite",
    "ModelInspection": "edgesparse.tflite",
    "profile": "edgesparse.profile.measure",
    "ProfileReport": "edgesparse.profile.measure",
    "deploy": "edgesparse.device.deploy",
    "DeployResult": "edgesparse.device.deploy",
    "sweep": "edgesparse.sweep",
    "SweepResult": "edgesparse.sweep",
}

__all__ = [
    "DeployResult",
    "ExportResult",
    "Footprint",
    "LoadedRun",
    "ModelInspection",
    "ProfileReport",
    "QuantizationReport",
    "Recipe",
    "RunResult",
    "RunSummary",
    "SensitivityReport",
    "SweepResult",
    "__version__",
    "analyze",
    "analyze_quantization",
    "check_recipe",
    "deploy",
    "export",
    "footprint",
    "inspect_tflite",
    "load_recipe",
    "load_run",
    "profile",
    "read_summary",
    "sweep",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgesparse' has no attribute '{name}'")


class _Package(types.ModuleType):
    """Keeps the API functions ``train``/``export``/``profile``/``sweep`` from being replaced.

    Importing a subpackage sets it as an attribute of its parent; for the four subpackages named
    like API functions that would turn ``edgesparse.train`` from the function into the module
    depending on import order. The subpackages stay importable by their full name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""edgesparse: a Keras model to a small, fast, verified sparse TFLite model for edge CPUs.

The public API is imported lazily so ``import edgesparse`` stays light (no TensorFlow)::

    from edgesparse import load_recipe, train, export_model, profile, deploy
    recipe = load_recipe("recipes/quickstart.yaml")
    result = train(recipe)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": ("edgesparse.recipe", "load_recipe"),
    "Recipe": ("edgesparse.recipe", "Recipe"),
    "check_recipe": ("edgesparse.check", "check_recipe"),
    "train": ("edgesparse.train.pipeline", "train"),
    "export_model": ("edgesparse.export", "export_run"),
    "inspect_tflite": ("edgesparse.export.inspect", "inspect_tflite"),
    "profile": ("edgesparse.profile.measure", "profile"),
    "deploy": ("edgesparse.device.deploy", "deploy"),
    "footprint": ("edgesparse.profile.footprint", "footprint"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgesparse' has no attribute '{name}'")

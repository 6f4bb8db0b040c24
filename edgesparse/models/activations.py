"""Activations that Keras 3 has and tf_keras (Keras 2) lacks, written for tf_keras.

Keras 3 models (MobileNetV3's ``hard_silu``/``hard_swish``, Keras 3's ``hard_sigmoid``, whose formula
differs from Keras 2's) are translated to tf_keras with these. They are registered as serializable
objects under the ``edgesparse>`` prefix, so a translated model saves to ``.keras`` and loads back in
any process that imports edgesparse (``_tf.keras()`` registers them).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

#: Keras 3 activation name -> the tf_keras identifier that computes the same function.
KERAS3_TO_TF_KERAS = {
    "hard_silu": "edgesparse>hard_silu",
    "hard_swish": "edgesparse>hard_silu",
    "hard_sigmoid": "edgesparse>hard_sigmoid",
}
#: The reverse direction (tf_keras identifier -> Keras 3 name).
TF_KERAS_TO_KERAS3 = {"edgesparse>hard_silu": "hard_silu", "edgesparse>hard_sigmoid": "hard_sigmoid"}

_registered = False


def register(tf_keras: ModuleType) -> None:
    """Register the activations with tf_keras (idempotent)."""
    global _registered
    if _registered:
        return

    def hard_sigmoid(x: Any) -> Any:
        """Keras 3's hard sigmoid: ``relu6(x + 3) / 6``."""
        import tensorflow

        return tensorflow.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def hard_silu(x: Any) -> Any:
        """Hard SiLU (hard swish): ``x * relu6(x + 3) / 6``."""
        import tensorflow

        return x * (tensorflow.nn.relu6(x + 3.0) * (1.0 / 6.0))

    for fn in (hard_sigmoid, hard_silu):
        tf_keras.saving.register_keras_serializable(package="edgesparse", name=fn.__name__)(fn)
    _registered = True

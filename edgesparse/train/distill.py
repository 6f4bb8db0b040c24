"""Knowledge distillation: the dense baseline teaches the sparse (and quantization-aware) model.

Recipe (top level, off when absent)::

    distillation:
      weight: 0.5                         # w: share of the distillation term
      temperature: 4.0                    # T
      phases: [sparsity, quantization]    # which training phases distil (default: all that train)

Every training step minimises::

    (1 - w) * CE(y, student) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

on logits (for models ending in a softmax, the log of the probabilities: softmax(log p / T) equals
softmax(logits / T)), plus the model's own regularisation losses. The T^2 factor keeps the
gradient scale of the soft term independent of T (Hinton et al., 2015).

Why the student keeps its identity: tfmot's ``UpdatePruningStep`` and ``PruningSummaries``, the
run's per-epoch sparsity column and ``BackupAndRestore`` all look at the model being fit. A wrapper
model holding student and teacher would hide the pruning wrappers from them and put the teacher's
weights in the checkpoints. So :func:`compile_for_distillation` compiles the student itself and
replaces only its ``compute_loss`` (the hook tf_keras' ``train_step``/``test_step`` call), on that
instance; the teacher is held in a closure, so it is neither trained, tracked nor checkpointed.
"""

from __future__ import annotations

from typing import Any

from edgesparse import _tf
from edgesparse.errors import ModelError
from edgesparse.recipe import DistillationConfig, OptimizerConfig
from edgesparse.train.compile import compile_model, outputs_probabilities

_EPS = 1e-7


def teacher_for(cfg: DistillationConfig | None, phase: str, dense: Any) -> Any | None:
    """The teacher of ``phase``: the dense model when the recipe distils in that phase, else None."""
    if cfg is None or (cfg.phases is not None and phase not in cfg.phases):
        return None
    return dense


def _logits(model: Any, outputs: Any) -> Any:
    """Logits of ``outputs`` (the log of softmax probabilities, which differs by a constant per row)."""
    tf = _tf.tf()
    outputs = tf.cast(outputs, tf.float32)
    if outputs_probabilities(model):
        return tf.math.log(tf.clip_by_value(outputs, _EPS, 1.0))
    return outputs


def distillation_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T^2 * mean over the batch of KL(softmax(teacher/T) || softmax(student/T))``."""
    tf = _tf.tf()
    t = float(temperature)
    p_teacher = tf.nn.softmax(teacher_logits / t, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return (t * t) * tf.reduce_mean(kl)


def compile_for_distillation(student: Any, teacher: Any, cfg: DistillationConfig, optimizer: OptimizerConfig) -> None:
    """Compile ``student`` so that ``fit`` minimises the distillation loss against ``teacher``.

    The reported ``loss`` (and ``val_loss``) is the whole objective; ``accuracy`` is the student's.
    Works on plain, pruning-wrapped (tfmot ``PruneLowMagnitude``) and QAT/PQAT models; callbacks see
    the student itself. Undo with :func:`remove_distillation`.

    Args:
        student: The model to train (a tf_keras model, possibly wrapped by tfmot).
        teacher: A trained model with the same input and number of outputs; never updated.
        cfg: Weight and temperature.
        optimizer: The phase's optimizer settings.

    Raises:
        ModelError: teacher and student disagree on input shape or number of outputs.
    """
    if tuple(teacher.input_shape[1:]) != tuple(student.input_shape[1:]) or \
            teacher.output_shape[-1] != student.output_shape[-1]:
        raise ModelError(
            f"distillation: the teacher '{teacher.name}' maps {tuple(teacher.input_shape[1:])} to "
            f"{teacher.output_shape[-1]} outputs but the student '{student.name}' maps "
            f"{tuple(student.input_shape[1:])} to {student.output_shape[-1]}; they must match."
        )
    compile_model(student, optimizer, loss_weight=1.0 - cfg.weight)
    weight, temperature = float(cfg.weight), float(cfg.temperature)

    def compute_loss(x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None) -> Any:
        soft = distillation_term(_logits(student, y_pred), _logits(teacher, teacher(x, training=False)),
                                 temperature)
        # compiled_loss adds the "regularisation" list to (1 - w) * CE and its loss tracker records
        # the sum: the logged loss is the whole objective.
        return student.compiled_loss(y, y_pred, sample_weight,
                                     regularization_losses=[*student.losses, weight * soft])

    # An instance attribute shadows Model.compute_loss for this student only (see the module doc).
    object.__setattr__(student, "compute_loss", compute_loss)


def remove_distillation(student: Any) -> None:
    """Restore the model's own ``compute_loss`` (no-op when it does not distil)."""
    if "compute_loss" in vars(student):  # the instance attribute set above shadows the class's method
        object.__delattr__(student, "compute_loss")

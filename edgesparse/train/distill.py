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
gradient scale of the soft term independent of T (Hinton et al., 2015). What the soft term is depends
on the task (:mod:`edgesparse.task`), per output: classification the KL above; binary and multilabel the
KL of the Bernoulli distributions ``sigmoid(z / T)``, per unit, averaged; regression and anomaly the mean
squared difference to the teacher's outputs (no temperature). Several outputs: the heads' terms
weighted by their loss weights.

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
from edgesparse.task import Head, Task
from edgesparse.train.compile import compile_model, outputs_probabilities

_EPS = 1e-7


def teacher_for(cfg: DistillationConfig | None, phase: str, dense: Any) -> Any | None:
    """The teacher of ``phase``: the dense model when the recipe distils in that phase, else None."""
    if cfg is None or (cfg.phases is not None and phase not in cfg.phases):
        return None
    return dense


def _logits(model: Any, outputs: Any, probabilities: bool | None = None) -> Any:
    """Logits of ``outputs`` (the log of softmax probabilities, which differs by a constant per row)."""
    tf = _tf.tf()
    outputs = tf.cast(outputs, tf.float32)
    if outputs_probabilities(model) if probabilities is None else probabilities:
        return tf.math.log(tf.clip_by_value(outputs, _EPS, 1.0))
    return outputs


def _sigmoid_logits(outputs: Any, probabilities: bool) -> Any:
    tf = _tf.tf()
    outputs = tf.cast(outputs, tf.float32)
    if probabilities:
        p = tf.clip_by_value(outputs, _EPS, 1.0 - _EPS)
        return tf.math.log(p) - tf.math.log(1.0 - p)
    return outputs


def bernoulli_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T^2 * mean KL(Bernoulli(sigmoid(teacher/T)) || Bernoulli(sigmoid(student/T)))`` over units and batch."""
    tf = _tf.tf()
    t = float(temperature)
    pt = tf.sigmoid(teacher_logits / t)
    log_pt, log_1pt = tf.math.log_sigmoid(teacher_logits / t), tf.math.log_sigmoid(-teacher_logits / t)
    log_ps, log_1ps = tf.math.log_sigmoid(student_logits / t), tf.math.log_sigmoid(-student_logits / t)
    kl = pt * (log_pt - log_ps) + (1.0 - pt) * (log_1pt - log_1ps)
    return (t * t) * tf.reduce_mean(kl)


def head_term(head: Head, student_out: Any, teacher_out: Any, temperature: float) -> Any:
    """The soft term of one output: KL for classes (per pixel for segmentation), MSE to the teacher's outputs
    otherwise."""
    tf = _tf.tf()
    if head.kind == "classification" or (head.kind == "segmentation" and head.units > 1):
        probs = not head.logits
        return distillation_term(_logits(None, student_out, probs), _logits(None, teacher_out, probs), temperature)
    if head.kind in ("binary", "multilabel", "segmentation"):  # a one-channel mask: per-pixel Bernoulli
        probs = not head.logits
        return bernoulli_term(_sigmoid_logits(student_out, probs), _sigmoid_logits(teacher_out, probs), temperature)
    return tf.reduce_mean(tf.square(tf.cast(student_out, tf.float32) - tf.cast(teacher_out, tf.float32)))


def _soft_term(task: Task | None, student: Any, teacher: Any, y_pred: Any, x: Any, temperature: float) -> Any:
    t_pred = teacher(x, training=False)
    if task is None:
        return distillation_term(_logits(student, y_pred), _logits(teacher, t_pred), temperature)
    if not task.multi_output:
        return head_term(task.heads[0], y_pred, t_pred, temperature)
    s_out, t_out = _as_list(y_pred, task), _as_list(t_pred, task)
    total = sum(h.weight for h in task.heads)
    return sum(h.weight / total * head_term(h, s, t, temperature) for h, s, t in zip(task.heads, s_out, t_out))


def _as_list(out: Any, task: Task) -> list[Any]:
    if isinstance(out, dict):
        return [out[h.name] for h in task.heads]
    return list(out)


def distillation_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T^2 * mean over the batch of KL(softmax(teacher/T) || softmax(student/T))``."""
    tf = _tf.tf()
    t = float(temperature)
    p_teacher = tf.nn.softmax(teacher_logits / t, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
    return (t * t) * tf.reduce_mean(kl)


def compile_for_distillation(student: Any, teacher: Any, cfg: DistillationConfig, optimizer: OptimizerConfig,
                             task: Task | None = None) -> None:
    """Compile ``student`` so that ``fit`` minimises the distillation loss against ``teacher``.

    The reported ``loss`` (and ``val_loss``) is the whole objective; ``accuracy`` is the student's.
    Works on plain, pruning-wrapped (tfmot ``PruneLowMagnitude``) and QAT/PQAT models; callbacks see
    the student itself. Undo with :func:`remove_distillation`.

    Args:
        student: The model to train (a tf_keras model, possibly wrapped by tfmot).
        teacher: A trained model with the same input and number of outputs; never updated.
        cfg: Weight and temperature.
        optimizer: The phase's optimizer settings.
        task: The data's task (picks each output's soft term); None: a softmax/logits classifier.

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
    compile_model(student, optimizer, task, loss_weight=1.0 - cfg.weight)
    weight, temperature = float(cfg.weight), float(cfg.temperature)

    def compute_loss(x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None) -> Any:
        soft = _soft_term(task, student, teacher, y_pred, x, temperature)
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

"""Knowledge distillation: train a (pruned) student to match a dense teacher as well as the labels.

`distillation_loss` is the loss, a pure function of labels and the two models' outputs;
`Distiller` is a `keras.Model` that trains its student with it. Pruning works unchanged
inside it: `Distiller(prune_low_magnitude(model, ...), teacher=model).fit(...,
callbacks=[UpdatePruningStep()])` finds the student's pruning wrappers as it finds those
of any nested model, and `strip_pruning(distiller.student)` is the pruned model.

The loss is Hinton et al.'s (2015):

    (1 - alpha) * CE(labels, student) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

The T^2 keeps the soft term's gradients at the scale of the hard term's whatever the
temperature T, so alpha weighs the two terms alone.
"""

import keras
from keras import ops

DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 4.0


def _check(alpha, temperature):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the teacher's term). "
                         f"Received: alpha={alpha!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number (1: the models' own softmax; "
                         f"higher: softer targets). Received: temperature={temperature!r}")


def _log_probs(outputs, from_logits):
    """Log-probabilities of `outputs`: log_softmax of logits, or the log of probabilities.

    The log of a softmax's probabilities differs from its logits by one constant per
    example, which the tempered softmax below cancels: a model ending in a softmax is
    distilled exactly as the same model without it.
    """
    outputs = ops.cast(outputs, "float32")
    if from_logits:
        return ops.log_softmax(outputs, axis=-1)
    return ops.log(ops.clip(outputs, 1e-7, 1.0))


def distillation_loss(labels, student_outputs, teacher_outputs, alpha=DEFAULT_ALPHA,
                      temperature=DEFAULT_TEMPERATURE, from_logits=True):
    """Per-example distillation loss (shape `[batch]`), in `keras.ops` (every backend).

    Args:
      labels: class indices `[batch]` (or `[batch, 1]`), or one-hot `[batch, classes]`.
      student_outputs, teacher_outputs: `[batch, classes]` logits, or probabilities when
        `from_logits=False` (both models).
      alpha: weight of the teacher's term, in [0, 1]; 0 is plain cross-entropy.
      temperature: softens both distributions in the teacher's term; > 0.
    """
    _check(alpha, temperature)
    student = _log_probs(student_outputs, from_logits)
    teacher = _log_probs(teacher_outputs, from_logits)
    if len(labels.shape) == len(student.shape) and labels.shape[-1] == student.shape[-1] != 1:
        hard = -ops.sum(ops.cast(labels, "float32") * student, axis=-1)
    else:
        classes = ops.cast(ops.reshape(labels, (-1,)), "int32")
        hard = -ops.sum(ops.one_hot(classes, student.shape[-1]) * student, axis=-1)
    t = float(temperature)
    soft_student = ops.log_softmax(student / t, axis=-1)
    soft_teacher = ops.log_softmax(teacher / t, axis=-1)
    # The teacher is fixed: its targets get no gradient, whichever variables it reads.
    soft_teacher = ops.stop_gradient(soft_teacher)
    kl = ops.sum(ops.exp(soft_teacher) * (soft_teacher - soft_student), axis=-1)
    return (1.0 - alpha) * hard + alpha * t * t * kl


class Distiller(keras.Model):
    """Trains `student` on `distillation_loss` against a fixed `teacher`.

    `distiller(x)` is `student(x)`, so compiled metrics (e.g. "accuracy") and validation
    measure the student. The teacher runs in inference mode (BatchNormalization on its
    moving statistics) and is never updated. Compile without a loss:
    `distiller.compile(optimizer, metrics=["accuracy"])`; then `fit` as usual. Works under
    every Keras backend, and on a student wrapped by `prune_low_magnitude` (give `fit` the
    `UpdatePruningStep` callback, as for any pruned model).

    Args:
      student: the model to train (a pruned one, typically).
      teacher: a trained model with the student's inputs and outputs (the dense original).
      alpha: weight of the teacher's term, in [0, 1].
      temperature: softmax temperature of the teacher's term, > 0.
      from_logits: whether both models output logits (False: probabilities, as after a softmax).
    """

    def __init__(self, student, teacher, alpha=DEFAULT_ALPHA, temperature=DEFAULT_TEMPERATURE,
                 from_logits=True, **kwargs):
        _check(alpha, temperature)
        for name, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise ValueError(f"{name} must be a Keras model. Received: {name}={model!r}")
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.from_logits = bool(from_logits)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher = self.teacher(x, training=False)
        per_example = distillation_loss(y, y_pred, teacher, self.alpha, self.temperature, self.from_logits)
        if sample_weight is not None:
            weights = ops.cast(ops.reshape(sample_weight, (-1,)), per_example.dtype)
            loss = ops.sum(per_example * weights) / ops.maximum(ops.sum(weights), 1e-12)
        else:
            loss = ops.mean(per_example)
        for extra in self.losses:  # regularizers and add_loss, as Keras' own compute_loss adds them
            loss = loss + ops.sum(ops.cast(extra, loss.dtype))
        return loss

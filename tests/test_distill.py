"""Knowledge distillation: the loss against a NumPy reference, and `Distiller` training a pruned
student with `UpdatePruningStep` under every Keras backend."""

import numpy as np
import pytest

pytestmark = pytest.mark.multi_backend


def _reference(labels, student, teacher, alpha, t):
    """Hinton et al.'s loss per example, in NumPy."""
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    hard = -log_softmax(student)[np.arange(len(labels)), labels]
    p_t, log_p_s = np.exp(log_softmax(teacher / t)), log_softmax(student / t)
    kl = np.sum(p_t * (np.log(p_t) - log_p_s), axis=-1)
    return (1 - alpha) * hard + alpha * t * t * kl


def _outputs(seed=0, n=6, classes=5):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, classes, n), rng.normal(size=(n, classes)).astype(np.float32) * 3,
            rng.normal(size=(n, classes)).astype(np.float32) * 3)


@pytest.mark.parametrize("alpha,t", [(0.5, 4.0), (0.9, 2.0), (1.0, 1.0)])
def test_loss_matches_the_reference_formula(alpha, t):
    import keras

    from spruce.distill import distillation_loss

    labels, student, teacher = _outputs()
    got = keras.ops.convert_to_numpy(distillation_loss(labels, student, teacher, alpha, t))
    np.testing.assert_allclose(got, _reference(labels, student, teacher, alpha, t), rtol=1e-5, atol=1e-5)


def test_alpha_zero_is_sparse_cross_entropy_and_one_hot_labels_give_the_same_loss():
    import keras

    from spruce.distill import distillation_loss

    labels, student, teacher = _outputs(1)
    got = keras.ops.convert_to_numpy(distillation_loss(labels, student, teacher, alpha=0.0))
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(labels, student)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(ce), rtol=1e-5, atol=1e-6)
    one_hot = np.eye(5, dtype=np.float32)[labels]
    for alpha in (0.0, 0.7):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(distillation_loss(one_hot, student, teacher, alpha)),
            keras.ops.convert_to_numpy(distillation_loss(labels, student, teacher, alpha)), rtol=1e-5)


def test_models_ending_in_a_softmax_are_distilled_as_their_logits():
    import keras

    from spruce.distill import distillation_loss

    labels, student, teacher = _outputs(2)
    softmax = lambda z: keras.ops.convert_to_numpy(keras.ops.softmax(z, axis=-1))  # noqa: E731
    from_logits = distillation_loss(labels, student, teacher, 0.6, 3.0)
    from_probs = distillation_loss(labels, softmax(student), softmax(teacher), 0.6, 3.0, from_logits=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(from_probs),
                               keras.ops.convert_to_numpy(from_logits), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\].*Received: alpha=1.5"),
    ({"alpha": True}, r"alpha must be a number in \[0, 1\].*Received: alpha=True"),
    ({"temperature": 0}, r"temperature must be a positive number.*Received: temperature=0"),
])
def test_bad_alpha_or_temperature_is_refused_by_name(kwargs, match):
    from spruce.distill import Distiller, distillation_loss

    labels, student, teacher = _outputs()
    with pytest.raises(ValueError, match=match):
        distillation_loss(labels, student, teacher, **kwargs)
    with pytest.raises(ValueError, match=match):
        Distiller(_net(), _net(), **kwargs)


def _net(seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Conv2D(16, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4)(x))


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 3), dtype=np.float32)
    return x, (x[:, :4, :4, 0].mean(axis=(1, 2)) * 4).astype(np.int64).clip(0, 3)


def test_distiller_trains_a_pruned_student_with_update_pruning_step():
    import keras

    import spruce
    from spruce.distill import Distiller

    x, y = _data()
    teacher = _net(1)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=3, batch_size=16, verbose=0)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student = spruce.prune_low_magnitude(
        _net(2), pruning_schedule=spruce.ConstantSparsity(0.75, begin_step=0, frequency=1))
    distiller = Distiller(student, teacher, alpha=0.5, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=4, batch_size=16, verbose=0, validation_data=(x, y),
                            callbacks=[spruce.UpdatePruningStep()])
    losses = history.history["loss"]
    assert losses[-1] < losses[0], losses
    assert "accuracy" in history.history and "val_accuracy" in history.history
    # the teacher only taught
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    pruned = spruce.strip_pruning(distiller.student)
    kernel = keras.ops.convert_to_numpy(pruned.layers[3].kernel)
    assert pruned.layers[3].kernel.shape == (1, 1, 8, 16)
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.01)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(distiller.predict(x[:4], verbose=0)),
                               pruned.predict(x[:4], verbose=0), rtol=1e-4, atol=1e-5)

"""BatchNorm recalibration: the moving statistics become the data's, and nothing else changes."""

import numpy as np
import pytest

from spruce.batchnorm import recalibrate_batchnorm

pytestmark = pytest.mark.multi_backend


def test_batchnorm_recalibration_sets_the_statistics_of_the_data():
    import keras

    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4, 4, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
    bn = model.layers[0]
    recalibrate_batchnorm(model, x, batches=5, batch_size=256)  # every batch is all of x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-4)
    assert bn.momentum == 0.99  # restored


def _conv_bn_model():
    import keras

    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(3, 1, name="conv_b"),
                              keras.layers.BatchNormalization(name="bn_b")], name="block")
    return keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, padding="same", name="conv_a"),
                             keras.layers.BatchNormalization(name="bn_a", momentum=0.9), inner])


def test_statistics_are_the_average_of_the_batches_and_weights_are_untouched():
    import keras

    model = _conv_bn_model()
    x = np.random.default_rng(1).normal(1.0, 3.0, (40, 6, 6, 3)).astype(np.float32)
    trainable = [np.copy(w) for w in model.trainable_weights]
    names = recalibrate_batchnorm(model, x, seed=0, batches=4, batch_size=10)
    assert names == ["bn_a", "bn_b"]  # the nested model's BatchNorm too
    for w, before in zip(model.trainable_weights, trainable):  # kernels, biases, gamma, beta
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w), before)

    # Replay the same 4 batches: each layer's moving mean is the mean of its batch means.
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(40, 10, replace=False)) for _ in range(4)]
    bn_a = model.get_layer("bn_a")
    conv_a = model.get_layer("conv_a")
    means = [keras.ops.convert_to_numpy(conv_a(x[p])).mean(axis=(0, 1, 2)) for p in picks]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn_a.moving_mean), np.mean(means, axis=0),
                               rtol=1e-4, atol=1e-5)
    assert bn_a.momentum == 0.9


def test_a_model_without_batchnorm_is_left_as_it_is():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = [np.copy(w) for w in model.get_weights()]
    assert recalibrate_batchnorm(model, np.ones((4, 3), np.float32)) == []
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"batches": 0}, r"batches must be a positive integer. Received: batches=0"),
    ({"batch_size": 2.5}, r"batch_size must be a positive integer. Received: batch_size=2.5"),
    ({"x": np.zeros((0, 3), np.float32)}, r"x must hold at least one input along its first axis"),
])
def test_bad_arguments_are_refused_with_what_is_expected(kwargs, match):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    args = {"x": np.ones((4, 3), np.float32), **kwargs}
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(model, **args)


def test_flatten_layers_opens_nested_models_and_refuses_what_is_not_a_model():
    from spruce.layers import flatten_layers

    assert [layer.name for layer in flatten_layers(_conv_bn_model())] == ["conv_a", "bn_a", "conv_b", "bn_b"]
    with pytest.raises(ValueError, match="model must be a Keras model"):
        list(flatten_layers(3))

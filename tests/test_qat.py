"""spruce.qat: int8-aware fine-tuning that keeps a pruned model's zeros (tfmot's PQAT)."""

import keras
import numpy as np
import pytest

from tflite_models import prune_pointwise, randomize_batchnorm, sparse_path_net


def test_per_channel_rounding_matches_numpy_reference():
    from spruce.qat import fake_quant_per_channel

    kernel = np.random.default_rng(0).normal(size=(1, 1, 8, 4)).astype("float32")
    kernel[..., 2] *= 100.0  # per channel: a large channel does not coarsen the others
    got = keras.ops.convert_to_numpy(fake_quant_per_channel(keras.ops.convert_to_tensor(kernel), (3,)))
    scale = np.abs(kernel).max(axis=(0, 1, 2), keepdims=True) / 127.0
    np.testing.assert_allclose(got, np.round(kernel / scale) * scale, rtol=1e-6)
    assert len(np.unique(got[..., 0])) <= 255


def test_range_rounding_holds_zero_exactly_and_clips_to_the_range():
    from spruce.qat import fake_quant_range

    x = keras.ops.convert_to_tensor(np.array([-1.0, 0.0, 0.3, 2.0, 10.0], "float32"))
    got = keras.ops.convert_to_numpy(fake_quant_range(x, 0.5, 2.0))  # the range widens to [0, 2]
    step = 2.0 / 255.0
    np.testing.assert_allclose(got, [0.0, 0.0, np.round(0.3 / step) * step, 2.0, 2.0], rtol=1e-6)


@pytest.mark.multi_backend
def test_fine_tuning_keeps_the_zeros_and_strip_gives_the_plain_model():
    from spruce.qat import QuantizeAware, quantize_aware, strip_quantize_aware

    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    zeros = {layer.name: layer.get_weights()[0] == 0 for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (1, 1)}
    aware = quantize_aware(model)
    assert sum(isinstance(layer, QuantizeAware) for layer in aware.layers) == sum(
        type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense") for layer in model.layers)
    aware.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    aware.fit(rng.random((32, 16, 16, 3), dtype=np.float32), rng.integers(0, 10, 32), epochs=2, batch_size=8,
              verbose=0)
    plain = strip_quantize_aware(aware)
    names = lambda m: [layer.name for layer in m.layers if not isinstance(layer, keras.layers.InputLayer)]  # noqa: E731
    assert names(plain) == names(model)
    assert not any(isinstance(layer, QuantizeAware) for layer in plain.layers)
    for name, zero in zeros.items():
        kernel = plain.get_layer(name).get_weights()[0]
        np.testing.assert_array_equal(kernel == 0, zero)  # the same zeros, no more, no fewer
        assert not np.array_equal(kernel, model.get_layer(name).get_weights()[0])  # it trained


def test_quantize_aware_refuses_a_model_still_wrapped_for_pruning():
    import spruce
    from spruce.qat import quantize_aware

    wrapped = spruce.prune_low_magnitude(sparse_path_net(), pruning_schedule=spruce.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match="Call spruce.strip_pruning"):
        quantize_aware(wrapped)


def _ranges(model):
    from spruce.qat import QuantizeAware

    value = lambda v: float(keras.ops.convert_to_numpy(v))  # noqa: E731
    return [(value(layer.input_min), value(layer.input_max)) for layer in model.layers
            if isinstance(layer, QuantizeAware)]


def test_observed_ranges_are_the_data_min_and_max_and_stay_fixed_while_training():
    from spruce.qat import observe_ranges, quantize_aware

    model = randomize_batchnorm(prune_pointwise(sparse_path_net(), 0.75))
    aware = quantize_aware(model)
    x = np.random.default_rng(1).random((20, 16, 16, 3), dtype=np.float32) * 3.0 - 1.0
    observe_ranges(aware, x, batch_size=6)
    ranges = _ranges(aware)
    assert ranges[0] == pytest.approx((float(x.min()), float(x.max())))  # the first layer sees x itself
    aware.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    aware.fit(x, np.arange(20) % 10, epochs=1, batch_size=5, verbose=0)
    assert _ranges(aware) == ranges

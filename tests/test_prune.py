"""prune_low_magnitude / strip_pruning on Keras 3 models, under every backend."""

import os
import warnings

import numpy as np
import pytest

from helpers import (
    assert_model_sparsity,
    assert_same_predictions,
    assert_weight_sparsity,
    find_layer,
    kept_count,
    pruned_layer_names,
)

pytestmark = pytest.mark.multi_backend


class OnlyPointwiseConvs:
    """A policy in the shape spruce.policies implements: prune 1x1 Conv2D layers only."""

    def __init__(self):
        self.calls = []

    def ensure_model_supports_pruning(self, model):
        self.calls.append(("ensure", model.name))

    def check_schedule(self, schedule):
        self.calls.append(("schedule", schedule.final_sparsity))
        if schedule.final_sparsity <= 2 / 3:
            warnings.warn("final sparsity too low for XNNPACK", UserWarning)

    def allow_pruning(self, layer):
        import keras

        return isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)


def small_model(name="small"):
    import keras

    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def fit(model, steps, batch_size=4, epochs=1, input_shape=(6,), classes=4, callbacks=()):
    import keras

    from spruce.callbacks import UpdatePruningStep

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, classes, size=steps * batch_size)
    if not model.compiled:
        # The models end in raw logits. Read as probabilities, logits whose sum nears zero
        # made the loss divide by zero: NaN gradients in some columns, NaN block scores,
        # and now and then fewer blocks kept than the schedule asks (a CI flake).
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[UpdatePruningStep(), *callbacks])
    return x


def mask_of(model, name):
    from keras import ops

    return ops.convert_to_numpy(find_layer(model, name).pruning_vars[0][1].value)


def step_of(model, name):
    from keras import ops

    return int(ops.convert_to_numpy(find_layer(model, name).pruning_step.value))


def test_guide_model_fine_tunes_to_exactly_75_percent_in_both_pointwise_convs_only():
    """The XNNPACK guide's flow: PolynomialDecay(0.25, 0.75, 0, end_step), 1x1 convs only."""
    from spruce.prune import prune_low_magnitude, strip_pruning
    from spruce.schedules import PolynomialDecay
    from spruce.zoo import guide_model

    model = guide_model()
    end_step = 100  # tfmot's default frequency=100: the last mask update lands on end_step
    policy = OnlyPointwiseConvs()
    pruned = prune_low_magnitude(model, PolynomialDecay(0.25, 0.75, 0, end_step),
                                 pruning_policy=policy)
    assert policy.calls == [("ensure", "guide_model"), ("schedule", 0.75)]
    # Keras numbers layer names per process, so take the 1x1 convs' names from the model.
    pointwise = [l.name for l in model.layers if getattr(l, "kernel_size", None) == (1, 1)]
    assert len(pointwise) == 2
    assert pruned_layer_names(pruned) == pointwise
    x = fit(pruned, steps=end_step, batch_size=2, input_shape=(32, 32, 3), classes=10)

    assert step_of(pruned, pointwise[0]) == end_step
    assert_model_sparsity(pruned, dict.fromkeys(pointwise, 0.75))
    stripped = strip_pruning(pruned)
    assert [l.name for l in stripped.layers] == [l.name for l in model.layers]
    assert pruned_layer_names(stripped) == []
    assert_model_sparsity(stripped, dict.fromkeys(pointwise, 0.75))
    assert_same_predictions(pruned, stripped, x[:8])


def test_sparsity_after_each_epoch_is_what_the_schedule_says():
    import keras

    from spruce.prune import prune_low_magnitude
    from spruce.schedules import PolynomialDecay

    schedule = PolynomialDecay(0.1, 0.9, begin_step=2, end_step=14, power=2, frequency=3)
    pruned = prune_low_magnitude(small_model(), schedule)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((step_of(pruned, "hidden"), mask_of(pruned, "hidden"),
                         mask_of(pruned, "head")))

    fit(pruned, steps=4, epochs=5, callbacks=[Record()])
    for step, hidden, head in seen:
        pruning_steps = [s for s in range(1, step + 1) if schedule(s)[0]]
        sparsity = schedule(pruning_steps[-1])[1] if pruning_steps else 0.0
        assert_weight_sparsity(hidden, sparsity, f"hidden at step {step}")
        assert_weight_sparsity(head, sparsity, f"head at step {step}")
    assert [s for s, _, _ in seen] == [4, 8, 12, 16, 20]


def test_pruned_model_is_a_clone_and_the_original_is_untouched():
    from spruce.prune import prune_low_magnitude

    model = small_model()
    before = [w.copy() for w in model.get_weights()]
    pruned = prune_low_magnitude(model)
    np.testing.assert_array_equal(find_layer(pruned, "hidden").layer.get_weights()[0], before[0])
    fit(pruned, steps=3)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert pruned_layer_names(model) == []


def test_pruning_a_pruned_model_keeps_its_wrappers_masks_and_step():
    from spruce.prune import prune_low_magnitude
    from spruce.schedules import ConstantSparsity

    pruned = prune_low_magnitude(small_model(), ConstantSparsity(0.5, 0, frequency=1))
    fit(pruned, steps=2)
    again = prune_low_magnitude(pruned)
    assert pruned_layer_names(again) == ["head", "hidden"]
    assert step_of(again, "hidden") == 2
    np.testing.assert_array_equal(mask_of(again, "hidden"), mask_of(pruned, "hidden"))
    again.summary(print_fn=lambda *args, **kwargs: None)


def test_nested_models_are_pruned_inside_and_stripped_back():
    import keras

    from spruce.prune import prune_low_magnitude, strip_pruning
    from spruce.schedules import ConstantSparsity

    block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="inner_dense")],
                             name="block")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="outer_dense")(block(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    pruned = prune_low_magnitude(model, ConstantSparsity(0.5, 0, frequency=1))
    assert pruned_layer_names(pruned) == ["inner_dense", "outer_dense"]
    x = fit(pruned, steps=2, classes=3)
    assert_model_sparsity(pruned, {"inner_dense": 0.5, "outer_dense": 0.5})
    stripped = strip_pruning(pruned)
    assert [l.name for l in stripped.get_layer("block").layers] == ["inner_dense"]
    assert_model_sparsity(stripped, {"inner_dense": 0.5, "outer_dense": 0.5})
    assert_same_predictions(pruned, stripped, x[:4])


def test_a_shared_layer_advances_its_step_once_per_batch():
    import keras

    from spruce.prune import prune_low_magnitude
    from spruce.schedules import ConstantSparsity

    shared = keras.layers.Dense(6, name="shared")
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(4, name="head")(shared(shared(inputs)))
    pruned = prune_low_magnitude(keras.Model(inputs, outputs),
                                 ConstantSparsity(0.5, 0, frequency=1))
    fit(pruned, steps=3)
    assert step_of(pruned, "shared") == step_of(pruned, "head") == 3
    assert_model_sparsity(pruned, {"shared": 0.5, "head": 0.5})


def test_layers_without_prunable_weights_pass_through_unwrapped():
    import keras

    from spruce.prune import prune_low_magnitude

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(4, 1, name="pw")(x)
    y = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(2, name="fc")(x)
    pruned = prune_low_magnitude(keras.Model(inputs, x))
    assert pruned_layer_names(pruned) == ["fc", "pw", "sep"]
    sep = find_layer(pruned, "sep")
    assert [w.name for w, _, _ in sep.pruning_vars] == ["pointwise_kernel"]


def test_embedding_and_transposed_conv_prune_their_tables_and_kernels():
    import keras

    from spruce.prune import prune_low_magnitude

    tokens = keras.Input((5,), dtype="int32")
    emb = keras.layers.Embedding(20, 4, name="emb")(tokens)
    image = keras.Input((4, 4, 2))
    up = keras.layers.Conv2DTranspose(3, 2, strides=2, name="up")(image)
    pruned = prune_low_magnitude(keras.Model([tokens, image], [emb, up]))
    assert [w.name for w, _, _ in find_layer(pruned, "emb").pruning_vars] == ["embeddings"]
    assert [w.name for w, _, _ in find_layer(pruned, "up").pruning_vars] == ["kernel"]


@pytest.mark.filterwarnings("ignore:final sparsity too low")
def test_unknown_layer_with_weights_is_refused_by_name_with_the_fix():
    import keras

    from spruce.prune import prune_low_magnitude

    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Scale(name="my_scale")(inputs)))
    with pytest.raises(ValueError) as error:
        prune_low_magnitude(model)
    message = str(error.value)
    assert "'my_scale' (Scale) has weights" in message
    assert "PrunableLayer" in message and "allow_pruning" in message

    class SkipScale(OnlyPointwiseConvs):
        def allow_pruning(self, layer):
            return not isinstance(layer, Scale)

    pruned = prune_low_magnitude(model, pruning_policy=SkipScale())
    assert len(pruned_layer_names(pruned)) == 1


def test_custom_prunable_layer_prunes_what_it_declares():
    import keras

    from spruce.prune import prune_low_magnitude
    from spruce.registry import PrunableLayer
    from spruce.schedules import ConstantSparsity

    class Scale(keras.layers.Layer, PrunableLayer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 8), initializer="random_normal")

        def call(self, x):
            return x @ self.w

        def get_prunable_weights(self):
            return [self.w]

    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(4)(Scale(name="scale")(inputs)))
    pruned = prune_low_magnitude(model, ConstantSparsity(0.75, 0, frequency=1))
    fit(pruned, steps=1)
    assert_weight_sparsity(mask_of(pruned, "scale"), 0.75)


def test_subclassed_and_unbuilt_models_are_refused_with_a_clear_message():
    import keras

    from spruce.prune import prune_low_magnitude

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(ValueError, match="subclassed model \\(Net\\).*Functional"):
        prune_low_magnitude(Net())
    with pytest.raises(ValueError, match="is not built.*keras.Input"):
        prune_low_magnitude(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="`to_prune` must be a keras layer"):
        prune_low_magnitude("model.keras")


def test_single_layers_and_lists_are_wrapped_as_in_tfmot():
    import keras

    from spruce.prune import prune_low_magnitude
    from spruce.wrapper import PruneLowMagnitude

    dense = keras.layers.Dense(3, name="d")
    wrapped = prune_low_magnitude(dense)
    assert isinstance(wrapped, PruneLowMagnitude) and wrapped.layer is dense
    assert wrapped.name == "prune_low_magnitude_d"
    assert prune_low_magnitude(wrapped) is wrapped
    assert all(isinstance(w, PruneLowMagnitude)
               for w in prune_low_magnitude([keras.layers.Dense(2), keras.layers.Conv2D(2, 1)]))
    with pytest.raises(ValueError, match="'bn' \\(BatchNormalization\\) has no weights to prune"):
        prune_low_magnitude(keras.layers.BatchNormalization(name="bn"))
    model = keras.Sequential([keras.Input((4,)), wrapped, keras.layers.Dense(2)])
    fit(model, steps=1, input_shape=(4,), classes=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pruning_schedule=0.5), "`pruning_schedule` must be a spruce.PruningSchedule"),
        (dict(block_size=(0, 1)), "`block_size` must be a pair of positive integers"),
        (dict(block_pooling_type="MEAN"), "must be 'AVG' or 'MAX'. Received: 'MEAN'"),
        (dict(sparsity_m_by_n=(4, 2)), "0 < m < n"),
        (dict(sparsity_m_by_n=(2, 4), block_size=(2, 1)), "cannot be combined"),
    ],
)
def test_bad_pruning_arguments_are_refused(kwargs, message):
    from spruce.prune import prune_low_magnitude

    with pytest.raises(ValueError) as error:
        prune_low_magnitude(small_model(), **kwargs)
    assert message in str(error.value)


def test_policy_can_refuse_the_model_and_warn_about_the_schedule():
    from spruce.prune import prune_low_magnitude
    from spruce.schedules import ConstantSparsity

    class Refuse(OnlyPointwiseConvs):
        def ensure_model_supports_pruning(self, model):
            raise ValueError(f"{model.name}: no")

    with pytest.raises(ValueError, match="small: no"):
        prune_low_magnitude(small_model(), pruning_policy=Refuse())
    with pytest.warns(UserWarning, match="too low"):
        pruned = prune_low_magnitude(small_model(), ConstantSparsity(0.5, 0),
                                     pruning_policy=OnlyPointwiseConvs())
    assert pruned_layer_names(pruned) == []


def test_block_sparsity_prunes_whole_blocks_during_training():
    from spruce.prune import prune_low_magnitude
    from spruce.schedules import ConstantSparsity

    pruned = prune_low_magnitude(small_model(), ConstantSparsity(0.5, 0, frequency=1),
                                 block_size=(2, 4), block_pooling_type="MAX")
    fit(pruned, steps=2)
    mask = mask_of(pruned, "hidden")  # (6, 16): 3 x 4 blocks of 2 x 4
    blocks = mask.reshape(3, 2, 4, 4).transpose(0, 2, 1, 3).reshape(12, 8)
    assert set(np.unique(blocks.sum(axis=1))) <= {0.0, 8.0}
    assert (blocks.sum(axis=1) == 0).sum() == 12 - kept_count(12, 0.5)


def test_two_by_four_sparsity_holds_in_every_group_of_input_channels():
    from spruce.prune import prune_low_magnitude, strip_pruning
    from spruce.schedules import ConstantSparsity

    pruned = prune_low_magnitude(small_model(), ConstantSparsity(0.5, 0, frequency=1),
                                 sparsity_m_by_n=(2, 4))
    fit(pruned, steps=2)
    kernel = strip_pruning(pruned).get_layer("hidden").get_weights()[0]  # (in=6, out=16)
    groups = np.pad(kernel.T, ((0, 0), (0, 2)), constant_values=0.0).reshape(16, 2, 4)
    assert np.all((groups != 0).sum(axis=-1) <= 2)


def test_saved_pruned_model_reloads_and_resumes_with_its_step_and_masks(tmp_path):
    import keras

    from spruce.prune import prune_low_magnitude, prune_scope
    from spruce.schedules import PolynomialDecay

    schedule = PolynomialDecay(0.2, 0.8, begin_step=0, end_step=12, frequency=2)
    pruned = prune_low_magnitude(small_model(), schedule)
    fit(pruned, steps=3)  # steps 1..3
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    with prune_scope():
        restored = keras.saving.load_model(path)
    assert step_of(restored, "hidden") == 3
    np.testing.assert_array_equal(mask_of(restored, "hidden"), mask_of(pruned, "hidden"))
    assert find_layer(restored, "hidden").pruning_schedule == schedule
    fit(restored, steps=9)  # steps 4..12: the last update at 12 reaches the final sparsity
    assert step_of(restored, "hidden") == 12
    assert_model_sparsity(restored, {"hidden": 0.8, "head": 0.8})

"""The training recipe: learning-rate decay, schedule replay, pruning with blocks and ERK.

ERK allocation and BatchNorm recalibration are library functions: see test_allocation.py
and test_batchnorm.py."""

import numpy as np
import pytest


@pytest.mark.parametrize("kind", ["cosine", "exponential"])
def test_learning_rate_decays_to_one_percent_by_the_last_step(kind):
    import keras

    from spruce.workflow.train import learning_rate

    lr = learning_rate(0.005, kind, total_steps=400, steps_per_epoch=100)
    first = float(keras.ops.convert_to_numpy(lr(0)))
    last = float(keras.ops.convert_to_numpy(lr(400)))
    assert first == pytest.approx(0.005)
    assert last == pytest.approx(0.00005, rel=1e-3)


def test_schedule_target_holds_the_value_of_the_latest_pruning_step():
    from spruce.schedules import PolynomialDecay
    from spruce.workflow.measure import schedule_target

    schedule = PolynomialDecay(0.25, 0.75, begin_step=0, end_step=10, frequency=5)
    target = schedule_target(schedule, [1, 4, 5, 9, 10, 20])
    at5, at10 = schedule(5)[1], schedule(10)[1]
    assert list(target.sparsity) == pytest.approx([0.0, 0.0, at5, at5, at10, at10])
    assert at10 == pytest.approx(0.75)


@pytest.mark.parametrize("n_train,epochs", [(54000, 10), (5400, 2)])
def test_pruning_schedule_reaches_the_final_sparsity_at_a_pruning_step(n_train, epochs):
    from spruce.workflow.config import RunConfig
    from spruce.workflow.train import pruning_schedule, steps_per_epoch

    config = RunConfig(prune_epochs=epochs, batch_size=128 if n_train > 10000 else 32)
    s = pruning_schedule(config, n_train)
    total = steps_per_epoch(n_train, config.batch_size) * epochs
    assert s.end_step <= total and s.end_step % s.frequency == 0
    assert s(s.end_step) == (True, pytest.approx(0.75))
    assert s.end_step // s.frequency >= 4  # sparsity rises in several steps, even when short


def test_block_counts_tile_from_the_top_left_with_partial_edge_blocks():
    from spruce.masking import count_zero_blocks as block_counts

    kernel = np.ones((1, 1, 2, 6), np.float32)  # rows of blocks [0:4] and [4:6]
    kernel[0, 0, 0, 0:4] = 0  # a whole block
    kernel[0, 0, 1, 4:6] = 0  # a whole edge block
    kernel[0, 0, 1, 1] = 0  # part of a block
    assert block_counts(kernel, (1, 4)) == {"blocks": 4, "zero": 2, "partial": 1}
    assert block_counts(kernel, (1, 1)) == {"blocks": 12, "zero": 7, "partial": 0}


def _tiny_run(block_size, allocation="uniform"):
    """prune_finetune on the guide's layout (1x1 convs 8->10 and 10->16: 10 output channels are
    not a multiple of 4) with 64 random 16x16 images, 2 epochs of 4 steps, 75% at the last step."""
    import keras
    from keras import layers

    from spruce.workflow.config import RunConfig
    from spruce.workflow.data import Dataset
    from spruce.workflow.train import prune_finetune

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.ZeroPadding2D(1), layers.Conv2D(8, 3, strides=2, padding="valid", name="entry"),
        layers.BatchNormalization(), layers.ReLU(),
        layers.DepthwiseConv2D(3, padding="same", name="dw"), layers.ReLU(),
        layers.Conv2D(10, 1, name="pw1"), layers.BatchNormalization(), layers.ReLU(),
        layers.Conv2D(16, 1, name="pw2"), layers.ReLU(),
        layers.GlobalAveragePooling2D(keepdims=True), layers.Flatten(),
        layers.Dense(10, name="head"),
    ])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 10, 80)
    data = Dataset("random", x[:64], y[:64], x[64:], y[64:], x[64:], y[64:], tuple("0123456789"))
    config = RunConfig(prune_epochs=2, batch_size=16, pruning_end_fraction=1.0,
                       sparsity_allocation=allocation, block_size=block_size).validate()
    pruned, _, _ = prune_finetune(model, data, config, progress=False)
    return pruned


def _kernel(model, name):
    import keras

    return keras.ops.convert_to_numpy(model.get_layer(name).kernel)


@pytest.mark.parametrize("allocation", ["uniform", "erk"])
def test_block_pruning_zeroes_whole_4_output_channel_blocks_of_the_1x1_convs(allocation):
    from helpers import assert_whole_zero_blocks

    from spruce.allocation import erk_sparsities

    pruned = _tiny_run((1, 4), allocation)
    targets = {"pw1": 0.75, "pw2": 0.75}
    if allocation == "erk":  # each layer's sparsity counts its blocks
        targets = dict(zip(("pw1", "pw2"), erk_sparsities([(8, 10), (10, 16)], 0.75)))
        assert targets["pw1"] < 0.75 < targets["pw2"]
    for name, sparsity in targets.items():
        assert_whole_zero_blocks(_kernel(pruned, name), (1, 4), sparsity, name)
    # the policy wrapped only the 1x1 convs: the 3x3 entry conv, the depthwise conv and
    # the classifier, which have no (in, out) matrix or are not run sparse, are untouched
    for name in ("entry", "dw", "head"):
        assert not np.any(_kernel(pruned, name) == 0), name


def test_unstructured_pruning_leaves_partly_zero_blocks():
    # the control for the test above: without block_size the same check fails
    from helpers import assert_whole_zero_blocks

    pruned = _tiny_run((1, 1))
    assert_whole_zero_blocks(_kernel(pruned, "pw1"), (1, 1), 0.75)
    with pytest.raises(AssertionError, match="partly zero"):
        assert_whole_zero_blocks(_kernel(pruned, "pw2"), (1, 4))


def test_the_report_lists_the_convolutions_the_targets_policy_prunes():
    from spruce.workflow import measure
    from spruce.workflow.config import RunConfig
    from spruce.zoo import guide_model

    model = guide_model()
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    one_by_one = measure.one_by_one_names(model)
    assert len(convs) == 3 and len(one_by_one) == 2
    assert measure.pruned_conv_names(model, RunConfig()) == one_by_one
    assert measure.pruned_conv_names(model, RunConfig(target="x86", pointwise_only=True)) == one_by_one
    assert measure.pruned_conv_names(model, RunConfig(target="x86")) == convs

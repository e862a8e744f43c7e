"""The training recipe's pure parts: learning-rate decay, sparsity allocation, schedule replay."""

import numpy as np
import pytest


def test_erk_allocation_keeps_the_total_and_favours_small_layers():
    from spruce.workflow.train import erk_sparsities

    shapes = [(8, 16), (16, 32)]  # the guide's two 1x1 convs
    s = erk_sparsities(shapes, 0.75)
    sizes = np.array([a * b for a, b in shapes])
    assert np.dot(s, sizes) / sizes.sum() == pytest.approx(0.75)
    assert s[0] < 0.75 < s[1]
    # both stay above XNNPACK's 2/3 threshold counted together, and density ratio is ERK's
    assert (1 - s[0]) / (1 - s[1]) == pytest.approx((24 / 128) / (48 / 512))


def test_erk_refuses_an_allocation_that_needs_a_layer_denser_than_dense():
    from spruce.workflow.train import erk_sparsities

    with pytest.raises(ValueError, match="denser than 1.*uniform"):
        erk_sparsities([(2, 2), (512, 512)], 0.1)


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
    from spruce.workflow.pipeline import _schedule_target

    schedule = PolynomialDecay(0.25, 0.75, begin_step=0, end_step=10, frequency=5)
    target = _schedule_target(schedule, {"steps": [1, 4, 5, 9, 10, 20]})
    at5, at10 = schedule(5)[1], schedule(10)[1]
    assert target["sparsity"] == pytest.approx([0.0, 0.0, at5, at5, at10, at10])
    assert at10 == pytest.approx(0.75)


def test_batchnorm_recalibration_sets_the_statistics_of_the_data():
    import keras

    from spruce.workflow.train import recalibrate_batchnorm

    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4, 4, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
    bn = model.layers[0]
    recalibrate_batchnorm(model, x, batches=5, batch_size=256)  # every batch is all of x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), x.var(axis=(0, 1, 2)), rtol=1e-4)
    assert bn.momentum == 0.99  # restored


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

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

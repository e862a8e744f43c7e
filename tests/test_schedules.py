"""Schedules follow tfmot's formula and step semantics exactly, on ints and on tensors."""

import numpy as np
import pytest

from spruce.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    deserialize,
    serialize,
)


def tfmot_should_prune(step, begin, end, frequency):
    """tfmot's `_should_prune_in_step`, written out."""
    in_range = step >= begin and (step <= end or end < 0)
    return in_range and (step - begin) % frequency == 0


def tfmot_polynomial(step, initial, final, begin, end, power):
    """tfmot's PolynomialDecay.__call__ in float32, as its TF graph computes it."""
    f32 = np.float32
    p = min(f32(1.0), max(f32(0.0), f32(step - begin) / f32(end - begin)))
    return f32(initial - final) * (f32(1.0) - p) ** f32(power) + f32(final)


def test_polynomial_decay_matches_tfmot_formula_at_every_step_of_a_long_run():
    schedule = PolynomialDecay(0.25, 0.75, begin_step=100, end_step=20_100, power=3, frequency=7)
    for step in range(0, 21_000):
        should_prune, sparsity = schedule(step)
        assert should_prune == tfmot_should_prune(step, 100, 20_100, 7), step
        assert sparsity == pytest.approx(tfmot_polynomial(step, 0.25, 0.75, 100, 20_100, 3),
                                         abs=1e-7), step
        # and the float64 textbook formula, to a float32 tolerance
        p = min(1.0, max(0.0, (step - 100) / 20_000))
        assert sparsity == pytest.approx(0.75 + (0.25 - 0.75) * (1 - p) ** 3, abs=1e-6)


def test_polynomial_decay_clamps_at_initial_before_begin_and_final_after_end():
    schedule = PolynomialDecay(0.1, 0.9, begin_step=10, end_step=20, frequency=1)
    assert schedule(0) == (False, pytest.approx(0.1))
    assert schedule(10) == (True, pytest.approx(0.1))
    assert schedule(20) == (True, pytest.approx(0.9))
    assert schedule(21) == (False, pytest.approx(0.9))
    assert schedule(10**6)[1] == pytest.approx(0.9)


def test_constant_sparsity_prunes_every_frequency_steps_from_begin_step_forever():
    schedule = ConstantSparsity(0.5, begin_step=3, frequency=4)
    pruned = [step for step in range(30) if schedule(step)[0]]
    assert pruned == [3, 7, 11, 15, 19, 23, 27]
    assert all(schedule(step)[1] == 0.5 for step in range(30))
    assert ConstantSparsity(0.5, 3, end_step=11, frequency=4)(15)[0] is False
    assert ConstantSparsity(0.5, 3, end_step=11, frequency=4)(11)[0] is True


def test_final_sparsity_is_what_the_schedule_ends_at():
    assert ConstantSparsity(0.6, 0).final_sparsity == 0.6
    assert PolynomialDecay(0.25, 0.75, 0, 100).final_sparsity == 0.75
    assert PruningSchedule().final_sparsity is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConstantSparsity(1.0, 0), "target_sparsity` must be in [0, 1). Received: target_sparsity=1.0"),
        (lambda: ConstantSparsity(-0.1, 0), "Received: target_sparsity=-0.1"),
        (lambda: ConstantSparsity(0.5, -1), "`begin_step` must be >= 0. Received: begin_step=-1"),
        (lambda: ConstantSparsity(0.5, 10, end_step=5), "Received: begin_step=10, end_step=5"),
        (lambda: ConstantSparsity(0.5, 0, frequency=0), "`frequency` must be >= 1"),
        (lambda: ConstantSparsity(0.5, 1.5), "`begin_step` must be an integer"),
        (lambda: PolynomialDecay(0.2, 1.2, 0, 10), "final_sparsity` must be in [0, 1)"),
        (lambda: PolynomialDecay(0.2, 0.8, 0, -1), "end_step` must be a step after"),
        (lambda: PolynomialDecay(0.2, 0.8, 5, 5), "use ConstantSparsity"),
        (lambda: PolynomialDecay(0.2, 0.8, 0, 10, power=0), "`power` must be a number > 0"),
    ],
)
def test_bad_arguments_are_refused_with_the_received_value(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_config_round_trips_through_serialize_and_from_config():
    for schedule in (ConstantSparsity(0.3, 5, 50, 10), PolynomialDecay(0.1, 0.8, 0, 1000, 2, 50)):
        assert type(schedule).from_config(schedule.get_config()) == schedule
        assert deserialize(serialize(schedule)) == schedule
    with pytest.raises(ValueError, match="Unknown pruning schedule class 'Nope'"):
        deserialize({"class_name": "Nope", "config": {}})


@pytest.mark.multi_backend
def test_schedules_on_backend_tensors_match_the_int_path():
    import keras
    from keras import ops

    schedule = PolynomialDecay(0.25, 0.75, begin_step=5, end_step=405, frequency=10)
    constant = ConstantSparsity(0.6, 5, end_step=205, frequency=10)
    steps = np.arange(0, 500, dtype="int32")
    for schedule_under_test in (schedule, constant):
        flags, values = schedule_under_test(ops.convert_to_tensor(steps))
        flags = np.broadcast_to(ops.convert_to_numpy(flags), steps.shape)
        values = np.broadcast_to(ops.convert_to_numpy(values), steps.shape)
        for step, flag, value in zip(steps, flags, values):
            expected_flag, expected_value = schedule_under_test(int(step))
            assert bool(flag) == expected_flag, step
            assert float(value) == pytest.approx(expected_value, abs=1e-6), step

"""ERK sparsity allocation: the formula, the total it keeps, dense layers capped, and on a model."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spruce.allocation import allocate_erk, erk_sparsities

pytestmark = pytest.mark.multi_backend


def _average(sparsities, shapes):
    sizes = np.array([a * b for a, b in shapes], np.float64)
    return float(np.dot(sparsities, sizes) / sizes.sum())


def test_erk_allocation_keeps_the_total_and_favours_small_layers():
    shapes = [(8, 16), (16, 32)]  # the guide's two 1x1 convs
    s = erk_sparsities(shapes, 0.75)
    assert _average(s, shapes) == pytest.approx(0.75)
    assert s[0] < 0.75 < s[1]
    # both stay above XNNPACK's 2/3 threshold counted together, and density ratio is ERK's
    assert (1 - s[0]) / (1 - s[1]) == pytest.approx((24 / 128) / (48 / 512))


def test_erk_formula_on_two_known_layers():
    # densities proportional to (n_in + n_out) / (n_in n_out): 24/128 and 48/512, scaled so
    # that 160 of the 640 weights stay: 5/12 and 5/24 of each layer
    assert erk_sparsities([(8, 16), (16, 32)], 0.75) == pytest.approx([7 / 12, 19 / 24])


def test_erk_refuses_an_allocation_that_needs_a_layer_denser_than_dense():
    with pytest.raises(ValueError, match="denser than 1.*uniform"):
        erk_sparsities([(2, 2), (512, 512)], 0.1)


def test_layers_erk_would_make_denser_than_dense_are_capped_dense_and_the_rest_keep_the_total():
    shapes = [(2, 2), (512, 512)]
    s = erk_sparsities(shapes, 0.1, cap_at_dense=True)
    assert s[0] == 0.0  # capped: all 4 weights kept
    assert _average(s, shapes) == pytest.approx(0.1)
    assert s[1] == pytest.approx(1 - (0.9 * (4 + 512 * 512) - 4) / (512 * 512))


def test_at_sparsity_zero_every_layer_stays_dense():
    assert erk_sparsities([(2, 2), (8, 16), (64, 64)], 0.0, cap_at_dense=True) == [0.0, 0.0, 0.0]


def test_capping_repeats_until_no_layer_is_over_dense():
    # capping the smallest layer raises the others' densities: the middle one is capped next
    shapes = [(1, 2), (4, 4), (256, 256)]
    first = erk_sparsities(shapes[1:], 0.02, cap_at_dense=True)
    assert first[0] == 0.0
    s = erk_sparsities(shapes, 0.02, cap_at_dense=True)
    assert s[:2] == [0.0, 0.0]
    assert _average(s, shapes) == pytest.approx(0.02)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1, max_size=8),
       st.floats(0.0, 0.99))
def test_average_sparsity_hits_the_target_and_every_layer_stays_in_range(shapes, sparsity):
    s = erk_sparsities(shapes, sparsity, cap_at_dense=True)
    assert len(s) == len(shapes)
    assert _average(s, shapes) == pytest.approx(sparsity, abs=1e-9)
    assert all(-1e-12 <= v < 1.0 for v in s)


@pytest.mark.parametrize("shapes", [[], [(0, 4)], [(3,)], [(2.5, 4)], "8x16", None])
def test_bad_shapes_are_refused_with_what_is_expected(shapes):
    with pytest.raises(ValueError, match=r"shapes must be a non-empty list of \(n_in, n_out\) pairs"):
        erk_sparsities(shapes, 0.5)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, "0.5", True])
def test_bad_sparsity_is_refused(sparsity):
    with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)\. Received"):
        erk_sparsities([(8, 16)], sparsity)


def _two_pointwise_convs():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((4, 4, 8)),
        keras.layers.Conv2D(16, 1, name="pw1"),
        keras.layers.Conv2D(32, 1, name="pw2"),
    ])


def test_allocate_erk_gives_each_wrapper_its_share_of_a_polynomial_decay():
    from spruce import PolynomialDecay, prune_low_magnitude
    from spruce.wrapper import collect_prunable_layers

    schedule = PolynomialDecay(0.25, 0.75, begin_step=0, end_step=40, power=2, frequency=4)
    pruned = prune_low_magnitude(_two_pointwise_convs(), pruning_schedule=schedule)
    finals = allocate_erk(pruned)
    assert finals == pytest.approx({"pw1": 7 / 12, "pw2": 19 / 24})
    for wrapper in collect_prunable_layers(pruned):
        final = finals[wrapper.layer.name]
        assert isinstance(wrapper.pruning_schedule, PolynomialDecay)
        assert wrapper.pruning_schedule.get_config() == pytest.approx(
            {"initial_sparsity": final / 3, "final_sparsity": final, "begin_step": 0, "end_step": 40,
             "power": 2, "frequency": 4})


def test_allocated_layers_reach_their_own_sparsity_in_training():
    import keras

    from helpers import assert_model_sparsity
    from spruce import ConstantSparsity, UpdatePruningStep, prune_low_magnitude, strip_pruning

    pruned = prune_low_magnitude(_two_pointwise_convs(), pruning_schedule=ConstantSparsity(0.75, 0, frequency=1))
    finals = allocate_erk(pruned)
    pruned.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 8)).astype("float32")
    pruned.fit(x, np.zeros((8, 4, 4, 32), "float32"), epochs=1, batch_size=8, verbose=0,
               callbacks=[UpdatePruningStep()])
    assert_model_sparsity(strip_pruning(pruned), finals)
    assert isinstance(pruned, keras.Model)


def test_allocate_erk_refuses_a_model_without_pruned_layers():
    with pytest.raises(ValueError, match="no pruned layer. Wrap it first"):
        allocate_erk(_two_pointwise_convs())


def test_allocate_erk_refuses_wrappers_with_different_schedules():
    import keras

    from spruce import ConstantSparsity, prune_low_magnitude

    model = keras.Sequential([
        keras.Input((4, 4, 8)),
        prune_low_magnitude(keras.layers.Conv2D(16, 1, name="pw1"), ConstantSparsity(0.5, 0)),
        prune_low_magnitude(keras.layers.Conv2D(32, 1, name="pw2"), ConstantSparsity(0.8, 0)),
    ])
    with pytest.raises(ValueError, match=r"one schedule shared by every pruned layer; \['pw2'\]"):
        allocate_erk(model)

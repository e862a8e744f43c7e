"""UpdatePruningStep and PruningSummaries, under every backend."""

import glob
import os

import numpy as np
import pytest

from helpers import assert_weight_sparsity, kept_count

pytestmark = pytest.mark.multi_backend


def pruned_dense(schedule=None):
    import keras

    from spruce.prune import prune_low_magnitude
    from spruce.schedules import ConstantSparsity

    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(12, name="a"), keras.layers.Dense(3, name="b")]
    )
    pruned = prune_low_magnitude(model, schedule or ConstantSparsity(0.75, 0, frequency=2))
    pruned.compile("sgd", "mse")
    return pruned


def data(n=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 3)).astype("float32")


def read_scalars(log_dir):
    """Every (step, tag, value) in the event files, read by TensorFlow's own reader."""
    tf = pytest.importorskip("tensorflow")
    found = []
    files = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.append((event.step, value.tag, value.simple_value))
    return found


def test_training_without_update_pruning_step_fails_at_once_saying_to_add_it():
    pruned = pruned_dense()
    x, y = data()
    with pytest.raises(ValueError, match=r"needs the UpdatePruningStep callback.*callbacks=\["):
        pruned.fit(x, y, batch_size=4, verbose=0)


def test_adding_the_callback_after_that_failure_trains_or_says_what_to_do():
    import keras

    from spruce.callbacks import UpdatePruningStep

    pruned = pruned_dense()
    x, y = data()
    with pytest.raises(ValueError):
        pruned.fit(x, y, batch_size=4, verbose=0)
    if keras.backend.backend() == "jax":
        # Keras's JAX trainer has dropped the model's variable values by then.
        with pytest.raises(ValueError, match="Re-create \\(or reload\\) the pruned model"):
            pruned.fit(x, y, batch_size=4, verbose=0, callbacks=[UpdatePruningStep()])
    else:
        pruned.fit(x, y, batch_size=4, verbose=0, callbacks=[UpdatePruningStep()])
        assert_weight_sparsity(pruned.layers[0].masked_weights()[0], 0.75)


def test_epoch_end_writes_masks_into_the_weight_variables():
    from keras import ops

    from spruce.callbacks import UpdatePruningStep

    pruned = pruned_dense()
    x, y = data()
    pruned.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[UpdatePruningStep()])
    for layer in pruned.layers:
        kernel = ops.convert_to_numpy(layer.layer.kernel)
        assert_weight_sparsity(kernel, 0.75, layer.name)
        assert int(ops.convert_to_numpy(layer.pruning_step.value)) == 8


def test_pruning_summaries_writes_sparsity_and_threshold_that_tensorflow_reads(tmp_path):
    from spruce.callbacks import PruningSummaries, UpdatePruningStep, pruning_scalars

    pruned = pruned_dense()
    x, y = data()
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, batch_size=4, epochs=2, verbose=0,
               callbacks=[UpdatePruningStep(), PruningSummaries(log_dir)])
    scalars = read_scalars(log_dir)
    final = pruning_scalars(pruned)
    assert sorted(final) == ["a/kernel/sparsity", "a/kernel/threshold", "b/kernel/sparsity",
                             "b/kernel/threshold"]
    assert sorted({step for step, _, _ in scalars}) == [4, 8]
    last = {tag: value for step, tag, value in scalars if step == 8}
    for tag, value in final.items():
        assert last[tag] == pytest.approx(value, rel=1e-6), tag
    assert last["a/kernel/sparsity"] == pytest.approx(1 - kept_count(60, 0.75) / 60, rel=1e-6)
    assert last["a/kernel/threshold"] > 0


def test_pruning_summaries_every_n_batches(tmp_path):
    from spruce.callbacks import PruningSummaries, UpdatePruningStep

    pruned = pruned_dense()
    x, y = data()
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0,
               callbacks=[UpdatePruningStep(), PruningSummaries(log_dir, update_freq=2)])
    scalars = read_scalars(log_dir)
    assert sorted({step for step, _, _ in scalars}) == [2, 4]
    sparsity_a = {step: v for step, tag, v in scalars if tag == "a/kernel/sparsity"}
    assert sparsity_a[2] == pytest.approx(0.75)  # steps 1..2: pruned at step 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(log_dir=""), "`log_dir` must be a folder path"),
        (dict(log_dir="x", update_freq=0), "`update_freq` must be 'epoch', 'batch'"),
        (dict(log_dir="x", histogram_freq=1), "add keras.callbacks.TensorBoard"),
    ],
)
def test_pruning_summaries_arguments_are_checked(kwargs, message):
    from spruce.callbacks import PruningSummaries

    with pytest.raises(ValueError) as error:
        PruningSummaries(**kwargs)
    assert message in str(error.value)

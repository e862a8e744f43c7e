"""export_litert's check of the written file: real converter, real LiteRT interpreter.

A classifier that ends in a softmax is checked on its logits, at their scale, and on its
probabilities within what the logits' measured error can move them by; a wrong file is
still refused, whether its logits or its final operator are wrong.
"""

import keras
import numpy as np
import pytest

tf_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs under the TF backend")

# export_litert's default float tolerance, on the probabilities' scale (max |p| <= 1)
PROBABILITY_TOLERANCE = 1e-5 + 1e-4 * 1.0


def near_tie_classifier(logit_scale, activation="softmax", fused=True, sharpen=None, seed=0):
    """Two classes whose logits are about `logit_scale` and differ by about 1: the softmax sits
    where it passes float32 rounding of the logits on to the probabilities. `sharpen`: the
    activation takes the logits times this instead (a wrong final operator)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if fused:
        outputs = keras.layers.Dense(2, activation=activation, name="classifier")(x)
    else:
        x = keras.layers.Dense(2, name="classifier")(x)
        if sharpen is not None:
            x = keras.layers.Rescaling(sharpen)(x)
        outputs = keras.layers.Activation(activation)(x)
    model = keras.Model(inputs, outputs)
    w = np.random.default_rng(seed).standard_normal((32, 1)).astype("float32") * logit_scale
    model.get_layer("classifier").set_weights([np.concatenate([w, w * (1 + 1e-4)], axis=1),
                                               np.zeros(2, "float32")])
    return model


def export_unverified(model, path):
    from spruce.export import export_litert

    export_litert(model, path, sparse=False, verify=False)
    return str(path)


@tf_only
@pytest.mark.parametrize("fused", [True, False], ids=["dense_softmax", "activation_layer"])
def test_softmax_classifier_with_large_logits_exports_checked_on_its_logits(tmp_path, fused):
    from spruce.export import export_litert

    model = near_tie_classifier(1e4, fused=fused)
    report = export_litert(model, tmp_path / "tie.tflite", sparse=False, samples=8)
    assert report.logits is True and "logits compared" in str(report)
    # The probabilities moved by more than the default tolerance allows on their own scale.
    assert report.max_abs_diff > PROBABILITY_TOLERANCE
    assert report.max_abs_diff <= report.tolerance


@tf_only
def test_model_without_final_softmax_is_checked_on_its_outputs(tmp_path):
    from spruce.export import export_litert

    model = near_tie_classifier(10.0, activation="linear")
    report = export_litert(model, tmp_path / "linear.tflite", sparse=False)
    assert report.logits is False and "logits" not in str(report)
    assert report.max_abs_diff < 1e-5


@tf_only
def test_wrong_logits_behind_a_softmax_are_refused(tmp_path):
    from spruce.export.converter import input_shapes
    from spruce.export.verify import ExportVerificationError, verify_float

    model = near_tie_classifier(100.0)
    wrong = near_tie_classifier(100.0)
    kernel, bias = wrong.get_layer("classifier").get_weights()
    # The same shift on both logits: the probabilities stay the same, the logits are wrong.
    wrong.get_layer("classifier").set_weights([kernel, bias + 0.5])
    path = export_unverified(wrong, tmp_path / "wrong.tflite")
    with pytest.raises(ExportVerificationError, match="final SOFTMAX.*No file was written"):
        verify_float(model, path, input_shapes(model, 1), samples=4, atol=1e-5, rtol=1e-4, seed=0)


@tf_only
def test_wrong_final_operator_on_right_logits_is_refused(tmp_path):
    from spruce.export.converter import input_shapes
    from spruce.export.verify import ExportVerificationError, verify_float

    model = near_tie_classifier(100.0)
    path = export_unverified(near_tie_classifier(100.0, fused=False, sharpen=2.0), tmp_path / "hot.tflite")
    with pytest.raises(ExportVerificationError, match="SOFTMAX.*No file was written"):
        verify_float(model, path, input_shapes(model, 1), samples=4, atol=1e-5, rtol=1e-4, seed=0)


@tf_only
def test_sigmoid_output_is_checked_on_its_logits(tmp_path):
    from spruce.export import export_litert

    model = near_tie_classifier(100.0, activation="sigmoid")
    report = export_litert(model, tmp_path / "sigmoid.tflite", sparse=False)
    assert report.logits is True and report.max_abs_diff <= report.tolerance

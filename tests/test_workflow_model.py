"""`spruce run --model`: a user's .keras model is made XNNPACK-compatible, or refused with the reason."""

import numpy as np
import pytest

from spruce.workflow.data import Dataset
from spruce.workflow.model import ModelError, load_user_model


def _data(shape=(32, 32, 3), classes=10):
    x = np.zeros((4,) + shape, np.float32)
    y = np.zeros(4, np.int64)
    return Dataset("fashion_mnist", x, y, x, y, x, y, tuple(str(i) for i in range(classes)))


def _model(variant, input_shape=(32, 32, 3)):
    import keras
    from keras import layers

    i = keras.Input(input_shape)
    x = layers.ZeroPadding2D(1)(i)
    x = layers.Conv2D(8, 3, strides=2, padding="valid")(x)
    x = layers.ReLU()(x)
    if variant == "stride2_same_depthwise":
        x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = layers.Conv2D(16, 1)(x)
    if variant == "dense_on_4d":
        x = layers.Dense(16)(x)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = layers.Flatten()(x)
    return keras.Model(i, layers.Dense(10)(x), name=variant)


def test_fixable_model_is_rewritten_with_the_same_outputs(tmp_path):
    model = _model("dense_on_4d")
    path = str(tmp_path / "user.keras")
    model.save(path)
    choice = load_user_model(path, _data())
    assert [r["change"] for r in choice.compatibility["fixed"]] == ["Dense(16) on a 4-D tensor -> Conv2D(16, 1)"]
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(choice.model.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_unfixable_model_is_refused_with_the_rule_and_the_change(tmp_path):
    path = str(tmp_path / "user.keras")
    _model("stride2_same_depthwise").save(path)
    with pytest.raises(ModelError, match=r"(?s)cannot run on XNNPACK's sparse path.*"
                                         r"stride 2 with padding='same'.*ZeroPadding2D\(1\).*drop --model"):
        load_user_model(path, _data())


def test_input_shape_must_match_the_data(tmp_path):
    path = str(tmp_path / "user.keras")
    _model("ok", input_shape=(64, 64, 3)).save(path)
    with pytest.raises(ModelError, match=r"inputs of shape \(64, 64, 3\).*are \(32, 32, 3\).*keras.Input"):
        load_user_model(path, _data())


def test_only_keras_files_are_accepted(tmp_path):
    path = tmp_path / "user.h5"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"expects a Keras 3 `.keras` file. Received: .*user.h5"):
        load_user_model(str(path), _data())
    with pytest.raises(ModelError, match="does not exist"):
        load_user_model(str(tmp_path / "none.keras"), _data())

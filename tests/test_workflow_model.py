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
    with pytest.raises(ModelError, match=r"--image-size N"):
        load_user_model(path, _data())


def test_only_keras_files_are_accepted(tmp_path):
    path = tmp_path / "user.h5"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"expects a Keras 3 `.keras` file. Received: .*user.h5"):
        load_user_model(str(path), _data())
    with pytest.raises(ModelError, match="does not exist"):
        load_user_model(str(tmp_path / "none.keras"), _data())


def _config(**values):
    from spruce.workflow.config import RunConfig

    return RunConfig(**values).validate()


def test_a_keras_applications_name_builds_for_the_data_without_weights():
    from spruce.workflow.model import build_model

    choice = build_model(_config(model="MobileNetV2:alpha=0.35", target="x86"), _data())
    assert tuple(choice.model.inputs[0].shape[1:]) == (32, 32, 3)
    assert choice.model.outputs[0].shape[-1] == 10
    assert choice.source == "keras.applications.MobileNetV2(alpha=0.35)"
    assert choice.pretrained == "" and choice.given is None
    # x86: used as it is (XNNPACK's asymmetric paddings stay)
    assert choice.compatibility["summary"].startswith("used as it is (spruce's engine has no layout rules): "
                                                      "it runs ")
    assert choice.model.get_layer("Conv1").padding == "same"


def test_model_arguments_are_python_literals_or_words():
    from spruce.workflow.model import model_label, parse_model_spec

    assert parse_model_spec("MobileNetV3Small:minimalistic=True, alpha=0.75,pooling=avg") == (
        "MobileNetV3Small", {"minimalistic": True, "alpha": 0.75, "pooling": "avg"})
    assert parse_model_spec("EfficientNetB0") == ("EfficientNetB0", {})
    for path in ("", "model.keras", "runs/dense.keras", "user.h5"):
        assert parse_model_spec(path) is None
    assert model_label("MobileNetV2:alpha=0.35") == "MobileNetV2-alpha=0.35"
    assert model_label("runs/user.keras") == "user"


def test_an_unknown_name_lists_the_valid_choices_and_the_closest():
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=r"'MobileNetV4' is neither a .keras file nor a spruce.zoo or "
                                         r"keras.applications model \(did you mean MobileNetV2 or .*\).*"
                                         r"spruce.zoo's: ResNetSmall; or of keras.applications': "
                                         r"ConvNeXtBase, .*EfficientNetB0, "):
        build_model(_config(model="MobileNetV4"), _data())
    with pytest.raises(ModelError, match=r"'ResNetSmal' .*\(did you mean ResNetSmall"):
        build_model(_config(model="ResNetSmal", target="x86"), _data())


def test_a_spruce_zoo_name_builds_for_the_data_with_its_arguments():
    from spruce.workflow.model import build_model, model_label, parse_model_spec

    spec = "ResNetSmall:width=8, blocks=[1, 2],stem_stride=2"
    assert parse_model_spec(spec) == ("ResNetSmall", {"width": 8, "blocks": [1, 2], "stem_stride": 2})
    assert model_label(spec) == "ResNetSmall-width=8-blocks=-1-2-stem_stride=2"
    choice = build_model(_config(model=spec, target="x86"), _data(classes=7))
    assert choice.source == "spruce.zoo.resnet_small(width=8, blocks=[1, 2], stem_stride=2)"
    assert tuple(choice.model.inputs[0].shape[1:]) == (32, 32, 3)
    assert choice.model.outputs[0].shape[-1] == 7
    assert choice.model.get_layer("stem").filters == 16
    assert len([layer for layer in choice.model.layers if layer.name.endswith("_add")]) == 3
    assert choice.compatibility["summary"].startswith("used as it is (spruce's engine has no layout rules): "
                                                      "it runs 11 layer(s) sparse")


@pytest.mark.parametrize("spec,match", [
    ("ResNetSmall:depth=2", r"--model spruce.zoo.resnet_small\(depth=2\): spruce.zoo.resnet_small has no "
                            r"argument depth. Its arguments: width, blocks, expansion, stem_stride"),
    ("ResNetSmall:num_classes=3", r"num_classes cannot be set: spruce run builds the model for the data's "
                                  r"images and classes. .*other arguments: width, blocks"),
    ("ResNetSmall:blocks=[2,0]", r"spruce.zoo.resnet_small refused the arguments for fashion_mnist's "
                                 r"32x32x3 images and 10 classes: blocks must be a non-empty list"),
])
def test_bad_zoo_model_arguments_name_the_problem_and_the_choices(spec, match):
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=match):
        build_model(_config(model=spec, target="x86"), _data())


@pytest.mark.parametrize("spec,match", [
    ("MobileNetV2:depth=2", r"MobileNetV2\(depth=2\): keras.applications.MobileNetV2 has no argument depth. "
                            r"Its arguments: alpha, pooling, classifier_activation, name"),
    ("MobileNetV2:weights='imagenet'", r"weights cannot be set: .*weights=None. Pass trained weights with "
                                       r"--weights FILE"),
    ("MobileNetV2:classifier_activation=nope", r"keras.applications.MobileNetV2 refused the arguments for "
                                               r"fashion_mnist's 32x32x3 images and 10 classes: .*nope"),
])
def test_bad_model_arguments_name_the_problem_and_the_choices(spec, match):
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=match):
        build_model(_config(model=spec, target="x86"), _data())


def test_weights_load_into_the_named_model_and_make_it_arrive_trained(tmp_path):
    import keras

    from spruce.workflow.model import build_model

    keras.utils.set_random_seed(1)
    trained = build_model(_config(model="MobileNetV3Small:minimalistic=True", target="x86"), _data()).model
    weights = str(tmp_path / "trained.weights.h5")
    trained.save_weights(weights)
    choice = build_model(_config(model="MobileNetV3Small:minimalistic=True", target="x86", weights=weights),
                         _data())
    assert choice.pretrained == f"trained weights given (--weights {weights})"
    for a, b in zip(trained.get_weights(), choice.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert build_model(_config(model="MobileNetV3Small:minimalistic=True", target="x86", weights=weights,
                               pretrained="no"), _data()).pretrained == ""
    with pytest.raises(ModelError, match=r"--weights .*trained.weights.h5 does not fit the model"):
        build_model(_config(model="MobileNetV2:alpha=0.35", target="x86", weights=weights), _data())
    with pytest.raises(ModelError, match=r"--weights .*none.weights.h5 does not exist"):
        build_model(_config(target="x86", weights=str(tmp_path / "none.weights.h5")), _data())


def test_a_keras_file_that_holds_a_training_state_arrives_trained(tmp_path):
    import keras

    from spruce.workflow.model import build_model

    model = _model("ok")
    untrained = str(tmp_path / "untrained.keras")
    model.save(untrained)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = _data()
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=2, verbose=0)
    trained = str(tmp_path / "trained.keras")
    model.save(trained)
    assert build_model(_config(model=untrained), data).pretrained == ""
    assert build_model(_config(model=trained), data).pretrained == f"{trained} holds the state of 2 training steps"
    assert build_model(_config(model=trained, pretrained="no"), data).pretrained == ""
    assert build_model(_config(model=untrained, pretrained="yes"), data).pretrained == "--pretrained"


def test_for_x86_a_model_xnnpack_refuses_is_used_as_it_is(tmp_path):
    path = str(tmp_path / "user.keras")
    model = _model("stride2_same_depthwise")
    model.save(path)
    choice = load_user_model(path, _data(), target="x86")
    assert [layer.name for layer in choice.model.layers] == [layer.name for layer in model.layers]


def test_squeeze_excite_is_refused_for_xnnpack_with_the_x86_target_offered():
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=r"(?s)cannot run on XNNPACK's sparse path.*squeeze_excite.*"
                                         r"--target x86.*another architecture"):
        build_model(_config(model="MobileNetV3Small:minimalistic=False"), _data(), exact=False)


def test_mobilenet_v2_is_padded_symmetrically_for_xnnpack_and_each_output_change_is_listed():
    import spruce
    from spruce.workflow.model import build_model

    config = _config(model="MobileNetV2:alpha=0.35")
    data = _data(shape=(64, 64, 3))  # 32x32 would shrink to 1x1 maps, which XNNPACK cannot run
    choice = build_model(config, data, exact=False)
    assert choice.compatibility["outputs_changed_by"] == ["Conv1", "block_1_pad", "block_3_pad", "block_6_pad",
                                                          "block_13_pad"]
    assert choice.compatibility["summary"] == ("6 rewrite(s) by make_xnnpack_compatible(exact=False), 5 of them "
                                               "changing outputs (the model is trained afterwards)")
    assert spruce.check_xnnpack(choice.model).ok
    with pytest.raises(ModelError, match=r"after 1 rewrite\(s\) by make_xnnpack_compatible, 5 rule\(s\) are "
                                         r"still broken:\n  - Conv1: "):
        build_model(config, data, exact=True)


def test_mobilenet_v2_on_32x32_images_is_refused_for_xnnpack_with_x86_offered():
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=r"(?s)after 6 rewrite\(s\) by make_xnnpack_compatible\(exact=False\), "
                                         r"1 rule\(s\) are still broken:\n  - block_14_add: Add of two 1x1 "
                                         r"feature maps.*--target x86"):
        build_model(_config(model="MobileNetV2:alpha=0.35"), _data(), exact=False)


def test_mobilenet_v2_on_32x32_images_names_the_image_size_that_fixes_it():
    from spruce.workflow.model import build_model

    with pytest.raises(ModelError, match=r"(?s)1x1 at this image size: pass a larger --image-size.*64"):
        build_model(_config(model="MobileNetV2:alpha=0.35"), _data(), exact=False)


@pytest.mark.parametrize("model, target, size", [
    ("", "xnnpack", 32),                        # the guide's net is built for 32x32
    ("MobileNetV2:alpha=0.35", "x86", 32),      # spruce's engine runs 1x1 maps
    ("MobileNetV2:alpha=0.35", "xnnpack", 64),  # five halvings: 2x2 last maps at 64
    ("MobileNet:alpha=0.25", "xnnpack", 64),
    ("MobileNetV3Small", "xnnpack", 32),        # refused for its squeeze-excite, not its size
])
def test_the_default_image_size_is_the_smallest_the_target_runs(model, target, size):
    from spruce.workflow.model import resolve_image_size

    assert resolve_image_size(_config(model=model, target=target)) == size
    assert resolve_image_size(_config(model=model, target=target, image_size=96)) == 96


def test_a_keras_files_image_size_is_its_inputs(tmp_path):
    from spruce.workflow.model import resolve_image_size

    path = str(tmp_path / "m48.keras")
    _model("plain", input_shape=(48, 48, 3)).save(path)
    assert resolve_image_size(_config(model=path)) == 48
    assert resolve_image_size(_config(model=str(tmp_path / "missing.keras"))) == 32


def test_for_x86_a_model_without_anything_the_engine_runs_sparse_is_refused_by_name(tmp_path):
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2)(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    path = str(tmp_path / "no_1x1.keras")
    keras.Model(inputs, layers.Dense(10)(x)).save(path)
    with pytest.raises(ModelError, match=r"(?s)no_1x1.keras has nothing to prune for spruce's engine "
                                         r"\(--target x86\).*PruneForLatencyOnSpruce\(\) finds nothing to prune"
                                         r".*Choose a model with 1x1 convolutions"):
        load_user_model(path, _data(), target="x86")

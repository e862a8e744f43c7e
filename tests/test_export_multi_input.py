"""Models with several inputs export through the real converter and run in the real LiteRT.

The converter calls the model once per entry of the input signature; the inputs must
reach it as one nested argument (a list, or a dict for a model built on a dict of
inputs), else the second lands on `training`. The inputs here differ in shape and in
role, so a swap fails the conversion or the comparison.
"""

import keras
import numpy as np
import pytest

from spruce.tflite.reader import read_tflite

pytest.importorskip("ai_edge_litert")

# Under JAX the model crosses into the TF-backend converter process as a .keras file.
pytestmark = pytest.mark.multi_backend


def two_input_model(as_dict):
    """An image through a 1x1 conv (90% zeros, so it is stored sparse) and a vector through
    a dense layer, concatenated into 5 logits."""
    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 8), name="image")
    extra = keras.Input((4,), name="extra")
    conv = keras.layers.Conv2D(32, 1, name="pointwise")
    x = keras.layers.GlobalAveragePooling2D()(conv(image))
    y = keras.layers.Dense(8)(extra)
    logits = keras.layers.Dense(5)(keras.layers.Concatenate()([x, y]))
    model = keras.Model({"image": image, "extra": extra} if as_dict else [image, extra], logits)
    kernel, bias = conv.get_weights()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.9)] = 0
    conv.set_weights([kernel, bias])
    return model


def litert_run(path, inputs):
    """The LiteRT interpreter's first output for `inputs`, given by signature name."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return next(iter(runner(**inputs).values()))


@pytest.mark.parametrize("as_dict", [False, True], ids=["list_inputs", "dict_inputs"])
def test_a_two_input_model_exports_sparse_and_litert_matches_keras(tmp_path, as_dict):
    from spruce.export import export_litert

    model = two_input_model(as_dict)
    report = export_litert(model, tmp_path / "two.tflite")
    assert report.max_abs_diff <= report.tolerance and report.densify_ops == 1
    assert "pointwise" in " ".join(report.sparse_tensors)
    rng = np.random.default_rng(1)
    image = rng.standard_normal((1, 6, 6, 8)).astype(np.float32)
    extra = rng.standard_normal((1, 4)).astype(np.float32)
    want = np.asarray(model({"image": image, "extra": extra} if as_dict else [image, extra], training=False))
    # The signature names its inputs args_0, args_0_1 in the order of model.inputs.
    by_name = {"image": image, "extra": extra}
    inputs = {name: by_name[t.name] for name, t in zip(("args_0", "args_0_1"), model.inputs)}
    np.testing.assert_allclose(litert_run(tmp_path / "two.tflite", inputs), want, rtol=1e-4, atol=1e-5)
    graph = read_tflite(tmp_path / "two.tflite").main
    assert [graph.tensors[i].shape for i in graph.inputs] == [(1, *t.shape[1:]) for t in model.inputs]


def test_a_two_input_model_exports_to_float16(tmp_path):
    from spruce.export import export_litert

    report = export_litert(two_input_model(False), tmp_path / "two_fp16.tflite", fp16=True)
    assert report.fp16 and report.max_abs_diff <= report.tolerance

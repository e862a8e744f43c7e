"""spruce's engine on float16 exports whose pruned weights are stored sparse.

`export_litert(..., fp16=True)` stores every float weight as float16 and a pruned one
sparse: DENSIFY of a float16 constant (a float16 output), then DEQUANTIZE into the
float32 weight the convolution reads. The engine densifies to float16, dequantizes
into float32 at load and runs its float32 kernels, sparse ones included, as LiteRT
(XNNPACK) does with `reduced_precision_support = fp16accfp32`. Real exports, the real
LiteRT interpreter.
"""

import keras
import numpy as np
import pytest

from helpers import assert_close_to_litert, require_engine
from spruce.tflite.reader import read_tflite
from tflite_models import zero_by_magnitude

S = pytest.importorskip("ai_edge_litert.schema_py_generated")
require_engine()


def pruned_net():
    """Stem, depthwise, a 1x1 conv with 90% zeros, a 3x3 conv with 90% zeros, a 1x1 conv
    with every weight zero (stored sparse with no values), pooling and a dense head."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    pruned = {"pointwise": layers.Conv2D(32, 1, activation="relu"),
              "spatial": layers.Conv2D(32, 3, padding="same", activation="relu"),
              "zero": layers.Conv2D(32, 1)}
    x = pruned["spatial"](pruned["pointwise"](x))
    x = layers.Add()([x, pruned["zero"](x)])
    outputs = layers.Dense(10)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    for name, layer in pruned.items():
        kernel, bias = layer.get_weights()
        layer.set_weights([zero_by_magnitude(kernel, 1.0 if name == "zero" else 0.9), bias + 0.1])
    return model


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    from spruce.export import export_litert

    path = tmp_path_factory.mktemp("fp16") / "pruned_fp16.tflite"
    export_litert(pruned_net(), path, fp16=True)
    return path


def sample(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 16, 16, 3)).astype(np.float32)


def test_the_export_stores_the_pruned_kernels_as_float16_densify_then_dequantize(fp16_export):
    graph = read_tflite(fp16_export).main
    producer = {t: op for op in graph.operators for t in op.outputs}
    convs = [op for op in graph.operators if op.opcode == "CONV_2D"]
    sparse = []
    for conv in convs:
        dequantize = producer[conv.inputs[1]]
        assert dequantize.opcode == "DEQUANTIZE" and graph.tensors[conv.inputs[1]].type_name == "FLOAT32"
        densify = producer.get(dequantize.inputs[0])
        if densify is not None:
            assert densify.opcode == "DENSIFY" and graph.tensors[densify.outputs[0]].type_name == "FLOAT16"
            assert graph.tensors[densify.inputs[0]].type_name == "FLOAT16"
            sparse.append(densify.inputs[0])
    assert len(sparse) == 3  # the two 90% kernels and the all-zero one
    assert sum(graph.tensors[t].data is None for t in sparse) == 1  # no values stored for all zeros


@pytest.mark.parametrize("threads", [1, 2])
def test_the_engine_matches_litert_on_a_sparse_float16_export(fp16_export, threads):
    from spruce.runtime import Engine

    engine = Engine(fp16_export, num_threads=threads)
    for seed in range(3):
        assert_close_to_litert(fp16_export, sample(seed), engine)


def test_the_float16_sparse_kernels_run_on_the_sparse_kernels(fp16_export):
    from spruce.runtime import Engine

    convs = [layer for layer in Engine(fp16_export).summary() if layer["opcode"] == "CONV_2D"]
    kernels = [(layer["kernel"], layer["sparsity"]) for layer in convs]
    assert kernels[0][0] == "conv_hwc2chw"
    assert kernels[1][0] == "spmm" and kernels[1][1] == pytest.approx(0.9, abs=0.01)
    assert kernels[2][0] == "spconv" and kernels[2][1] == pytest.approx(0.9, abs=0.01)
    assert kernels[3] == ("spmm", 1.0)


def test_the_engine_runs_float16_weights_as_their_float32_values(fp16_export, tmp_path):
    """The fp16 export gives, bit for bit, what the fp32 export of the same net with its
    weights rounded to float16 gives: the engine's arithmetic is float32 in both. (The net
    has no BatchNormalization, which the converter would fold before rounding.)"""
    from spruce.export import export_litert
    from spruce.runtime import Engine

    model = pruned_net()
    model.set_weights([w.astype(np.float16).astype(np.float32) for w in model.get_weights()])
    export_litert(model, tmp_path / "rounded_fp32.tflite")
    x = sample()
    np.testing.assert_array_equal(Engine(fp16_export).run(x), Engine(tmp_path / "rounded_fp32.tflite").run(x))


def test_a_densify_that_changes_the_type_is_refused(fp16_export, tmp_path):
    import flatbuffers

    from spruce.runtime import Engine, UnsupportedModelError

    with open(fp16_export, "rb") as f:
        model = S.ModelT.InitFromPackedBuf(bytearray(f.read()), 0)
    graph = model.subgraphs[0]
    densify = next(op for op in graph.operators
                   if model.operatorCodes[op.opcodeIndex].builtinCode == S.BuiltinOperator.DENSIFY)
    graph.tensors[densify.outputs[0]].type = S.TensorType.FLOAT32
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bad = tmp_path / "densify_to_float32.tflite"
    bad.write_bytes(bytes(builder.Output()))
    with pytest.raises(UnsupportedModelError, match="its input is FLOAT16 but its output FLOAT32; DENSIFY keeps"):
        Engine(bad)

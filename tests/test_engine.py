"""spruce's native engine against the LiteRT interpreter, on real converter output.

Models are small (tens of KFLOPs to a few MFLOPs) and each is converted once per
session. Agreement is measured as max |engine - litert| / max |litert|.
"""

import gc
import re

import numpy as np
import pytest

from helpers import RTOL, assert_close_to_litert
from tflite_models import convert, prune_pointwise, randomize_batchnorm

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from spruce import zoo  # noqa: E402
from spruce.runtime import Engine, UnsupportedModelError  # noqa: E402
from spruce.tflite import InvalidTFLiteError  # noqa: E402

def sample(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Builds and converts each test model once; name -> path."""
    folder = tmp_path_factory.mktemp("engine_models")
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            model, sparsity = _MODELS[name]()
            randomize_batchnorm(model)
            if sparsity:
                prune_pointwise(model, sparsity)
            cache[name] = _convert(model, folder / f"{name}.tflite")
        return cache[name]

    return get


def _convert(model, path):
    """`tflite_models.convert`, for models with several inputs too."""
    if len(model.inputs) == 1:
        return convert(model, path, sparse=True)
    import tensorflow as tf

    spec = [[tf.TensorSpec((1,) + tuple(t.shape[1:]), tf.float32) for t in model.inputs]]
    model.export(str(path), format="litert", verbose=False, input_signature=spec,
                 optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY])
    return path


def _activations_model():
    layers = keras.layers
    inputs = keras.Input((12, 10, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inputs)
    a = layers.LeakyReLU(negative_slope=0.3)(x)
    b = layers.Activation("elu")(x)
    c = layers.Activation("sigmoid")(x)
    d = layers.Activation("hard_swish")(x)
    x = layers.Add()([layers.Multiply()([a, c]), layers.Add()([b, d])])
    x = layers.DepthwiseConv2D(5, padding="same", activation="relu")(x)
    x = layers.Conv2D(12, 1, activation="tanh")(x)
    x = layers.Conv2D(6, 3, strides=1, padding="same", dilation_rate=2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(5)(x)
    outputs = layers.Softmax()(x)
    return keras.Model(inputs, outputs), 0.0


def _layouts_model():
    """Two inputs and two outputs, squeeze-excite, reshapes between 4-D shapes, channel padding."""
    layers = keras.layers
    a = keras.Input((8, 6, 4))
    b = keras.Input((8, 6, 4))
    x = layers.Add()([a, layers.Activation("relu")(b)])  # both inputs row-major
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(8, 1, activation="sigmoid")(se)
    x = layers.Multiply()([x, se])  # [1, 8, 6, 8] * [1, 1, 1, 8]
    x = layers.Reshape((6, 8, 8))(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    y = layers.ZeroPadding2D(((1, 0), (0, 2)))(x)  # PAD that feeds an output, not a conv
    z = layers.Reshape((3 * 4 * 8,))(x)
    z = layers.Dense(6, activation="relu")(z)
    return keras.Model([a, b], [y, z]), 0.0


_MODELS = {
    "layouts": _layouts_model,
    "guide": lambda: (zoo.guide_model(), 0.0),
    "guide_flat_sparse": lambda: (zoo.guide_model(keepdims=False), 0.8),
    "mobilenet_v1": lambda: (zoo.mobilenet_v1((64, 64, 3), num_classes=10, alpha=0.25), 0.9),
    "mobilenet_v2": lambda: (zoo.mobilenet_v2((64, 64, 3), num_classes=10, alpha=0.35), 0.75),
    "activations": _activations_model,
}


@pytest.mark.parametrize("name", ["guide", "guide_flat_sparse"])
def test_guide_model_matches_litert(files, name):
    path = files(name)
    assert_close_to_litert(path, sample((1, 32, 32, 3)))


def test_sparse_mobilenet_v1_runs_its_1x1_convs_on_the_sparse_kernel(files):
    path = files("mobilenet_v1")
    engine = assert_close_to_litert(path, sample((1, 64, 64, 3)))
    kernels = [layer["kernel"] for layer in engine.summary()]
    assert kernels.count("spmm") == 13
    assert kernels[:2] == ["folded into the next conv", "conv_hwc2chw"]
    assert "conv_general" not in kernels and "pad" not in kernels


def test_dense_weights_take_the_dense_kernel(files):
    engine = Engine(files("guide"))
    assert [layer["kernel"] for layer in engine.summary()].count("gemm") == 2


def test_mobilenet_v2_with_residual_adds_and_5x5_depthwise_matches_litert(files):
    path = files("mobilenet_v2")
    engine = assert_close_to_litert(path, sample((1, 64, 64, 3)))
    opcodes = [layer["opcode"] for layer in engine.summary()]
    assert "ADD" in opcodes


def test_standalone_activations_mul_softmax_and_dilated_conv_match_litert(files):
    engine = assert_close_to_litert(files("activations"), sample((1, 12, 10, 3), seed=3))
    kernels = {layer["kernel"] for layer in engine.summary()}
    assert {"elementwise", "add", "mul", "conv_general", "softmax"} <= kernels


def test_multiple_inputs_outputs_reshapes_and_squeeze_excite_match_litert(files):
    from ai_edge_litert.interpreter import Interpreter

    path = files("layouts")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    xs = [sample((1, 8, 6, 4), seed=i) for i in range(2)]
    engine = Engine(path)
    # Match inputs/outputs by name: the converter may order them differently.
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], xs[engine.input_names.index(detail["name"])])
    interpreter.invoke()
    want = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    got = engine.run(*xs)
    assert len(got) == 2
    for name, g in zip(engine.output_names, got):
        w = want[name]
        assert g.shape == w.shape
        assert np.abs(g - w).max() / np.abs(w).max() < RTOL


def test_1x1_conv_pruned_to_all_zeros_matches_litert(tmp_path):
    """The converter stores an all-zero sparse kernel with no values at all."""
    from tflite_models import zero_by_magnitude

    layers = keras.layers
    inputs = keras.Input((6, 6, 4))
    conv = layers.Conv2D(5, 1)
    x = layers.Add()([conv(inputs), layers.Conv2D(5, 1)(inputs)])
    model = keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x)))
    kernel, bias = conv.get_weights()
    conv.set_weights([zero_by_magnitude(kernel, 1.0), bias + 0.5])
    path = convert(model, tmp_path / "zeros.tflite", sparse=True)
    assert_close_to_litert(path, sample((1, 6, 6, 4)))


def test_sparse_1x1_convs_on_unaligned_planes_match_litert_at_any_thread_count(tmp_path):
    """14x14 and 7x7 planes (not a multiple of 16 floats) run from aligned input tiles.

    14x14 makes 5 tiles of 40 pixels: 5 threads take a tile each, other counts split
    the output channels and run every tile; 7x7 is one tile, split by output channels.
    Wide (<= 128 inputs) and paired (> 128) kernels both.
    """
    layers = keras.layers
    keras.utils.set_random_seed(3)
    inputs = keras.Input((14, 14, 160))
    x = layers.Conv2D(144, 1, activation="relu")(inputs)
    x = layers.Conv2D(96, 1)(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = layers.Conv2D(200, 1, activation="relu6")(x)
    x = layers.Conv2D(64, 1)(x)
    model = keras.Model(inputs, x)
    prune_pointwise(model, 0.8)
    path = convert(model, tmp_path / "unaligned.tflite", sparse=True)
    x = sample((1, 14, 14, 160), seed=2)
    reference = Engine(path, num_threads=1)
    assert [row["family"] for row in reference.profile(1)].count("spmm") == 4
    one = reference.run(x)
    assert_close_to_litert(path, x, engine=reference)
    for threads in (2, 3, 5, 7):
        np.testing.assert_array_equal(Engine(path, num_threads=threads).run(x), one)


def test_block_pruned_1x1_convs_run_in_row_groups_and_match_litert_at_any_thread_count(tmp_path):
    """1x1 kernels pruned by spruce's block_mask in (1 input x 4 output) blocks take
    the row-group kernel when their output channels come in whole groups and they
    have >= 64 inputs; the 98-channel and 32-input layers stay on plain spmm. Thread
    splits that cut a group give the same bits."""
    from spruce.masking import block_mask

    layers = keras.layers
    keras.utils.set_random_seed(4)
    inputs = keras.Input((14, 14, 32))
    x = layers.Conv2D(96, 1, activation="relu")(inputs)  # 32 inputs: plain spmm
    x = layers.Conv2D(160, 1, activation="relu6")(x)
    x = layers.Conv2D(98, 1)(x)  # 98 outputs: no whole groups at the end
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = layers.Conv2D(200, 1, activation="relu")(x)  # 7x7
    model = keras.Model(inputs, x)
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kernel, bias = layer.get_weights()
            mask, _ = block_mask(kernel, 0.85, (1, 4))
            layer.set_weights([kernel * np.asarray(mask), bias])
    path = convert(model, tmp_path / "blocks.tflite", sparse=True)
    x = sample((1, 14, 14, 32), seed=5)
    reference = Engine(path, num_threads=1)
    kernels = [layer["kernel"] for layer in reference.summary() if layer["opcode"] == "CONV_2D"]
    grouped = "spmm_groups" if reference.isa != "portable" else "spmm"
    assert kernels == ["spmm", grouped, "spmm", grouped]
    one = reference.run(x)
    assert_close_to_litert(path, x, engine=reference)
    for threads in (2, 3, 5):
        np.testing.assert_array_equal(Engine(path, num_threads=threads).run(x), one)


def test_padded_planes_between_sparse_1x1_convs_and_their_neighbours_change_no_result(tmp_path, monkeypatch):
    """14x14 / 7x7 planes are spaced 200 / 56 floats apart where a sparse 1x1 conv
    reads them (a depthwise conv writes them, the 1x1 conv reads whole vectors in
    place instead of copying tiles) or writes them (it stores whole vectors, and the
    depthwise conv or MEAN after it reads the spaced planes).

    Results must be bit-identical to plain planes (SPRUCE_ENGINE_PLAIN_PLANES=1) at
    any thread count and batch size; a tensor that an ADD also reads stays plain.
    """
    layers = keras.layers
    keras.utils.set_random_seed(4)
    inputs = keras.Input((14, 14, 24))
    x = layers.Conv2D(160, 1, activation="relu")(inputs)
    d = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    a = layers.Conv2D(136, 1)(d)  # two sparse 1x1 readers of one padded tensor
    b = layers.Conv2D(136, 1, activation="relu")(d)
    x = layers.Add()([a, b])
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 14x14 -> 7x7
    y = layers.Conv2D(144, 1, activation="relu6")(x)
    z = layers.Add()([x, layers.DepthwiseConv2D(3, padding="same")(x)])  # read by ADD too: stays plain
    z = layers.Conv2D(144, 1)(z)
    x = layers.Conv2D(96, 1, activation="relu")(layers.Add()([y, z]))  # writes padded planes for MEAN
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    prune_pointwise(model, 0.85)
    path = convert(model, tmp_path / "padded.tflite", sparse=True, batch_size=2)
    x = sample((2, 14, 14, 24), seed=6)
    monkeypatch.setenv("SPRUCE_ENGINE_PLAIN_PLANES", "1")
    plain = {t: Engine(path, num_threads=t) for t in (1, 2, 3)}
    monkeypatch.delenv("SPRUCE_ENGINE_PLAIN_PLANES")
    padded = {t: Engine(path, num_threads=t) for t in (1, 2, 3)}
    assert padded[1]._graph.naive_bytes != plain[1]._graph.naive_bytes  # the planes were padded
    reference = plain[1].run(x)
    assert_close_to_litert(path, x, engine=padded[1])
    for t in (1, 2, 3):
        for _ in range(3):
            np.testing.assert_array_equal(padded[t].run(x), reference)
            np.testing.assert_array_equal(plain[t].run(x), reference)


def test_two_threads_give_the_one_thread_outputs(files):
    path = files("mobilenet_v2")
    x = sample((1, 64, 64, 3), seed=1)
    one = Engine(path, num_threads=1).run(x)
    two = Engine(path, num_threads=2).run(x)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_any_thread_count_gives_bit_identical_outputs_run_after_run(files):
    path = files("mobilenet_v1")
    x = sample((1, 64, 64, 3), seed=5)
    reference = Engine(path, num_threads=1).run(x)
    for threads in (2, 3, 5):
        engine = Engine(path, num_threads=threads)
        for _ in range(20):
            np.testing.assert_array_equal(engine.run(x), reference)


def test_a_batch_of_images_runs_image_by_image(files):
    path = files("guide")
    engine = Engine(path)
    x = sample((3, 32, 32, 3), seed=2)
    y = engine.run(x)
    assert y.shape == (3, 10)
    for i in range(3):
        np.testing.assert_allclose(y[i : i + 1], engine.run(x[i : i + 1]), rtol=0, atol=0)


@pytest.mark.parametrize("threads, images", [(2, 5), (3, 7), (3, 2)])
def test_a_batch_shared_among_threads_gives_the_image_by_image_outputs(files, threads, images):
    """Several threads share a batch out among one-thread copies of the model."""
    path = files("mobilenet_v1")
    x = sample((images, 64, 64, 3), seed=3)
    one = Engine(path)
    reference = np.concatenate([one.run(x[i : i + 1]) for i in range(images)])
    engine = Engine(path, num_threads=threads)
    for _ in range(3):
        np.testing.assert_array_equal(engine.run(x), reference)
    # One image still runs split layer by layer, on the engine's own graph.
    np.testing.assert_array_equal(engine.run(x[:1]), reference[:1])
    assert engine.benchmark(runs=2, warmup=0, inputs=x[:1]).num_threads == threads


def test_a_batch_of_a_two_input_model_is_shared_among_threads(files):
    path = files("layouts")
    xs = [sample((4, 8, 6, 4), seed=i) for i in range(2)]
    one = Engine(path)
    want = [one.run(xs[0][i : i + 1], xs[1][i : i + 1]) for i in range(4)]
    got = Engine(path, num_threads=2).run(*xs)
    assert len(got) == 2
    for k in range(2):
        np.testing.assert_array_equal(got[k], np.concatenate([w[k] for w in want]))


def test_a_bad_batch_is_rejected_with_threads_too(files):
    engine = Engine(files("guide"), num_threads=2)
    with pytest.raises(ValueError, match=r"should have shape \(1, 32, 32, 3\).*received \(3, 31, 32, 3\)"):
        engine.run(np.zeros((3, 31, 32, 3), np.float32))
    with pytest.raises(ValueError, match="same batch size"):
        Engine(files("layouts"), num_threads=2).run(np.zeros((2, 8, 6, 4), np.float32),
                                                     np.zeros((3, 8, 6, 4), np.float32))


def test_native_batch_sharing_refuses_graphs_that_are_not_copies(files):
    guide, other = Engine(files("guide")), Engine(files("mobilenet_v1"))
    x = np.zeros((2, 32, 32, 3), np.float32)
    for copies in ([other._graph], [guide._graph]):
        with pytest.raises(ValueError, match="distinct copies of the graph"):
            guide._graph.run_shared(copies, [x])


def test_replicas_run_the_same_model_with_their_own_memory_and_outlive_their_source(files):
    """A batch's copies are replicas of the engine's graph: its operators and packed
    weights, shared, with an arena planned for their own thread count."""
    x = sample((1, 64, 64, 3), seed=6)
    engine = Engine(files("mobilenet_v1"), num_threads=2)
    reference = engine.run(x)
    replicas = [engine._graph.replica(), engine._graph.replica(num_threads=3)]
    del engine
    gc.collect()  # the replicas keep the model alive
    for replica, threads in zip(replicas, (1, 3)):
        assert replica.num_threads == threads and replica.arena_bytes > 0
        for _ in range(2):
            np.testing.assert_array_equal(replica.run([x])[0], reference)
    with pytest.raises(ValueError, match=r"num_threads must be in \[1, 256\]. Received: num_threads=0"):
        replicas[0].replica(num_threads=0)


def test_wrong_input_shape_is_rejected_with_expected_shape(files):
    engine = Engine(files("guide"))
    with pytest.raises(ValueError, match=r"should have shape \(1, 32, 32, 3\).*received \(1, 31, 32, 3\)"):
        engine.run(np.zeros((1, 31, 32, 3), np.float32))


def test_benchmark_times_runs_in_native_loop(files):
    engine = Engine(files("guide"))
    report = engine.benchmark(runs=7, warmup=2)
    assert len(report.times) == 7 and all(t > 0 for t in report.times)
    assert report.to_dict()["median_ms"] == pytest.approx(report.median * 1e3)


def test_benchmark_can_time_each_call_from_python_like_litert(files):
    engine = Engine(files("guide"))
    report = engine.benchmark(runs=5, warmup=1, timer="python")
    assert len(report.times) == 5 and all(t > 0 for t in report.times)
    assert report.timer == "python" and report.to_dict()["timer"] == "python"
    assert engine.benchmark(runs=2, warmup=0).timer == "native"


@pytest.mark.parametrize("kwargs, message", [
    ({"timer": "wall"}, 'timer must be "native" or "python". Received: timer=\'wall\''),
    ({"runs": 0}, "runs must be >= 1. Received: runs=0"),
    ({"runs": 3, "warmup": -1, "timer": "python"}, "warmup must be >= 0. Received: warmup=-1"),
])
def test_benchmark_rejects_bad_arguments_with_the_received_value(files, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Engine(files("guide")).benchmark(**kwargs)


def test_arena_shares_memory_between_layers(files):
    engine = Engine(files("mobilenet_v1"))
    assert 0 < engine.arena_bytes < engine._graph.naive_bytes / 2


def test_unsupported_operator_is_refused_naming_it(tmp_path):
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    outputs = layers.UpSampling2D()(x)  # TILE, an operator the engine does not have
    path = convert(keras.Model(inputs, outputs), tmp_path / "upsample.tflite", sparse=False)
    with pytest.raises(UnsupportedModelError, match="TILE"):
        Engine(path)


def test_quantized_model_is_refused_with_fix(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((8, 8, 16))
    outputs = keras.layers.Conv2D(64, 3, padding="same")(inputs)  # big enough to be quantized
    path = tmp_path / "quantized.tflite"
    keras.Model(inputs, outputs).export(
        str(path), format="litert", verbose=False,
        input_signature=[tf.TensorSpec((1, 8, 8, 16), tf.float32)],
        optimizations=[tf.lite.Optimize.DEFAULT],
    )
    with pytest.raises(UnsupportedModelError, match="float32 models only.*Export without quantization"):
        Engine(path)


def test_truncated_file_raises_invalid_tflite(files, tmp_path):
    data = open(files("guide"), "rb").read()
    for size in (0, 7, 100, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{size}.tflite"
        cut.write_bytes(data[:size])
        with pytest.raises(InvalidTFLiteError):
            Engine(cut)


def test_corrupted_files_raise_python_errors_never_crash(files, tmp_path):
    """Random byte flips give an error or a model that runs; the process survives."""
    data = bytearray(open(files("guide"), "rb").read())
    rng = np.random.default_rng(0)
    x = sample((1, 32, 32, 3))
    for trial in range(150):
        bad = bytearray(data)
        for pos in rng.integers(0, len(bad), size=int(rng.integers(1, 8))):
            bad[pos] = int(rng.integers(0, 256))
        path = tmp_path / "bad.tflite"
        path.write_bytes(bytes(bad))
        try:
            engine = Engine(path)
        except ValueError:  # InvalidTFLiteError, UnsupportedModelError, plan errors
            continue
        try:
            engine.run(x)
        except ValueError:
            pass


def test_num_threads_must_be_positive(files):
    with pytest.raises(ValueError, match="num_threads must be a positive integer. Received: num_threads=0"):
        Engine(files("guide"), num_threads=0)


def test_a_1000_class_head_on_huge_pages_matches_litert_and_4k_pages(tmp_path, monkeypatch):
    """Weights of 2 MiB or more (here the classifier's 1024 x 1000, 4 MB) and the
    arena go on transparent huge pages: same results as with 4 KiB pages
    (SPRUCE_ENGINE_NO_HUGEPAGES=1) and as LiteRT, at 1 and 2 threads."""
    layers = keras.layers
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(1024, 1, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(1000)(x))
    path = convert(model, tmp_path / "head.tflite", sparse=False)
    x = sample((1, 8, 8, 3), seed=7)
    monkeypatch.setenv("SPRUCE_ENGINE_NO_HUGEPAGES", "1")
    small = Engine(path)
    monkeypatch.delenv("SPRUCE_ENGINE_NO_HUGEPAGES")
    reference = small.run(x)
    for t in (1, 2):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=t))
        np.testing.assert_array_equal(engine.run(x), reference)

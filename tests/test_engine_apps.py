"""What the Keras application nets need from the engine, against LiteRT and NumPy.

Tiny hand-built Keras graphs per operator are converted by the real TF converter
and compared with the LiteRT interpreter; the kernels are compared with NumPy
references over random shapes through one-operator plans; small versions of the
keras.applications nets (random weights) match LiteRT end to end. Also: denormals
are flushed inside a run only, swish and hard-swish run fused where the graph
allows, squeeze-and-excite convs run as matrix-vector products, and the AVX-512
kernels give the AVX2 kernels' bits.
"""

import numpy as np
import pytest

from tflite_models import convert, prune_pointwise

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from spruce.runtime import Engine, UnsupportedModelError  # noqa: E402
from spruce.runtime import _engine  # noqa: E402
from helpers import assert_close_to_litert  # noqa: E402
from test_engine import sample  # noqa: E402

layers = keras.layers


def kernels_of(engine):
    return [layer["kernel"] for layer in engine.summary()]


# ---- one-operator plans against NumPy ---------------------------------------------------


def one_op_graph(kind, x_shape, y_shape, ints=None, arrays=None, threads=1, extra_inputs=()):
    """A plan: row-major input(s) -> channel-major -> `kind` -> row-major output."""
    tensors, ops = [], []

    def tensor(shape, layout):
        tensors.append({"shape": list(shape), "layout": layout, "data": None})
        return len(tensors) - 1

    def op(kind, inputs, outputs, ints=None, arrays=None):
        ops.append({"kind": kind, "name": f"{kind} {len(ops)}", "inputs": inputs, "outputs": outputs,
                    "ints": ints or {}, "floats": {}, "arrays": arrays or {}})

    graph_inputs, chw_inputs = [], []
    for shape in (x_shape, *extra_inputs):
        graph_inputs.append(tensor(shape, 0))
        chw_inputs.append(tensor(shape, 1))
        op("transpose", [graph_inputs[-1]], [chw_inputs[-1]])
    y = tensor(y_shape, 1)
    op(kind, chw_inputs, [y], ints, arrays)
    out = tensor(y_shape, 0)
    op("transpose", [y], [out])
    return _engine.Graph(tensors, ops, graph_inputs, [out], threads)


def numpy_pool(x, k, stride, pads, reduce):
    """[N, H, W, C] pooled over windows that exclude the padding, as TFLite does."""
    (kh, kw), (sh, sw), (top, bottom, left, right) = k, stride, pads
    n, h, w, c = x.shape
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    out = np.empty((n, oh, ow, c), np.float32)
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * sh - top, ox * sw - left
            win = x[:, max(y0, 0):max(y0 + kh, 0), max(x0, 0):max(x0 + kw, 0), :]
            out[:, oy, ox, :] = reduce(win, axis=(1, 2))
    return out


def numpy_conv(x, w, b, stride, pads):
    """[N, H, W, I] conv with [O, kh, kw, I] weights and explicit zero padding."""
    (sh, sw), (top, bottom, left, right) = stride, pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    o, kh, kw, _ = w.shape
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, o))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw, :]
            out += patch @ w[:, ky, kx, :].T.astype(np.float64)
    return out + b


@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
def test_pooling_kernel_matches_numpy_over_random_shapes(kind):
    rng = np.random.default_rng(1)
    reduce = np.max if kind == "max_pool" else np.mean
    for trial in range(40):
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(kh, 14)), int(rng.integers(kw, 14))
        pads = tuple(int(rng.integers(0, k)) for k in (kh, kh, kw, kw))
        x = rng.normal(size=(int(rng.integers(1, 3)), h, w, int(rng.integers(1, 6)))).astype(np.float32)
        want = numpy_pool(x, (kh, kw), (sh, sw), pads, reduce)
        ints = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=pads[0], pad_bottom=pads[1],
                    pad_left=pads[2], pad_right=pads[3], activation=0)
        for threads in (1, 2):
            got = one_op_graph(kind, x.shape, want.shape, ints, threads=threads).run([x])[0]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"trial {trial}")


def test_im2col_conv_kernel_matches_numpy_over_random_shapes():
    rng = np.random.default_rng(2)
    for trial in range(40):
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        # Up to 20x20 images (pixel chunks and a short last one) and some 1-pixel outputs.
        h, w = int(rng.integers(kh, 21)), int(rng.integers(kw, 21))
        pads = tuple(int(rng.integers(0, 3)) for _ in range(4))
        i, o = int(rng.integers(1, 9)), int(rng.integers(1, 11))
        x = rng.normal(size=(int(rng.integers(1, 3)), h, w, i)).astype(np.float32)
        wt = rng.normal(size=(o, kh, kw, i)).astype(np.float32)
        b = rng.normal(size=o).astype(np.float32)
        want = numpy_conv(x, wt, b, (sh, sw), pads)
        ints = dict(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_top=pads[0], pad_bottom=pads[1],
                    pad_left=pads[2], pad_right=pads[3], activation=0)
        for threads in (1, 2):
            graph = one_op_graph("conv_im2col", x.shape, want.shape, ints, {"weights": wt, "bias": b}, threads)
            got = graph.run([x])[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"trial {trial}")


def test_concat_kernel_matches_numpy_along_every_axis():
    rng = np.random.default_rng(3)
    for axis in range(4):
        shapes = []
        for size in (2, 3, 1):
            shape = [2, 4, 5, 3]
            shape[axis] = size
            shapes.append(tuple(shape))
        xs = [rng.normal(size=s).astype(np.float32) for s in shapes]
        want = np.concatenate(xs, axis=axis)
        graph = one_op_graph("concat", shapes[0], want.shape, {"axis": axis}, extra_inputs=shapes[1:])
        np.testing.assert_array_equal(graph.run(xs)[0], want)


def _window(k, stride, pad=0, activation=0):
    return dict(kernel_h=k, kernel_w=k, stride_h=stride, stride_w=stride, pad_top=pad, pad_bottom=pad,
                pad_left=pad, pad_right=pad, activation=activation)


@pytest.mark.parametrize("kind, ints, y_shape, message", [
    ("max_pool", _window(2, 2), (1, 5, 5, 4), "gives 4x4; the plan says"),
    ("max_pool", _window(2, 0), (1, 5, 5, 4), r"stride must be in \[1, 1024\]. Received: 0"),
    ("avg_pool", _window(2, 1, pad=2), (1, 11, 11, 4), "padding must be smaller than the window"),
    ("avg_pool", _window(2, 1, activation=9), (1, 7, 7, 4), "unsupported fused activation code 9"),
    ("conv_im2col", _window(3, 1, pad=1), (1, 8, 8, 4), "weights should have shape"),
    ("conv_im2col", _window(3, 1), (1, 8, 8, 4), "does not give output"),
    ("concat", dict(axis=4), (1, 8, 8, 4), r"axis must be in \[0, 4\). Received: axis=4"),
])
def test_bad_operator_parameters_raise_naming_the_problem(kind, ints, y_shape, message):
    arrays = {"weights": np.zeros((3, 3, 2, 4), np.float32)} if kind == "conv_im2col" else None
    with pytest.raises(ValueError, match=message):
        one_op_graph(kind, (1, 8, 8, 4), y_shape, ints, arrays)


# ---- one Keras operator at a time against LiteRT --------------------------------------


def _convert_model(tmp_path, name, inputs, outputs, sparse=False):
    keras.utils.set_random_seed(0)
    return convert(keras.Model(inputs, outputs), tmp_path / f"{name}.tflite", sparse=sparse)


@pytest.mark.parametrize("pool, kwargs", [
    ("max", dict(pool_size=3, strides=2, padding="valid")),
    ("max", dict(pool_size=(2, 3), strides=(1, 2), padding="same")),
    ("avg", dict(pool_size=3, strides=2, padding="same")),
    ("avg", dict(pool_size=2, strides=1, padding="valid")),
])
def test_max_and_average_pooling_match_litert(tmp_path, pool, kwargs):
    inputs = keras.Input((11, 9, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = (layers.MaxPooling2D if pool == "max" else layers.AveragePooling2D)(**kwargs)(x)
    outputs = layers.Conv2D(4, 1)(x)
    path = _convert_model(tmp_path, pool, inputs, outputs)
    engine = assert_close_to_litert(path, sample((1, 11, 9, 3)))
    assert f"{pool}_pool" in kernels_of(engine)


def test_resnet_stem_zero_pad_then_max_pool_matches_litert(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = layers.ZeroPadding2D(3)(inputs)
    x = layers.Conv2D(8, 7, strides=2)(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    path = _convert_model(tmp_path, "stem", inputs, x)
    engine = assert_close_to_litert(path, sample((1, 16, 16, 3)))
    assert {"pad", "max_pool"} <= set(kernels_of(engine))


def test_concatenate_sub_and_div_match_litert(tmp_path):
    inputs = keras.Input((6, 5, 3))
    a = layers.Conv2D(4, 3, padding="same")(inputs)
    b = layers.Conv2D(2, 1, activation="sigmoid")(inputs)
    x = layers.Concatenate()([a, b, inputs])  # channels
    x = layers.Subtract()([x, layers.Conv2D(9, 1)(x)])
    x = keras.ops.divide(x, layers.Conv2D(9, 1, activation="sigmoid")(x) + 0.5)
    y = layers.Concatenate(axis=1)([x, layers.Conv2D(9, 1)(x)])  # rows
    path = _convert_model(tmp_path, "concat", inputs, layers.Conv2D(3, 1)(y))
    engine = assert_close_to_litert(path, sample((1, 6, 5, 3)))
    opcodes = {layer["opcode"] for layer in engine.summary()}
    assert {"CONCATENATION", "SUB", "DIV"} <= opcodes


@pytest.mark.parametrize("kwargs", [
    dict(filters=6, kernel_size=3, strides=1, padding="same"),
    dict(filters=5, kernel_size=3, strides=2, padding="same"),
    dict(filters=7, kernel_size=(3, 1), strides=1, padding="valid"),
    dict(filters=8, kernel_size=5, strides=2, padding="valid"),
    dict(filters=9, kernel_size=1, strides=2, padding="valid"),
])
def test_convs_run_as_matrix_products_and_match_litert_at_any_thread_count(tmp_path, kwargs):
    inputs = keras.Input((23, 21, 3))
    x = layers.Conv2D(12, 3, strides=2, activation="relu")(inputs)  # the entry conv
    x = layers.Conv2D(activation="relu", **kwargs)(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    path = _convert_model(tmp_path, "conv", inputs, outputs)
    x = sample((1, 23, 21, 3))
    for threads in (1, 2, 3):
        engine = assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))
        assert "im2col_gemm" in kernels_of(engine)


def test_an_operator_the_engine_lacks_is_still_refused_naming_it(tmp_path):
    inputs = keras.Input((4, 4, 3))
    outputs = layers.UpSampling2D()(layers.Conv2D(4, 3, padding="same")(inputs))
    path = _convert_model(tmp_path, "upsample", inputs, outputs)
    with pytest.raises(UnsupportedModelError, match=r"TILE \(operator \d+\) is not supported by spruce.s engine"):
        Engine(path)


def test_corrupted_plans_of_the_new_operators_raise_value_error_never_crash(tmp_path):
    from test_engine_fuzz import _mutations

    from spruce.runtime import build_plan
    from spruce.tflite.reader import read_tflite

    inputs = keras.Input((9, 9, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = layers.Conv2D(4, 3, padding="same")(x)
    x = layers.Concatenate()([layers.MaxPooling2D(2, padding="same")(x), layers.AveragePooling2D(2, padding="same")(x)])
    x = layers.Subtract()([x, keras.ops.divide(x, 2.5 + x * x)])
    path = _convert_model(tmp_path, "ops", inputs, layers.Flatten()(x))
    plan = build_plan(read_tflite(path))
    x = sample((1, 9, 9, 3))
    reference = _engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs).run([x])[0]
    for p in _mutations(plan, np.random.default_rng(1)):
        try:
            g = _engine.Graph(p.tensors, p.ops, p.inputs, p.outputs)
        except ValueError:
            continue
        try:
            g.run([x])
        except ValueError:
            pass
    np.testing.assert_array_equal(_engine.Graph(plan.tensors, plan.ops, plan.inputs, plan.outputs).run([x])[0],
                                  reference)


def test_a_rescaled_input_image_still_feeds_the_entry_conv(tmp_path):
    """keras.applications' Rescaling (MUL and ADD by constants) keeps the image row-major."""
    inputs = keras.Input((12, 12, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    path = _convert_model(tmp_path, "rescaling", inputs, layers.GlobalAveragePooling2D()(x))
    engine = assert_close_to_litert(path, 100 * sample((1, 12, 12, 3)))
    assert kernels_of(engine) == ["mul", "add", "conv_hwc2chw", "mean_hw"]


# ---- the keras.applications nets, small ------------------------------------------------


@pytest.fixture(scope="module")
def app_files(tmp_path_factory):
    """keras.applications nets at small sizes (random weights, logits), converted once."""
    folder = tmp_path_factory.mktemp("apps")
    cache = {}

    def get(name, sparsity=0.0):
        key = (name, sparsity)
        if key not in cache:
            keras.utils.set_random_seed(0)
            build, size = APPS[name]
            model = build(size)
            if sparsity:
                prune_pointwise(model, sparsity)
            cache[key] = (convert(model, folder / f"{name}_{sparsity}.tflite", sparse=bool(sparsity)), size)
            keras.backend.clear_session()
        return cache[key]

    return get


APPS = {
    "ResNet50": (lambda s: keras.applications.ResNet50(weights=None, input_shape=(s, s, 3), classes=10,
                                                       classifier_activation=None), 32),
    "MobileNetV3Small": (lambda s: keras.applications.MobileNetV3Small(
        weights=None, input_shape=(s, s, 3), alpha=0.75, classes=10, classifier_activation=None), 64),
    "EfficientNetB0": (lambda s: keras.applications.EfficientNetB0(
        weights=None, input_shape=(s, s, 3), classes=10, classifier_activation=None), 32),
}


@pytest.mark.parametrize("name, sparsity", [("ResNet50", 0.0), ("MobileNetV3Small", 0.9),
                                            ("EfficientNetB0", 0.9)])
def test_keras_application_nets_match_litert(app_files, name, sparsity):
    path, size = app_files(name, sparsity)
    x = sample((1, size, size, 3), seed=4)
    for threads in (1, 2):
        assert_close_to_litert(path, x, engine=Engine(path, num_threads=threads))


# ---- denormals ------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_denormals_are_flushed_in_a_run_and_the_callers_mode_is_restored(tmp_path, threads):
    """Denormal inputs read as zero inside the engine (arithmetic on them is ~100x slower);
    the calling thread computes denormals again after the run."""
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer="ones")(inputs)
    path = _convert_model(tmp_path, "denormals", inputs, x)
    x = sample((1, 8, 8, 4))
    x[0, :4] = np.float32(1e-39) * (1 + np.arange(32, dtype=np.float32).reshape(4, 8, 1) / 32)  # denormals
    engine = Engine(path, num_threads=threads)
    got = engine.run(x)
    np.testing.assert_array_equal(got[0, :3], 0.0)  # every tap of these rows read a flushed input
    assert_close_to_litert(path, x, engine=engine)
    tiny = np.float32(1e-38) * np.float32(0.25)
    assert tiny != 0 and tiny == np.float32(2.5e-39)


# ---- fused activations -------------------------------------------------------------------


def test_swish_runs_as_one_operator_and_matches_litert(tmp_path):
    """The converter writes swish as LOGISTIC then MUL by the LOGISTIC's input."""
    inputs = keras.Input((10, 9, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.Activation("swish")(layers.Add()([x, x]))  # after an ADD: one unary operator
    outputs = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 1)(x))
    path = _convert_model(tmp_path, "swish", inputs, outputs)
    engine = assert_close_to_litert(path, sample((1, 10, 9, 3)))
    summary = engine.summary()
    assert [s["opcode"] for s in summary if s["kernel"] == "fused into its neighbour"] == ["LOGISTIC"]
    assert [s["opcode"] for s in summary if s["kernel"] == "swish"] == ["MUL"]


@pytest.mark.parametrize("size", [28, 14])  # sparse 1x1 convs on whole planes, and on tiles
def test_swish_after_each_conv_kind_runs_in_its_epilogue(tmp_path, size):
    inputs = keras.Input((size, size, 3))
    swish = layers.Activation("swish")
    x = swish(layers.Conv2D(8, 3, padding="same")(inputs))  # entry conv
    x = swish(layers.DepthwiseConv2D(3, padding="same")(x))
    x = swish(layers.Conv2D(48, 1)(x))  # sparse 1x1
    x = swish(layers.Conv2D(16, 1, name="dense_1x1")(x))
    x = swish(layers.Conv2D(8, 3, padding="same")(x))  # im2col
    outputs = layers.GlobalAveragePooling2D()(x)
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, outputs)
    prune_pointwise(model, 0.8, [layer for layer in model.layers
                                 if isinstance(layer, layers.Conv2D) and layer.kernel_size == (1, 1)
                                 and layer.name != "dense_1x1"])
    path = convert(model, tmp_path / "swish_epilogues.tflite", sparse=True)
    for threads in (1, 2, 3):
        engine = assert_close_to_litert(path, sample((1, size, size, 3)), engine=Engine(path, num_threads=threads))
        kernels = kernels_of(engine)
        assert kernels.count("fused into its neighbour") == 10 and "swish" not in kernels
        assert {"conv_hwc2chw", "dwconv_chw", "spmm", "gemm", "im2col_gemm"} <= set(kernels)


def test_hard_swish_after_each_conv_kind_runs_in_its_epilogue(tmp_path):
    inputs = keras.Input((16, 14, 3))
    hard_swish = layers.Activation("hard_swish")
    x = hard_swish(layers.Conv2D(8, 3, strides=2, padding="same")(inputs))  # entry conv
    x = hard_swish(layers.DepthwiseConv2D(3, padding="same")(x))
    x = hard_swish(layers.Conv2D(32, 1)(x))  # sparse 1x1
    x = hard_swish(layers.Conv2D(16, 1)(x))  # sparse 1x1, 32 inputs
    x = hard_swish(layers.Conv2D(8, 3, padding="same")(x))  # im2col
    outputs = layers.GlobalAveragePooling2D()(x)
    keras.utils.set_random_seed(0)
    model = prune_pointwise(keras.Model(inputs, outputs), 0.8)
    path = convert(model, tmp_path / "hard_swish.tflite", sparse=True)
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 16, 14, 3)), engine=Engine(path, num_threads=threads))
        kernels = kernels_of(engine)
        assert kernels.count("fused into its neighbour") == 5 and "elementwise" not in kernels
        assert {"conv_hwc2chw", "dwconv_chw", "spmm", "im2col_gemm"} <= set(kernels)


def test_activations_whose_input_has_other_readers_stay_separate(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    s = layers.Activation("sigmoid")(x)
    swish_like = layers.Multiply()([x, s])
    also = layers.Add()([s, swish_like])  # a second reader of the LOGISTIC's output
    h = layers.Activation("hard_swish")(x)
    h = layers.Add()([h, x])  # a second reader of the conv's output
    path = _convert_model(tmp_path, "unfused", inputs, layers.Concatenate()([also, h]))
    engine = assert_close_to_litert(path, sample((1, 6, 6, 3)))
    assert "fused into its neighbour" not in kernels_of(engine)
    assert kernels_of(engine).count("elementwise") == 2


# ---- squeeze-and-excite --------------------------------------------------------------------


def test_matvec_kernel_matches_numpy_for_dense_and_sparse_weights_and_every_epilogue():
    rng = np.random.default_rng(5)
    epilogues = {0: lambda v: v, 1: lambda v: np.maximum(v, 0), 3: lambda v: np.clip(v, 0, 6),
                 16: lambda v: v * np.clip(v + 3, 0, 6) / 6, 17: lambda v: v / (1 + np.exp(-v))}
    for trial in range(30):
        batch, k, n = int(rng.integers(1, 3)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        w = rng.normal(size=(n, k)).astype(np.float32)
        w[rng.random(size=w.shape) < rng.choice([0.0, 0.5, 0.95])] = 0
        b = rng.normal(size=n).astype(np.float32)
        x = rng.normal(size=(batch, 1, 1, k)).astype(np.float32)
        for act, f in epilogues.items():
            want = f(x.astype(np.float64) @ w.T.astype(np.float64) + b)
            for sparse in (0, 1):
                graph = one_op_graph("conv_matvec", x.shape, (batch, 1, 1, n), {"activation": act, "sparse": sparse},
                                     {"weights": w, "bias": b})
                np.testing.assert_allclose(graph.run([x])[0], want, rtol=1e-5, atol=1e-5,
                                           err_msg=f"trial {trial}, activation {act}, sparse {sparse}")


@pytest.mark.parametrize("y_shape, weights, message", [
    ((1, 2, 1, 4), (4, 4), "needs a 1x1 image in and out"),
    ((1, 1, 1, 4), (4, 5), "weights should have shape"),
])
def test_bad_matvec_plans_raise_naming_the_problem(y_shape, weights, message):
    with pytest.raises(ValueError, match=message):
        one_op_graph("conv_matvec", (1, 1, 1, 4), y_shape, {"activation": 0},
                     {"weights": np.zeros(weights, np.float32)})


@pytest.mark.parametrize("gate, sparsity", [("hard_sigmoid", 0.9), ("sigmoid", 0.0)])
def test_squeeze_excite_blocks_run_their_small_convs_as_matrix_vector_products(tmp_path, gate, sparsity):
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(8, 1, activation="relu")(se)
    se = layers.Conv2D(32, 1)(se)
    se = layers.ReLU(6.0)(se + 3.0) * (1.0 / 6.0) if gate == "hard_sigmoid" else layers.Activation("sigmoid")(se)
    x = layers.Multiply()([x, se])
    outputs = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 1)(x))
    keras.utils.set_random_seed(0)
    model = prune_pointwise(keras.Model(inputs, outputs), sparsity) if sparsity else keras.Model(inputs, outputs)
    path = convert(model, tmp_path / "se.tflite", sparse=bool(sparsity))
    for threads in (1, 2):
        engine = assert_close_to_litert(path, sample((1, 12, 12, 3)), engine=Engine(path, num_threads=threads))
        assert kernels_of(engine).count("matvec_sparse" if sparsity else "matvec") == 2


# ---- kernels on AVX-512 -------------------------------------------------------------------

_AVX512_OUTPUTS = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_engine_apps import avx512_kernel_outputs
np.save({out!r}, avx512_kernel_outputs())
"""


def avx512_kernel_outputs():
    """Outputs of the kernels with an AVX-512 version: dense 1x1 convs (GEMM) and im2col
    convs over pixel counts that leave every tail of 64/48/32/16 pixels and a masked
    vector, with clamps and hard-swish; sigmoid and swish from tiny to huge values."""
    from test_activations import inputs, run_unary

    rng = np.random.default_rng(6)
    outs = []
    for pixels in (1, 15, 16, 17, 49, 64, 100, 196):
        for act in (0, 3, 16):
            k, n = int(rng.integers(1, 40)), int(rng.integers(1, 20))
            x = rng.normal(size=(1, 1, pixels, k)).astype(np.float32)
            w = rng.normal(size=(n, k)).astype(np.float32)
            b = rng.normal(size=n).astype(np.float32)
            graph = one_op_graph("conv1x1_dense", x.shape, (1, 1, pixels, n), {"activation": act},
                                 {"weights": w, "bias": b})
            outs.append(graph.run([x])[0].ravel())
    x = rng.normal(size=(1, 15, 13, 6)).astype(np.float32)
    graph = one_op_graph("conv_im2col", x.shape, (1, 15, 13, 10), _window(3, 1, pad=1, activation=16),
                         {"weights": rng.normal(size=(10, 3, 3, 6)).astype(np.float32)})
    outs.append(graph.run([x])[0].ravel())
    for name in ("sigmoid", "swish"):
        outs += [run_unary(name, inputs()), run_unary(name, inputs()[:37])]
    return np.concatenate(outs)


@pytest.mark.skipif(not _engine.kernels.cpu_has_avx512(), reason="the CPU has no AVX-512")
def test_the_avx512_kernels_give_the_avx2_kernels_bits(tmp_path):
    import os
    import subprocess
    import sys

    results = {}
    for name, env in (("avx512", {"SPRUCE_KERNELS_ISA": "avx512"}), ("avx2", {"SPRUCE_KERNELS_ISA": "avx2"})):
        out = tmp_path / f"{name}.npy"
        code = _AVX512_OUTPUTS.format(tests=os.path.dirname(__file__), out=str(out))
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), check=True)
        results[name] = np.load(out)
    np.testing.assert_array_equal(results["avx512"], results["avx2"])
    assert results["avx512"].size > 1000

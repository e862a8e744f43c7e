"""Every value the native bindings take from Python is checked: the wrong kind of
value raises TypeError, a wrong value ValueError, before any kernel or thread runs,
and nothing is silently converted to another kind."""

import numpy as np
import pytest

from spruce.runtime import Engine, _engine

kernels = _engine.kernels


def _sparse_eye():
    return kernels.pack_sparse(np.eye(4, dtype=np.float32), 8)


@pytest.mark.parametrize("bad", [dict(n_begin=True), dict(n_begin=1.0), dict(n_end=np.True_), dict(p_begin="0"),
                                 dict(out_stride=8.0)])
def test_bools_floats_and_strings_where_ints_go_are_type_errors(bad):
    key = next(iter(bad))
    with pytest.raises(TypeError, match=rf"{key}: int"):
        kernels.spmm(_sparse_eye(), np.zeros((4, 8), np.float32), **bad)


@pytest.mark.parametrize("bad", [dict(hard_swish=1), dict(hard_swish=None), dict(input_padded="yes"),
                                 dict(act_min=True), dict(act_max="6")])
def test_flags_take_only_bools_and_bounds_only_numbers(bad):
    with pytest.raises(TypeError, match="incompatible function arguments"):
        kernels.spmm(_sparse_eye(), np.zeros((4, 8), np.float32), **bad)


def test_numpy_integers_floats_and_bools_are_accepted_as_python_ones():
    w, x = _sparse_eye(), np.arange(32, dtype=np.float32).reshape(4, 8)
    want = kernels.spmm(w, x, n_begin=1, p_end=6, act_min=0.0, hard_swish=False)
    got = kernels.spmm(w, x, n_begin=np.int64(1), p_end=np.int32(6), act_min=np.float32(0), hard_swish=np.False_)
    np.testing.assert_array_equal(got, want)


def test_ints_out_of_range_are_value_errors():
    x = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="out of range: this argument takes -2147483648 to 2147483647"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), x, stride=1 << 31)
    with pytest.raises(ValueError, match="out of range"):
        kernels.spmm(_sparse_eye(), np.zeros((4, 8), np.float32), p_end=1 << 70)


def test_negative_sizes_are_value_errors():
    x = np.zeros((2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="in_stride must be > 0"):
        kernels.pack_sparse(np.eye(4, dtype=np.float32), -8)
    with pytest.raises(ValueError, match="padding must be 4 non-negative"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), x, padding=[0, -1, 0, 0])
    with pytest.raises(ValueError, match="in_hw must be"):
        kernels.dwconv_chw(np.zeros((2, 3, 3), np.float32), np.zeros((2, 9), np.float32), in_hw=[3, -3])
    with pytest.raises(ValueError, match="out_stride must be >= 0"):
        kernels.spmm(_sparse_eye(), np.zeros((4, 8), np.float32), out_stride=-8)


def test_arrays_of_the_wrong_kind_dtype_rank_or_layout_are_refused():
    w = kernels.pack_dense(np.ones((4, 4), np.float32))
    with pytest.raises(TypeError, match=r"input must be a numpy array of float32. Received: <class 'list'>"):
        kernels.gemm(w, [[0.0] * 8] * 4)
    with pytest.raises(ValueError, match="dtype float32. Received: dtype=float64"):
        kernels.gemm(w, np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"must have shape \(4, any\). Received: shape=\(4, 8, 1\)"):
        kernels.gemm(w, np.zeros((4, 8, 1), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.gemm(w, np.zeros((4, 16), np.float32)[:, ::2])


def _unary_plan(n=8):
    tensors = [{"shape": [1, n], "layout": 0, "data": None}, {"shape": [1, n], "layout": 0, "data": None}]
    ops = [{"kind": "unary", "name": "act", "inputs": [0], "outputs": [1], "ints": {"function": 5},
            "floats": {"alpha": 0.2}, "arrays": {}}]
    return tensors, ops


def _edited(edit):
    tensors, ops = _unary_plan()
    edit(tensors, ops)
    return tensors, ops


@pytest.mark.parametrize("edit, message", [
    (lambda t, o: t.__setitem__(0, [1, 8]), "tensor 0 must be a dict. Received: <class 'list'>"),
    (lambda t, o: o.__setitem__(0, "unary"), "operator 0 must be a dict. Received: <class 'str'>"),
    (lambda t, o: t[0].__setitem__("shape", [1, 8.0]), r"tensor 0: 'shape' has the wrong type. Received: \[1, 8.0\]"),
    (lambda t, o: t[0].__setitem__("shape", [True, 8]), "'shape' has the wrong type"),
    (lambda t, o: t[0].__setitem__("layout", False), "'layout' has the wrong type"),
    (lambda t, o: o[0].__setitem__("inputs", [np.True_]), "'inputs' has the wrong type"),
    (lambda t, o: o[0]["ints"].__setitem__("function", 5.0), "'ints' has the wrong type"),
    (lambda t, o: o[0]["floats"].__setitem__("alpha", "0.2"), "'floats' has the wrong type"),
    (lambda t, o: o[0].__setitem__("name", 7), "'name' has the wrong type"),
    (lambda t, o: t[0].__setitem__("data", np.zeros(8)), "tensor 0 data must be a float32 numpy array. "
                                                         "Received: float64"),
    (lambda t, o: t[0].__setitem__("data", [0.0] * 8), "must be a float32 numpy array. Received: <class 'list'>"),
])
def test_malformed_plans_raise_value_error_naming_the_field(edit, message):
    tensors, ops = _edited(edit)
    with pytest.raises(ValueError, match=message):
        _engine.Graph(tensors, ops, [0], [1], 1)


def test_graph_inputs_must_be_float32_arrays_not_converted():
    graph = _engine.Graph(*_unary_plan(), [0], [1], 1)
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(1, 8)
    want = graph.run([x])[0]
    np.testing.assert_array_equal(graph.run([np.asfortranarray(x[:, :])])[0], want)
    with pytest.raises(ValueError, match="input 0 must be a float32 numpy array. Received: float64"):
        graph.run([x.astype(np.float64)])
    with pytest.raises(ValueError, match="input 0 must be a float32 numpy array. Received: <class 'list'>"):
        graph.run([x.tolist()])


@pytest.mark.parametrize("threads", [True, 2.0, "2", None])
def test_graph_num_threads_of_the_wrong_kind_is_a_type_error(threads):
    with pytest.raises(TypeError, match="num_threads: int"):
        _engine.Graph(*_unary_plan(), [0], [1], threads)
    graph = _engine.Graph(*_unary_plan(), [0], [1], 1)
    with pytest.raises(TypeError, match="num_threads: int"):
        graph.replica(threads)


@pytest.mark.parametrize("threads", [0, -1, 257, 1 << 40])
def test_graph_num_threads_out_of_range_is_refused_before_the_plan_is_read(threads):
    tensors, ops = _unary_plan()
    tensors[0] = "not a tensor"  # would be refused next: num_threads is checked first
    with pytest.raises(ValueError, match=rf"num_threads must be in \[1, 256\]. Received: num_threads={threads}"):
        _engine.Graph(tensors, ops, [0], [1], threads)


def test_run_counts_must_be_ints():
    graph = _engine.Graph(*_unary_plan(), [0], [1], 1)
    with pytest.raises(TypeError, match="runs: int"):
        graph.benchmark(True, 0)
    with pytest.raises(TypeError, match="runs: int"):
        graph.profile(1.5)


@pytest.mark.parametrize("threads, error, message", [
    (True, TypeError, "num_threads must be an integer. Received: num_threads=True of type bool"),
    (2.0, TypeError, "num_threads must be an integer. Received: num_threads=2.0 of type float"),
    ("2", TypeError, "num_threads must be an integer"),
    (-3, ValueError, "num_threads must be a positive integer. Received: num_threads=-3"),
    (257, ValueError, "num_threads must be at most 256. Received: num_threads=257"),
])
def test_engine_checks_num_threads_before_reading_the_file(tmp_path, threads, error, message):
    with pytest.raises(error, match=message):
        Engine(tmp_path / "missing.tflite", num_threads=threads)


def test_benchmark_timers_check_their_scalars():
    bench = pytest.importorskip("spruce.runtime._bench")
    w, x = np.ones((4, 8), np.float32), np.ones((8, 10), np.float32)
    with pytest.raises(TypeError, match="repeats: int"):
        bench.time_gemm(w, x, repeats=True)
    with pytest.raises(TypeError, match="padding: "):
        bench.time_dwconv_chw(np.ones((2, 3, 3), np.float32), np.ones((2, 5, 5), np.float32), padding=[0, 0, 0, 0.5])
    with pytest.raises(TypeError, match="seconds: float"):
        bench.fma_peak_gflops(True)

"""`spruce bench`: interleaved timing of real .tflite files with the real LiteRT interpreter."""

import json

import numpy as np
import pytest

from _pruned_guide import export, pruned_guide
from helpers import require_engine

from spruce.bench import benchmark
from spruce.bench.runners import RUNNERS
from spruce.bench.stats import summarize
from spruce.bench.sysinfo import AVX_NOTE, cpu_model, has_avx


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    model = pruned_guide(0.75)
    return [export(model, folder / "sparse.tflite", sparse=True),
            export(model, folder / "dense.tflite", sparse=False)]


def test_summarize_matches_numpy_percentiles():
    t = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    s = summarize(t)
    q25, q50, q75 = np.percentile(t, [25, 50, 75])
    assert (s["median"], s["q25"], s["q75"], s["iqr"]) == (q50, q25, q75, q75 - q25)
    assert (s["min"], s["max"], s["runs"]) == (1.0, 10.0, 6)


def test_cpu_fields_are_read_from_cpuinfo():
    x86 = {"model name": "AMD EPYC 7B13", "flags": "fpu sse2 avx avx2 fma"}
    assert cpu_model(x86) == "AMD EPYC 7B13" and has_avx(x86)
    assert not has_avx({"flags": "fpu sse2 sse4_2"})  # avx512f alone would not match either
    arm = {"processor": "0", "cpu implementer": "0x41", "cpu part": "0xd0b", "features": "fp asimd"}
    assert cpu_model(arm) == "ARM CPU implementer 0x41 part 0xd0b" and not has_avx(arm)


def test_report_times_every_model_interleaved_with_ratios_to_the_first(models):
    report = benchmark(models, threads=1, runs=12, warmup=2)
    d = json.loads(json.dumps(report.to_dict()))  # --json is plain JSON
    assert [m["path"] for m in d["models"]] == models
    for m in d["models"]:
        assert m["runs"] == 12 and 0 < m["min"] <= m["q25"] <= m["median"] <= m["q75"] <= m["max"]
    assert d["models"][0]["ratio_to_first"] == 1.0
    assert d["models"][1]["ratio_to_first"] == pytest.approx(d["models"][1]["median"] / d["models"][0]["median"])
    system = d["system"]
    assert system["threads"] == 1 and system["versions"]["ai-edge-litert"] and system["versions"]["numpy"]
    with open("/proc/cpuinfo") as f:
        avx = " avx " in f"{f.read()} ".replace("\n", " ")
    assert system["avx"] == avx
    assert (system.get("note") == AVX_NOTE) == avx
    text = str(report)
    assert "median" in text and models[1] in text
    if avx:
        assert "does not use its sparse path" in text


def test_litert_runner_outputs_match_the_interpreter_on_the_same_inputs(models):
    from ai_edge_litert.interpreter import Interpreter

    runner = RUNNERS["litert"](models[0], 1)
    runner.time(1)
    it = Interpreter(model_path=models[0])
    it.allocate_tensors()
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    np.testing.assert_array_equal(runner.outputs()[0], it.get_tensor(it.get_output_details()[0]["index"]))


def test_spruce_engine_is_one_adapter_with_the_same_interface(models):
    try:
        import spruce.runtime  # noqa: F401
        from spruce.runtime import Engine  # noqa: F401
    except ImportError as e:
        with pytest.raises(ImportError, match="--engine spruce"):
            benchmark(models, runs=2, warmup=0, engine="spruce")
        require_engine()  # the message was right; a missing engine still fails the suite
    report = benchmark(models, runs=5, warmup=1, engine="spruce")
    assert report.engine == "spruce" and all(m["median"] > 0 for m in report.models)
    litert = RUNNERS["litert"](models[1], 1)
    litert.time(1)
    engine = RUNNERS["spruce"](models[1], 1)
    np.testing.assert_allclose(engine.outputs()[0], litert.outputs()[0], rtol=1e-4, atol=1e-5)


def test_two_engines_time_every_model_on_each_in_one_interleaved_run(models, capsys):
    require_engine()
    from spruce.cli import main

    report = benchmark(models, runs=6, warmup=1, engine="litert,spruce")
    assert report.engine == "litert+spruce"
    assert [(m["engine"], m["path"]) for m in report.models] == [
        ("litert", models[0]), ("litert", models[1]), ("spruce", models[0]), ("spruce", models[1])]
    assert all(m["runs"] == 6 for m in report.models)
    first = report.models[0]["median"]
    assert [m["ratio_to_first"] for m in report.models] == [m["median"] / first for m in report.models]
    text = str(report)
    assert f"{models[1]} [spruce]" in text and f"{models[0]} [litert]" in text
    # Both engines are timed the same way: around one call from Python per run.
    assert "timing: each run timed around one call from Python" in text
    # A list works too, in its own order; the CLI takes "a,b".
    assert [m["engine"] for m in benchmark(models[:1], runs=2, warmup=0, engine=["spruce", "litert"]).models] == [
        "spruce", "litert"]
    assert main(["bench", models[1], "--engine", "litert,spruce", "--runs", "2", "--warmup", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["engine"] == "litert+spruce" and [m["engine"] for m in d["models"]] == ["litert", "spruce"]


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "threads must be an integer >= 1. Received: threads=0"),
    ({"runs": 1.5}, "runs must be an integer >= 1"),
    ({"warmup": -1}, "warmup must be an integer >= 0"),
    ({"engine": "tvm"}, "engine must be one of ['litert', 'spruce']"),
    ({"engine": "litert,litert"}, "without repeats"),
    ({"engine": ""}, "Received: engine=''"),
])
def test_bad_settings_are_rejected_with_the_received_value(models, kwargs, message):
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        benchmark(models, **kwargs)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        benchmark([tmp_path / "missing.tflite"])


def test_cli_prints_one_json_document(models, capsys):
    from spruce.cli import main

    assert main(["bench", *models, "--runs", "3", "--warmup", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["models"]) == 2 and d["engine"] == "litert"


def test_cli_names_a_bad_engine_and_exits_2(models, capsys):
    from spruce.cli import main

    assert main(["bench", models[0], "--engine", "litert,tvm"]) == 2
    assert "engine must be one of ['litert', 'spruce']" in capsys.readouterr().err


def test_profile_splits_spruce_engine_time_by_operator_and_kernel_family(models):
    require_engine()
    from spruce.bench import profile

    report = profile(models, runs=20, warmup=2)
    sparse, dense = report.models
    for m in (sparse, dense):
        assert m["runs"] == 20 and m["threads"] == 1 and m["run_median"] > 0
        assert all(op["seconds"] > 0 and op["flops"] >= 0 for op in m["operators"])
        assert m["operators"][0]["name"].startswith("CONV_2D (operator ")
        # The families regroup the operators: same ops, same time, same work.
        for key in ("seconds", "flops"):
            assert sum(f[key] for f in m["families"]) == pytest.approx(sum(op[key] for op in m["operators"]))
        assert sum(f["ops"] for f in m["families"]) == len(m["operators"])
    # The pruned 1x1 convolutions run sparse at 75% zeros whether the file stores them sparse or
    # dense, on a quarter of the dense work: 8 x 16 weights at 16x16 pixels, 16 x 32 at 8x8.
    for m in (sparse, dense):
        spmm = [op for op in m["operators"] if op["kernel"] == "spmm"]
        assert [op["weight_sparsity"] for op in spmm] == [pytest.approx(0.75)] * 2
        assert [op["flops"] for op in spmm] == [2 * 8 * 16 * 256 / 4, 2 * 16 * 32 * 64 / 4]
    text = str(report)
    assert "kernel family" in text and "spmm" in text and "75%" in text


def test_cli_profile_prints_json_and_refuses_litert(models, capsys):
    require_engine()
    from spruce.cli import main

    assert main(["bench", models[0], "--profile", "--runs", "3", "--warmup", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [m["path"] for m in d["models"]] == [str(models[0])] and d["models"][0]["operators"]
    assert main(["bench", models[0], "--profile", "--engine", "litert"]) == 2
    assert "--profile times spruce's engine" in capsys.readouterr().err

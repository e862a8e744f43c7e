"""The `benchmark_model` parser, on real outputs others captured (tests/data/benchmark_model/SOURCES.md)."""

import os

import pytest

from spruce.bench.adb import adb_benchmark, find_adb, parse_benchmark_output

DATA = os.path.join(os.path.dirname(__file__), "data", "benchmark_model")


def _read(name):
    with open(os.path.join(DATA, name)) as f:
        return f.read()


@pytest.mark.parametrize("name, avg, init, first, warm", [
    ("ti_am62x_ssd_mobilenet_v2_xnnpack.txt", 899641, 614333, 905463, 905463),
    ("ti_am62x_ssd_mobilenet_v2_cpu.txt", 1.24027e6, 5579, 1357602, 1.3576e6),
    ("xiaomi_mi11_yolov5s_fp32_adb.txt", 249684, 16242, 360262, 304586),
    ("qemuriscv64_mobilenet_v1_profiling.txt", 2.95034e6, 17187, 3512391, 3.51239e6),
])
def test_summary_line_is_parsed_in_every_captured_format(name, avg, init, first, warm):
    r = parse_benchmark_output(_read(name))
    assert (r.inference_avg_us, r.init_us, r.first_inference_us, r.warmup_avg_us) == (avg, init, first, warm)


def test_regular_run_statistics_come_from_the_last_count_line_before_the_summary():
    r = parse_benchmark_output(_read("ti_am62x_ssd_mobilenet_v2_xnnpack.txt"))
    # not the 1-iteration warm-up line (count=1 curr=905463 ...)
    assert (r.count, r.min_us, r.max_us, r.std_us, r.median_us) == (50, 898007, 906121, 1549, 899281)
    assert r.inference_avg_us == 899641


def test_old_format_without_percentiles_and_op_profiling_after_the_summary():
    r = parse_benchmark_output(_read("qemuriscv64_mobilenet_v1_profiling.txt"))
    # the profiler's own "Timings (microseconds): count=50 ... avg=2.9499e+06" comes after
    # the summary and must not replace the benchmark's statistics
    assert (r.count, r.min_us, r.max_us, r.std_us) == (50, 2727568, 3189954, 109798)
    assert r.median_us is None


def test_failed_run_raises_with_the_tools_last_lines():
    with pytest.raises(ValueError, match="(?s)did not finish.*Benchmarking failed"):
        parse_benchmark_output(_read("nnapi_failure.txt"))


def test_missing_adb_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="needs `adb`.*apt-get install adb"):
        find_adb()
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="needs `adb`"):
        adb_benchmark([model], binary)


def test_missing_benchmark_binary_names_the_flag(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="--benchmark-binary"):
        adb_benchmark([model], None)

"""benchmarks/bench_engine.py, the script that checks the engine's speed goals, runs end to end.

A smoke run at 64x64 (real converter, real LiteRT, real engine): every export is
built and timed, the block-pruned export runs its 1x1 convs on the row-group
kernel, the JSON carries the goal figures and what they were measured on, and
benchmarks/render_results.py renders it. The figures themselves are not
asserted: timings belong to the benchmark, not to tests.
"""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

from helpers import require_engine

pytest.importorskip("ai_edge_litert")
require_engine()

# Runs the whole benchmark on real exports: the full suite only.
pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "bench_engine.py"


def load_script(path=SCRIPT):
    if str(BENCHMARKS) not in sys.path:  # the scripts import benchmarks/common.py, as when they run
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_engine")
    bench = load_script()
    return bench, folder, json.loads(run_quietly(bench, folder))


def run_quietly(bench, folder):
    """bench_engine's stdout (its JSON document) of a --quick run."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert bench.main(["--quick", "--cache-dir", str(folder)]) == 0
    return buffer.getvalue()


def test_every_export_is_timed_against_litert_with_the_goal_figures(quick_run):
    bench, folder, report = quick_run
    names = [f"spruce_{name}" for name in bench.VARIANTS]
    assert set(report["times"]) == {"litert_dense", *names, "spruce_0_2threads", "spruce_90_2threads"}
    for stats in report["times"].values():
        assert stats["runs"] == report["rounds"] * report["runs_per_round"]
        assert 0 < stats["min_ms"] <= stats["median_ms"]
    assert set(report["speedups"]) == {f"{n}_vs_litert_dense" for n in names}
    assert set(report["goals"]) == {"sparse90_at_least_3x", "sparse75_at_least_1.8x",
                                    "dense_at_most_1.5x_slower", "two_threads_at_least_1.6x",
                                    *(f"two_threads_at_least_1.6x_throughput_on_batches_of_{size}"
                                      for size in bench.BATCHES)}
    assert set(report["two_thread_throughput_on_batches"]) == {
        f"spruce_{name}_batch{size}_2threads_vs_1thread" for name in ("0", "90") for size in bench.BATCHES}
    assert all(v > 0 for v in report["batch_times_ms_per_image"].values())
    for name in [*bench.VARIANTS, "dense"]:
        assert (folder / f"mobilenet_v1_{name}.tflite").exists()


def test_the_block_pruned_export_runs_on_the_row_group_kernel(quick_run):
    bench, folder, report = quick_run
    from spruce.runtime import Engine

    engine = Engine(folder / "mobilenet_v1_90_blocks.tflite")
    kernels = [layer["kernel"] for layer in engine.summary() if layer["opcode"] == "CONV_2D"]
    if engine.isa != "portable":
        assert "spmm_groups" in report["kernel_families"]["spruce_90_blocks"]
        # alpha 0.5: of the 13 1x1 convs the first two have 16 and 32 inputs (too few for
        # groups), the other 11 have 64 or more.
        assert kernels.count("spmm_groups") == 11
    unstructured = Engine(folder / "mobilenet_v1_90.tflite")
    assert "spmm_groups" not in [layer["kernel"] for layer in unstructured.summary()]


def test_a_cached_run_reuses_the_exports(quick_run):
    bench, folder, _ = quick_run
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tflite")}
    assert json.loads(run_quietly(bench, folder))["times"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.tflite")} == stamps


def test_the_json_says_what_it_ran_on_and_renders_into_a_page(quick_run, tmp_path):
    _, _, report = quick_run
    assert report["script"] == "bench_engine" and report["date"].endswith("+00:00")
    assert report["git"] is None or len(report["git"]["commit"]) == 40
    assert {"tensorflow", "keras", "ai_edge_litert", "numpy", "engine_compiler"} <= set(report["versions"])
    assert report["arguments"]["quick"] is True and set(report["load_average_1min"]) == {"before", "after"}
    run = tmp_path / "bench_engine" / "run.json"
    run.parent.mkdir()
    run.write_text(json.dumps(report))
    page = Path(load_script(BENCHMARKS / "render_results.py").render([str(run)], out_dir=tmp_path)).read_text()
    litert, spruce = report["times"]["litert_dense"]["median_ms"], report["times"]["spruce_90"]["median_ms"]
    speedup = report["speedups"]["spruce_90_vs_litert_dense"]
    assert f"| 90% sparse | {litert:.2f} | {spruce:.2f} | {speedup:.2f}x |" in page
    assert "a --quick smoke run" in page and report["cpu"] in page

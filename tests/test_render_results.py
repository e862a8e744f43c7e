"""benchmarks/render_results.py turns the JSON a benchmark printed into its results page.

The documents here are written in the format bench_engine.py prints (every key it
prints, small made-up figures); tests/test_bench_engine.py renders a real one.
"""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "render_results.py"


@pytest.fixture(scope="module")
def renderer():
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(median_ms):
    return {"median_ms": median_ms, "min_ms": 0.9 * median_ms, "p10_ms": 0.95 * median_ms,
            "p90_ms": 1.1 * median_ms, "runs": 50}


def engine_run(date, litert_ms, spruce_ms, scaling=1.7, commit="0123456789abcdef0123456789abcdef01234567",
               rounds=5):
    """One bench_engine document: LiteRT at `litert_ms`, spruce at `spruce_ms` per export."""
    names = ("0", "75", "90", "90_blocks")
    times = {"litert_dense": _summary(litert_ms)}
    times.update({f"spruce_{n}": _summary(ms) for n, ms in zip(names, spruce_ms)})
    times.update({f"spruce_{n}_2threads": _summary(times[f"spruce_{n}"]["median_ms"] / scaling) for n in ("0", "90")})
    speedups = {f"spruce_{n}_vs_litert_dense": litert_ms / ms for n, ms in zip(names, spruce_ms)}
    family = {"flops": 1e9, "ops": 13, "gflops_per_s": 50.0, "fraction_of_peak": 0.5, "ms": 2.0, "best_ms": 1.8}
    return {
        "benchmark": "spruce engine vs LiteRT interpreter (dense export), MobileNetV1",
        "script": "bench_engine",
        "date": date,
        "git": {"commit": commit, "dirty": False},
        "arguments": {"size": 224, "alpha": 1.0, "rounds": rounds, "runs": 10, "quick": False},
        "load_average_1min": {"before": 1.5, "after": 2.5},
        "note": "timings on a shared machine are noisy; rerun on a quiet one",
        "timing": "spruce: each run timed inside Engine.benchmark's native loop",
        "model": {"input": [1, 224, 224, 3], "alpha": 1.0, "padding": "symmetric"},
        "cpu": "Test CPU @ 3.0GHz", "cpu_mhz": 3000.0, "cores": 2, "isa": "avx2",
        "versions": {"python": "3.11.7", "spruce": "0.1.0", "numpy": "2.4.6", "tensorflow": "2.21.0",
                     "keras": "3.15.1", "ai_edge_litert": "2.3.0",
                     "engine_compiler": "GCC: (Debian 12.2.0-14) 12.2.0"},
        "rounds": rounds, "runs_per_round": 10, "threads": 1,
        "times": times,
        "speedups": speedups,
        "two_thread_scaling": {f"spruce_{n}_2threads_vs_1thread": scaling for n in ("0", "90")},
        "batch_times_ms_per_image": {f"spruce_{n}_batch{b}{s}": 4.0 for n in ("0", "90") for b in (8, 32)
                                     for s in ("", "_2threads")},
        "two_thread_throughput_on_batches": {f"spruce_{n}_batch{b}_2threads_vs_1thread": scaling + 0.1
                                             for n in ("0", "90") for b in (8, 32)},
        "speedups_from_fastest_runs": speedups,
        "two_thread_scaling_from_fastest_runs": {f"spruce_{n}_2threads_vs_1thread": scaling for n in ("0", "90")},
        "goals": {"sparse90_at_least_3x": speedups["spruce_90_vs_litert_dense"] >= 3.0,
                  "sparse75_at_least_1.8x": speedups["spruce_75_vs_litert_dense"] >= 1.8,
                  "dense_at_most_1.5x_slower": speedups["spruce_0_vs_litert_dense"] >= 1 / 1.5,
                  "two_threads_at_least_1.6x": scaling >= 1.6,
                  "two_threads_at_least_1.6x_throughput_on_batches_of_8": scaling + 0.1 >= 1.6,
                  "two_threads_at_least_1.6x_throughput_on_batches_of_32": scaling + 0.1 >= 1.6},
        "peak_gflops_per_core_measured": 100.0,
        "peak_gflops_per_core_nominal": 96.0,
        "kernel_families": {f"spruce_{n}": {"spmm": family, "all (sum of per-op medians)": family}
                            for n in names},
        "exports": {n: f"/tmp/mobilenet_v1_{n}.tflite" for n in names},
    }


def write_runs(folder, runs):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, run in enumerate(runs):
        path = folder / f"run{i}.json"
        path.write_text(json.dumps(run, indent=2))
        paths.append(str(path))
    return paths


THREE_RUNS = [
    engine_run("2026-12-01T10:00:00+00:00", 12.0, (15.0, 6.0, 4.0, 3.0)),
    engine_run("2026-12-01T10:05:00+00:00", 12.0, (15.0, 6.0, 3.0, 3.0), scaling=1.5),
    engine_run("2026-12-01T10:10:00+00:00", 12.0, (15.0, 8.0, 6.0, 4.0), scaling=1.9),
]


def test_page_gives_medians_and_ranges_across_runs_with_the_setting(renderer, tmp_path):
    paths = write_runs(tmp_path / "bench_engine", THREE_RUNS)
    page = Path(renderer.render(paths, out_dir=tmp_path)).read_text()
    assert Path(tmp_path / "bench_engine.md").exists()
    # 90%: speed-ups 3.0, 4.0 and 2.0 -> median 3.00x, range 2.00-4.00; spruce 4, 3, 6 ms -> 4.00 (3.00-6.00)
    assert "| 90% sparse | 12.00 | 4.00 (3.00-6.00) | 3.00x (2.00-4.00) | 3.00x (2.00-4.00) |" in page
    assert "| dense (0% zeros) | 12.00 | 15.00 | 0.80x | 0.80x |" in page  # equal in every run: no range
    assert "| one image split across the threads (latency) | 90% sparse | 1.70x (1.50-1.90) |" in page
    assert "| batches of 32 images, one per thread at a time (throughput) | 90% sparse | 1.80x (1.60-2.00) |" in page
    assert "| sparse90 at least 3x | 2 of 3 |" in page
    for fact in ("Test CPU @ 3.0GHz, 2 cores, engine kernels avx2", "TensorFlow 2.21.0",
                 "ai-edge-litert (LiteRT) 2.3.0",
                 "numpy 2.4.6", "GCC 12.2.0 (Debian 12.2.0-14)", "| spruce commit | 0123456 |",
                 "2026-12-01 10:00 to 2026-12-01 10:10 UTC", "3 runs of the script, each 5 interleaved rounds x 10",
                 "100.0 GFLOP/s", "| load average (1 min) while timing | 2.0 (1.5-2.5) on 2 cores (median, range) |"):
        assert fact in page, fact
    assert all(f"\n| run{i}.json | 2026-12-01 10:{5 * i:02d}:00 |" in page for i in range(3))  # one line per run
    assert "| spmm | 13 | 2.000 | 1.800 | 50.0 | 50% |" in page and "Fractions above 100%" not in page


def test_readme_block_between_the_markers_is_replaced_and_the_rest_kept(renderer, tmp_path):
    paths = write_runs(tmp_path / "bench_engine", THREE_RUNS)
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n<!-- results:bench_engine -->\nstale table\n<!-- /results -->\n\n## after\n")
    renderer.render(paths, out_dir=tmp_path, readme=str(readme))
    text = readme.read_text()
    assert text.startswith("# title\n\n<!-- results:bench_engine -->\n")
    assert text.endswith("<!-- /results -->\n\n## after\n")
    assert "stale table" not in text
    assert "| 90% sparse | 12.00 | 4.00 (3.00-6.00) | 3.00x (2.00-4.00) |" in text
    assert "| 90% sparse, 2 threads, batches of 32 |  |  | 1.80x (1.60-2.00) the 1-thread throughput |" in text
    assert "spruce 0123456" in text and "median of 3 runs (range)" in text
    # Rendering again changes nothing.
    renderer.render(paths, out_dir=tmp_path, readme=str(readme))
    assert readme.read_text() == text


def test_runs_of_different_commits_are_refused_with_the_fix(renderer, tmp_path):
    other = engine_run("2026-12-02T10:00:00+00:00", 12.0, (15.0, 6.0, 4.0, 3.0), commit="f" * 40)
    paths = write_runs(tmp_path / "mixed", [THREE_RUNS[0], other])
    with pytest.raises(renderer.ResultsError, match="differ in their commit.*move the others out"):
        renderer.render(paths, out_dir=tmp_path)
    assert not (tmp_path / "bench_engine.md").exists()


def test_runs_with_different_rounds_are_refused(renderer, tmp_path):
    paths = write_runs(tmp_path / "mixed", [THREE_RUNS[0], engine_run("2026-12-01T11:00:00+00:00", 12.0,
                                                                       (15.0, 6.0, 4.0, 3.0), rounds=20)])
    with pytest.raises(renderer.ResultsError, match="differ in their parameters"):
        renderer.render(paths, out_dir=tmp_path)


def test_a_readme_without_the_markers_is_left_untouched_with_the_fix(renderer, tmp_path, capsys):
    paths = write_runs(tmp_path / "bench_engine", THREE_RUNS[:1])
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert renderer.main([*paths, "--out", str(tmp_path), "--readme", str(readme)]) == 2
    assert "<!-- results:bench_engine -->" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_a_file_that_is_not_json_is_named_in_the_error(renderer, tmp_path, capsys):
    bad = tmp_path / "run.json"
    bad.write_text("Created TensorFlow Lite XNNPACK delegate\n{}")
    assert renderer.main([str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("render_results: error:") and str(bad) in err and "stdout" in err


def test_a_busy_machine_is_called_busy_on_the_page_and_in_the_readme(renderer, tmp_path):
    busy = json.loads(json.dumps(THREE_RUNS[0]))
    busy["load_average_1min"] = {"before": 1.0, "after": 5.5}
    busy["kernel_families"]["spruce_90"]["spmm"]["fraction_of_peak"] = 1.3  # the peak was measured slowed
    paths = write_runs(tmp_path / "bench_engine", [busy, *THREE_RUNS[1:]])
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:bench_engine -->\n<!-- /results -->\n")
    page = Path(renderer.render(paths, out_dir=tmp_path, readme=str(readme))).read_text()
    assert "load average reached 5.5 on 2 cores" in page and "load average reached 5.5" in readme.read_text()
    assert "Fractions above 100% mean that the FMA peak was measured while other processes" in page
    calm = [dict(run, load_average_1min={"before": 0.5, "after": 2.0}) for run in THREE_RUNS]
    quiet = Path(renderer.render(write_runs(tmp_path / "quiet", calm), out_dir=tmp_path)).read_text()
    assert "The machine was busy" not in quiet

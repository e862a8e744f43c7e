"""benchmarks/render_results.py turns the JSON a benchmark printed into its results page.

The bench_engine documents here are written in the format bench_engine.py prints (every
key it prints, small made-up figures); tests/test_bench_engine.py renders a real one. The
bench_apps ones are real: two quick runs of bench_apps.py, kept in tests/data/bench_apps/.
"""

import importlib.util
import json
import statistics
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


# ---- bench_apps: documents printed by the real benchmark ----------------------------------
# tests/data/bench_apps/ holds two runs of `benchmarks/bench_apps.py --nets MobileNet,ResNet50
# --quick` (64x64, 1 round of 2 runs: a smoke run, its figures mean nothing), so the pages are
# rendered from every key the benchmark prints, in the shapes it prints them.

APPS_RUNS = sorted((Path(__file__).resolve().parent / "data" / "bench_apps").glob("*.json"))


def apps_documents():
    return [json.loads(path.read_text()) for path in APPS_RUNS]


def across_runs(values, unit="x"):
    """How the page writes one figure of several runs: the median, then the range if they differ."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.2f}{unit}" + ("" if low == high else f" ({low:.2f}-{high:.2f})")


def test_the_bench_apps_fixture_is_two_quick_runs_of_mobilenet_and_resnet50():
    runs = apps_documents()
    assert len(runs) == 2 and all(r["script"] == "bench_apps" and r["arguments"]["quick"] for r in runs)
    assert [list(r["nets"]) for r in runs] == [["MobileNet", "ResNet50"]] * 2
    assert runs[0]["nets"]["MobileNet"]["policy_prunes_only_1x1"] is True
    assert "spruce_all75_vs_litert_dense" in runs[0]["nets"]["ResNet50"]["speedups"]


def test_bench_apps_page_gives_each_export_its_times_ratios_and_error_per_net(renderer, tmp_path):
    runs = apps_documents()
    page = Path(renderer.render([str(p) for p in APPS_RUNS], out_dir=tmp_path)).read_text()
    assert (tmp_path / "bench_apps.md").read_text() == page
    assert page.startswith("# bench_apps: spruce's engine against LiteRT on the Keras application CNNs")
    labels = {"dense": "dense (0% zeros)", "90": "1x1 convs 90% sparse",
              "all90": "every conv but the stem 90% sparse", "all75": "every conv but the stem 75% sparse"}
    for net, first in runs[0]["nets"].items():
        assert f"### {net}" in page
        litert = across_runs([r["nets"][net]["times"]["litert_dense"]["median_ms"] for r in runs], "")
        for key in first["speedups"]:
            name = key[len("spruce_"):-len("_vs_litert_dense")]
            timed = name if f"spruce_{name}" in first["times"] else "90"  # the policy's file is the 1x1 one
            label = labels[name] + (" (the 1x1 export: the policy prunes only the 1x1 convs)"
                                    if name != timed else "")
            spruce = across_runs([r["nets"][net]["times"][f"spruce_{timed}"]["median_ms"] for r in runs], "")
            speedup = across_runs([r["nets"][net]["speedups"][key] for r in runs])
            fastest = across_runs([r["nets"][net]["speedups_from_fastest_runs"][f"spruce_{timed}_vs_litert_dense"]
                                   for r in runs])
            error = max(r["nets"][net]["max_relative_error_vs_litert"][timed] for r in runs)
            assert f"| {label} | {litert} | {spruce} | {speedup} | {fastest} | {error:.1e} |" in page, (net, name)
        for goal in first["goals"]:
            met = sum(r["nets"][net]["goals"][goal] for r in runs)
            assert f"| {goal.replace('_', ' ')} | {met} of 2 |" in page
    versions = runs[0]["versions"]
    for fact in (f"{runs[0]['cpu']}, {runs[0]['cores']} cores, engine kernels {runs[0]['isa']}",
                 f"TensorFlow {versions['tensorflow']}", f"ai-edge-litert (LiteRT) {versions['ai_edge_litert']}",
                 f"spruce {versions['spruce']}", f"| spruce commit | {runs[0]['git']['commit'][:7]}",
                 "keras.applications MobileNet, ResNet50 at 64x64x3", "(a --quick smoke run, not a measurement)",
                 "2 runs of the script, each 1 interleaved rounds x 2 timed runs per engine",
                 "| load average (1 min), start and end |"):
        assert fact in page, fact
    assert all(f"\n| {path.name} | " in page for path in APPS_RUNS)  # one line per run


def test_bench_apps_readme_block_is_the_headline_table(renderer, tmp_path):
    runs = apps_documents()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:bench_apps -->\nstale\n<!-- /results -->\nrest\n")
    renderer.render([str(p) for p in APPS_RUNS], out_dir=tmp_path, readme=str(readme))
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:bench_apps -->\n") and text.endswith("<!-- /results -->\nrest\n")
    assert "stale" not in text and "[all figures](benchmarks/results/bench_apps.md)" in text
    resnet = runs[0]["nets"]["ResNet50"]
    ratios = [across_runs([r["nets"]["ResNet50"]["speedups"][f"spruce_{name}_vs_litert_dense"] for r in runs])
              for name in ("dense", "90", "all90", "all75")]
    met = sum(all(r["nets"]["ResNet50"]["goals"][g] for r in runs) for g in resnet["goals"])
    litert = across_runs([r["nets"]["ResNet50"]["times"]["litert_dense"]["median_ms"] for r in runs], "")
    assert f"| ResNet50 | {litert} | {' | '.join(ratios)} | {met} of {len(resnet['goals'])} |" in text
    # MobileNet has no 75% export: an empty cell.
    assert "| MobileNet | " in text and " | - | " in text.split("| MobileNet | ")[1].split("\n")[0]


def test_a_net_the_engine_refused_is_shown_with_the_refusal_and_its_operators(renderer, tmp_path):
    runs = apps_documents()
    for run in runs:  # what bench_net records when Engine() raises UnsupportedModelError
        resnet = run["nets"]["ResNet50"]
        run["nets"]["ResNet50"] = {"operators": resnet["operators"], "policy_prunes_only_1x1": False,
                                   "refused": "CUSTOM (operator 3) is not supported by spruce's engine.",
                                   "exports": resnet["exports"]}
    page = Path(renderer.render(write_runs(tmp_path / "bench_apps", runs), out_dir=tmp_path)).read_text()
    assert "spruce's engine refused this net: CUSTOM (operator 3) is not supported" in page
    assert "Operators of its dense export: " + ", ".join(
        f"{op} x{n}" for op, n in runs[0]["nets"]["ResNet50"]["operators"].items()) in page
    assert "| ResNet50 | refused |" in page and "### MobileNet" in page


def test_bench_apps_runs_of_different_nets_are_refused(renderer, tmp_path):
    runs = apps_documents()
    del runs[1]["nets"]["ResNet50"]
    with pytest.raises(renderer.ResultsError, match="differ in their parameters"):
        renderer.render(write_runs(tmp_path / "bench_apps", runs), out_dir=tmp_path)


# ---- bench_int8: documents printed by the real benchmark ----------------------------------
# tests/data/bench_int8/ holds two runs of `benchmarks/bench_int8.py --quick --nets MobileNet`
# (96x96, 1 round of 2 runs: a smoke run, its figures mean nothing).

INT8_RUNS = sorted((Path(__file__).resolve().parent / "data" / "bench_int8").glob("*.json"))


def test_bench_int8_page_gives_each_export_its_times_speedup_steps_and_size(renderer, tmp_path):
    runs = [json.loads(path.read_text()) for path in INT8_RUNS]
    assert len(runs) == 2 and all(r["script"] == "bench_int8" and r["arguments"]["quick"] for r in runs)
    page = Path(renderer.render([str(p) for p in INT8_RUNS], out_dir=tmp_path)).read_text()
    assert (tmp_path / "bench_int8.md").read_text() == page
    assert page.startswith("# bench_int8: spruce's int8 engine against LiteRT's int8 kernels")
    net = "MobileNet"
    first = runs[0]["nets"][net]
    litert = across_runs([r["nets"][net]["times"]["litert_int8_dense"]["median_ms"] for r in runs], "")
    for name, label in renderer.INT8_EXPORTS.items():
        spruce = across_runs([r["nets"][net]["times"][f"spruce_int8_{name}"]["median_ms"] for r in runs], "")
        speedup = across_runs([r["nets"][net]["speedups_vs_litert_int8_dense"][name] for r in runs])
        steps = max(r["nets"][net]["max_steps_from_litert"][name] for r in runs)
        size = first["file_bytes"][name] / 1e6
        assert f"| {label} | {litert} | {spruce} | {speedup} | {steps:g} | {size:.2f} |" in page, name
    for goal in first["goals"]:
        met = sum(r["nets"][net]["goals"][goal] for r in runs)
        assert f"| {goal.replace('_', ' ')} | {met} of 2 |" in page
    for fact in (f"engine kernels {runs[0]['isa']}, AVX-512 VNNI", f"| spruce commit | {runs[0]['git']['commit'][:7]}",
                 "keras.applications MobileNet at 96x96x3", "(a --quick smoke run, not a measurement)",
                 "2 runs of the script, each 1 interleaved rounds x 2 timed runs per engine"):
        assert fact in page, fact
    assert all(f"\n| {path.name} | " in page for path in INT8_RUNS)


def test_bench_int8_runs_with_other_goals_are_refused(renderer, tmp_path):
    runs = [json.loads(path.read_text()) for path in INT8_RUNS]
    runs[1]["goals_definition"] = {"speedup_vs_litert_int8_dense_min": {"MobileNet": {"90": 9.0}}}
    with pytest.raises(renderer.ResultsError):
        renderer.render(write_runs(tmp_path / "bench_int8", runs), out_dir=tmp_path)

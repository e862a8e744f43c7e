"""benchmarks/bench_apps.py runs end to end and its JSON renders into a results page.

A smoke run of MobileNet at 64x64 (real converter, real LiteRT, real engine): the JSON
carries what every benchmark records (benchmarks/common.py) and each export's figures,
and benchmarks/render_results.py renders it. The figures themselves are not asserted:
timings belong to the benchmark, not to tests.
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

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name):
    if str(BENCHMARKS) not in sys.path:  # the scripts import benchmarks/common.py, as when they run
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_quick_mobilenet_run_records_its_setting_and_renders(tmp_path):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert load_script("bench_apps").main(["--nets", "MobileNet", "--quick", "--cache-dir", str(tmp_path)]) == 0
    report = json.loads(buffer.getvalue())
    assert report["script"] == "bench_apps" and report["date"].endswith("+00:00")
    assert report["git"] is None or len(report["git"]["commit"]) == 40
    assert {"tensorflow", "keras", "ai_edge_litert", "spruce", "engine_compiler"} <= set(report["versions"])
    assert set(report["load_average_1min"]) == {"before", "after"} and report["cpu"] and report["isa"]
    net = report["nets"]["MobileNet"]
    assert net["policy_prunes_only_1x1"] is True and "refused" not in net
    assert set(net["times"]) == {"litert_dense", "spruce_dense", "spruce_90"}  # all90 is the 90 file
    assert all(stats["runs"] == 2 for stats in net["times"].values())
    assert set(net["speedups"]) == {f"spruce_{n}_vs_litert_dense" for n in ("dense", "90", "all90")}
    assert max(net["max_relative_error_vs_litert"].values()) < 1e-3
    run = tmp_path / "bench_apps" / "run.json"
    run.parent.mkdir()
    run.write_text(json.dumps(report))
    page = Path(load_script("render_results").render([str(run)], out_dir=tmp_path)).read_text()
    speedup = net["speedups"]["spruce_90_vs_litert_dense"]
    assert f"| 1x1 convs 90% sparse | {net['times']['litert_dense']['median_ms']:.2f} | " \
           f"{net['times']['spruce_90']['median_ms']:.2f} | {speedup:.2f}x |" in page
    assert "a --quick smoke run" in page and report["cpu"] in page


@pytest.mark.parametrize("script", ["bench_apps", "bench_int8"])
def test_nets_that_keras_applications_lacks_are_refused_with_examples(script, capsys):
    with pytest.raises(SystemExit):
        load_script(script).main(["--nets", "MobileNet,NoSuchNet"])
    err = capsys.readouterr().err
    assert "--nets must name keras.applications models, e.g. MobileNet" in err and "['NoSuchNet']" in err

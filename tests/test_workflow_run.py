"""`spruce run` end to end on a small slice of real Fashion-MNIST, with the real components:
spruce's pruning, the TF converter, the LiteRT interpreter, matplotlib. Then resume behaviour."""

import json
import os
import subprocess
import sys

import pytest

from helpers import require_engine

from spruce.workflow.artifacts import read_json
from spruce.workflow.config import load_config
from spruce.workflow.data import FASHION_MNIST_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                       reason="needs the Debian package dataset-fashion-mnist"),
]

SMALL = {"quick": True, "quick_train": 400, "quick_test": 200, "dense_epochs": 1, "prune_epochs": 1,
         "batch_size": 32, "pruning_frequency": 2, "pruning_end_fraction": 0.5,
         "bench_runs": 5, "bench_warmup": 1, "arm64_check": False}


def _config(tmp_path, **changes):
    return load_config(None, {**SMALL, "out_dir": str(tmp_path), "name": "small", **changes})


def _cli(tmp, *extra):
    """`spruce run` in its own process, as a user runs it (one TF converter per process:
    repeated conversions in one process have crashed TF's converter), -> its JSON document."""
    done = _cli_process(tmp, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# Makes `import matplotlib` fail as it does where the package is not installed.
WITHOUT_MATPLOTLIB = """
import sys
class _NoMatplotlib:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, _NoMatplotlib())
from spruce.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_process(tmp, *extra, without_matplotlib=False):
    cfg = tmp / "small.toml"
    cfg.write_text("[dense]\nepochs = 1\nbatch_size = 32\n"
                   "[prune]\nepochs = 1\nfrequency = 2\nend_fraction = 0.5\n"
                   "[bench]\nruns = 5\nwarmup = 1\narm64_check = false\n"
                   "[run]\nquick = true\nquick_train = 400\nquick_test = 200\nname = \"small\"\n"
                   f"out_dir = \"{tmp}\"\n")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    program = ["-c", WITHOUT_MATPLOTLIB] if without_matplotlib else ["-m", "spruce"]
    return subprocess.run([sys.executable, *program, "run", "--config", str(cfg), "--json", "--no-progress",
                           *extra], env=env, capture_output=True, text=True, timeout=600)


def _mtimes(folder, names):
    return {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in names}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    from spruce.workflow import run

    tmp = tmp_path_factory.mktemp("runs")
    return tmp, run(_config(tmp), progress=False, quiet=True)


def test_run_writes_models_exports_metrics_and_a_report_with_its_plots(first_run):
    _, result = first_run
    folder = result.folder
    for name in ("dense.keras", "pruned.keras", "dense.tflite", "pruned.tflite", "metrics.json",
                 "report.md", "stages.json"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    report = open(result.report_path).read()
    images = [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(images) == 3
    for image in images:
        with open(os.path.join(folder, image), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(os.path.join(folder, "logs", "pruned"))  # TensorBoard event files
    assert not [n for n in os.listdir(folder) if ".part" in n]


def test_pruned_model_reaches_the_final_sparsity_in_its_1x1_convs(first_run):
    _, result = first_run
    pruned = result.metrics.pruned
    assert pruned.sparsity_1x1 == pytest.approx(0.75, abs=0.01)
    assert result.metrics.dense.sparsity_1x1 < 0.01
    # the 1x1 filters are stored sparse behind DENSIFY in pruned.tflite, and only there
    assert len(pruned.export["sparse_tensors"]) == 2 and pruned.export["densify_ops"] == 2
    assert result.metrics.dense.export["sparse_tensors"] == []


def test_tflite_accuracy_matches_keras_on_the_test_set(first_run):
    _, result = first_run
    for name in ("dense", "pruned"):
        m = getattr(result.metrics, name)
        # the same weights through the converter and LiteRT: at most 1 image of 200 may flip on a tie
        assert abs(m.keras_accuracy - m.tflite_accuracy) <= 1 / 200 + 1e-9, name


def test_metrics_json_is_the_report_data(first_run):
    _, result = first_run
    on_disk = read_json(os.path.join(result.folder, "metrics.json"))
    assert on_disk["pruned"]["keras_accuracy"] == result.metrics.pruned.keras_accuracy
    assert on_disk["data"] == {"dataset": "fashion_mnist", "train": 360, "val": 40, "test": 200}
    assert on_disk["latency"]["litert"]["dense_ms"] > 0
    assert isinstance(on_disk["pruned"]["xnnpack_sparse"], bool)


def test_metrics_json_reads_back_as_the_run_report(first_run):
    from spruce.workflow.artifacts import _jsonable
    from spruce.workflow.pipeline import RunReport

    _, result = first_run
    loaded = RunReport.load(result.folder)
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict(), default=_jsonable))
    assert str(loaded) == str(result)
    assert loaded.metrics.pruned.blocks.size == (1, 1) and loaded.metrics.reused == ()


def test_both_engines_are_timed_in_one_interleaved_run(first_run):
    require_engine()
    _, result = first_run
    lat = result.metrics.latency
    for engine in ("litert", "spruce"):
        assert lat[engine].raw["engine"] == "litert+spruce"
        assert [m["engine"] for m in lat[engine].raw["models"]] == [engine, engine]
    assert lat["spruce"].speedup_vs_litert_dense == pytest.approx(
        lat["litert"].dense_ms / lat["spruce"].pruned_ms)
    report = open(result.report_path).read()
    assert "against the dense one on LiteRT" in report and "same interleaved run" in report
    # The pruned model's time on spruce's engine, operator by operator, with its sparse 1x1s.
    ops = lat["spruce"].pruned_profile["operators"]
    assert [op["kernel"] for op in ops if op["weight_sparsity"]] and all(op["seconds"] > 0 for op in ops)
    assert "Where the pruned model's time goes on spruce's engine" in report
    assert f"| {ops[0]['name']} | {ops[0]['kernel']} |" in report


def test_rerun_reuses_every_finished_stage_and_prints_one_json_document(first_run, capsys):
    from spruce.cli import main

    tmp, result = first_run
    names = ["dense.keras", "pruned.keras", "dense.tflite", "pruned.tflite"]
    before = _mtimes(result.folder, names)
    argv = ["run", "--quick", "--out", str(tmp), "--name", "small", "--json", "--no-progress", "--no-arm64"]
    flags = {"dense_epochs": "--epochs", "prune_epochs": "--prune-epochs", "batch_size": "--batch-size",
             "pruning_frequency": "--pruning-frequency", "bench_runs": "--bench-runs"}
    for key, flag in flags.items():
        argv += [flag, str(SMALL[key])]
    # the settings the CLI has no flag for come from a config file
    cfg = tmp / "small.toml"
    cfg.write_text("[prune]\nend_fraction = 0.5\n[bench]\nwarmup = 1\n[run]\nquick_train = 400\nquick_test = 200\n")
    assert main(argv + ["--config", str(cfg)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reused"] == ["dense", "pruned", "export", "evaluate"]
    assert doc["pruned"]["keras_accuracy"] == result.metrics.pruned.keras_accuracy
    assert _mtimes(result.folder, names) == before


def test_a_missing_optional_package_exits_with_the_environment_code_and_the_install_hint(first_run):
    from spruce.cli import exit_codes

    tmp, result = first_run
    before = _mtimes(result.folder, ["metrics.json", "dense.keras", "pruned.keras"])
    done = _cli_process(tmp, without_matplotlib=True)  # every stage is reused; the plots need matplotlib
    assert done.returncode == exit_codes.ENVIRONMENT, done.stderr[-3000:]
    assert "spruce run: error: spruce needs `matplotlib`" in done.stderr
    assert "pip install matplotlib" in done.stderr and done.stdout == ""
    assert _mtimes(result.folder, ["metrics.json", "dense.keras", "pruned.keras"]) == before


def test_changed_pruning_setting_redoes_pruning_but_reuses_the_dense_model(first_run):
    tmp, result = first_run
    before = _mtimes(result.folder, ["dense.keras", "pruned.keras"])
    again = _cli(tmp, "--final-sparsity", "0.8")
    after = _mtimes(result.folder, ["dense.keras", "pruned.keras"])
    assert again["reused"] == ["dense"]
    assert after["dense.keras"] == before["dense.keras"]
    assert after["pruned.keras"] != before["pruned.keras"]
    assert again["pruned"]["sparsity_1x1"] == pytest.approx(0.8, abs=0.01)


def test_fresh_redoes_everything_and_the_seed_makes_it_repeatable(first_run):
    tmp, result = first_run
    again = _cli(tmp, "--fresh")
    assert again["reused"] == []
    # same seed, same data, same recipe: the same weights, so the same predictions
    assert again["dense"]["keras_accuracy"] == result.metrics.dense.keras_accuracy
    assert again["pruned"]["keras_accuracy"] == result.metrics.pruned.keras_accuracy
    assert again["pruned"]["layer_sparsity"] == result.metrics.pruned.layer_sparsity

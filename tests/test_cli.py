"""The `spruce` command: one exit-code convention, one report protocol."""

import _thread
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from _pruned_guide import export, pruned_guide
from tflite_models import prune_pointwise, sparse_path_net

from spruce.cli import main
from spruce.cli.exit_codes import ENVIRONMENT, INTERRUPTED, NEGATIVE, OK, USAGE

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = pruned_guide(0.75)
    keras_path = folder / "model.keras"
    prune_pointwise(sparse_path_net(), 0.75).save(keras_path)
    return {"sparse": export(model, folder / "sparse.tflite", sparse=True),
            "dense": export(model, folder / "dense.tflite", sparse=False),
            "keras": str(keras_path)}


def _environment():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    return env


# ---- exit codes ------------------------------------------------------------------------

def test_a_command_that_did_what_was_asked_exits_ok(files, capsys):
    assert main(["bench", files["sparse"], "--runs", "2", "--warmup", "0", "--json"]) == OK
    assert json.loads(capsys.readouterr().out)["models"][0]["path"] == files["sparse"]


def test_a_negative_verdict_exits_negative_with_the_report(files, capsys):
    # Stored dense, the file gives XNNPACK nothing to run sparse: no emulation needed to say no.
    assert main(["check-arm64", files["dense"], "--quiet"]) == NEGATIVE
    assert "XNNPACK sparse path on aarch64: NOT engaged" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["bench", "missing.tflite"], "which does not exist"),
    (["bench", "{sparse}", "--threads", "0"], "threads must be an integer >= 1. Received: threads=0"),
    (["bench", "{sparse}", "--profile", "--engine", "litert"], "Drop it, or use --engine spruce"),
    (["export", "{keras}", "out.bin"], "must end with .tflite"),
    (["export", "{sparse}", "out.tflite"], "cannot load"),
    (["check-arm64", "{sparse}", "--repetitions", "1"], "repetitions must be an integer >= 3"),
    (["check-arm64", "{keras}"], "is not a .tflite file"),
])
def test_bad_input_exits_usage_and_names_the_problem(files, tmp_path, capsys, argv, message):
    argv = [a.format(**files) for a in argv]
    if argv[0] == "export":
        argv[2] = str(tmp_path / argv[2])
    assert main(argv) == USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"spruce {argv[0]}: error: ") and message in err
    assert not list(tmp_path.iterdir())


def test_a_missing_command_or_argument_exits_usage(capsys):
    assert main([]) == USAGE
    with pytest.raises(SystemExit) as stop:  # argparse's own usage errors
        main(["bench"])
    assert stop.value.code == USAGE
    assert "the following arguments are required: models" in capsys.readouterr().err


def test_a_missing_tool_exits_environment_with_the_install_hint(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither adb nor qemu on it
    assert main(["bench", files["sparse"], "--adb", "--benchmark-binary", files["dense"]]) == ENVIRONMENT
    assert "apt-get install adb" in capsys.readouterr().err
    assert main(["check-arm64", files["sparse"], "--quiet"]) == ENVIRONMENT
    assert "apt-get install qemu-user-static" in capsys.readouterr().err


def test_a_missing_package_exits_environment_with_the_install_hint(files):
    """ai-edge-litert made unimportable, as on a machine without it."""
    code = textwrap.dedent(f"""
        import sys
        class NoLiteRT:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ai_edge_litert":
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
        sys.meta_path.insert(0, NoLiteRT())
        from spruce.cli import main
        raise SystemExit(main(["bench", {files["sparse"]!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], env=_environment(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == ENVIRONMENT, done.stderr
    assert done.stderr.startswith("spruce bench: error: spruce needs `ai-edge-litert`")
    assert "pip install ai-edge-litert" in done.stderr


def test_an_interrupted_command_exits_130(files, capsys):
    timer = threading.Timer(1.0, _thread.interrupt_main)  # as a Ctrl-C in the middle of the runs
    timer.start()
    try:
        code = main(["bench", files["sparse"], "--runs", "100000000", "--warmup", "0"])
    finally:
        timer.cancel()
    assert code == INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


# ---- one report protocol -----------------------------------------------------------------

def test_every_report_is_a_json_document_and_a_readable_text(files, tmp_path):
    import keras

    from spruce.arm64 import check_arm64
    from spruce.bench import benchmark, parse_benchmark_output, profile
    from spruce.export import export_litert

    data = os.path.join(os.path.dirname(__file__), "data", "benchmark_model")
    with open(os.path.join(data, "xiaomi_mi11_yolov5s_fp32_adb.txt")) as f:
        reports = {
            "bench": benchmark([files["sparse"]], runs=2, warmup=0),
            "arm64": check_arm64(files["dense"], progress=False),
            "export": export_litert(keras.saving.load_model(files["keras"]), tmp_path / "m.tflite"),
            "benchmark_model": parse_benchmark_output(f.read()),
        }
    try:
        reports["profile"] = profile([files["sparse"]], runs=2, warmup=0)
    except ImportError:
        pass  # no native engine in this install: its report cannot be made
    for name, report in reports.items():
        assert json.loads(json.dumps(report.to_dict())), name
        text = str(report)
        assert text.strip() and "object at 0x" not in text and f"{type(report).__name__}(" not in text, name
        assert not hasattr(report, "format") and not hasattr(report, "to_text"), name
    assert str(reports["export"]).startswith(f"wrote {tmp_path / 'm.tflite'}: ")
    assert "249684 us" in str(reports["benchmark_model"])

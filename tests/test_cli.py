"""The `spruce` command: one exit-code convention, one report protocol, a quiet start-up."""

import _thread
import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from _pruned_guide import export, pruned_guide
from tflite_models import prune_pointwise, sparse_path_net

from spruce.cli import main, native_logs
from spruce.cli.exit_codes import ENVIRONMENT, INTERRUPTED, NEGATIVE, OK, USAGE

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# Lines as TensorFlow 2.21 and LiteRT print them at start-up on this project's machines.
ONEDNN = (b"I0000 00:00:1796649791.511734    9352 port.cc:153] oneDNN custom operations are on. You may "
          b"see slightly different numerical results due to floating-point round-off errors from "
          b"different computation orders. To turn them off, set the environment variable "
          b"`TF_ENABLE_ONEDNN_OPTS=0`.")
ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
XNNPACK = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
CONVERTER_WARNING = b"W0000 00:00:1796650175.213153   20363 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format."
# TensorFlow before 2.16 logged in its own format.
OLD_TF_INFO = (b"2024-01-11 05:40:05.061907: I tensorflow/core/platform/cpu_feature_guard.cc:182] This "
               b"TensorFlow binary is optimized to use available CPU instructions in performance-critical "
               b"operations.")
ABSL_ERROR_AFTER_INIT = b"E0115 10:21:07.123456    4242 cuda_dnn.cc:8579] Unable to register cuDNN factory"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = pruned_guide(0.75)
    keras_path = folder / "model.keras"
    prune_pointwise(sparse_path_net(), 0.75).save(keras_path)
    return {"sparse": export(model, folder / "sparse.tflite", sparse=True),
            "dense": export(model, folder / "dense.tflite", sparse=False),
            "keras": str(keras_path)}


def _environment(**extra):
    env = {k: v for k, v in os.environ.items() if k != native_logs.VARIABLE}
    env.update(KERAS_BACKEND="tensorflow", PYTHONPATH=os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")])))
    env.update(extra)
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
    done = threading.Event()

    def interrupt_until_done():
        # As a Ctrl-C in the middle of the runs. An interrupt that lands while a library
        # imports can be swallowed there, so it repeats until the command has returned.
        while not done.wait(1.0):
            _thread.interrupt_main()

    # interrupt_main() only reaches Python's own SIGINT handler; an earlier test's library may
    # have left SIGINT ignored or at its default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Thread(target=interrupt_until_done, daemon=True)
    interrupter.start()
    try:
        # bounded: without the interrupt the command ends (and the test fails) within minutes
        code = main(["bench", files["sparse"], "--runs", "3000000", "--warmup", "0"])
    finally:
        done.set()
        while interrupter.is_alive():
            try:
                interrupter.join()
            except KeyboardInterrupt:  # one sent just before `done` was set
                pass
        signal.signal(signal.SIGINT, previous)
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


# ---- quiet start-up ----------------------------------------------------------------------

@pytest.mark.parametrize("line, severity", [
    (ONEDNN, 0), (ABSL_BANNER, 0), (XNNPACK, 0), (CONVERTER_WARNING, 1), (OLD_TF_INFO, 0),
    (ABSL_ERROR_AFTER_INIT, 2), (b"F0000 00:00:1796650175.5   20363 graph.cc:12] Check failed: x", 3),
    (b"spruce export: error: the output path must end with .tflite", None),
    (b"WARNING:absl:Compiled the loaded model, but the compiled metrics have yet to be built.", None),
    (b"Epoch 1/3", None), (b"", None),
])
def test_native_log_lines_are_told_from_other_output_by_severity(line, severity):
    assert native_logs.severity(line) == severity


def test_a_level_hides_the_lines_below_it_as_tf_cpp_min_log_level_does():
    lines = [ONEDNN, CONVERTER_WARNING, ABSL_ERROR_AFTER_INIT, b"other output"]
    shown = {level: [line for line in lines if native_logs.keep(line, level)] for level in range(4)}
    assert shown[0] == lines
    assert shown[1] == lines[1:]
    assert shown[2] == lines[2:]
    assert shown[3] == lines[3:]


@pytest.mark.parametrize("verbose, environ, level, value", [
    (False, {}, 2, "2"),                                  # spruce's default
    (False, {"TF_CPP_MIN_LOG_LEVEL": "0"}, 0, "0"),       # the user's own setting wins
    (False, {"TF_CPP_MIN_LOG_LEVEL": "3"}, 3, "3"),
    (False, {"TF_CPP_MIN_LOG_LEVEL": "lots"}, 0, "lots"),  # unreadable: TF shows everything
    (True, {}, 0, "0"),                                   # --verbose
    (True, {"TF_CPP_MIN_LOG_LEVEL": "2"}, 0, "0"),
])
def test_the_level_comes_from_verbose_then_the_environment_then_the_default(verbose, environ, level, value):
    assert native_logs.log_level(verbose, environ) == level
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": value}  # set for TensorFlow to read as well


def _read_until(fd, expected, timeout=10.0):
    got = b""
    deadline = time.monotonic() + timeout
    while expected not in got and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # a pty whose other side every process has closed
                break
            got += chunk
    return got


def test_filter_drops_log_lines_and_forwards_the_rest_as_it_comes():
    source_read, source_write = os.pipe()
    sink_read, sink_write = os.pipe()
    worker = threading.Thread(target=native_logs.filter_stream, args=(source_read, sink_write, 2))
    worker.start()
    try:
        os.write(source_write, ABSL_BANNER + b"\n" + ONEDNN + b"\nEpoch 1/3\n12/50 [====")
        # A progress bar's line is still open: it is forwarded once it waits, not at its end.
        assert _read_until(sink_read, b"[====") == b"Epoch 1/3\n12/50 [===="
        os.write(source_write, b"====]\n" + XNNPACK + b"\n" + CONVERTER_WARNING + b"\n")
        os.write(source_write, ABSL_ERROR_AFTER_INIT + b"\nthe end, unterminated")
    finally:
        os.close(source_write)
        worker.join(10)
    os.close(sink_write)
    rest = b""
    while chunk := os.read(sink_read, 4096):
        rest += chunk
    os.close(sink_read)
    os.close(source_read)
    assert rest == b"====]\n" + ABSL_ERROR_AFTER_INIT + b"\nthe end, unterminated"


def test_under_the_filter_python_keeps_the_tty_and_a_killed_process_still_has_its_say(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal, sys
        from spruce.cli.native_logs import filtered_stderr
        with filtered_stderr(2):
            print("python stderr is a tty:", sys.stderr.isatty(), file=sys.stderr)
            os.write(2, {ONEDNN!r} + b"\\n")
            os.write(2, b"native last words\\n")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], env=_environment(), stderr=slave, cwd=tmp_path)
    os.close(slave)
    try:
        out = _read_until(master, b"native last words")
    finally:
        proc.wait(30)
        os.close(master)
    assert proc.returncode == -signal.SIGKILL
    assert b"python stderr is a tty: True" in out and b"native last words" in out
    assert b"oneDNN" not in out


@pytest.mark.slow
def test_spruce_export_prints_no_native_log_lines_unless_verbose(files, tmp_path):
    """TensorFlow and LiteRT print their start-up lines while spruce exports; none reach the user."""
    def export_in_a_process(*flags):
        out = tmp_path / f"m{len(flags)}.tflite"
        return subprocess.run([sys.executable, "-m", "spruce", *flags, "export", files["keras"], str(out)],
                              env=_environment(), capture_output=True, timeout=600)

    quiet = export_in_a_process()
    assert quiet.returncode == OK, quiet.stderr.decode()[-3000:]
    assert quiet.stdout.startswith(b"wrote ")
    assert [line for line in quiet.stderr.splitlines() if native_logs.severity(line) is not None] == []
    for words in (b"oneDNN", b"absl::InitializeLog", b"cpu_feature_guard", b"XNNPACK delegate"):
        assert words not in quiet.stderr
    # The lines were there to hide: LiteRT prints this one on every machine.
    verbose = export_in_a_process("--verbose")
    assert verbose.returncode == OK and XNNPACK in verbose.stderr.splitlines()

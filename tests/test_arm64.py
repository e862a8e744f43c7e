"""`spruce check-arm64`: the real aarch64 LiteRT under qemu decides whether XNNPACK's sparse path ran.

The end-to-end tests prepare the emulation environment as a user's first call does
(Debian arm64 packages via apt, aarch64 wheels via pip, into the cache folder), then
run the guide's model pruned to 75% (sparse path), 50% (below XNNPACK's 2/3) and the
75% model stored dense.
"""

import json
import shutil
import time

import pytest

from _pruned_guide import export, pruned_guide

from spruce.arm64 import Arm64SetupError, check_arm64
from spruce.arm64.check import STRONG_RATIO, verdict
from spruce.arm64.environment import find_qemu, host_sources

REPETITIONS = 9


def test_missing_emulator_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Arm64SetupError, match="qemu-user-static.*apt-get install qemu-user-static"):
        find_qemu()


def test_host_apt_sources_are_reused_without_architecture_restrictions(tmp_path):
    etc = tmp_path / "etc"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n")
    (etc / "sources.list.d" / "d.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
        "Architectures: amd64 i386\nSigned-By: /k.gpg\n")
    out = tmp_path / "out"
    out.mkdir()
    host_sources(out, etc=str(etc))
    texts = {p.suffix: p.read_text() for p in out.iterdir()}
    assert texts[".list"] == "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    assert "Architectures" not in texts[".sources"] and "URIs: http://mirror.example/debian" in texts[".sources"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Arm64SetupError, match="found no apt sources"):
        host_sources(out, etc=str(empty))


@pytest.mark.parametrize("ratio, identical, engaged, words", [
    (1.02, True, False, "bitwise identical"),      # same kernels ran: timing noise is irrelevant
    (1.40, True, False, "bitwise identical"),      # even a noisy 1.4x cannot make it engaged
    (0.40, False, False, "not faster"),            # other kernels, slower: reference kernels ran
    (1.20, False, True, "modest"),
    (STRONG_RATIO, False, True, "faster than the same weights"),
])
def test_verdict_needs_different_kernels_and_no_slowdown(ratio, identical, engaged, words):
    got, reason = verdict(ratio, identical)
    assert got is engaged and words in reason


def test_a_slow_median_with_a_fast_best_repetition_is_not_a_slowdown():
    # Medians hit by a busy stretch of the host; the fastest repetitions show the gain.
    assert verdict(0.85, identical=False, best_ratio=1.2)[0] is True
    got, reason = verdict(0.85, identical=False, best_ratio=0.8)
    assert got is False and "not faster" in reason


def test_disagreeing_outputs_are_not_a_working_sparse_path():
    got, reason = verdict(2.0, identical=False, outputs_agree=False)
    assert got is False and "DISAGREE" in reason


def test_missing_file_and_too_few_repetitions_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_arm64(tmp_path / "missing.tflite")
    f = tmp_path / "m.tflite"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="repetitions must be an integer >= 3 .*Received: repetitions=1"):
        check_arm64(f, repetitions=1)


@pytest.fixture(scope="module")
def guide_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arm64")
    m75, m50 = pruned_guide(0.75), pruned_guide(0.50)
    return {"75_sparse": export(m75, folder / "g75_sparse.tflite", sparse=True),
            "50_sparse": export(m50, folder / "g50_sparse.tflite", sparse=True),
            "75_dense": export(m75, folder / "g75_dense.tflite", sparse=False)}


@pytest.fixture(scope="module")
def emulator():
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (scripts/install.sh installs qemu-user-static)")
    from spruce.arm64 import prepare

    start = time.monotonic()
    env = prepare(progress=True)  # downloads on a fresh machine; reads the cache afterwards
    print(f"aarch64 environment ready in {time.monotonic() - start:.1f} s: {env.versions}")
    return env


@pytest.mark.slow
def test_guide_model_pruned_75_percent_engages_the_sparse_path(guide_files, emulator):
    report = check_arm64(guide_files["75_sparse"], repetitions=REPETITIONS, progress=False)
    assert report.sparse_path_engaged, str(report)
    assert not report.outputs_identical and report.outputs_agree and report.max_abs_diff < 1e-4
    # The verdict rests on the outputs; the emulated times go in the report but are not
    # asserted, since a busy host moves them.
    assert report.time_ratio > 0 and report.time_ratio_best > 0
    assert report.inspector["xnnpack_sparse"] is True and report.inspector_agrees
    assert report.emulator["machine"] == "aarch64" and report.emulator["litert"] == "1.4.0"
    assert "Pixel 4" in str(report)


@pytest.mark.slow
def test_guide_model_pruned_50_percent_does_not_with_the_inspectors_reason(guide_files, emulator):
    report = check_arm64(guide_files["50_sparse"], repetitions=REPETITIONS, progress=False)
    assert not report.sparse_path_engaged, str(report)
    assert report.outputs_identical and report.max_abs_diff == 0.0
    assert "2/3" in report.reason and report.inspector_agrees


def test_75_percent_model_stored_dense_does_not_with_the_reason(guide_files, capsys):
    from spruce.cli import main
    from spruce.cli.exit_codes import NEGATIVE

    # The check ran and its verdict is "no": the negative exit code, and the full report.
    assert main(["check-arm64", guide_files["75_dense"], "--json", "--quiet"]) == NEGATIVE
    d = json.loads(capsys.readouterr().out)
    assert d["sparse_path_engaged"] is False  # top-level boolean for scripts
    assert "stored dense" in d["reason"] and "DENSIFY" in d["reason"]
    assert d["time_ratio"] is None and d["densify"]["removed_densify_ops"] == 0

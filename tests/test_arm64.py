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


def test_identical_outputs_with_a_clear_gain_in_every_repetition_engaged():
    # Saturated outputs hide the kernels' rounding; the same kernels cannot run 2x faster.
    got, reason = verdict(2.2, identical=True, best_ratio=2.2)
    assert got is True and "bitwise identical" in reason and "2.20x" in reason
    # A fast median alone, or a best-of within noise, is not enough.
    assert verdict(2.2, identical=True)[0] is False
    assert verdict(2.2, identical=True, best_ratio=1.2)[0] is False


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


def _random_mobilenet_v2(size=64, sparsity=0.9):
    """keras.applications' MobileNetV2 (alpha 0.35), untrained, ending in its softmax,
    rewritten for XNNPACK and with its 1x1 convolutions zeroed by magnitude."""
    import keras

    import spruce
    from spruce.masking import magnitude_mask

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(size, size, 3), classes=10,
                                           weights=None)
    model = spruce.make_xnnpack_compatible(model, exact=False).model
    for layer in model.layers:
        if type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1):
            kernel, *rest = layer.get_weights()
            mask = keras.ops.convert_to_numpy(magnitude_mask(kernel, sparsity)[0])
            layer.set_weights([kernel * mask] + rest)
    return model


@pytest.mark.slow
def test_untrained_mobilenet_v2_ending_in_softmax_is_seen_engaged(tmp_path, emulator):
    # Its probabilities come out bitwise the same from both kernel paths (all 0.1): the
    # check compares the logits too, and finds the sparse path that ran.
    import spruce

    path = tmp_path / "mnv2.tflite"
    spruce.export_litert(_random_mobilenet_v2(), path, sparse=True)
    report = check_arm64(path, repetitions=5, progress=False)
    assert report.sparse_path_engaged, str(report)
    assert report.logit_outputs == 1 and not report.outputs_identical and report.outputs_agree
    assert report.inspector["xnnpack_sparse"] is True and report.inspector_agrees
    assert report.model == str(path) and "logits" in str(report)


def test_75_percent_model_stored_dense_does_not_with_the_reason(guide_files, capsys):
    from spruce.cli import main
    from spruce.cli.exit_codes import NEGATIVE

    # The check ran and its verdict is "no": the negative exit code, and the full report.
    assert main(["check-arm64", guide_files["75_dense"], "--json", "--quiet"]) == NEGATIVE
    d = json.loads(capsys.readouterr().out)
    assert d["sparse_path_engaged"] is False  # top-level boolean for scripts
    assert "stored dense" in d["reason"] and "DENSIFY" in d["reason"]
    assert d["time_ratio"] is None and d["densify"]["removed_densify_ops"] == 0


def test_logits_of_a_softmax_output_become_an_extra_output(tmp_path):
    import keras
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    import spruce
    from spruce.arm64.probes import with_logit_outputs

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu")(inputs))
    logits = keras.layers.Dense(4)(x)
    classifier = keras.Model(inputs, keras.layers.Softmax()(logits))
    spruce.export_litert(classifier, tmp_path / "c.tflite", sparse=False)
    data, added = with_logit_outputs((tmp_path / "c.tflite").read_bytes())
    assert added == 1
    it = Interpreter(model_content=data)
    it.allocate_tensors()
    x = np.random.default_rng(0).random((1, 8, 8, 3), np.float32)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    probs, got = (it.get_tensor(d["index"]) for d in it.get_output_details())
    np.testing.assert_allclose(probs, classifier.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, keras.Model(inputs, logits).predict(x, verbose=0), rtol=1e-5, atol=1e-5)

    # A model that ends in its logits comes back as it was.
    spruce.export_litert(keras.Model(inputs, logits), tmp_path / "l.tflite", sparse=False)
    plain = (tmp_path / "l.tflite").read_bytes()
    assert with_logit_outputs(plain) == (plain, 0)

"""`spruce check`: the policy's verdict and fixes from the command line."""

import json
import subprocess
import sys

import pytest

from spruce.cli import exit_codes


def _spruce(*args):
    return subprocess.run([sys.executable, "-m", "spruce", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def guide_keepdims_false(tmp_path_factory):
    from spruce.zoo import guide_model

    path = tmp_path_factory.mktemp("check") / "guide.keras"
    guide_model(keepdims=False).save(path)
    return path


def test_check_refuses_keepdims_false_pooling_and_names_the_fix(guide_keepdims_false):
    done = _spruce("check", str(guide_keepdims_false), "--json")
    assert done.returncode == exit_codes.NEGATIVE, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert "keepdims" in json.dumps(doc["refusals"])


@pytest.mark.slow
def test_check_fix_writes_a_model_the_policy_accepts(guide_keepdims_false, tmp_path):
    fixed = tmp_path / "fixed.keras"
    done = _spruce("check", str(guide_keepdims_false), "--fix", str(fixed))
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    assert fixed.is_file()
    again = _spruce("check", str(fixed), "--json")
    assert again.returncode == exit_codes.OK, again.stderr
    assert json.loads(again.stdout)["ok"] is True


def test_check_on_a_missing_file_says_so():
    done = _spruce("check", "no/such/model.keras")
    assert done.returncode == exit_codes.USAGE
    assert "no such model file" in done.stderr


def test_check_on_a_file_keras_cannot_load_is_a_usage_error(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip archive")
    done = _spruce("check", str(bad))
    assert done.returncode == exit_codes.USAGE and "Traceback" not in done.stderr
    assert "cannot load" in done.stderr and str(bad) in done.stderr


def test_check_fix_must_name_a_keras_file(guide_keepdims_false, tmp_path):
    done = _spruce("check", str(guide_keepdims_false), "--fix", str(tmp_path / "fixed.h5"))
    assert done.returncode == exit_codes.USAGE
    assert "--fix must name a .keras file" in done.stderr and not (tmp_path / "fixed.h5").exists()


@pytest.fixture(scope="module")
def correct_pad_net(tmp_path_factory):
    """A stride-2 depthwise behind Keras applications' asymmetric ((0, 1), (0, 1)) padding."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2)(x)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="dw_pad")(x)
    x = layers.DepthwiseConv2D(3, strides=2, name="dw")(x)
    x = layers.Conv2D(16, 1)(x)
    x = layers.GlobalAveragePooling2D(keepdims=True)(x)
    path = tmp_path_factory.mktemp("check") / "correct_pad.keras"
    keras.Model(inputs, layers.Dense(4)(layers.Flatten()(x))).save(path)
    return path


@pytest.mark.slow
def test_check_fix_inexact_pads_symmetrically_and_says_outputs_change(correct_pad_net, tmp_path):
    exact = _spruce("check", str(correct_pad_net), "--fix", str(tmp_path / "exact.keras"))
    assert exact.returncode == exit_codes.NEGATIVE, exact.stderr
    assert "make_xnnpack_compatible(model, exact=False) fixes dw" in exact.stdout
    fixed = tmp_path / "fixed.keras"
    done = _spruce("check", str(correct_pad_net), "--fix", str(fixed), "--inexact", "--json")
    assert done.returncode == exit_codes.OK, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True and doc["outputs_unchanged"] is False
    assert doc["outputs_changed_by"] == ["dw_pad"] and fixed.is_file()


def test_check_inexact_without_fix_is_a_usage_error(correct_pad_net):
    done = _spruce("check", str(correct_pad_net), "--inexact")
    assert done.returncode == exit_codes.USAGE
    assert "--inexact changes what --fix writes" in done.stderr


def test_check_target_x86_reports_what_spruces_engine_runs_sparse(guide_keepdims_false):
    done = _spruce("check", str(guide_keepdims_false), "--target", "x86", "--json")
    assert done.returncode == exit_codes.OK, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True and doc["target"] == "spruce engine (x86)"
    assert len(doc["sparse_layers"]) == 2  # the guide's two 1x1 convolutions


def test_check_target_x86_has_nothing_to_fix(guide_keepdims_false, tmp_path):
    done = _spruce("check", str(guide_keepdims_false), "--target", "x86", "--fix",
                   str(tmp_path / "fixed.keras"))
    assert done.returncode == exit_codes.USAGE
    assert "needs no rewrite" in done.stderr

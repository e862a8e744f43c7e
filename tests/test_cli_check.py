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

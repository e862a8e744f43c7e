"""`spruce check`: the policy's verdict and fixes from the command line."""

import json
import subprocess
import sys

import pytest


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
    assert done.returncode == 3, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert "keepdims" in json.dumps(doc["refusals"])


def test_check_fix_writes_a_model_the_policy_accepts(guide_keepdims_false, tmp_path):
    fixed = tmp_path / "fixed.keras"
    done = _spruce("check", str(guide_keepdims_false), "--fix", str(fixed))
    assert done.returncode == 0, done.stdout + done.stderr
    assert fixed.is_file()
    again = _spruce("check", str(fixed), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ok"] is True


def test_check_on_a_missing_file_says_so():
    done = _spruce("check", "no/such/model.keras")
    assert done.returncode == 1
    assert "no such model file" in done.stderr

"""Run-folder mechanics: atomic writes (Ctrl-C leaves nothing half-written) and the stage manifest."""

import os

import pytest

from spruce.workflow.artifacts import Manifest, atomic_path, remove_partials, write_json


def test_interrupted_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(str(target), {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write('{"v": 2, "half')
            raise KeyboardInterrupt
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_temporary_keeps_the_suffix_writers_require(tmp_path):
    with atomic_path(str(tmp_path / "dense.keras")) as tmp:
        assert tmp.endswith(".keras") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()
    assert os.listdir(tmp_path) == ["dense.keras"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".dense.abc.part.keras").write_text("x")
    (tmp_path / "dense.keras").write_text("ok")
    remove_partials(str(tmp_path))
    assert os.listdir(tmp_path) == ["dense.keras"]


def test_manifest_reuses_a_stage_only_with_same_key_and_files(tmp_path):
    (tmp_path / "dense.keras").write_text("m")
    m = Manifest(str(tmp_path))
    m.record("dense", "k1", ["dense.keras"])
    again = Manifest(str(tmp_path))  # read back from stages.json
    assert again.done("dense", "k1")
    assert not again.done("dense", "k2")  # settings changed
    os.unlink(tmp_path / "dense.keras")
    assert not again.done("dense", "k1")  # artifact gone
    again.forget("dense")
    assert not Manifest(str(tmp_path)).done("dense", "k1")

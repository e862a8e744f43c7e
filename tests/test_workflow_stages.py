"""The stage runner: reuse while key and files match, otherwise forget what was built on the
stage and compute it again; results read back as the JSON they were written as."""

import os

import pytest

from spruce.workflow.artifacts import Manifest
from spruce.workflow.stages import Stage, StageRunner


class _Folder:
    """A run folder whose stages write one file each and count how often they computed."""

    def __init__(self, root):
        self.root = str(root)
        self.computed = []

    def stage(self, name, key, inputs=(), record=True, reported=True):
        def compute():
            self.computed.append(name)
            with open(os.path.join(self.root, f"{name}.out"), "w") as f:
                f.write(key)
            return f"{name} computed", ({"value": f"{name}@{key}"} if record else None)

        return Stage(name, key, inputs=inputs, files=(f"{name}.out",), compute=compute,
                     reuse=lambda entry: f"{name} reused ({entry['value']})", reported=reported)

    def runner(self, keys, **options):
        stages = [self.stage("a", keys["a"]), self.stage("b", keys["b"], inputs=("a",)),
                  self.stage("c", keys["c"], inputs=("b",), **options),
                  self.stage("d", keys["d"], inputs=("a",))]
        return StageRunner(Manifest(self.root), stages, quiet=True)


KEYS = {"a": "ka", "b": "kb", "c": "kc", "d": "kd"}


def _run_all(runner):
    return [runner.run(name) for name in ("a", "b", "c", "d")]


def test_a_second_run_with_the_same_keys_reuses_every_stage(tmp_path):
    folder = _Folder(tmp_path)
    first = folder.runner(KEYS)
    assert _run_all(first) == ["a computed", "b computed", "c computed", "d computed"]
    assert first.reused == [] and list(first.seconds) == ["a", "b", "c", "d"]
    again = folder.runner(KEYS)
    assert _run_all(again) == ["a reused (a@ka)", "b reused (b@kb)", "c reused (c@kc)", "d reused (d@kd)"]
    assert again.reused == ["a", "b", "c", "d"]
    assert again.seconds == {k: Manifest(str(tmp_path)).get(k)["seconds"] for k in "abcd"}  # when they ran
    assert folder.computed == ["a", "b", "c", "d"]


def test_a_changed_key_redoes_its_stage_and_those_built_on_it(tmp_path):
    folder = _Folder(tmp_path)
    _run_all(folder.runner(KEYS))
    folder.computed.clear()
    runner = folder.runner({**KEYS, "b": "kb2"})
    _run_all(runner)
    assert folder.computed == ["b", "c"]  # c is built on b; a and d are not
    assert runner.reused == ["a", "d"]


def test_a_stage_redone_with_the_same_key_forgets_the_stages_built_on_it(tmp_path):
    folder = _Folder(tmp_path)
    _run_all(folder.runner(KEYS))
    os.unlink(tmp_path / "a.out")  # a's file is gone: a is redone, so b, c and d (built on it) are too
    folder.computed.clear()
    runner = folder.runner(KEYS)
    assert runner.built_on("a") == ["b", "c", "d"]
    assert runner.run("a") == "a computed"
    assert set(Manifest(str(tmp_path)).stages) == {"a"}
    _run_all(runner)
    assert folder.computed == ["a", "b", "c", "d"]


def test_a_stage_that_keeps_nothing_is_computed_again_next_time(tmp_path):
    folder = _Folder(tmp_path)
    _run_all(folder.runner(KEYS, record=False))
    assert "c" not in Manifest(str(tmp_path)).stages
    folder.computed.clear()
    _run_all(folder.runner(KEYS, record=False))
    assert folder.computed == ["c"]


def test_an_unreported_stage_is_neither_timed_nor_listed_as_reused(tmp_path):
    folder = _Folder(tmp_path)
    _run_all(folder.runner(KEYS, reported=False))
    runner = folder.runner(KEYS, reported=False)
    _run_all(runner)
    assert runner.reused == ["a", "b", "d"] and "c" not in runner.seconds


def test_steps_that_are_not_stages_are_timed_in_the_same_table(tmp_path):
    runner = _Folder(tmp_path).runner(KEYS)
    with runner.timed("data"):
        pass
    runner.run("a")
    assert list(runner.seconds) == ["data", "a"] and runner.seconds["data"] >= 0


def test_a_stage_must_be_declared_after_the_stages_it_is_built_on(tmp_path):
    folder = _Folder(tmp_path)
    with pytest.raises(ValueError, match=r"stage 'b' is built on \['a'\], which must be declared before it"):
        StageRunner(Manifest(str(tmp_path)), [folder.stage("b", "kb", inputs=("a",)), folder.stage("a", "ka")])


def test_extra_files_a_computation_wrote_must_still_exist_to_reuse_the_stage(tmp_path):
    def compute():
        for name in ("main.out", "extra.out"):
            (tmp_path / name).write_text("x")
        return "computed", {"extra_files": ["extra.out"]}

    stage = Stage("s", "k", inputs=(), files=("main.out",), compute=compute, reuse=lambda entry: "reused")
    assert StageRunner(Manifest(str(tmp_path)), [stage]).run("s") == "computed"
    entry = Manifest(str(tmp_path)).get("s")
    assert entry["files"] == ["main.out", "extra.out"] and "extra_files" not in entry
    assert StageRunner(Manifest(str(tmp_path)), [stage]).run("s") == "reused"
    os.unlink(tmp_path / "extra.out")
    assert StageRunner(Manifest(str(tmp_path)), [stage]).run("s") == "computed"

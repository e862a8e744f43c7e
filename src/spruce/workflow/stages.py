"""The recorded stages of `spruce run`, and the runner that reuses or computes them.

A stage writes files into the run folder and is recorded in its manifest (``stages.json``)
with the hash of the settings it depends on. The runner reuses a recorded stage while its
key and its files still match; otherwise it forgets the stage and every recorded stage built
on it (their results came from the old one), computes it and records it.
"""

import contextlib
import dataclasses
import time
from typing import Callable

from spruce.workflow.progress import log as _log


@dataclasses.dataclass(frozen=True)
class Stage:
    """One recorded stage of a run.

    compute(): does the work and writes `files`; returns (result, record), `record` being
    the JSON-ready dict the manifest keeps for `reuse`, or None to keep nothing (the next
    run computes the stage again). A record's "extra_files" are files this computation
    wrote besides `files` (only some settings write them): reuse needs them too.
    reuse(entry): the result again, from the stage's manifest entry and its files.
    """

    name: str
    key: str  # hash of the settings the stage depends on
    inputs: tuple  # names of the stages whose files it is built from
    files: tuple  # what it writes; all must still exist to reuse it
    compute: Callable
    reuse: Callable
    note: str = ""  # said when the stage is reused
    reported: bool = True  # listed in the run's stage times and reused stages


class StageRunner:
    """Runs `stages` (name -> Stage) by name over `manifest`; times them and the run's other steps."""

    def __init__(self, manifest, stages, quiet=False):
        self.manifest = manifest
        self.stages = {}
        for stage in stages:
            unknown = [i for i in stage.inputs if i not in self.stages]
            if unknown:
                raise ValueError(f"stage {stage.name!r} is built on {unknown}, which must be declared "
                                 f"before it. Received: stages in the order {[s.name for s in stages]}")
            self.stages[stage.name] = stage
        self.quiet = quiet
        self.seconds = {}  # step -> seconds; a reused stage: the time it took when it ran
        self.reused = []

    def run(self, name):
        stage = self.stages[name]
        t = time.perf_counter()
        if self.manifest.done(stage.name, stage.key):
            entry = self.manifest.get(stage.name)
            result = stage.reuse(entry)
            if stage.note:
                _log(stage.note, self.quiet)
            if stage.reported:
                self.reused.append(stage.name)
                self.seconds[stage.name] = entry.get("seconds", time.perf_counter() - t)
            return result
        self.manifest.forget(stage.name, *self.built_on(stage.name))
        result, record = stage.compute()
        seconds = time.perf_counter() - t
        if record is not None:
            record = dict(record)
            files = tuple(stage.files) + tuple(record.pop("extra_files", ()))
            self.manifest.record(stage.name, stage.key, files, **record, seconds=seconds)
        if stage.reported:
            self.seconds[stage.name] = seconds
        return result

    def built_on(self, name):
        """The stages built on `name`'s files, directly or through others, in declaration order."""
        found = {name}
        for stage in self.stages.values():  # declared in order: inputs come first
            if found & set(stage.inputs):
                found.add(stage.name)
        return [s for s in self.stages if s in found and s != name]

    @contextlib.contextmanager
    def timed(self, step):
        """Time a step of the run that is not a recorded stage (loading the data, the report)."""
        t = time.perf_counter()
        yield
        self.seconds[step] = time.perf_counter() - t

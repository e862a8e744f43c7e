"""The run folder: atomic writes and the stage manifest that makes runs resumable.

Every artifact is written to a temporary file in its final folder, then renamed over
the final name (`os.replace` is atomic on POSIX), so an interrupted run leaves either
the previous file or the new one, never half of one. The manifest
(``stages.json``) records, for each finished stage, the hash of the settings it was
built from and the files it produced; a stage is reused only when both still match.
"""

import contextlib
import json
import os
import time

from spruce._atomic import atomic_path as _atomic_path

MANIFEST = "stages.json"


@contextlib.contextmanager
def atomic_path(path):
    """`spruce._atomic.atomic_path`, creating the run folder's subfolders as needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _atomic_path(path) as tmp:
        yield tmp


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def remove_partials(folder):
    """Delete temporaries an earlier, killed run may have left (kill -9 skips `finally`):
    ours (``.<name>.<random>.part<suffix>``) and export_litert's (``.spruce-export-*``)."""
    if not os.path.isdir(folder):
        return
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".") and (".part" in name or name.startswith(".spruce-export-")):
                os.unlink(os.path.join(root, name))


class Manifest:
    """Which stages of a run folder are finished, for which settings."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, MANIFEST)
        self.stages = read_json(self.path) if os.path.exists(self.path) else {}

    def done(self, stage, key):
        """True when `stage` finished with settings hash `key` and all its files are present."""
        entry = self.stages.get(stage)
        if not entry or entry.get("key") != key:
            return False
        return all(os.path.exists(os.path.join(self.folder, f)) for f in entry.get("files", []))

    def get(self, stage):
        return self.stages.get(stage, {})

    def record(self, stage, key, files, **info):
        self.stages[stage] = {"key": key, "files": list(files), "finished": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z"), **info}
        write_json(self.path, self.stages)

    def forget(self, *stages):
        for stage in stages:
            self.stages.pop(stage, None)
        write_json(self.path, self.stages)

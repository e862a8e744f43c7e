"""Atomic file writes: write to a temporary name in the same folder, then rename.

`os.replace` is atomic on POSIX, so an interrupted or failed write leaves either the
old file or nothing, never half of a new one.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path` (same suffix); rename it to `path` on success.

    The temporary file does not exist when yielded (writers such as `model.save`
    want to create it themselves). On any exception it is removed and `path` is
    left untouched.
    """
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    stem, suffix = os.path.splitext(base)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(f"the writer did not create {tmp}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)

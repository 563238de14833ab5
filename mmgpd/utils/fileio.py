"""Atomic file writes: a temporary file beside the target, renamed into place."""
import os
import os.path as osp
import tempfile
from typing import BinaryIO, Callable


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it.

    A crash or an exception leaves either the old file or the new one — never
    half of one — and no temporary file.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.',
                               dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a result is for everyone
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the absolute path."""
    path = osp.abspath(path)
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))
    return path


def atomic_write_json(path: str, obj) -> str:
    """Write ``obj`` as indented JSON to ``path`` atomically (non-JSON values
    via ``str``); returns the absolute path."""
    import json
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + '\n')

"""Writing files so that a crash never leaves a torn one behind."""
import os
import shutil
import tempfile

import paddle


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path, write):
    """Call ``write(tmp_path)``, fsync the result and rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(directory)


def atomic_copy(src, path):
    """Copy ``src`` to ``path`` so that ``path`` is never seen half-written."""
    _atomic_write(path, lambda tmp_path: shutil.copyfile(src, tmp_path))


def atomic_save(obj, path):
    """paddle.save ``obj`` to ``path`` through a temporary file, fsync and rename.

    Readers see either the old file or the complete new one, never a partial write.
    """
    _atomic_write(path, lambda tmp_path: paddle.save(obj, tmp_path))

"""Writing files so that a crash never leaves a torn one: temporary file, fsync, rename."""
import json
import os
import shutil
import tempfile

TMP_SUFFIX = ".tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_path(path):
    """Flush a file or folder to disk; a folder's fsync makes the renames and new names in it last."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call ``write(tmp_path)``, fsync the result and rename it to ``path``.

    Readers see either the old file or the complete new one, never a partial write.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=TMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes it private; give it the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    fsync_path(directory)


def atomic_copy(src, path):
    atomic_write(path, lambda tmp_path: shutil.copyfile(src, tmp_path))


def atomic_write_text(path, text):
    def write(tmp_path):
        with open(tmp_path, "w") as f:
            f.write(text)
    atomic_write(path, write)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")

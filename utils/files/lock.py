"""One writer per snapshot directory.

A second trainer on the same directory (a second notebook tab while the first kernel still runs)
would write snapshots whose files come from different runs. The lock is a file holding the
holder's host, pid and start time, with a POSIX record lock (``lockf``) on it while the run
lives: the kernel drops that lock when its process dies (SIGKILL included), and unlike ``flock``
it is not inherited by the loader workers a trainer forks. So on one host a leftover file is
recognised as stale and taken over. A holder on another host (a shared folder) cannot always be
checked from here: that case is refused with the holder named and the file to delete if that
run is gone.
"""
import fcntl
import json
import os
import socket
import time
import warnings

LOCK_NAME = ".training.lock"
_HELD = set()  # paths this process holds: POSIX locks do not exclude their own process


class DirectoryLocked(RuntimeError):
    """Another run writes to this snapshot directory."""


def _describe(holder):
    return "pid {} on host {} (started {})".format(holder.get("pid"), holder.get("host"), holder.get("started"))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock(object):
    """Held from ``acquire()`` until ``release()`` (or the process's end)."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._file = None

    def acquire(self):
        if os.path.abspath(self.path) in _HELD:  # checked first: closing a second handle would drop the lock
            raise DirectoryLocked("{} is in use by another training run in this process (pid {})".format(
                self.directory, os.getpid()))
        os.makedirs(self.directory, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._read(handle)
            handle.close()
            raise DirectoryLocked("{} is in use by another training run: {}. Stop that run first, or use another "
                                  "--snapshot-dir".format(self.directory, _describe(holder)))
        holder = self._read(handle)
        here = socket.gethostname()
        if holder:
            if holder.get("host") != here:
                handle.close()
                raise DirectoryLocked(
                    "{} is locked by {}, which cannot be checked from host {} (a shared folder). If that run "
                    "has ended, delete {} and start again".format(self.directory, _describe(holder), here, self.path))
            if _pid_alive(holder.get("pid", -1)) and holder.get("pid") != os.getpid():
                # Alive but without the lock: its pid was reused after the holder died. The
                # lock is the authority on this host; say what happens.
                warnings.warn("{}: lock file names {}, which holds no lock; taking it over".format(
                    self.path, _describe(holder)))
            else:
                warnings.warn("{}: taking over the lock of {}, which is no longer running".format(
                    self.path, _describe(holder)))
        handle.seek(0)
        handle.truncate()
        json.dump({"host": here, "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}, handle)
        handle.flush()
        self._file = handle
        _HELD.add(os.path.abspath(self.path))
        return self

    @staticmethod
    def _read(handle):
        handle.seek(0)
        try:
            return json.loads(handle.read() or "{}")
        except ValueError:
            return {}

    def release(self):
        if self._file is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        self._file.close()  # closing drops the lock
        self._file = None
        _HELD.discard(os.path.abspath(self.path))

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

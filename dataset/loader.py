"""Batches for training, validation and evaluation that fail with one clear line and never hang.

Paddle's DataLoader, as found in 2.6 and 3.3 (read and run): with ``num_workers=0`` an exception
in the dataset leaves the main thread waiting forever; with workers it surfaces as "Blocking
queue is killed" far below the message that names the file; and workers of a SIGKILLed trainer
go on running. So here:

- a sample that cannot be read becomes a marker that travels with the batch, and the consumer
  raises DataError with the dataset's own message (the file and what is wrong);
- ``num_workers=0`` reads in the calling thread, without Paddle's loader;
- workers ask the kernel to end them when their parent dies (Linux), from the fork on, and
  watch the parent otherwise; they leave what they inherit to the parent's garbage collector
  (_starting_workers says why);
- a Watchdog ends the process, naming the loader and the files of the batch it waited for,
  when no batch arrives within its timeout;
- check_shared_memory refuses, before iteration 1, loaders whose batches in flight do not fit in
  the free /dev/shm (the workers hand batches over in shared memory; a full /dev/shm ends the
  run with a bus error, in Docker's default 64 MB at once).
"""
import contextlib
import ctypes
import gc
import os
import shutil
import signal
import sys
import threading
import time

import numpy as np
import paddle

from dataset.base import train_id_dtype
from dataset.classes import IGNORE_LABEL
from dataset.files import summarize
from utils.runtime import local_processes
from utils.stopping import ignore_stop_signals

_FAILED = "__sample_failed__"
SHARED_MEMORY = "/dev/shm"
# paddle.io.DataLoader's default prefetch_factor in 2.6 and 3.x: with workers it keeps
# prefetch_factor x max(num_workers, places) batches outstanding (dataloader_iter.py,
# _outstanding_capacity; places is 1 here), each one in shared memory until it is consumed.
PREFETCH_FACTOR = 2


class DataError(RuntimeError):
    """A sample could not be read; the message names the file and what to do."""


class SharedMemoryError(DataError):
    """The loaders' batches in flight would not fit in the free shared memory."""


def batch_bytes(batch_size, crop_size, labels=True, ignore_label=IGNORE_LABEL):
    """Bytes of a batch's arrays: float32 3 x H x W images and, with ``labels``, H x W train ids of
    train_id_dtype(ignore_label) (uint8: 1 byte a pixel) for ``crop_size`` = (width, height). The
    other fields (sizes, weak labels, points, names) are under a kilobyte an image, left out."""
    width, height = crop_size
    per_image = 3 * height * width * np.dtype(np.float32).itemsize
    if labels:
        per_image += height * width * np.dtype(train_id_dtype(ignore_label)).itemsize
    return batch_size * per_image


def shared_memory_needed(num_workers, batches, held=1, prefetch_factor=PREFETCH_FACTOR):
    """Shared memory one training process's loaders use at once: for each loader (``batches``: the
    bytes of one of its batches), prefetch_factor x num_workers batches in flight plus the ``held``
    ones the iteration is using (--iter-size). 0 without workers: batches are read in the process."""
    if num_workers == 0:
        return 0
    return sum((prefetch_factor * num_workers + held) * size for size in batches)


def _megabytes(size):
    return "{:.0f} MB".format(size / 2.0 ** 20) if size < 2 ** 30 else "{:.1f} GB".format(size / 2.0 ** 30)


def check_shared_memory(num_workers, batch_size, source_size, target_size=None, held=1, ignore_label=IGNORE_LABEL,
                        processes=None, path=SHARED_MEMORY):
    """Refuse to start loaders whose batches in flight do not fit in the free shared memory.

    ``batch_size`` images a batch (per process), ``source_size`` and ``target_size`` (None: no
    target loader) = (width, height) of the labelled source and of the target images, ``held``
    batches of each in use by the iteration (--iter-size); ``processes`` training processes on
    this machine (default: those paddle.distributed.launch started, utils.runtime.local_processes).
    Returns (needed, free) bytes, or None when nothing is checked (no workers, or no ``path``:
    not Linux). Raises SharedMemoryError naming the numbers and the fix.
    """
    if num_workers == 0 or not os.path.isdir(path):
        return None
    if processes is None:
        processes = local_processes()
    batches = [batch_bytes(batch_size, source_size, labels=True, ignore_label=ignore_label)]
    if target_size is not None:
        batches.append(batch_bytes(batch_size, target_size, labels=False))
    needed = processes * shared_memory_needed(num_workers, batches, held)
    free = shutil.disk_usage(path).free
    if needed <= free:
        return needed, free
    per_worker = processes * PREFETCH_FACTOR * sum(batches)
    fitting = int((free - processes * held * sum(batches)) // per_worker)
    lower = ("--num-workers {} or fewer".format(fitting) if fitting >= 1 else
             "--num-workers 0 (batches read in the training process, slower)")
    loaders = ["source batches of {} ({} images of {}x{} with labels)".format(
        _megabytes(batches[0]), batch_size, *source_size)]
    if target_size is not None:
        loaders.append("target batches of {} ({} images of {}x{})".format(_megabytes(batches[1]), batch_size,
                                                                           *target_size))
    raise SharedMemoryError(
        "the data loaders need about {} of shared memory, {} has {} free: {} process(es) x ({} workers x {} "
        "batches in flight + {} in use) x ({}). A full {} ends training with a bus error. Use {}, or give the "
        "machine more shared memory (Docker: docker run --shm-size=8g ...; otherwise remount {} larger)".format(
            _megabytes(needed), path, _megabytes(free), processes, num_workers, PREFETCH_FACTOR, held,
            " + ".join(loaders), path, lower, path))


class _Guarded(paddle.io.Dataset):
    """Turns a sample's exception into a value, so that it reaches the consumer from any process."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except Exception as exc:  # noqa: BLE001  (every failure must travel as data)
            return _FAILED, "{}: {}".format(type(exc).__name__, exc)


def collate(samples):
    """Stack the samples field by field: arrays of one shape into one array, anything else (names,
    arrays of several shapes) into a list.

    A failed sample turns the batch into a marker (with an array, which Paddle's loader needs to
    pass a batch on at all)."""
    for sample in samples:
        if isinstance(sample[0], str) and sample[0] == _FAILED:
            return [np.zeros(1, np.uint8), [_FAILED, sample[1]]]
    return [np.stack(field) if _same_shape_arrays(field) else list(field) for field in zip(*samples)]


def _same_shape_arrays(values):
    return all(isinstance(v, np.ndarray) and v.shape == values[0].shape for v in values)


def _failure(batch):
    marker = batch[1] if len(batch) == 2 else None
    if isinstance(marker, list) and len(marker) == 2 and marker[0] == _FAILED:
        return marker[1]
    return None


def watch_parent(_worker_id=None):
    """Run in a loader worker: end it when the process that started it ends, where the kernel
    does not (not Linux; see _starting_workers).

    A stop signal is the trainer's to handle: a worker that died of one would fail the batch the
    trainer still needs to finish its iteration (Paddle's loader raises on a dead worker)."""
    ignore_stop_signals()
    parent = os.getppid()

    def poll():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=poll, name="watch-parent", daemon=True).start()


def _libc_prctl():
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError, TypeError):
        return None  # not Linux: watch_parent's thread ends a worker within a second of the trainer


_PRCTL = _libc_prctl()  # resolved here, once: a fork's child must not load libraries
_forking_from = None  # this process's pid while one of its loaders starts its workers


def _on_fork_in_child():
    """The first thing a process forked inside _starting_workers runs: the kernel kills it with the
    trainer from here on, even by SIGKILL (Linux: PR_SET_PDEATHSIG)."""
    if _forking_from is None:
        return
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)
    if os.getppid() != _forking_from:
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_on_fork_in_child)


@contextlib.contextmanager
def _starting_workers():
    """Around the start of a loader's worker processes. Each dies with the trainer from its first
    instruction, not once its initialisation has run: a worker stuck before that outlived a
    killed trainer, holding its pipes open. And none collects the objects it inherits: a fork
    copies the trainer's unreachable objects too, and finalizing one in a worker runs its
    destructor against locks and conditions whose holders, the trainer's threads, were not copied
    (seen: a worker waiting forever in pthread_cond_destroy, in a process that had run other
    trainings). The trainer collects them."""
    global _forking_from
    frozen_before = gc.get_freeze_count()  # someone else's freeze stays
    gc.freeze()
    _forking_from = os.getpid()
    try:
        yield
    finally:
        _forking_from = None
        if not frozen_before:
            gc.unfreeze()


class Watchdog(object):
    """Ends the process when a wait for data lasts longer than ``timeout`` seconds.

    A hang (a stalled network disk, a worker stuck in a decoder) cannot be interrupted from
    Python, so the watchdog prints why, runs ``on_timeout`` (release the run's lock) and exits;
    the snapshots written so far are intact. ``timeout`` None: never.
    """

    def __init__(self, timeout, on_timeout=None, log=None):
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.log = log
        self._waiting = None  # (since, describe)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if timeout is not None:
            threading.Thread(target=self._watch, name="data-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, describe):
        """Watch the wait inside; ``describe()`` says what it waits for, if it times out."""
        with self._lock:
            self._waiting = (time.time(), describe)
        try:
            yield
        finally:
            with self._lock:
                self._waiting = None

    def close(self):
        """End the watching thread (it holds the run's objects through ``on_timeout``)."""
        self._closed.set()

    def _watch(self):
        while not self._closed.wait(min(1.0, self.timeout / 4.0)):
            with self._lock:
                waiting = self._waiting
            if waiting is not None and time.time() - waiting[0] > self.timeout:
                self._expire(waiting[1]())

    def _expire(self, description):
        message = ("error: no data for {:.0f} s from {}. Check that the disk holding the data responds "
                   "(a network mount?), then run the command again (with --continue-train, a training run "
                   "resumes); --data-timeout sets this limit".format(self.timeout, description))
        try:
            if self.log is not None:
                self.log(message)
            if self.on_timeout is not None:
                self.on_timeout()
        finally:
            sys.stderr.write("\n" + message + "\n")  # past a progress bar's unfinished line
            sys.stderr.flush()
            os._exit(3)


class Batch(object):
    """A training batch by field: ``images``, and as its dataset gives them ``labels`` (train ids),
    ``present`` (classes present in each label), ``weak`` (image-level labels), ``points``,
    ``sizes`` and ``names``; None where the dataset has no such field. A dataset names its samples'
    fields in ``fields``."""

    FIELDS = ("images", "labels", "present", "weak", "points", "sizes", "names")
    __slots__ = FIELDS

    def __init__(self, fields, values):
        unknown = set(fields) - set(self.FIELDS)
        if unknown:
            raise ValueError("unknown batch field(s) {}: a batch has {}".format(sorted(unknown), ", ".join(self.FIELDS)))
        named = dict(zip(fields, values))
        for name in self.FIELDS:
            setattr(self, name, named.get(name))


class Batches(object):
    """Iterates ``batch_sampler``'s batches of ``dataset`` as lists of fields (arrays as Tensors).

    ``name`` says which loader this is in messages ("the source dataset"); ``files(index)`` (a
    dataset method, if any) names the files a sample reads, for the watchdog's message.
    """

    def __init__(self, dataset, batch_sampler, num_workers=0, name="the dataset", watchdog=None):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.name = name
        self.watchdog = watchdog or Watchdog(None)
        self._loader_iter = None

    def __iter__(self):
        batches = self._read_here() if self.num_workers == 0 else self._read_in_workers()
        for indices in self.batch_sampler:
            with self.watchdog.waiting(lambda: self._describe(indices)):
                try:
                    batch = next(batches)
                except StopIteration:
                    return
                except DataError:
                    raise
                except Exception as exc:  # a worker killed (out of memory?) or the loader broke
                    raise DataError("{} stopped: {}: {}".format(self.name, type(exc).__name__, exc))
            message = _failure(batch)
            if message is not None:
                raise DataError("{}: {}. Re-extract or replace the file, or leave it out of the list; "
                                "python -m dataset.check finds every such file".format(self.name, message))
            yield batch

    def _read_here(self):
        guarded = _Guarded(self.dataset)
        for indices in self.batch_sampler:
            batch = collate([guarded[index] for index in indices])
            yield [paddle.to_tensor(field) if isinstance(field, np.ndarray) else
                   [paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for v in field] for field in batch]

    def _read_in_workers(self):
        loader = paddle.io.DataLoader(_Guarded(self.dataset), batch_sampler=self.batch_sampler,
                                      num_workers=self.num_workers, collate_fn=collate,
                                      worker_init_fn=watch_parent)
        with _starting_workers():
            self._loader_iter = iter(loader)
        return self._loader_iter

    def _describe(self, indices):
        files = getattr(self.dataset, "files", None)
        if files is None:
            return self.name
        names = [path for index in indices for path in files(index)]
        return "{} (waiting for {})".format(self.name, summarize(names))

    def close(self):
        """Stop the worker processes now (an iterator not run to its end keeps them)."""
        if self._loader_iter is not None:
            getattr(self._loader_iter, "_try_shutdown_all", lambda: None)()
            self._loader_iter = None

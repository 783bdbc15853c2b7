"""Snapshots of a training run that survive a killed process, and resuming from them.

The contract follows fvcore's Checkpointer (``save``, ``resume``, keeping the last K), with two
differences: every file is written atomically, and a load that does not fit the networks is
refused rather than logged. The files of a snapshot are defined in utils/files/snapshots.py;
they are written in order, the state file last.
"""
import errno
import os
import random
import shutil
import warnings

import numpy as np
import paddle

from utils.files.atomic import TMP_SUFFIX, atomic_write
from utils.files.snapshots import SEGMENTATION, STATE
from utils.files.weights import WeightsError, read_paddle_pickle, read_weights


class CheckpointError(RuntimeError):
    """No usable snapshot where one was asked for; the message lists what exists."""


class SnapshotWriteError(CheckpointError):
    """Writing a snapshot failed (disk full, permissions, quota); its partial files are removed."""


def atomic_save(obj, path):
    """``paddle.save`` written atomically."""
    atomic_write(path, lambda tmp_path: paddle.save(obj, tmp_path))


def _longest_prefix(key, names):
    """The longest ``name`` in ``names`` such that ``key`` is ``name + "_" + rest``."""
    best = None
    for i, char in enumerate(key):
        if char == "_" and key[:i] in names:
            best = key[:i]
    return best


class PaddleOptimizerState(object):
    """A Paddle optimizer's accumulators keyed by structured parameter names.

    Paddle keys them by auto-generated names (``conv2d_57.w_0_moment1_0``) that differ between
    processes; under those keys, restored moments would silently not match their parameters.
    """

    def __init__(self, optimizer, network):
        self.optimizer = optimizer
        self.network = network

    def state_dict(self):
        by_name = {p.name: name for name, p in self.network.named_parameters()}
        state = {}
        for key, value in self.optimizer.state_dict().items():
            owner = _longest_prefix(key, by_name)
            if owner is not None:  # else: the learning-rate scheduler or master weights, unused here
                state[by_name[owner] + key[len(owner):]] = value.numpy()
        return state

    def set_state_dict(self, state, source="the snapshot"):
        by_structured = {name: p.name for name, p in self.network.named_parameters()}
        translated = {}
        for key, value in state.items():
            owner = _longest_prefix(key, by_structured)
            if owner is None:
                raise ValueError("{}: optimizer state {!r} belongs to no parameter of the network".format(source, key))
            translated[by_structured[owner] + key[len(owner):]] = paddle.to_tensor(value)
        self.optimizer.set_state_dict(translated)


def random_states():
    """Python's and numpy's generators. Paddle's is only drawn from to initialise the networks,
    which a resumed run overwrites; the data order and every other draw of a run are functions
    of the seed and the position."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_random_states(states):
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(states["numpy"]))


class Checkpointer(object):
    """Saves and resumes a run's networks and the rest of its state.

    ``snapshots``: a SnapshotDir; ``nets``: {"model": G, <part>: network} for its parts;
    ``state``: {name: object with ``state_dict()`` / ``set_state_dict(state, source)``} (the
    optimizers, a loss scaler) kept in the state file; ``preread``: {iteration: its state file's
    contents} already read by the caller.
    """

    def __init__(self, snapshots, nets, state, keep_last=None, preread=None):
        if set(nets) != {SEGMENTATION} | set(snapshots.parts):
            raise ValueError("networks {} do not match the snapshot parts {}".format(sorted(nets), snapshots.parts))
        self.snapshots = snapshots
        self.nets = nets
        self.state = state
        self.keep_last = keep_last
        self._preread = dict(preread or {})

    def save(self, iteration, before_state=None, **extra):
        """Write snapshot ``iteration``; ``before_state()`` runs once the networks are on disk.

        A failed write (disk full, permissions) removes what this snapshot had written and
        raises SnapshotWriteError; older snapshots are untouched.
        """
        files = self.snapshots.files(iteration)
        try:
            for name, net in self.nets.items():
                atomic_save(net.state_dict(), files[name])
            if before_state is not None:
                before_state()
            state = {"iteration": iteration, "random_states": random_states(), "extra": extra,
                     "state": {name: obj.state_dict() for name, obj in self.state.items()}}
            atomic_save(state, files[STATE])
        except BaseException as exc:  # a full disk, or a second stop signal: no half snapshot is left
            self.snapshots.remove(iteration)
            if isinstance(exc, OSError):
                raise SnapshotWriteError(self._write_failure(iteration, exc))
            raise
        if self.keep_last:
            self.snapshots.prune(self.keep_last)
        return files

    def _write_failure(self, iteration, exc):
        reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only"}.get(
                      exc.errno, exc.strerror or str(exc))
        latest = self.snapshots.latest()
        remains = "no complete snapshot remains" if latest is None else \
            "the newest complete snapshot is {}".format(self.snapshots.name(latest))
        return "writing snapshot {} to {} failed: {} ({}); its partial files were removed and {}".format(
            self.snapshots.name(iteration), self.snapshots.directory, reason,
            getattr(exc, "filename", None) or exc, remains)

    def _read(self, iteration):
        """Everything of one snapshot, read and checked before anything is applied."""
        files = self.snapshots.files(iteration)
        weights = {name: read_weights(files[name], net).params for name, net in self.nets.items()}
        saved = self._preread.pop(iteration, None) or read_paddle_pickle(files[STATE])
        if not isinstance(saved, dict) or saved.get("iteration") != iteration:
            raise WeightsError("{}: not the training state of iteration {}".format(files[STATE], iteration))
        state = saved.get("state")
        if state is None:  # written before the state held more than optimizers
            state = saved.get("optimizers", {})
        missing = set(self.state) - set(state)
        if missing:
            raise WeightsError("{}: holds no {}".format(files[STATE], ", ".join(sorted(missing))))
        return weights, saved, state

    def _apply(self, iteration, weights, saved, state):
        source = self.snapshots.files(iteration)[STATE]
        for name, net in self.nets.items():
            net.set_state_dict(weights[name])
        for name, obj in self.state.items():
            try:
                obj.set_state_dict(state[name], source)
            except ValueError as exc:
                raise CheckpointError(str(exc))
        set_random_states(saved["random_states"])
        return saved["extra"]

    def resume(self, start_iter="latest"):
        """Load snapshot ``start_iter`` (an iteration, or "latest": the newest complete one that
        loads; damaged newer ones are skipped with a warning). Returns ``(iteration, extra)``."""
        self.snapshots.remove_temporaries()
        complete = self.snapshots.complete()
        if start_iter != "latest":
            iteration = int(start_iter)
            if iteration not in complete:
                raise CheckpointError("--start-iter {}: no complete snapshot of that iteration; {}".format(
                    iteration, self.snapshots.describe()))
            try:
                loaded = self._read(iteration)
            except WeightsError as exc:
                raise CheckpointError("--start-iter {}: snapshot damaged: {}".format(iteration, exc))
            return iteration, self._apply(iteration, *loaded)
        for iteration in reversed(complete):
            try:
                loaded = self._read(iteration)
            except WeightsError as exc:
                warnings.warn("skipping damaged snapshot {}: {}".format(self.snapshots.name(iteration), exc))
                continue
            return iteration, self._apply(iteration, *loaded)
        raise CheckpointError("--continue-train: no complete snapshot loads; {}".format(self.snapshots.describe()))

    def snapshot_bytes(self):
        """Size of one snapshot, for the free-disk check before training starts."""
        total = sum(int(np.prod(v.shape)) * 4 for net in self.nets.values() for v in net.state_dict().values())
        # Momentum (1 copy) and Adam (2 copies) of every trained parameter: at most 2 copies.
        total += 2 * sum(int(np.prod(p.shape)) * 4 for net in self.nets.values() for p in net.parameters()
                         if not p.stop_gradient)
        return total


def ensure_room_for_snapshots(directory, snapshot_bytes, count=2):
    """Fail before training if the checkpoint directory is not writable or too full."""
    probe = os.path.join(directory, ".write_test" + TMP_SUFFIX)
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise CheckpointError("checkpoint directory {} is not writable: {}".format(directory, exc))
    free = shutil.disk_usage(directory).free
    if free < count * snapshot_bytes:
        raise CheckpointError("checkpoint directory {} has {:.0f} MB free; {} snapshots need about {:.0f} MB. "
                              "Free some space or use --keep-last.".format(
                                  directory, free / 2**20, count, count * snapshot_bytes / 2**20))

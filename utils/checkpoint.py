"""Snapshots of a training run that survive a killed process, and resuming from them.

The contract follows fvcore's Checkpointer (``save``, ``resume``, a ``latest`` tag, keeping the
last K), with two differences: every file is written atomically, and a load that does not fit
the networks is refused rather than logged. One snapshot of iteration N (N iterations done) is

    GTA5_<N>.pdparams         segmentation network (what evaluate_cityscapes.py takes)
    GTA5_<N>_D1.pdparams      discriminator on the conv4 head
    GTA5_<N>_D2.pdparams      discriminator on the conv5 head
    GTA5_<N>_state.pdopt      optimizers, random states, the settings, and N (which fixes the data position)

written in that order, then ``latest`` (the number N). The state file comes last, so a snapshot
whose state file exists is complete unless something damaged it afterwards.
"""
import os
import random
import re
import shutil
import time
import warnings

import numpy as np
import paddle

from utils.atomic import TMP_SUFFIX, atomic_write, atomic_write_text
from utils.weights import WeightsError, read_paddle_pickle, read_weights

LATEST_TAG = "latest"
FILES_PER_SNAPSHOT = 4
_SNAPSHOT_FILE = re.compile(r"^GTA5_(\d+)(?:_D1|_D2)?\.pdparams$|^GTA5_(\d+)_state\.pdopt$")
# The segmentation network's file of a snapshot: what evaluation takes.
SEGMENTATION_SNAPSHOT = re.compile(r"^GTA5_(\d+)\.pdparams$")


def evaluation_cache(snapshot_path):
    """Where evaluate_cityscapes.py caches the scores of a GTA5_<N>.pdparams snapshot."""
    return snapshot_path[:-len(".pdparams")] + ".eval.json"


class CheckpointError(RuntimeError):
    """No usable snapshot where one was asked for; the message lists what exists."""


def atomic_save(obj, path):
    """``paddle.save`` written atomically."""
    atomic_write(path, lambda tmp_path: paddle.save(obj, tmp_path))


def snapshot_files(directory, iteration):
    base = os.path.join(directory, "GTA5_{}".format(iteration))
    return {"model": base + ".pdparams", "D1": base + "_D1.pdparams", "D2": base + "_D2.pdparams",
            "state": base + "_state.pdopt"}


def _longest_prefix(key, names):
    """The longest ``name`` in ``names`` such that ``key`` is ``name + "_" + rest``."""
    best = None
    for i, char in enumerate(key):
        if char == "_" and key[:i] in names:
            best = key[:i]
    return best


def optimizer_state(optimizer, named_parameters):
    """The optimizer's accumulators keyed by structured parameter names.

    Paddle keys them by auto-generated names (``conv2d_57.w_0_velocity_0``) that differ between
    processes; under those keys, restored momentum would silently not match its parameter.
    """
    by_name = {p.name: name for name, p in named_parameters}
    state = {}
    for key, value in optimizer.state_dict().items():
        owner = _longest_prefix(key, by_name)
        if owner is None:
            continue  # learning-rate scheduler or master weights: not used here
        state[by_name[owner] + key[len(owner):]] = value.numpy()
    return state


def _to_process_names(state, named_parameters, path):
    """Inverse of ``optimizer_state`` for this process's parameter names."""
    by_structured = {name: p.name for name, p in named_parameters}
    translated = {}
    for key, value in state.items():
        owner = _longest_prefix(key, by_structured)
        if owner is None:
            raise WeightsError("{}: optimizer state {!r} belongs to no parameter of the network".format(path, key))
        translated[by_structured[owner] + key[len(owner):]] = value
    return translated


def random_states():
    """Python's and numpy's generators. Paddle's is only drawn from to initialise the networks,
    which a resumed run overwrites, and the data order is a function of seed and position."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def set_random_states(states):
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(states["numpy"]))


class Checkpointer(object):
    """Saves and resumes the three networks, their optimizers and the run's position.

    ``nets``: {"model": G, "D1": ..., "D2": ...}; ``optimizers``: {name: (optimizer, network)}.
    """

    def __init__(self, directory, nets, optimizers, keep_last=None):
        self.directory = directory
        self.nets = nets
        self.optimizers = optimizers
        self.keep_last = keep_last

    def save(self, iteration, **extra):
        files = snapshot_files(self.directory, iteration)
        for name, net in self.nets.items():
            atomic_save(net.state_dict(), files[name])
        state = {"iteration": iteration, "random_states": random_states(), "extra": extra,
                 "optimizers": {name: optimizer_state(opt, net.named_parameters())
                                for name, (opt, net) in self.optimizers.items()}}
        atomic_save(state, files["state"])
        atomic_write_text(os.path.join(self.directory, LATEST_TAG), "{}\n".format(iteration))
        self._prune()
        return files

    def snapshots(self):
        """{iteration: set of its file kinds present}, for every snapshot file in the directory."""
        found = {}
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                match = _SNAPSHOT_FILE.match(name)
                if match:
                    iteration = int(match.group(1) or match.group(2))
                    found.setdefault(iteration, set()).add(name)
        return found

    def complete_iterations(self):
        return sorted(it for it, names in self.snapshots().items() if len(names) == FILES_PER_SNAPSHOT)

    def describe(self):
        snapshots = self.snapshots()
        if not snapshots:
            return "no snapshot files in {}".format(self.directory)
        return "in {}: {}".format(self.directory, "; ".join(
            "GTA5_{}: {}".format(it, "complete" if len(names) == FILES_PER_SNAPSHOT else "incomplete ({})".format(
                ", ".join(sorted(names)))) for it, names in sorted(snapshots.items())))

    def _read(self, iteration):
        """Everything of one snapshot, read and checked before anything is applied."""
        files = snapshot_files(self.directory, iteration)
        weights = {name: read_weights(files[name], net).params for name, net in self.nets.items()}
        state = read_paddle_pickle(files["state"])
        if not isinstance(state, dict) or state.get("iteration") != iteration:
            raise WeightsError("{}: not the training state of iteration {}".format(files["state"], iteration))
        missing = set(self.optimizers) - set(state["optimizers"])
        if missing:
            raise WeightsError("{}: no state for optimizer(s) {}".format(files["state"], ", ".join(sorted(missing))))
        state["optimizers"] = {name: _to_process_names(state["optimizers"][name], net.named_parameters(),
                                                       files["state"])
                               for name, (_, net) in self.optimizers.items()}
        return weights, state

    def _apply(self, weights, state):
        for name, net in self.nets.items():
            net.set_state_dict(weights[name])
        for name, (optimizer, _) in self.optimizers.items():
            optimizer.set_state_dict({k: paddle.to_tensor(v) for k, v in state["optimizers"][name].items()})
        set_random_states(state["random_states"])
        return state["extra"]

    def resume(self, start_iter="latest"):
        """Load snapshot ``start_iter`` (an iteration, or "latest": the newest complete one that
        loads; damaged newer ones are skipped with a warning). Returns ``(iteration, extra)``."""
        self._remove_stale_temporaries()
        if start_iter != "latest":
            iteration = int(start_iter)
            if iteration not in self.complete_iterations():
                raise CheckpointError("--start-iter {}: no complete snapshot of that iteration; {}".format(
                    iteration, self.describe()))
            try:
                weights, state = self._read(iteration)
            except WeightsError as exc:
                raise CheckpointError("--start-iter {}: snapshot damaged: {}".format(iteration, exc))
            return iteration, self._apply(weights, state)
        for iteration in reversed(self.complete_iterations()):
            try:
                weights, state = self._read(iteration)
            except WeightsError as exc:
                warnings.warn("skipping damaged snapshot GTA5_{}: {}".format(iteration, exc))
                continue
            return iteration, self._apply(weights, state)
        raise CheckpointError("--continue-train: no complete snapshot to resume from; {}".format(self.describe()))

    def set_aside_newer(self, iteration):
        """Move snapshot files newer than ``iteration`` (a run continued from an older snapshot
        abandons them) into a folder of their own, so they are neither resumed nor mixed with the
        new run's files of the same numbers. Returns that folder, or None."""
        newer = sorted(name for it, names in self.snapshots().items() if it > iteration for name in names)
        if not newer:
            return None
        folder = os.path.join(self.directory, "superseded_after_GTA5_{}_{}".format(
            iteration, time.strftime("%Y%m%d-%H%M%S")))
        os.makedirs(folder)
        for name in newer:
            os.replace(os.path.join(self.directory, name), os.path.join(folder, name))
        atomic_write_text(os.path.join(self.directory, LATEST_TAG), "{}\n".format(iteration))
        return folder

    def _remove_stale_temporaries(self):
        """Half-written files of a killed run (each as large as a snapshot file)."""
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith(".GTA5_") and name.endswith(TMP_SUFFIX):
                    try:
                        os.remove(os.path.join(self.directory, name))
                    except FileNotFoundError:  # another rank of a distributed job removed it first
                        pass

    def _prune(self):
        if not self.keep_last:
            return
        complete = self.complete_iterations()
        for iteration in complete[:-self.keep_last]:
            files = snapshot_files(self.directory, iteration)
            for path in list(files.values()) + [evaluation_cache(files["model"])]:
                if os.path.exists(path):
                    os.remove(path)

    def snapshot_bytes(self):
        """Size of one snapshot, for the free-disk check before training starts."""
        total = sum(int(np.prod(v.shape)) * 4 for net in self.nets.values() for v in net.state_dict().values())
        for _, net in self.optimizers.values():
            total += 2 * sum(int(np.prod(p.shape)) * 4 for p in net.parameters() if not p.stop_gradient)
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

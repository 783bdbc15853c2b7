"""What a snapshot of a training run is on disk: the one definition that training, evaluation and
the notebooks read and write by.

A snapshot of iteration N (N iterations done) of a run whose source domain names it (``GTA5``,
``SYNTHIA``, ...) is

    <PREFIX>_<N>.pdparams          the segmentation network: what evaluation takes
    <PREFIX>_<N>_<part>.pdparams   each other network of the run (D1 and D2, or D2 and cwD)
    <PREFIX>_<N>_state.pdopt       optimizers, random states, settings; written last

It is complete when all of these exist: the state file comes last, so a complete snapshot is
whole unless something damaged it afterwards. Beside them live ``<PREFIX>_<N>.eval.json`` (the
evaluation of that snapshot, reused by whoever evaluates it next) and ``<PREFIX>_best.pdparams``
(the best snapshot so far). "Latest" means the newest complete snapshot; there is no tag file
that could disagree with the files. ``class_set.json`` records the class set the run's networks
predict (names and colours), so that evaluation, prediction and a continued run can check it.
"""
import json
import os
import re
import time

from utils.files.atomic import TMP_SUFFIX, atomic_write_json

SEGMENTATION = "model"
STATE = "state"
_FILE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_(\d+)(?:_([A-Za-z][A-Za-z0-9]*))?\.(pdparams|pdopt)$")


def _parse(name):
    """(prefix, iteration, kind) of a snapshot file name, else None."""
    match = _FILE.match(name)
    if not match:
        return None
    prefix, iteration, part, extension = match.groups()
    if extension == "pdopt":
        return (prefix, int(iteration), STATE) if part == STATE else None
    if part == STATE:
        return None
    return prefix, int(iteration), part or SEGMENTATION


_BEST = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_best\.pdparams$")


def prefix_of(file_name):
    """The run prefix of a segmentation network's snapshot file ``<PREFIX>_<N>.pdparams`` or of
    ``<PREFIX>_best.pdparams``; None for any other file."""
    parsed = _parse(file_name)
    if parsed is not None:
        return parsed[0] if parsed[2] == SEGMENTATION else None
    best = _BEST.match(file_name)
    return best.group(1) if best else None


CLASSES_FILE = "class_set.json"


def write_class_record(directory, classes):
    """Record ``classes`` (a dataset.classes.ClassSet) for the snapshots in ``directory``."""
    atomic_write_json(os.path.join(directory, CLASSES_FILE), classes.record())


def read_class_record(weights):
    """The class set recorded for a weights file (beside it) or a snapshot directory; None if none is."""
    directory = weights if os.path.isdir(weights) else os.path.dirname(os.path.abspath(weights))
    path = os.path.join(directory, CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            record = json.load(handle)
        if not isinstance(record.get("names"), list) or len(record.get("colours", ())) != len(record["names"]):
            raise ValueError("expected names and colours of equal length")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError("{}: not a class record of this project ({}); remove it or write it again".format(path, exc))
    return record


def evaluation_cache(segmentation_path):
    """Where the evaluation of a ``<PREFIX>_<N>.pdparams`` is kept."""
    return segmentation_path[:-len(".pdparams")] + ".eval.json"


class SnapshotDir(object):
    """The snapshots of one run in ``directory``.

    ``parts``: the networks besides the segmentation network, e.g. ("D1", "D2"). Readers that do
    not know the run (evaluation, notebooks) use ``SnapshotDir.detect``, which reads prefix and
    parts off the files.
    """

    def __init__(self, directory, prefix="GTA5", parts=("D1", "D2")):
        self.directory = directory
        self.prefix = prefix
        self.parts = tuple(parts)

    @classmethod
    def detect(cls, directory, prefix=None):
        """The run in ``directory`` as its files show it; ``prefix`` picks one if several are there."""
        found = {}
        for name in _listdir(directory):
            parsed = _parse(name)
            if parsed and (prefix is None or parsed[0] == prefix):
                found.setdefault(parsed[0], set()).add(parsed[2])
        if len(found) > 1:
            raise ValueError("{} holds snapshots of several runs ({}): give the one to use".format(
                directory, ", ".join(sorted(found))))
        if not found:
            return cls(directory, prefix or "GTA5", ())
        (prefix, kinds), = found.items()
        return cls(directory, prefix, sorted(kinds - {SEGMENTATION, STATE}))

    def name(self, iteration):
        return "{}_{}".format(self.prefix, iteration)

    def files(self, iteration):
        """{"model": path, <part>: path, ..., "state": path} of snapshot ``iteration``."""
        base = os.path.join(self.directory, self.name(iteration))
        files = {SEGMENTATION: base + ".pdparams"}
        files.update((part, "{}_{}.pdparams".format(base, part)) for part in self.parts)
        files[STATE] = base + "_state.pdopt"
        return files

    @property
    def best_path(self):
        return os.path.join(self.directory, "{}_best.pdparams".format(self.prefix))

    def present(self):
        """{iteration: set of the file kinds present} for every snapshot file of this run."""
        found = {}
        for name in _listdir(self.directory):
            parsed = _parse(name)
            if parsed and parsed[0] == self.prefix:
                found.setdefault(parsed[1], set()).add(parsed[2])
        return found

    def complete(self):
        """Iterations of the complete snapshots, oldest first."""
        wanted = {SEGMENTATION, STATE} | set(self.parts)
        return sorted(it for it, kinds in self.present().items() if wanted <= kinds)

    def latest(self):
        """The newest complete snapshot's iteration, or None."""
        complete = self.complete()
        return complete[-1] if complete else None

    def segmentation_files(self):
        """{iteration: path} of every segmentation network file, complete snapshot or not."""
        return {it: self.files(it)[SEGMENTATION] for it, kinds in sorted(self.present().items())
                if SEGMENTATION in kinds}

    def describe(self):
        present = self.present()
        if not present:
            return "no {}_<N> snapshot files in {}".format(self.prefix, self.directory)
        complete = set(self.complete())
        return "in {}: {}".format(self.directory, "; ".join(
            "{}: {}".format(self.name(it), "complete" if it in complete else "incomplete (has {})".format(
                ", ".join(sorted(kinds)))) for it, kinds in sorted(present.items())))

    def remove(self, iteration):
        """Delete snapshot ``iteration``'s files and its evaluation cache, whatever of them exists."""
        files = self.files(iteration)
        for path in list(files.values()) + [evaluation_cache(files[SEGMENTATION])]:
            if os.path.exists(path):
                os.remove(path)

    def prune(self, keep_last):
        """Keep the newest ``keep_last`` complete snapshots."""
        for iteration in self.complete()[:-keep_last]:
            self.remove(iteration)

    def set_aside_newer(self, iteration):
        """Move the files of snapshots newer than ``iteration`` (a run continued from an older
        snapshot abandons them) into a folder of their own, so that they are neither resumed nor
        mixed with the new files of the same numbers. Returns that folder, or None."""
        newer = sorted(path for it in self.present() if it > iteration
                       for path in list(self.files(it).values()) + [evaluation_cache(self.files(it)[SEGMENTATION])]
                       if os.path.exists(path))
        if not newer:
            return None
        folder = os.path.join(self.directory, "superseded_after_{}_{}".format(
            self.name(iteration), time.strftime("%Y%m%d-%H%M%S")))
        os.makedirs(folder)
        for path in newer:
            os.replace(path, os.path.join(folder, os.path.basename(path)))
        return folder

    def remove_temporaries(self):
        """Half-written files a killed run left (each as large as a snapshot file)."""
        for name in _listdir(self.directory):
            if name.startswith("." + self.prefix + "_") and name.endswith(TMP_SUFFIX):
                try:
                    os.remove(os.path.join(self.directory, name))
                except FileNotFoundError:  # another rank of a distributed job removed it first
                    pass


def _listdir(directory):
    return os.listdir(directory) if os.path.isdir(directory) else []

"""What ``--restore-from`` names, for the scripts that use a trained model (prediction, export):
a weights file (.pth or .pdparams), a directory of a run's snapshots, or an exported model."""
import os
from typing import NamedTuple, Optional

from utils.files.snapshots import SnapshotDir, read_class_record

EXPORT_MARKER = "deploy.yaml"


class Restored(NamedTuple):
    kind: str                # "weights" or "export"
    path: str                # the weights file, or the export directory
    note: str                # one line for the user: what was picked and why
    classes: Optional[dict]  # the class set recorded beside it (dataset.classes.ClassSet.record()), or None


def resolve_restore(path, prefix=None):
    """The Restored of ``path``. In a snapshot directory: its ``<PREFIX>_best.pdparams`` if there is
    one, else its newest complete snapshot (``prefix`` picks a run if several are there)."""
    if os.path.isfile(path):
        if not path.endswith((".pth", ".pdparams")):
            raise FileNotFoundError("--restore-from {}: expected .pth or .pdparams weights, a snapshot directory "
                                    "or an exported model directory".format(path))
        return Restored("weights", path, "weights: {}".format(path), read_class_record(path))
    if not os.path.isdir(path):
        raise FileNotFoundError("--restore-from {}: no such file or directory".format(path))
    if os.path.isfile(os.path.join(path, EXPORT_MARKER)):
        return Restored("export", path, "exported model: {}".format(path), read_class_record(path))
    snapshots = SnapshotDir.detect(path, prefix)
    if os.path.isfile(snapshots.best_path):
        chosen, why = snapshots.best_path, "the best snapshot by validation"
    else:
        latest = snapshots.latest()
        if latest is None:
            raise FileNotFoundError("--restore-from {}: neither weights, an exported model ({} missing) nor a "
                                    "directory with a complete snapshot ({})".format(path, EXPORT_MARKER,
                                                                                    snapshots.describe()))
        chosen, why = snapshots.files(latest)["model"], "the newest complete snapshot (no {} yet)".format(
            os.path.basename(snapshots.best_path))
    return Restored("weights", chosen, "weights: {} ({})".format(chosen, why), read_class_record(path))

"""The files written for each image (PaddleSeg's save step), and the settings a save folder holds
so that a later run with other settings does not mix its files in."""
from PIL import Image

import collections
import json
import os
import time

import numpy as np

from model import MODEL_ALIASES
from model.inference import ensemble_weights
from utils.files.atomic import TMP_SUFFIX, atomic_write, atomic_write_json
from utils.prediction import PredictionError
from utils.prediction.predictor import DEFAULT_INPUT_SIZE

# The weight of the image in added_prediction/, as PaddleSeg's visualize(weight=0.6).
DEFAULT_ALPHA = 0.6
SETTINGS_FILE = "prediction_settings.json"

TRAIN_IDS, PSEUDO_COLOR, ADDED, LABEL_IDS, CONFIDENCE, ENTROPY = (
    "train ids", "pseudo colour", "added", "label ids", "confidence", "entropy")
# kind -> (folder under the save folder, file suffix)
OUTPUTS = collections.OrderedDict([
    (TRAIN_IDS, ("", ".png")),
    (PSEUDO_COLOR, ("pseudo_color_prediction", ".png")),
    (ADDED, ("added_prediction", ".jpg")),
    (LABEL_IDS, ("label_ids", ".png")),
    (CONFIDENCE, ("confidence", ".png")),
    (ENTROPY, ("entropy", ".png")),
])
# Full-resolution colour (4:4:4): the default 4:2:0 halves the chroma, blurring the class borders.
JPEG_OPTIONS = {"format": "JPEG", "quality": 90, "subsampling": 0}
# A temporary file older than this was left by a run that died while writing it (writes take milliseconds).
STALE_TMP_SECONDS = 60.0


def label_values_table(classes):
    """(train id -> stored label value table, note or None): each class's smallest value when it has
    several. Refuses a class set in which a class has none."""
    values = collections.defaultdict(list)
    for value, train_id in classes.label_values.items():
        if value >= 0:
            values[train_id].append(value)
    missing = [name for train_id, name in enumerate(classes.names) if not values[train_id]]
    if missing:
        raise PredictionError("--label-ids: in the class set {} the classes {} have no label value; give them "
                              "\"values\" in the class file".format(classes.name, ", ".join(missing)))
    largest = max(max(v) for v in values.values())
    table = np.zeros(256, dtype=np.uint8 if largest < 256 else np.uint16)
    for train_id, stored in values.items():
        table[train_id] = min(stored)
    several = ["{} ({})".format(classes.names[t], ", ".join(map(str, sorted(v)))) for t, v in sorted(values.items())
               if len(v) > 1]
    note = None
    if several:
        note = ("--label-ids: {} classes have several label values; each is written as its smallest: {}".format(
            len(several), "; ".join(several)))
    return table, note


def _to_byte(values):
    return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


class Outputs(object):
    """What a run writes for each image under ``save_dir``, and whether it is there already."""

    def __init__(self, save_dir, classes, label_ids=False, confidence=False, entropy=False, alpha=DEFAULT_ALPHA):
        if not 0.0 <= alpha <= 1.0:
            raise PredictionError("--alpha {}: the image's weight in added_prediction/ must be within 0..1".format(
                alpha))
        self.save_dir = save_dir
        self.classes = classes
        self.alpha = alpha
        self.kinds = [TRAIN_IDS, PSEUDO_COLOR, ADDED] + [kind for kind, wanted in (
            (LABEL_IDS, label_ids), (CONFIDENCE, confidence), (ENTROPY, entropy)) if wanted]
        self.palette = classes.palette()
        self.label_table, self.label_note = label_values_table(classes) if label_ids else (None, None)

    def path(self, kind, name):
        folder, suffix = OUTPUTS[kind]
        return os.path.join(self.save_dir, folder, *(name + suffix).split("/"))

    def missing(self, name):
        """The kinds of ``name``'s outputs that are not written yet (a file there is complete: see atomic_write)."""
        return [kind for kind in self.kinds if not os.path.isfile(self.path(kind, name))]

    def check_names(self, images):
        """Refuse two inputs whose outputs would be the same file (a.jpg and a.png in one folder)."""
        owner, clashes = {}, []
        for image in images:
            for kind in self.kinds:
                path = os.path.normcase(os.path.abspath(self.path(kind, image.name)))
                if path in owner and owner[path] != image.path:
                    clashes.append("{} and {} would both be written as {}".format(owner[path], image.path, path))
                owner.setdefault(path, image.path)
        if clashes:
            raise PredictionError("\n".join(clashes[:5] + ["rename one of each pair, or predict them into different "
                                                           "--save folders"]))

    def settings(self, restored, model_name, input_size, ensemble=(), model_weights=None):
        """What the files depend on besides the image: a run with other settings may not mix its files in."""
        source = restored.path if os.path.isfile(restored.path) else os.path.join(restored.path, "deploy.yaml")
        stat = os.stat(source)
        settings = {"restore_from": os.path.abspath(restored.path), "size": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns, "classes": list(self.classes.names), "alpha": self.alpha}
        if restored.kind == "weights":
            settings.update(model=MODEL_ALIASES.get(model_name, model_name),
                            input_size=list(input_size or DEFAULT_INPUT_SIZE))
        if ensemble:
            members = [restored] + list(ensemble)
            settings["ensemble"] = [[os.path.abspath(member.path), os.stat(member.path).st_size,
                                     os.stat(member.path).st_mtime_ns] for member in ensemble]
            settings["model_weights"] = ensemble_weights(len(members), model_weights)
        return settings

    def check_settings(self, settings, overwrite=False):
        """Refuse a save folder holding the files of other settings, unless ``overwrite``."""
        path = os.path.join(self.save_dir, SETTINGS_FILE)
        if overwrite or not os.path.isfile(path):
            return
        with open(path) as handle:
            try:
                earlier = json.load(handle)
            except ValueError:
                earlier = {}
        if earlier != settings:
            changed = sorted(key for key in set(settings) | set(earlier) if earlier.get(key) != settings.get(key))
            raise PredictionError("--save {}: holds the outputs of other settings ({} differ: see {}); give "
                                  "--overwrite to replace them, or another --save".format(
                                      self.save_dir, ", ".join(changed), path))

    def begin(self, settings):
        """Keep ``settings`` in the save folder (after check_settings) and remove the temporary files
        of a run that died while writing."""
        os.makedirs(self.save_dir, exist_ok=True)
        self._remove_stale_temporaries()
        atomic_write_json(os.path.join(self.save_dir, SETTINGS_FILE), settings)

    def _remove_stale_temporaries(self):
        now = time.time()
        for directory, _, files in os.walk(self.save_dir):
            for file_name in files:
                if file_name.startswith(".") and file_name.endswith(TMP_SUFFIX):
                    path = os.path.join(directory, file_name)
                    try:
                        if now - os.path.getmtime(path) > STALE_TMP_SECONDS:
                            os.remove(path)
                    except OSError:
                        pass

    def picture(self, kind, rgb, prediction):
        """The PIL image of one output."""
        train_ids = prediction.train_ids
        if kind == TRAIN_IDS:
            return Image.fromarray(train_ids)
        if kind == PSEUDO_COLOR:
            picture = Image.fromarray(train_ids)
            picture.putpalette(self.palette.tobytes())
            return picture
        if kind == ADDED:
            blend = self.alpha * rgb.astype(np.float32) + (1.0 - self.alpha) * self.palette[train_ids]
            return Image.fromarray(np.round(blend).astype(np.uint8))
        if kind == LABEL_IDS:
            return Image.fromarray(self.label_table[train_ids])
        return Image.fromarray(_to_byte(prediction.confidence if kind == CONFIDENCE else prediction.entropy))

    def write(self, name, rgb, prediction, kinds):
        for kind in kinds:
            picture = self.picture(kind, rgb, prediction)
            options = JPEG_OPTIONS if kind == ADDED else {"format": "PNG"}
            atomic_write(self.path(kind, name), lambda tmp_path: picture.save(tmp_path, **options))

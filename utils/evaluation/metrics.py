"""Segmentation scores in train ids: confusion matrix, per-class IoU, mIoU, the original's table.

Every score comes from the 19x19 confusion matrix. A class set (dataset.classes.CLASS_SETS: "19",
SYNTHIA's "16" and "13", "crosscity13") is scored as the weak-label reference scores SYNTHIA
models: the mean of its classes' IoUs, the other classes' IoUs left out (NaN ignored). The first
set named is the headline: its mIoU is "the" mIoU of the table, of the JSON and of snapshot
selection.
"""
import json
import math
from collections import OrderedDict
from typing import NamedTuple, Tuple

import numpy as np

from dataset.classes import CLASS_NAMES, CLASS_SETS, IGNORE_LABEL, NUM_CLASSES, label_id_to_train_id_lut
from utils.files.atomic import atomic_write_json

ALL_CLASSES = ("19",)


class MIoUResult(NamedTuple):
    ious: np.ndarray  # per train id, fraction; NaN = absent from the ground truth and never predicted
    miou: float  # over the headline class set
    num_images: int
    confusion: np.ndarray  # rows = ground truth, columns = prediction
    class_sets: Tuple[str, ...] = ALL_CLASSES  # names in CLASS_SETS, the headline first

    @property
    def miou_by_classes(self):
        """{class set: mIoU} of every set scored, the headline first."""
        return class_set_mious(self.ious, self.class_sets)


def miou_result(confusion, num_images, class_sets=None):
    """The MIoUResult of a summed confusion matrix, scored on ``class_sets`` (default: all 19)."""
    class_sets = tuple(class_sets or ALL_CLASSES)
    ious = per_class_iou(confusion)
    headline = class_set_mious(ious, class_sets)[class_sets[0]]
    return MIoUResult(ious=ious, miou=headline, num_images=int(num_images), confusion=confusion,
                      class_sets=class_sets)


def devkit_lut(info_path):
    """256-entry label id -> train id table from the label2train pairs of a devkit info.json."""
    with open(info_path) as handle:
        info = json.load(handle)
    if "label2train" not in info:
        return label_id_to_train_id_lut()
    if int(info.get("classes", NUM_CLASSES)) != NUM_CLASSES:
        raise ValueError("{} declares {} classes; this evaluation scores the {} Cityscapes classes".format(
            info_path, info["classes"], NUM_CLASSES))
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label_id, train_id in info["label2train"]:
        if not (0 <= train_id < NUM_CLASSES or train_id == IGNORE_LABEL):
            raise ValueError("{}: label2train maps label id {} to {}, which is neither a train id "
                             "0..{} nor {}".format(info_path, label_id, train_id, NUM_CLASSES - 1, IGNORE_LABEL))
        if 0 <= label_id < 256:  # ids such as -1 (license plate) never occur in an 8-bit PNG
            lut[label_id] = train_id
    return lut


def confusion_matrix(gt, pred, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL):
    """num_classes x num_classes int64 counts, rows = ground truth, columns = prediction.

    gt holds train ids or ignore_label (those pixels are not counted); pred must hold
    train ids 0..num_classes-1 only, anything else raises ValueError.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError("ground truth has shape {} but prediction has shape {}".format(gt.shape, pred.shape))
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])
        raise ValueError("prediction holds values {} outside the train ids 0..{}".format(
            _few_values(bad), num_classes - 1))
    if gt.size and gt.min() < 0:
        raise ValueError("ground truth holds negative values {}".format(_few_values(np.unique(gt[gt < 0]))))
    # Pixel (g, p) falls in bin g * num_classes + p; the ignore label's row sits past the
    # matrix, so one bincount both counts and sets the ignored pixels aside.
    bins = gt.astype(np.intp).ravel()
    bins *= num_classes
    bins += pred.ravel()
    counts = np.bincount(bins, minlength=num_classes * num_classes)
    rows = counts[num_classes * num_classes:]
    rows = np.pad(rows, (0, -len(rows) % num_classes)).reshape(-1, num_classes).sum(axis=1)
    stray = [num_classes + row for row in np.flatnonzero(rows) if num_classes + row != ignore_label]
    if stray:
        raise ValueError("ground truth holds values {} that are neither train ids 0..{} nor the ignore "
                         "label {}".format(_few_values(stray), num_classes - 1, ignore_label))
    return counts[:num_classes * num_classes].reshape(num_classes, num_classes).astype(np.int64)


def _few_values(values, shown=10):
    values = [int(value) for value in values]
    text = ", ".join(str(value) for value in values[:shown])
    return text + (" ..." if len(values) > shown else "")


def per_class_iou(confusion):
    """TP / (TP + FP + FN) per class; NaN for a class absent from the ground truth and never predicted."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        return true_positive / union


def mean_iou(ious, classes=None):
    """Mean over the classes (train ids; default all) whose IoU is defined; NaN if none is."""
    ious = np.asarray(ious, dtype=np.float64)
    if classes is not None:
        ious = ious[list(classes)]
    defined = ious[~np.isnan(ious)]
    return float(defined.mean()) if defined.size else float("nan")


def _class_sets(ious, class_sets):
    """{name: train ids} of the sets scored; None: one set of every class given."""
    if class_sets is None:
        return OrderedDict([(str(len(ious)), tuple(range(len(ious))))])
    unknown = [name for name in class_sets if name not in CLASS_SETS]
    if unknown or not class_sets:
        raise ValueError("unknown class set(s) {}: choose among {}".format(
            ", ".join(map(repr, unknown)) or "(none given)", ", ".join(CLASS_SETS)))
    return OrderedDict((name, CLASS_SETS[name]) for name in class_sets)


def class_set_mious(ious, class_sets=None):
    """{class set: mIoU over its classes}, in the order given (None: one set of every class)."""
    return OrderedDict((name, mean_iou(ious, classes)) for name, classes in _class_sets(ious, class_sets).items())


def format_iou_table(ious, class_names=CLASS_NAMES, class_sets=None):
    """The original's report: '===>road:\\t86.46' per class of the headline set, then
    '===> mIoU: 42.35' over it, then '===> mIoU (13 classes): 48.2' for each further set (percent)."""
    sets = list(_class_sets(ious, class_sets).values())
    lines = ["===>{}:\t{}".format(class_names[c], round(float(ious[c]) * 100, 2)) for c in sets[0]]
    lines.append("===> mIoU: {}".format(round(mean_iou(ious, sets[0]) * 100, 2)))
    lines += ["===> mIoU ({} classes): {}".format(len(classes), round(mean_iou(ious, classes) * 100, 2))
              for classes in sets[1:]]
    return "\n".join(lines)


def _number(value):
    return None if math.isnan(value) else float(value)


def iou_report(ious, num_images, class_names=CLASS_NAMES, class_sets=None):
    """{"mIoU", "IoU": {class: value}, "num_images", "classes", "mIoU_by_classes"}: fractions in
    [0, 1], None where undefined (a class absent from the ground truth and never predicted).

    "mIoU" is the headline set's, "classes" names that set and "mIoU_by_classes" has every set's;
    "IoU" holds every class, scored or not."""
    mious = class_set_mious(ious, class_sets)
    headline = next(iter(mious))
    return {
        "mIoU": _number(mious[headline]),
        "IoU": {name: _number(float(iou)) for name, iou in zip(class_names, ious)},
        "num_images": int(num_images),
        "classes": headline,
        "mIoU_by_classes": {name: _number(miou) for name, miou in mious.items()},
    }


def save_iou_json(path, ious, num_images, class_names=CLASS_NAMES, class_sets=None):
    atomic_write_json(path, iou_report(ious, num_images, class_names, class_sets))

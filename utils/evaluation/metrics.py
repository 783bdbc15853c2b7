"""Segmentation scores in train ids: confusion matrix, per-class IoU, mIoU, the original's table.

Every score comes from the one confusion matrix of all the classes. The subsets a class set
scores (dataset.classes.ClassSet.scored: "19", SYNTHIA's "16" and "13", "crosscity13", a user's)
are scored as the weak-label reference scores SYNTHIA models: the mean of the subset's IoUs, the
other classes' IoUs left out (NaN ignored). The first subset is the headline: its mIoU is "the"
mIoU of the table, of the JSON and of snapshot selection.
"""
import json
import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from dataset.classes import CITYSCAPES, ClassSet, IGNORE_LABEL
from utils.files.atomic import atomic_write_json


class MIoUResult(NamedTuple):
    ious: np.ndarray  # per train id, fraction; NaN = absent from the ground truth and never predicted
    miou: float  # over the headline subset
    num_images: int
    confusion: np.ndarray  # rows = ground truth, columns = prediction
    classes: ClassSet = CITYSCAPES  # what the train ids are and which subsets are scored

    @property
    def class_sets(self):
        """Names of the subsets scored, the headline first."""
        return self.classes.scored

    @property
    def miou_by_classes(self):
        """{subset: mIoU} of every subset scored, the headline first."""
        return class_set_mious(self.ious, self.classes)


def miou_result(confusion, num_images, classes=CITYSCAPES):
    """The MIoUResult of a summed confusion matrix, scored on the subsets of ``classes``."""
    ious = per_class_iou(confusion)
    if len(ious) != classes.num_classes:
        raise ValueError("a {0}x{0} confusion matrix cannot be scored on the {1} classes of {2}".format(
            len(ious), classes.num_classes, classes.name))
    headline = class_set_mious(ious, classes)[classes.scored[0]]
    return MIoUResult(ious=ious, miou=headline, num_images=int(num_images), confusion=confusion, classes=classes)


def devkit_lut(info_path, classes=CITYSCAPES):
    """256-entry label id -> train id table from the label2train pairs of a devkit info.json."""
    with open(info_path) as handle:
        info = json.load(handle)
    if "label2train" not in info:
        return classes.lut()
    num_classes = classes.num_classes
    if int(info.get("classes", num_classes)) != num_classes:
        raise ValueError("{} declares {} classes; this evaluation scores the {} classes of {}".format(
            info_path, info["classes"], num_classes, classes.name))
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label_id, train_id in info["label2train"]:
        if not (0 <= train_id < num_classes or train_id == IGNORE_LABEL):
            raise ValueError("{}: label2train maps label id {} to {}, which is neither a train id "
                             "0..{} nor {}".format(info_path, label_id, train_id, num_classes - 1, IGNORE_LABEL))
        if 0 <= label_id < 256:  # ids such as -1 (license plate) never occur in an 8-bit PNG
            lut[label_id] = train_id
    return lut


def confusion_matrix(gt, pred, num_classes=CITYSCAPES.num_classes, ignore_label=IGNORE_LABEL):
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


def class_set_mious(ious, classes=CITYSCAPES):
    """{subset: mIoU over its classes} of the subsets ``classes`` scores, the headline first."""
    return OrderedDict((name, mean_iou(ious, members)) for name, members in classes.scored_subsets.items())


def format_iou_table(ious, classes=CITYSCAPES):
    """The original's report: '===>road:\t86.46' per class of the headline subset, then
    '===> mIoU: 42.35' over it, then '===> mIoU (13 classes): 48.2' for each further subset (percent)."""
    subsets = list(classes.scored_subsets.values())
    lines = ["===>{}:\t{}".format(classes.names[c], round(float(ious[c]) * 100, 2)) for c in subsets[0]]
    lines.append("===> mIoU: {}".format(round(mean_iou(ious, subsets[0]) * 100, 2)))
    lines += ["===> mIoU ({} classes): {}".format(len(members), round(mean_iou(ious, members) * 100, 2))
              for members in subsets[1:]]
    return "\n".join(lines)


def _number(value):
    return None if math.isnan(value) else float(value)


def iou_report(ious, num_images, classes=CITYSCAPES):
    """{"mIoU", "IoU": {class: value}, "num_images", "classes", "mIoU_by_classes"}: fractions in
    [0, 1], None where undefined (a class absent from the ground truth and never predicted).

    "mIoU" is the headline subset's, "classes" names that subset and "mIoU_by_classes" has every
    subset's; "IoU" holds every class, scored or not."""
    mious = class_set_mious(ious, classes)
    headline = next(iter(mious))
    return {
        "mIoU": _number(mious[headline]),
        "IoU": {name: _number(float(iou)) for name, iou in zip(classes.names, ious)},
        "num_images": int(num_images),
        "classes": headline,
        "mIoU_by_classes": {name: _number(miou) for name, miou in mious.items()},
    }


def save_iou_json(path, ious, num_images, classes=CITYSCAPES):
    atomic_write_json(path, iou_report(ious, num_images, classes))

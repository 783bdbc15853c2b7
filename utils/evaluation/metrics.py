"""Segmentation scores in train ids: confusion matrix, per-class IoU, mIoU, the original's table."""
import json
import math
from typing import NamedTuple

import numpy as np

from dataset.classes import CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES, label_id_to_train_id_lut
from utils.files.atomic import atomic_write_json


class MIoUResult(NamedTuple):
    ious: np.ndarray  # per train id, fraction; NaN = absent from the ground truth and never predicted
    miou: float
    num_images: int
    confusion: np.ndarray  # rows = ground truth, columns = prediction


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


def mean_iou(ious):
    """Mean over the classes whose IoU is defined; NaN if none is."""
    ious = np.asarray(ious, dtype=np.float64)
    defined = ious[~np.isnan(ious)]
    return float(defined.mean()) if defined.size else float("nan")


def format_iou_table(ious, class_names=CLASS_NAMES):
    """The original's report: '===>road:\\t86.46' per class, then '===> mIoU: 42.35' (percent)."""
    lines = ["===>{}:\t{}".format(name, round(float(iou) * 100, 2)) for name, iou in zip(class_names, ious)]
    lines.append("===> mIoU: {}".format(round(mean_iou(ious) * 100, 2)))
    return "\n".join(lines)


def iou_report(ious, num_images, class_names=CLASS_NAMES):
    """{"mIoU", "IoU": {class: value}, "num_images"}: fractions in [0, 1], None where undefined
    (a class absent from the ground truth and never predicted)."""
    def number(value):
        return None if math.isnan(value) else float(value)

    return {
        "mIoU": number(mean_iou(ious)),
        "IoU": {name: number(float(iou)) for name, iou in zip(class_names, ious)},
        "num_images": int(num_images),
    }


def save_iou_json(path, ious, num_images, class_names=CLASS_NAMES):
    atomic_write_json(path, iou_report(ious, num_images, class_names))

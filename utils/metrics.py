"""Segmentation scores in train ids: confusion matrix, per-class IoU, mIoU, the original's table."""
import json
import math

import numpy as np

from dataset.classes import CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES


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


def save_iou_json(path, ious, num_images, class_names=CLASS_NAMES):
    """Write {"mIoU", "IoU": {class: value}, "num_images"}; IoUs are fractions in [0, 1] and
    null where undefined (class absent from the ground truth and never predicted)."""
    def number(value):
        return None if math.isnan(value) else float(value)

    report = {
        "mIoU": number(mean_iou(ious)),
        "IoU": {name: number(float(iou)) for name, iou in zip(class_names, ious)},
        "num_images": int(num_images),
    }
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")

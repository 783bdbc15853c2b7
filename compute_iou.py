"""mIoU of Cityscapes predictions (PNGs of train ids) against gtFine labelIds.

    python compute_iou.py gt_dir pred_dir [--devkit_dir DIR] [--source synthia] [--num-workers N]
    python compute_iou.py NTHU/Rome/Labels/Test pred_dir --target nthu
    python compute_iou.py data/mine/labels pred_dir --target custom --classes classes.json

With --devkit_dir, the authors' lists decide the pairs: gt_dir/<line of label.txt> against
pred_dir/<file name of the same line of val.txt>; an info.json there with label2train
maps label ids to train ids. Without it, every *_gtFine_labelIds.png under gt_dir is paired
with pred_dir/<city>_<seq>_<frame>_leftImg8bit.png; with --target nthu, every <id>_eval.png
with pred_dir/<id>.png; with --target custom, every label PNG under gt_dir with the prediction of
the same relative path (or, failing that, of the same name) in pred_dir. A missing, mis-sized or
out-of-range prediction is an error, never skipped. --source synthia scores the 16 classes SYNTHIA
shares with Cityscapes and 13 of them; --target nthu the 13 classes the NTHU cities annotate;
--target custom what the class file (--classes) says.
"""
from PIL import Image

import argparse
import collections
import itertools
import os
import posixpath
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dataset.files import scan, summarize
from dataset.cityscapes_dataset import LABEL_SUFFIX, image_name_of_label
from dataset.classes import CITYSCAPES, NTHU
from dataset.nthu_dataset import LABEL_SUFFIX as NTHU_LABEL_SUFFIX
from dataset.custom import LabelReader
from dataset.sources import CUSTOM, SOURCES, TARGETS, scored_classes, target_classes
from utils.evaluation.metrics import confusion_matrix, devkit_lut, format_iou_table, miou_result, save_iou_json
from utils.runtime import usable_cpus

RESULT_FILE = "mIoU.json"


def _read_devkit_list(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "{} does not exist; --devkit_dir needs val.txt (image entries such as "
            "frankfurt/frankfurt_000000_000294_leftImg8bit.png) and label.txt (the matching "
            "frankfurt/frankfurt_000000_000294_gtFine_labelIds.png)".format(path))
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def pair_files(gt_dir, pred_dir, devkit_dir=None, target="cityscapes", labels=None):
    """(gt paths, prediction paths, label id -> train id LUT or a reader of train ids), in evaluation
    order; ``labels``: the class set a custom target's labels are read with."""
    for path, flag in ((gt_dir, "gt_dir"), (pred_dir, "pred_dir")):
        if not os.path.isdir(path):
            raise FileNotFoundError("{} {!r} is not a directory".format(flag, path))
    if target == CUSTOM:
        if devkit_dir is not None:
            raise ValueError("--devkit_dir holds Cityscapes lists; it cannot pair a custom domain's files")
        gt_entries = scan(gt_dir, ".png", "compute_iou", "gt_dir/<sub/path>/<name>.png (a custom domain's labels)")
        # predict.py keeps the sub-folders, evaluate_cityscapes.py writes <name>.png flat: either pairs.
        pred_names = [entry if os.path.isfile(os.path.join(pred_dir, entry)) else posixpath.basename(entry)
                      for entry in gt_entries]
        twice = [name for name, count in collections.Counter(pred_names).items() if count > 1]
        if twice:
            raise ValueError("several labels under {} pair with the prediction {}: keep the labels' sub-folders in "
                             "pred_dir".format(gt_dir, os.path.join(pred_dir, twice[0])))
        lut = LabelReader(labels)
    elif target == "nthu":
        if devkit_dir is not None:
            raise ValueError("--devkit_dir holds Cityscapes lists; it cannot pair NTHU files")
        layout = "gt_dir/<id>" + NTHU_LABEL_SUFFIX + " (an NTHU city's Labels/Test)"
        gt_entries = scan(gt_dir, NTHU_LABEL_SUFFIX, "compute_iou", layout)
        pred_names = [entry.split("/")[-1][:-len(NTHU_LABEL_SUFFIX)] + ".png" for entry in gt_entries]
        lut = NTHU.lut()
    elif devkit_dir is None:
        layout = "gt_dir/<city>/<city>_<seq>_<frame>" + LABEL_SUFFIX
        gt_entries = scan(gt_dir, LABEL_SUFFIX, "compute_iou", layout)
        pred_names = [image_name_of_label(entry.split("/")[-1]) for entry in gt_entries]
        lut = CITYSCAPES.lut()
    else:
        image_list = os.path.join(devkit_dir, "val.txt")
        label_list = os.path.join(devkit_dir, "label.txt")
        pred_names = [entry.split("/")[-1] for entry in _read_devkit_list(image_list)]
        gt_entries = _read_devkit_list(label_list)
        if len(pred_names) != len(gt_entries) or not gt_entries:
            raise ValueError("{} has {} entries and {} has {}; they must list the same images, one per "
                             "line".format(image_list, len(pred_names), label_list, len(gt_entries)))
        info_path = os.path.join(devkit_dir, "info.json")
        lut = devkit_lut(info_path) if os.path.isfile(info_path) else CITYSCAPES.lut()
    gt_paths = [os.path.join(gt_dir, entry) for entry in gt_entries]
    pred_paths = [os.path.join(pred_dir, name) for name in pred_names]
    for paths, what in ((gt_paths, "ground-truth files"), (pred_paths, "predictions")):
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError("{} of {} {} are missing: {}".format(
                len(missing), len(paths), what, summarize(missing)))
    return gt_paths, pred_paths, lut


def _decode(path):
    try:
        with Image.open(path) as image:
            return image.mode, np.asarray(image)
    except OSError as error:
        raise OSError("cannot read {}: {}".format(path, error)) from error


def _pair_confusion(gt_path, pred_path, lut, num_classes):
    """(confusion matrix, None) for a good pair, (None, what is wrong) otherwise."""
    try:
        pred_mode, pred = _decode(pred_path)
        if callable(lut):
            truth = lut(gt_path)
        else:
            gt_mode, label_ids = _decode(gt_path)
            if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
                return None, "{}: PIL mode {}, expected 8-bit single-channel label ids".format(gt_path, gt_mode)
            truth = lut[label_ids]
    except (OSError, ValueError) as error:
        return None, str(error)
    if pred.ndim != 2:
        return None, "{}: PIL mode {}, expected a single-channel PNG of train ids (mode L or P)".format(
            pred_path, pred_mode)
    if pred.shape != truth.shape:
        return None, "{}: {}x{} but its ground truth {} is {}x{}".format(
            pred_path, pred.shape[1], pred.shape[0], gt_path, truth.shape[1], truth.shape[0])
    try:
        return confusion_matrix(truth, pred, num_classes), None
    except ValueError as error:
        return None, "{}: {}".format(pred_path, error)


def compute_mIoU(gt_dir, pred_dir, devkit_dir=None, num_workers=None, source="gta5", target="cityscapes",
                 class_file=None):
    """Score every prediction with the class set of ``source`` and ``target`` (dataset.sources.
    scored_classes; ``class_file`` for a custom domain); raise (listing the files) if any is
    missing or invalid."""
    workers = num_workers if num_workers is not None else min(8, usable_cpus())
    if workers < 1:
        raise ValueError("num_workers (--num-workers) must be at least 1, got {}".format(workers))
    classes = scored_classes(source, target, class_file)
    labels = target_classes(target, class_file) if target == CUSTOM else None
    gt_paths, pred_paths, lut = pair_files(gt_dir, pred_dir, devkit_dir, target, labels)
    total = np.zeros((classes.num_classes, classes.num_classes), dtype=np.int64)
    problems = []
    # Threads suffice: PIL releases the GIL while decoding, which dominates the cost.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for confusion, problem in pool.map(_pair_confusion, gt_paths, pred_paths, itertools.repeat(lut),
                                             itertools.repeat(classes.num_classes)):
            if problem is None:
                total += confusion
            else:
                problems.append(problem)
    if problems:
        raise ValueError("{} of {} predictions cannot be scored:\n  {}".format(
            len(problems), len(gt_paths), summarize(problems, separator="\n  ")))
    return miou_result(total, len(gt_paths), classes)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="mIoU of predictions (PNGs of train ids) against ground truth: Cityscapes gtFine labelIds, "
                    "an NTHU city's labels or a custom domain's. Prints the per-class table and saves the numbers "
                    "to PRED_DIR/{}.".format(RESULT_FILE))
    parser.add_argument("gt_dir", help="gtFine/val directory (holds <city>/*_gtFine_labelIds.png); an NTHU city's "
                                       "Labels/Test; a custom domain's labels folder")
    parser.add_argument("pred_dir", help="directory of predictions named <city>_<seq>_<frame>_leftImg8bit.png (NTHU: "
                                         "<id>.png; custom: the labels' relative paths, or their names); the JSON "
                                         "report is written here as " + RESULT_FILE)
    parser.add_argument("--devkit_dir", default=None,
                        help="directory with the original val.txt and label.txt (and optionally info.json) "
                             "deciding which files are paired")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="threads decoding PNGs (default: CPU count, at most 8)")
    parser.add_argument("--source", default="gta5", choices=sorted(SOURCES),
                        help="the domain the model was trained on; synthia: score the 16 shared classes and 13")
    parser.add_argument("--target", default="cityscapes", choices=sorted(TARGETS),
                        help="nthu: gt_dir is a city's Labels/Test (<id>_eval.png), predictions <id>.png, 13 classes; "
                             "custom: gt_dir holds label PNGs, predictions have the same relative paths")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="with --source/--target custom: the class file (README: Your own data)")
    args = parser.parse_args(argv)
    try:
        result = compute_mIoU(args.gt_dir, args.pred_dir, args.devkit_dir, args.num_workers, args.source,
                              args.target, args.classes)
    except (OSError, ValueError) as error:
        sys.exit("compute_iou.py: error: {}".format(error))
    print(format_iou_table(result.ious, result.classes))
    json_path = os.path.join(args.pred_dir, RESULT_FILE)
    save_iou_json(json_path, result.ious, result.num_images, result.classes)
    print("saved {}".format(json_path))
    return result


if __name__ == "__main__":
    main()

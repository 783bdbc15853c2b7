"""mIoU of Cityscapes predictions (PNGs of train ids) against gtFine labelIds.

    python compute_iou.py gt_dir pred_dir [--devkit_dir DIR] [--source synthia] [--num-workers N]
    python compute_iou.py NTHU/Rome/Labels/Test pred_dir --target nthu

With --devkit_dir, the authors' lists decide the pairs: gt_dir/<line of label.txt> against
pred_dir/<file name of the same line of val.txt>; an info.json there with label2train
maps label ids to train ids. Without it, every *_gtFine_labelIds.png under gt_dir is paired
with pred_dir/<city>_<seq>_<frame>_leftImg8bit.png; with --target nthu, every <id>_eval.png
with pred_dir/<id>.png. A missing, mis-sized or out-of-range prediction is an error, never
skipped. --source synthia scores the 16 classes SYNTHIA shares with Cityscapes and 13 of them;
--target nthu the 13 classes the NTHU cities annotate.
"""
from PIL import Image

import argparse
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dataset.files import scan, summarize
from dataset.cityscapes_dataset import LABEL_SUFFIX, image_name_of_label
from dataset.classes import NUM_CLASSES, label_id_to_train_id_lut
from dataset.nthu_dataset import LABEL_SUFFIX as NTHU_LABEL_SUFFIX, NTHU_LABEL_ID_TO_TRAIN_ID
from dataset.sources import SOURCES, TARGETS, scored_class_sets
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


def pair_files(gt_dir, pred_dir, devkit_dir=None, target="cityscapes"):
    """(gt paths, prediction paths, label id -> train id LUT), in evaluation order."""
    for path, flag in ((gt_dir, "gt_dir"), (pred_dir, "pred_dir")):
        if not os.path.isdir(path):
            raise FileNotFoundError("{} {!r} is not a directory".format(flag, path))
    if target == "nthu":
        if devkit_dir is not None:
            raise ValueError("--devkit_dir holds Cityscapes lists; it cannot pair NTHU files")
        layout = "gt_dir/<id>" + NTHU_LABEL_SUFFIX + " (an NTHU city's Labels/Test)"
        gt_entries = scan(gt_dir, NTHU_LABEL_SUFFIX, "compute_iou", layout)
        pred_names = [entry.split("/")[-1][:-len(NTHU_LABEL_SUFFIX)] + ".png" for entry in gt_entries]
        lut = label_id_to_train_id_lut(NTHU_LABEL_ID_TO_TRAIN_ID)
    elif devkit_dir is None:
        layout = "gt_dir/<city>/<city>_<seq>_<frame>" + LABEL_SUFFIX
        gt_entries = scan(gt_dir, LABEL_SUFFIX, "compute_iou", layout)
        pred_names = [image_name_of_label(entry.split("/")[-1]) for entry in gt_entries]
        lut = label_id_to_train_id_lut()
    else:
        image_list = os.path.join(devkit_dir, "val.txt")
        label_list = os.path.join(devkit_dir, "label.txt")
        pred_names = [entry.split("/")[-1] for entry in _read_devkit_list(image_list)]
        gt_entries = _read_devkit_list(label_list)
        if len(pred_names) != len(gt_entries) or not gt_entries:
            raise ValueError("{} has {} entries and {} has {}; they must list the same images, one per "
                             "line".format(image_list, len(pred_names), label_list, len(gt_entries)))
        info_path = os.path.join(devkit_dir, "info.json")
        lut = devkit_lut(info_path) if os.path.isfile(info_path) else label_id_to_train_id_lut()
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


def _pair_confusion(gt_path, pred_path, lut):
    """(confusion matrix, None) for a good pair, (None, what is wrong) otherwise."""
    try:
        gt_mode, label_ids = _decode(gt_path)
        pred_mode, pred = _decode(pred_path)
    except OSError as error:
        return None, str(error)
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        return None, "{}: PIL mode {}, expected 8-bit single-channel label ids".format(gt_path, gt_mode)
    if pred.ndim != 2:
        return None, "{}: PIL mode {}, expected a single-channel PNG of train ids (mode L or P)".format(
            pred_path, pred_mode)
    if pred.shape != label_ids.shape:
        return None, "{}: {}x{} but its ground truth {} is {}x{}".format(
            pred_path, pred.shape[1], pred.shape[0], gt_path, label_ids.shape[1], label_ids.shape[0])
    try:
        return confusion_matrix(lut[label_ids], pred), None
    except ValueError as error:
        return None, "{}: {}".format(pred_path, error)


def compute_mIoU(gt_dir, pred_dir, devkit_dir=None, num_workers=None, source="gta5", target="cityscapes"):
    """Score every prediction on the class sets of ``source`` and ``target``
    (dataset.sources.scored_class_sets); raise (listing the files) if any is missing or invalid."""
    workers = num_workers if num_workers is not None else min(8, usable_cpus())
    if workers < 1:
        raise ValueError("num_workers (--num-workers) must be at least 1, got {}".format(workers))
    class_sets = scored_class_sets(source, target)
    gt_paths, pred_paths, lut = pair_files(gt_dir, pred_dir, devkit_dir, target)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    problems = []
    # Threads suffice: PIL releases the GIL while decoding, which dominates the cost.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for confusion, problem in pool.map(_pair_confusion, gt_paths, pred_paths, itertools.repeat(lut)):
            if problem is None:
                total += confusion
            else:
                problems.append(problem)
    if problems:
        raise ValueError("{} of {} predictions cannot be scored:\n  {}".format(
            len(problems), len(gt_paths), summarize(problems, separator="\n  ")))
    return miou_result(total, len(gt_paths), class_sets)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="mIoU of Cityscapes predictions (PNGs of train ids 0..{}) against gtFine labelIds. "
                    "Prints the per-class table and saves the numbers to PRED_DIR/{}.".format(
                        NUM_CLASSES - 1, RESULT_FILE))
    parser.add_argument("gt_dir", help="gtFine/val directory (holds <city>/*_gtFine_labelIds.png)")
    parser.add_argument("pred_dir", help="flat directory of predictions named <city>_<seq>_<frame>_leftImg8bit.png; "
                                         "the JSON report is written here as " + RESULT_FILE)
    parser.add_argument("--devkit_dir", default=None,
                        help="directory with the original val.txt and label.txt (and optionally info.json) "
                             "deciding which files are paired")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="threads decoding PNGs (default: CPU count, at most 8)")
    parser.add_argument("--source", default="gta5", choices=sorted(SOURCES),
                        help="the domain the model was trained on; synthia: score the 16 shared classes and 13")
    parser.add_argument("--target", default="cityscapes", choices=sorted(TARGETS),
                        help="nthu: gt_dir is a city's Labels/Test (<id>_eval.png), predictions <id>.png, 13 classes")
    args = parser.parse_args(argv)
    try:
        result = compute_mIoU(args.gt_dir, args.pred_dir, args.devkit_dir, args.num_workers, args.source,
                              args.target)
    except (OSError, ValueError) as error:
        sys.exit("compute_iou.py: error: {}".format(error))
    print(format_iou_table(result.ious, class_sets=result.class_sets))
    json_path = os.path.join(args.pred_dir, RESULT_FILE)
    save_iou_json(json_path, result.ious, result.num_images, class_sets=result.class_sets)
    print("saved {}".format(json_path))
    return result


if __name__ == "__main__":
    main()

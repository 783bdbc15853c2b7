"""Evaluate a segmentation model (or every snapshot of a run) on Cityscapes.

    python evaluate_cityscapes.py --restore-from GTA2Cityscapes_multi-ed35151c.pth --data-dir data/Cityscapes
    python evaluate_cityscapes.py --restore-from snapshots/GTA2Cityscapes_multi   # a directory of snapshots

Writes <name>.png (train ids) and <name>_color.png into --save, prints the per-class IoU table
and saves it as mIoU.json there. With a directory, each GTA5_<iter>.pdparams is evaluated once
(the result is cached beside it), the iteration -> mIoU table is printed and saved, and the best
snapshot is copied to GTA5_best.pdparams.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import argparse
import os
import sys

from dataset.cityscapes_dataset import cityscapesDataSet
from dataset.classes import IGNORE_LABEL, NUM_CLASSES
from dataset.loader import DataError
from model import build_model
from model.inference import BACKENDS, SegmentationPredictor
from utils.cli import size_argument
from utils.evaluation.cityscapes import evaluate, evaluate_snapshots, evaluation_settings, ground_truth_paths, lut_for
from utils.evaluation.metrics import format_iou_table, save_iou_json
from utils.runtime import add_device_args, select_device
from utils.files.weights import WeightsError, load_weights


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DeeplabMulti", choices=["DeeplabMulti", "DeepLab", "DeeplabVGG"])
    parser.add_argument("--data-dir", default="./data/Cityscapes", help="Cityscapes root (holds leftImg8bit/)")
    parser.add_argument("--data-list", default=None,
                        help="image list in the original's format (entries relative to leftImg8bit/<set>); "
                             "default: every image of the set")
    parser.add_argument("--set", default="val", help="leftImg8bit/<set> to evaluate")
    parser.add_argument("--gt-dir", default=None, help="gtFine labelIds root; default <data-dir>/gtFine/<set>")
    parser.add_argument("--devkit-dir", default=None,
                        help="the original's cityscapes_list folder; its info.json label2train is used if present")
    parser.add_argument("--restore-from", required=True,
                        help=".pdparams or PyTorch .pth weights, or a directory of GTA5_<iter>.pdparams snapshots")
    parser.add_argument("--save", default="./result/cityscapes", help="where predictions and mIoU.json go")
    parser.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    parser.add_argument("--ignore-label", type=int, default=IGNORE_LABEL)
    parser.add_argument("--input-size", type=size_argument, default=(1024, 512),
                        help="WIDTH,HEIGHT the images are resized to before the network (reference: 1024,512)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--backend", choices=BACKENDS, default="inference",
                        help="inference: exported model run by Paddle Inference (fastest); dygraph: dynamic graph")
    add_device_args(parser)
    args = parser.parse_args(argv)
    if args.num_classes != NUM_CLASSES:
        parser.error("--num-classes {}: the Cityscapes evaluation scores {} classes".format(args.num_classes, NUM_CLASSES))
    if args.ignore_label != IGNORE_LABEL:
        parser.error("--ignore-label: only {} is supported (the Cityscapes convention)".format(IGNORE_LABEL))
    return args


def main(argv=None):
    args = get_arguments(argv)
    use_gpu, gpu_id = select_device(args)
    images = cityscapesDataSet(args.data_dir, args.data_list, crop_size=args.input_size, set=args.set)
    gt_dir = args.gt_dir or os.path.join(args.data_dir, "gtFine", args.set)
    gt_paths = None
    if args.gt_dir or os.path.isdir(gt_dir):
        gt_paths = ground_truth_paths(images, gt_dir)
    lut = lut_for(args.devkit_dir)
    model = build_model(args.model, num_classes=args.num_classes)

    def make_predictor(net):
        return SegmentationPredictor(net, backend=args.backend, use_gpu=use_gpu, gpu_id=gpu_id)

    if os.path.isdir(args.restore_from):
        if gt_paths is None:
            sys.exit("--restore-from is a directory of snapshots, but there is no ground truth at {} to rank "
                     "them: give --gt-dir".format(gt_dir))
        settings = evaluation_settings(args.data_dir, args.data_list, args.set, gt_dir, args.devkit_dir, args.model,
                                       args.input_size, len(images))
        table, best, snapshots = evaluate_snapshots(model, args.restore_from, make_predictor, images, gt_paths, lut,
                                                    args.batch_size, args.num_workers, settings)
        print("iteration\tmIoU")
        for iteration, miou in table.items():
            print("{}\t{:.2f}{}".format(iteration, miou * 100, "\t<- best" if iteration == best else ""))
        best_path = snapshots.best_path
        print("best: {}.pdparams ({:.2f} mIoU), copied to {}".format(snapshots.name(best), table[best] * 100,
                                                                   best_path))
        print("no predictions are written for a directory; for the best snapshot's: "
              "python evaluate_cityscapes.py --restore-from {} --save DIR".format(best_path))
        return 0

    print(load_weights(model, args.restore_from).summary())
    result = evaluate(make_predictor(model), images, gt_paths, lut, save_dir=args.save,
                      batch_size=args.batch_size, num_workers=args.num_workers)
    print("predictions: {}".format(os.path.abspath(args.save)))
    if result is None:
        print("no ground truth at {}: predictions only (give --gt-dir to score them)".format(gt_dir))
        return 0
    print(format_iou_table(result.ious))
    save_iou_json(os.path.join(args.save, "mIoU.json"), result.ious, result.num_images)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (WeightsError, DataError, FileNotFoundError, ValueError) as exc:
        sys.exit("error: {}".format(exc))

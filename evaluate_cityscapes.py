"""Evaluate a segmentation model (or every snapshot of a run) on Cityscapes val, or on the test
images of one NTHU city.

    python evaluate_cityscapes.py --restore-from GTA2Cityscapes_multi-ed35151c.pth --data-dir data/Cityscapes
    python evaluate_cityscapes.py --restore-from snapshots/GTA2Cityscapes_multi   # a directory of snapshots
    python evaluate_cityscapes.py --restore-from SYNTHIA2Cityscapes.pdparams --source synthia
    python evaluate_cityscapes.py --restore-from snapshots/Cityscapes2Rome --target nthu --city Rome --data-dir data/NTHU
    python evaluate_cityscapes.py --restore-from advent.pdparams minent.pdparams --model DeeplabMulti4   # an ensemble
    python evaluate_cityscapes.py --cfg advent+minent_pretrained.yml   # ADVENT's config: its TEST section

Writes <name>.png (train ids) and <name>_color.png into --save, prints the per-class IoU table
and saves it as mIoU.json there. With a directory, each <SOURCE>_<iter>.pdparams (GTA5_<iter>,
SYNTHIA_<iter>, Cityscapes_<iter>) is evaluated once (the result is cached beside it), the
iteration -> mIoU table is printed and saved, and the best snapshot is copied to
<SOURCE>_best.pdparams.

    python evaluate_cityscapes.py --restore-from snapshots/mine --target custom --data-dir data/custom/target

What is scored: a model of a SYNTHIA run (--source synthia, or read off SYNTHIA_<N> snapshot
names) on the 16 classes SYNTHIA shares with Cityscapes, and also on 13 of them; an NTHU city on
its 13 annotated classes; a custom domain as its class file says; otherwise all 19 classes. A
run's snapshot directory records its class set (class_set.json); a model of other classes is refused.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import argparse
import os
import sys

from dataset.classes import IGNORE_LABEL, class_set_from_record
from dataset.loader import DataError, Watchdog
from dataset.nthu_dataset import NTHU_CITIES
from dataset.sources import CUSTOM, SOURCES, TARGETS, scored_classes, target_classes
from model import MODEL_HELP, SEGMENTATION_MODELS, build_model
from model.inference import BACKENDS, SegmentationPredictor, WeightedSum, ensemble_weights
from utils.cli import add_model_weights_argument, given_value, size_argument
from utils.environment import describe_environment, environment_record
from utils.evaluation.cityscapes import evaluate, evaluate_snapshots, evaluation_set, evaluation_settings, \
    snapshot_source
from utils.evaluation.metrics import format_iou_table, save_iou_json
from utils.runtime import add_device_args, select_device
from utils.files.snapshots import read_class_record
from utils.files.weights import WeightsError, load_weights
from utils.stopping import run_interruptible
from utils.files.download import add_arguments as add_download_arguments, restore_checks, weights_file
from utils.methods.advent import read_advent_test_config


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DeeplabMulti", choices=SEGMENTATION_MODELS, help=MODEL_HELP)
    parser.add_argument("--source", default=None, choices=sorted(SOURCES),
                        help="the domain the model was trained on; decides the classes scored (synthia: 16 and "
                             "13). Default: read off the snapshot names (SYNTHIA_<N> -> synthia), else gta5")
    parser.add_argument("--target", default="cityscapes", choices=sorted(TARGETS),
                        help="cityscapes: val with gtFine labels; nthu: the test images of --city (13 classes); "
                             "custom: your own images and labels (a list file or images/ and labels/ in --data-dir)")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="with --source/--target custom: the class file (README: Your own data)")
    parser.add_argument("--city", default=None, choices=NTHU_CITIES, help="with --target nthu: the city")
    parser.add_argument("--data-dir", default=None,
                        help="Cityscapes root (holds leftImg8bit/; default {}), with --target nthu the NTHU root "
                             "(holds <City>/Images/; default {}), with --target custom the root of its list's paths "
                             "or of its images/ and labels/".format(TARGETS["cityscapes"].data_dir,
                                                                    TARGETS["nthu"].data_dir))
    parser.add_argument("--data-list", default=None,
                        help="image list in the original's format (entries relative to leftImg8bit/<set>, or for "
                             "NTHU to <City>/Images/Test); default: every image of the set")
    parser.add_argument("--set", default=None,
                        help="leftImg8bit/<set> to evaluate (default val); NTHU: test (default) or train")
    parser.add_argument("--gt-dir", default=None, help="gtFine labelIds root; default <data-dir>/gtFine/<set> "
                                                       "(NTHU: <data-dir>/<City>/Labels/Test)")
    parser.add_argument("--devkit-dir", default=None,
                        help="the original's cityscapes_list folder; its info.json label2train is used if present")
    parser.add_argument("--cfg", default=None, metavar="FILE",
                        help="an ADVENT config (YAML): its TEST section's models, weights and data; flags given here "
                             "override it")
    parser.add_argument("--restore-from", nargs="+", metavar="WEIGHTS",
                        help=".pdparams or PyTorch .pth weights (or their http(s) URL), or a run's directory of "
                             "<PREFIX>_<iter>.pdparams snapshots (GTA5_<iter>, SYNTHIA_<iter>, Cityscapes_<iter>, "
                             "Synscapes_<iter>, a custom run's <NAME>_<iter>); several weight files: their ensemble "
                             "(the weighted sum of their logits, as ADVENT's AdvEnt + MinEnt)")
    add_model_weights_argument(parser)
    add_download_arguments(parser)
    parser.add_argument("--no-hash-check", action="store_true",
                        help="do not check a hash suffix in --restore-from's name (-ed35151c) against its SHA-256")
    parser.add_argument("--save", default="./result/cityscapes", help="where predictions and mIoU.json go")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the class set's")
    parser.add_argument("--ignore-label", type=int, default=IGNORE_LABEL)
    parser.add_argument("--input-size", type=size_argument, default=(1024, 512),
                        help="WIDTH,HEIGHT the images are resized to before the network (reference: 1024,512)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--backend", choices=BACKENDS, default="inference",
                        help="inference: exported model run by Paddle Inference (fastest); dygraph: dynamic graph")
    parser.add_argument("--data-timeout", type=float, default=600.0,
                        help="stop with a message when no image arrives for this many seconds")
    add_device_args(parser)
    config = given_value(argv, "--cfg")
    if config:
        try:
            parser.set_defaults(**read_advent_test_config(config))
        except ValueError as error:
            parser.error(str(error))
    args = parser.parse_args(argv)
    if not args.restore_from:
        parser.error("--restore-from is required: the weights, their URL or a run's snapshot directory (or --cfg, "
                     "an ADVENT config)")
    if args.model_weights is not None and len(args.model_weights) != len(args.restore_from):
        parser.error("--model-weights: {} weights for {} --restore-from models; give one per model".format(
            len(args.model_weights), len(args.restore_from)))
    args.restore_from, args.ensemble = args.restore_from[0], args.restore_from[1:]
    if args.ignore_label != IGNORE_LABEL:
        parser.error("--ignore-label: only {} is supported (the Cityscapes convention)".format(IGNORE_LABEL))
    if args.target == "nthu" and args.city is None:
        parser.error("--target nthu needs --city ({})".format(", ".join(NTHU_CITIES)))
    if args.target != "nthu" and args.city is not None:
        parser.error("--city {} is for --target nthu".format(args.city))
    if args.target == "nthu" and args.devkit_dir:
        parser.error("--devkit-dir holds Cityscapes lists; the NTHU evaluation does not use it")
    if args.target == CUSTOM and not args.data_dir:
        parser.error("--target custom needs --data-dir (the root of its list's paths, or holding images/ and labels/)")
    args.data_dir = args.data_dir or TARGETS[args.target].data_dir
    return args


def model_classes(args, source):
    """(the ClassSet the evaluated model is scored with, the one a custom target's labels are read
    with or None): the flags' (--source, --target, --classes), checked against the class set
    recorded beside the model; a custom run's record stands for its class file."""
    record = read_class_record(args.restore_from)
    recorded = class_set_from_record(record) if source == CUSTOM and record and not args.classes else None
    classes = scored_classes(source, args.target, args.classes, model_classes=recorded)
    classes.check_model_classes(record, args.restore_from)
    classes.check_num_classes(args.num_classes)
    labels = target_classes(args.target, args.classes, recorded) if args.target == CUSTOM else None
    return classes, labels


def describe_classes(source, classes, prefix):
    """'source: synthia (snapshots SYNTHIA_<N>); scored on 16 classes (mIoU), also 13'."""
    origin = " (snapshots {}_<N>)".format(prefix) if prefix else ""
    sizes = ["{} classes".format(len(members)) for members in classes.scored_subsets.values()]
    return "source: {}{}; scored on {} (mIoU){}".format(source, origin, sizes[0], "".join(
        ", also " + size for size in sizes[1:]))


def main(argv=None):
    args = get_arguments(argv)
    args.restore_from = weights_file(args.restore_from, **restore_checks(args))
    members = [weights_file(path, **restore_checks(args)) for path in args.ensemble]
    if members and any(os.path.isdir(path) for path in [args.restore_from] + members):
        raise ValueError("--restore-from: an ensemble takes weight files, not snapshot directories (give each run's "
                         "<PREFIX>_best.pdparams)")
    source, prefix = snapshot_source(args.restore_from, args.source)
    classes, labels = model_classes(args, source)
    use_gpu, gpu_id = select_device(args)
    data = evaluation_set(args.target, args.data_dir, args.input_size, args.data_list, args.set, args.gt_dir,
                          args.devkit_dir, args.city, labels)
    model = build_model(args.model, num_classes=classes.num_classes)
    watchdog = Watchdog(args.data_timeout)
    environment = environment_record(use_gpu=use_gpu, gpu_id=gpu_id)
    print(describe_environment(environment))
    print(describe_classes(source, classes, prefix))

    def make_predictor(net):
        return SegmentationPredictor(net, backend=args.backend, use_gpu=use_gpu, gpu_id=gpu_id)

    if os.path.isdir(args.restore_from):
        if data.gt_paths is None:
            sys.exit("--restore-from is a directory of snapshots, but there is no ground truth at {} to rank "
                     "them: give --gt-dir".format(data.gt_dir))
        settings = evaluation_settings(args.data_dir, args.data_list, data.split, data.gt_dir, args.devkit_dir,
                                       args.model, args.input_size, len(data.images), classes, labels)
        scores = evaluate_snapshots(model, args.restore_from, make_predictor, data.images, data.gt_paths, data.lut,
                                    args.batch_size, args.num_workers, settings, classes=classes, prefix=prefix,
                                    watchdog=watchdog, environment=environment)
        extra = classes.scored[1:]
        print("iteration\tmIoU" + "".join("\tmIoU ({} classes)".format(len(classes.subsets[name])) for name in extra))
        for iteration, mious in scores.mious_by_classes.items():
            print("{}\t{:.2f}{}{}".format(iteration, scores.mious[iteration] * 100,
                                          "".join("\t{:.2f}".format(mious[name] * 100) for name in extra),
                                          "\t<- best" if iteration == scores.best else ""))
        best_path = scores.snapshots.best_path
        print("best: {}.pdparams ({:.2f} mIoU), copied to {}".format(
            scores.snapshots.name(scores.best), scores.mious[scores.best] * 100, best_path))
        city = " --target nthu --city {}".format(args.city) if args.target == "nthu" else ""
        print("no predictions are written for a directory; for the best snapshot's: "
              "python evaluate_cityscapes.py --restore-from {}{} --save DIR".format(best_path, city))
        return 0

    print(load_weights(model, args.restore_from, check_hash=not args.no_hash_check).summary())
    predictor = make_predictor(model)
    if members:
        for path in members:
            classes.check_model_classes(read_class_record(path), path)
        networks = [build_model(args.model, num_classes=classes.num_classes) for _ in members]
        for net, path in zip(networks, members):
            print(load_weights(net, path, check_hash=not args.no_hash_check).summary())
        weights = ensemble_weights(1 + len(members), args.model_weights)
        predictor = WeightedSum([predictor] + [make_predictor(net) for net in networks], weights)
        print("ensemble of {} models, weights {}".format(1 + len(members), " ".join(str(w) for w in weights)))
    result = evaluate(predictor, data.images, data.gt_paths, data.lut, save_dir=args.save,
                      batch_size=args.batch_size, num_workers=args.num_workers, classes=classes,
                      watchdog=watchdog)
    print("predictions: {}".format(os.path.abspath(args.save)))
    if result is None:
        print("no ground truth at {}: predictions only (give --gt-dir to score them)".format(data.gt_dir))
        return 0
    print(format_iou_table(result.ious, classes))
    save_iou_json(os.path.join(args.save, "mIoU.json"), result.ious, result.num_images, classes)
    return 0


def _main_with_errors():
    try:
        return main()
    except (WeightsError, DataError, FileNotFoundError, ValueError) as exc:  # ClassSetError is a ValueError
        return "error: {}".format(exc)


if __name__ == "__main__":
    sys.exit(run_interruptible(_main_with_errors, lambda: "nothing is lost: run the command again (for a snapshot "
                                                          "directory, the scores of the snapshots done so far are "
                                                          "kept and not computed again)"))

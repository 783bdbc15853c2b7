"""Command lines of the training scripts: the flags both share.

The values that make a recipe (batch size, BN, optimizer, schedule, loss weights) default to
None here and are filled from ``--recipe`` (utils/training/recipes.py) unless given. Each script
adds its own method's flags (loss weights, its discriminators' files) and defaults.
"""
import argparse
import re

from dataset.classes import IGNORE_LABEL, ClassSetError
from model.deeplab_multi import BN_MODES
from dataset.nthu_dataset import NTHU_CITIES
from dataset.sources import CUSTOM, SOURCE_OF_PREFIX, SOURCES, TARGETS, scored_classes, snapshot_prefix
from utils.cli import size_argument
from utils.runtime import add_device_args
from utils.training.amp import AMP_MODES
from utils.training.optimizer import SGD_GROUPS
from utils.training.recipes import apply_recipe
from utils.files.download import add_arguments as add_download_arguments

DEFAULTS = dict(
    model="DeepLab", iter_size=1, num_workers=4, data_list=None, data_list_target=None, input_size_target="1024,512",
    set="train", num_steps_stop=150000, num_classes=None, ignore_label=IGNORE_LABEL,
    random_seed=1234, save_pred_every=5000, snapshot_dir="./snapshots/", restore_from=None,
)
# Flags a continued run must share with its snapshot for the continuation to be exact (the
# recipe's values among them).
RESUME_INVARIANTS = ("recipe", "source", "batch_size", "iter_size", "random_seed", "random_mirror", "num_steps",
                     "power", "learning_rate", "learning_rate_D", "end_learning_rate", "momentum", "weight_decay",
                     "sgd_groups", "bn", "input_size", "input_size_target", "set", "amp", "target", "city",
                     "classes")
RECIPE_DEFAULT = " (default: the recipe's)"


def _start_iter(text):
    if text == "latest":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'latest' or an iteration number, got {!r}".format(text))


def _seconds(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("expected a positive number of seconds, got {!r}".format(text))
    return value


def training_parser(description, defaults, recipes, default_recipe):
    """The flags every training script takes; ``defaults`` overrides DEFAULTS; ``recipes`` are the
    script's (utils/training/recipes.py), ``default_recipe`` the one used without --recipe."""
    d = dict(DEFAULTS, **defaults)
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--recipe", default=None, choices=list(recipes),
                   help="a complete, named configuration: {} (default {}); flags "
                        "given explicitly override its values (README: Which recipe)".format(
                            "; ".join("{}: {}".format(name, r.provenance) for name, r in recipes.items()),
                            default_recipe))
    p.add_argument("--model", default=d["model"], choices=["DeepLab", "DeeplabMulti"],
                   help="segmentation network (the multi-level DeepLab-v2 ResNet-101)")
    p.add_argument("--source", default="gta5", choices=sorted(SOURCES),
                   help="the labelled source domain; sets the default --input-size and the snapshots' names; "
                        "custom: your own (a list file or images/ and labels/ folders, with --classes)")
    p.add_argument("--target", default="cityscapes", choices=sorted(TARGETS),
                   help="the unlabelled target domain: cityscapes, nthu (one city of the NTHU dataset, --city), or "
                        "custom (your own images; labels, if any, for --val)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="with --source/--target custom: the class file (JSON or YAML: names, colours, label "
                        "values; README: Your own data)")
    p.add_argument("--name", default=CUSTOM,
                   help="with --source custom: the snapshots' name, <NAME>_<N>.pdparams (letters and digits)")
    p.add_argument("--city", default=None, choices=NTHU_CITIES, help="with --target nthu: the city adapted to")
    p.add_argument("--batch-size", type=int, default=None, help="images per domain per iteration" + RECIPE_DEFAULT)
    p.add_argument("--iter-size", type=int, default=d["iter_size"], help="gradient accumulation steps")
    p.add_argument("--num-workers", type=int, default=d["num_workers"], help="data loading processes per domain")
    p.add_argument("--data-dir", default=None,
                   help="source root (GTA5: images/ and labels/; SYNTHIA: RGB/ and GT/LABELS/); default ./data/GTA5 "
                        "or ./data/SYNTHIA")
    p.add_argument("--data-list", default=d["data_list"], help="source list file; default: every image")
    p.add_argument("--ignore-label", type=int, default=d["ignore_label"])
    p.add_argument("--input-size", type=size_argument, default=None,
                   help="source WIDTH,HEIGHT (default: GTA5 1280,720; SYNTHIA 1280,760)")
    p.add_argument("--data-dir-target", default=None,
                   help="Cityscapes root (leftImg8bit/; default ./data/Cityscapes), or with --target nthu the NTHU "
                        "root (<City>/Images/; default ./data/NTHU)")
    p.add_argument("--data-list-target", default=d["data_list_target"], help="Cityscapes list; default: every image")
    p.add_argument("--input-size-target", type=size_argument, default=d["input_size_target"],
                   help="target WIDTH,HEIGHT")
    p.add_argument("--set", default=d["set"],
                   help="target split: Cityscapes leftImg8bit/<set>; NTHU train (Images/Train) or test")
    p.add_argument("--learning-rate", type=float, default=None, help="the segmentation network's" + RECIPE_DEFAULT)
    p.add_argument("--learning-rate-D", type=float, default=None, help="the discriminators'" + RECIPE_DEFAULT)
    p.add_argument("--end-learning-rate", type=float, default=None,
                   help="where both poly schedules end: 0 in the reference, 1e-4 in the Paddle port (Paddle's "
                        "PolynomialDecay default)" + RECIPE_DEFAULT)
    p.add_argument("--momentum", type=float, default=None, help="SGD momentum" + RECIPE_DEFAULT)
    p.add_argument("--weight-decay", type=float, default=None, help="SGD weight decay" + RECIPE_DEFAULT)
    p.add_argument("--sgd-groups", default=None, choices=SGD_GROUPS,
                   help="original: the segmentation network's SGD as the authors' code ran it (most backbone "
                        "parameters listed 3-4 times, so about 3x the base learning rate; classifiers 10x); paper: "
                        "each once, classifiers 10x; single: each once at the base rate, as the Paddle port"
                        + RECIPE_DEFAULT)
    p.add_argument("--bn", default=None, choices=BN_MODES,
                   help="BatchNorm statistics of the segmentation network in training: frozen (the Paddle port) or "
                        "train (batch statistics, running statistics updated as PyTorch's model.train(), the "
                        "authors' code); affine parameters are never trained" + RECIPE_DEFAULT)
    p.add_argument("--num-classes", type=int, default=d["num_classes"],
                   help="classes the network predicts; default: those of the domains' class set")
    p.add_argument("--num-steps", type=int, default=None, help="length of the poly schedule" + RECIPE_DEFAULT)
    p.add_argument("--num-steps-stop", type=int, default=d["num_steps_stop"], help="stop after this many iterations")
    p.add_argument("--power", type=float, default=None, help="poly decay power" + RECIPE_DEFAULT)
    p.add_argument("--random-mirror", action="store_true", help="mirror image and label together at random")
    p.add_argument("--random-seed", type=int, default=d["random_seed"],
                   help="seeds initialisation, data order and every random draw of the run")
    p.add_argument("--restore-from", default=d["restore_from"],
                   help="initial segmentation weights (.pth or .pdparams), or http(s) URLs of them, comma-separated "
                        "(downloaded once; README: Weights from a URL)")
    p.add_argument("--from-scratch", action="store_true",
                   help="start the segmentation network from random weights (without --restore-from)")
    add_download_arguments(p)
    p.add_argument("--no-hash-check", action="store_true",
                   help="do not check a hash suffix in a weights file's name (-f81d91e8) against its SHA-256")
    p.add_argument("--save-pred-every", type=int, default=d["save_pred_every"], help="snapshot period (iterations)")
    p.add_argument("--snapshot-dir", "--checkpoint-dir", dest="snapshot_dir", default=d["snapshot_dir"],
                   help="where snapshots and logs go")
    p.add_argument("--continue-train", action="store_true",
                   help="resume the run in --snapshot-dir if it has a snapshot; otherwise start it from "
                        "--restore-from (the same command works in every session)")
    p.add_argument("--start-iter", type=_start_iter, default="latest",
                   help="with --continue-train: 'latest' or the iteration of the snapshot to resume; "
                        "without it: the iteration a new run starts at (to finish a PyTorch run)")
    p.add_argument("--keep-last", type=int, default=d.get("keep_last"), help="keep only the newest K snapshots")
    p.add_argument("--stop-after-minutes", type=float, default=None,
                   help="write a snapshot and stop cleanly after this long (before a notebook session ends); "
                        "continue later with --continue-train")
    p.add_argument("--fast-stop", action="store_true",
                   help="when a signal stops the run (Ctrl-C, SIGTERM, SIGUSR1), write its snapshot without the "
                        "--val validation (README: Stopping)")
    p.add_argument("--val", action="store_true",
                   help="evaluate on the target's val set at every snapshot and keep the best as <SOURCE>_best")
    p.add_argument("--val-list", default=None, help="with --val: a list of val images to use (default: all)")
    p.add_argument("--val-on-error", default="continue", choices=["continue", "stop"],
                   help="with --val: when a validation fails (out of memory, say), the snapshot is written all the "
                        "same and the failure logged; then the run continues, or stops (to continue later)")
    p.add_argument("--val-backend", default="auto", choices=["auto", "inference", "dygraph"],
                   help="with --val: run the network with Paddle Inference or the dynamic graph; auto: Paddle "
                        "Inference on a CPU (faster there), the dynamic graph on a GPU (no second memory pool)")
    p.add_argument("--check-data", action="store_true",
                   help="decode every image and label once before training (python -m dataset.check)")
    p.add_argument("--data-timeout", type=_seconds, default=600.0,
                   help="stop with a message when no batch arrives for this many seconds")
    p.add_argument("--amp", default="off", choices=AMP_MODES,
                   help="mixed precision on a GPU: fp16 (with a dynamic loss scale) or bf16 (Ampere and newer); "
                        "off (default) trains in float32, as the reference")
    p.add_argument("--cudnn-exhaustive-search", action="store_true",
                   help="on a GPU: let cuDNN time every convolution algorithm once per shape and keep the fastest "
                        "(the shapes never change, so it searches once); python -m bench.gpu_check measures both")
    p.add_argument("--log-every", type=int, default=10, help="iterations between logged losses")
    p.add_argument("--picture-every", type=int, default=1000,
                   help="iterations between logged target predictions (0: never)")
    add_device_args(p)
    return p


def check_arguments(parser, args, recipes, default_recipe):
    """Fill the recipe's values, then refuse contradictory or impossible settings before anything
    is loaded."""
    apply_recipe(args, recipes, default_recipe)
    source = SOURCES[args.source]
    if args.target == "nthu" and args.city is None:
        parser.error("--target nthu needs --city ({})".format(", ".join(NTHU_CITIES)))
    if args.target != "nthu" and args.city is not None:
        parser.error("--city {} is for --target nthu".format(args.city))
    if args.source == args.target != CUSTOM:
        parser.error("--source {0} --target {0}: one domain; cross-city adaptation is --source cityscapes "
                     "--target nthu --city NAME".format(args.source))
    if CUSTOM not in (args.source, args.target) and args.classes:
        parser.error("--classes describes a custom domain: give --source custom and/or --target custom")
    if not re.match(r"^[A-Za-z][A-Za-z0-9]*$", args.name):
        parser.error("--name {!r}: letters and digits only, starting with a letter".format(args.name))
    if args.source != CUSTOM and args.name != CUSTOM:
        parser.error("--name names a custom source's snapshots; a {} run's are {}_<N>".format(
            args.source, source.snapshot_prefix))
    if args.name != CUSTOM and args.name in SOURCE_OF_PREFIX:
        parser.error("--name {}: the snapshots of --source {} are named so; choose another name".format(
            args.name, SOURCE_OF_PREFIX[args.name]))
    try:
        args.class_set = scored_classes(args.source, args.target, args.classes)
    except (ClassSetError, OSError) as exc:
        parser.error(str(exc))
    try:
        args.class_set.check_num_classes(args.num_classes)
    except ClassSetError as exc:
        parser.error(str(exc))
    args.num_classes = args.class_set.num_classes
    args.snapshot_prefix = snapshot_prefix(args.source, args.name)
    for flag, domain, given in (("--data-dir", args.source, args.data_dir),
                                ("--data-dir-target", args.target, args.data_dir_target)):
        if domain == CUSTOM and not given:
            parser.error("{} custom needs {} (the root its list's paths are relative to, or that holds images/ "
                         "and labels/)".format("--source" if flag == "--data-dir" else "--target", flag))
    args.data_dir = args.data_dir or "./data/{}".format(source.snapshot_prefix)
    args.data_dir_target = args.data_dir_target or TARGETS[args.target].data_dir
    args.input_size, args.input_size_target = tuple(args.input_size or source.input_size), tuple(args.input_size_target)
    for flag, value in (("--batch-size", args.batch_size), ("--iter-size", args.iter_size),
                        ("--num-steps", args.num_steps), ("--num-steps-stop", args.num_steps_stop),
                        ("--save-pred-every", args.save_pred_every), ("--log-every", args.log_every)):
        if value < 1:
            parser.error("{} must be at least 1, got {}".format(flag, value))
    if args.num_steps_stop > args.num_steps:
        parser.error("--num-steps-stop {} is past the end of the schedule --num-steps {}".format(
            args.num_steps_stop, args.num_steps))
    if args.stop_after_minutes is not None and args.stop_after_minutes <= 0:
        parser.error("--stop-after-minutes must be positive")
    if args.keep_last is not None and args.keep_last < 1:
        parser.error("--keep-last must be at least 1")
    if not args.continue_train and args.restore_from is None and not args.from_scratch:
        parser.error("--restore-from is required to start a run (a .pth works as it is). To train from "
                     "random weights, say --from-scratch; to resume, --continue-train")
    if args.from_scratch and args.restore_from:
        parser.error("--from-scratch and --restore-from contradict each other: choose one")
    if args.num_workers < 0:
        parser.error("--num-workers must be 0 or more")
    if args.val_list and not args.val:
        parser.error("--val-list needs --val")
    return args

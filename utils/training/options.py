"""Command lines of the training scripts: what every method shares.

``SHARED_PARAMS`` are the hyper-parameters of every method (data, schedule, optimizer; see
params.py); the other flags say how and where a run goes (workers, snapshots, logging, device) and
do not change what it computes. ``training_parser`` adds a method's own hyper-parameters
(``Method.params``); ``resolve`` fills the recipe's values and refuses contradictory settings.
"""
import argparse
import re

from dataset.classes import IGNORE_LABEL, ClassSetError
from model.deeplab_multi import BN_MODES
from dataset.nthu_dataset import NTHU_CITIES
from dataset.sources import CUSTOM, SOURCE_OF_PREFIX, SOURCES, TARGETS, scored_classes, snapshot_prefix
from utils.cli import given_value, size_argument
from utils.runtime import add_device_args
from utils.training.amp import AMP_MODES
from utils.training.optimizer import SGD_GROUPS
from utils.training.params import Param, Settings, add_params, apply_recipe
from utils.files.download import add_arguments as add_download_arguments

RUN_DEFAULTS = dict(num_steps_stop=150000, save_pred_every=5000, keep_last=None, model="DeepLab")


def _by_recipe(paddle_port, authors, paper):
    return {"paddle-port": paddle_port, "authors": authors, "paper": paper}


SHARED_PARAMS = [
    Param("source", "gta5", "the labelled source domain; sets the default --input-size and the snapshots' names; "
          "custom: your own (a list file or images/ and labels/ folders, with --classes)", earlier="gta5",
          choices=sorted(SOURCES)),
    Param("target", "cityscapes", "the unlabelled target domain: cityscapes, nthu (one city of the NTHU dataset, "
          "--city), or custom (your own images; labels, if any, for --val)", earlier="cityscapes",
          choices=sorted(TARGETS)),
    Param("city", None, "with --target nthu: the city adapted to", earlier=None, choices=NTHU_CITIES),
    Param("input_size", None, "source WIDTH,HEIGHT (default: GTA5 1280,720; SYNTHIA 1280,760)", type=size_argument),
    Param("input_size_target", "1024,512", "target WIDTH,HEIGHT", type=size_argument),
    Param("set", "train", "target split: Cityscapes leftImg8bit/<set>; NTHU train (Images/Train) or test"),
    Param("random_mirror", False, "mirror image and label together at random", action="store_true"),
    Param("random_seed", 1234, "seeds initialisation, data order and every random draw of the run", type=int),
    Param("iter_size", 1, "gradient accumulation steps", type=int),
    Param("amp", "off", "mixed precision on a GPU: fp16 (with a dynamic loss scale) or bf16 (Ampere and newer); off "
          "trains in float32, as the reference", earlier="off", choices=AMP_MODES),
    # What the recipes set (params.py), in the order of the log's recipe line.
    Param("batch_size", _by_recipe(2, 1, 1), "images per domain per iteration", type=int),
    Param("bn", _by_recipe("frozen", "train", "train"),
          "BatchNorm statistics of the segmentation network in training: frozen (the Paddle port) or train (batch "
          "statistics, running statistics updated as PyTorch's model.train(), the authors' code); affine "
          "parameters are never trained", earlier="frozen", choices=BN_MODES),
    Param("sgd_groups", _by_recipe("single", "original", "paper"),
          "original: the segmentation network's SGD as the authors' code ran it (most backbone parameters listed "
          "3-4 times, so about 3x the base learning rate; classifiers 10x); paper: each once, classifiers 10x; "
          "single: each once at the base rate, as the Paddle port", earlier="paper", choices=SGD_GROUPS),
    Param("learning_rate", _by_recipe(2.5e-4, 2.5e-4, 2.5e-4), "the segmentation network's", type=float),
    Param("learning_rate_D", _by_recipe(1e-4, 1e-4, 1e-4), "the discriminators'", type=float),
    Param("end_learning_rate", _by_recipe(1e-4, 0.0, 0.0), "where both poly schedules end: 0 in the reference, 1e-4 in "
          "the Paddle port (Paddle's PolynomialDecay default)", earlier=0.0, type=float),
    Param("power", _by_recipe(0.9, 0.9, 0.9), "poly decay power", type=float),
    Param("num_steps", _by_recipe(250000, 250000, 250000), "length of the poly schedule", type=int),
    Param("momentum", _by_recipe(0.9, 0.9, 0.9), "SGD momentum", type=float),
    Param("weight_decay", _by_recipe(5e-4, 5e-4, 5e-4), "SGD weight decay", type=float),
]


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


def training_parser(method, prog=None):
    """The flags of ``method`` (a utils/training/method.py ``Method`` class): its hyper-parameters and
    the shared ones, then how the run goes (its ``run_defaults`` override RUN_DEFAULTS)."""
    d = dict(RUN_DEFAULTS, **method.run_defaults)
    p = argparse.ArgumentParser(prog=prog, description=method.description)
    add_params(p, SHARED_PARAMS + list(method.params), method.recipes, method.default_recipe)
    if method.read_config is not None:
        p.add_argument("--cfg", default=None, metavar="FILE",
                       help="the reference code's YAML config: its keys set the flags they name, and flags given "
                            "here override them")
    p.add_argument("--model", default=d["model"],
                   choices=["DeepLab", "DeeplabMulti", "DeeplabMulti4"],
                   help="segmentation network, the multi-level DeepLab-v2 ResNet-101: DeepLab or DeeplabMulti sums two "
                        "branches of each classifier (AdaptSegNet's), DeeplabMulti4 all four (ADVENT's); default "
                        "%(default)s")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="with --source/--target custom: the class file (JSON or YAML: names, colours, label "
                        "values; README: Your own data)")
    p.add_argument("--name", default=CUSTOM,
                   help="with --source custom: the snapshots' name, <NAME>_<N>.pdparams (letters and digits)")
    p.add_argument("--num-workers", type=int, default=4, help="data loading processes per domain")
    p.add_argument("--data-dir", default=None,
                   help="source root (GTA5: images/ and labels/; SYNTHIA: RGB/ and GT/LABELS/); default ./data/GTA5 "
                        "or ./data/SYNTHIA")
    p.add_argument("--data-list", default=None, help="source list file; default: every image")
    p.add_argument("--ignore-label", type=int, default=IGNORE_LABEL)
    p.add_argument("--data-dir-target", default=None,
                   help="Cityscapes root (leftImg8bit/; default ./data/Cityscapes), or with --target nthu the NTHU "
                        "root (<City>/Images/; default ./data/NTHU)")
    p.add_argument("--data-list-target", default=None, help="Cityscapes list; default: every image")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes the network predicts; default: those of the domains' class set")
    p.add_argument("--num-steps-stop", type=int, default=d["num_steps_stop"], help="stop after this many iterations")
    p.add_argument("--restore-from", default=None,
                   help="initial segmentation weights (.pth or .pdparams), or http(s) URLs of them, comma-separated "
                        "(downloaded once; README: Weights from a URL)")
    for part, what in method.part_weights.items():
        p.add_argument("--restore-from-" + part, default=None,
                       help="initial weights of {} (.pth or .pdparams)".format(what))
    p.add_argument("--from-scratch", action="store_true",
                   help="start the segmentation network from random weights (without --restore-from)")
    add_download_arguments(p)
    p.add_argument("--no-hash-check", action="store_true",
                   help="do not check a hash suffix in a weights file's name (-f81d91e8) against its SHA-256")
    p.add_argument("--save-pred-every", type=int, default=d["save_pred_every"], help="snapshot period (iterations)")
    p.add_argument("--snapshot-dir", "--checkpoint-dir", dest="snapshot_dir", default="./snapshots/",
                   help="where snapshots and logs go")
    p.add_argument("--continue-train", action="store_true",
                   help="resume the run in --snapshot-dir if it has a snapshot; otherwise start it from "
                        "--restore-from (the same command works in every session)")
    p.add_argument("--start-iter", type=_start_iter, default="latest",
                   help="with --continue-train: 'latest' or the iteration of the snapshot to resume; "
                        "without it: the iteration a new run starts at (to finish a PyTorch run)")
    p.add_argument("--keep-last", type=int, default=d["keep_last"], help="keep only the newest K snapshots")
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
    p.add_argument("--cudnn-exhaustive-search", action="store_true",
                   help="on a GPU: let cuDNN time every convolution algorithm once per shape and keep the fastest "
                        "(the shapes never change, so it searches once); python -m bench.gpu_check measures both")
    p.add_argument("--log-every", type=int, default=10, help="iterations between logged losses")
    p.add_argument("--picture-every", type=int, default=1000,
                   help="iterations between logged target predictions (0: never)")
    add_device_args(p)
    method.add_legacy_flags(p)
    return p


def parse_settings(method, argv=None, prog=None):
    """The settings of a ``method`` run from its command line: parsed, the recipe's values filled,
    contradictions refused before anything is loaded (frozen by the session: run_training)."""
    parser = training_parser(method, prog)
    if method.read_config is not None:
        config = given_value(argv, "--cfg")
        if config:
            try:
                parser.set_defaults(**method.read_config(config))
            except ValueError as error:
                parser.error(str(error))
    args = parser.parse_args(argv, namespace=Settings())
    apply_recipe(args, SHARED_PARAMS + list(method.params), method.recipes, method.default_recipe)
    for problem in method.check_flags(args):
        parser.error(problem)
    return check_arguments(parser, args)


def check_arguments(parser, args):
    """Refuse contradictory or impossible settings; derive the class set, the snapshots' name and
    the default paths and sizes."""
    source = SOURCES[args.source]
    if args.target == "nthu" and args.city is None:
        parser.error("--target nthu needs --city ({})".format(", ".join(NTHU_CITIES)))
    if args.target != "nthu" and args.city is not None:
        parser.error("--city {} is for --target nthu".format(args.city))
    if args.source == args.target != CUSTOM and not getattr(args, "source_only", False):  # the oracle: source only
        parser.error("--source {0} --target {0}: one domain (add --source-only for the oracle trained on its "
                     "labels); cross-city adaptation is --source cityscapes --target nthu --city NAME".format(
                         args.source))
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

"""Command line of train_gta2cityscapes_multi.py: the original's flags and the documented schedule."""
import argparse

from dataset.classes import IGNORE_LABEL, NUM_CLASSES
from utils.cli import size_argument
from utils.loss import GAN_KINDS
from utils.runtime import add_device_args

# The documented schedule of the paper's code; batch size 2 where the original used 1.
DEFAULTS = dict(
    model="DeepLab", batch_size=2, iter_size=1, num_workers=4,
    data_dir="./data/GTA5", data_list=None, input_size="1280,720",
    data_dir_target="./data/Cityscapes", data_list_target=None, input_size_target="1024,512",
    set="train", learning_rate=2.5e-4, learning_rate_D=1e-4, momentum=0.9, weight_decay=5e-4,
    power=0.9, num_steps=250000, num_steps_stop=150000, lambda_seg=0.1, lambda_adv_target1=2e-4,
    lambda_adv_target2=1e-3, gan="Vanilla", num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL,
    random_seed=1234, save_pred_every=5000, snapshot_dir="./snapshots/", restore_from=None,
)


def _start_iter(text):
    if text == "latest":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'latest' or an iteration number, got {!r}".format(text))


def training_parser():
    d = DEFAULTS
    p = argparse.ArgumentParser(description="AdaptSegNet multi-level training, GTA5 -> Cityscapes.")
    p.add_argument("--model", default=d["model"], choices=["DeepLab", "DeeplabMulti"],
                   help="segmentation network (the multi-level DeepLab-v2 ResNet-101)")
    p.add_argument("--target", default="cityscapes", choices=["cityscapes"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="images per domain per iteration")
    p.add_argument("--iter-size", type=int, default=d["iter_size"], help="gradient accumulation steps")
    p.add_argument("--num-workers", type=int, default=d["num_workers"], help="data loading processes per domain")
    p.add_argument("--data-dir", default=d["data_dir"], help="GTA5 root (images/, labels/)")
    p.add_argument("--data-list", default=d["data_list"], help="GTA5 list file; default: every image")
    p.add_argument("--ignore-label", type=int, default=d["ignore_label"])
    p.add_argument("--input-size", type=size_argument, default=d["input_size"], help="source WIDTH,HEIGHT")
    p.add_argument("--data-dir-target", default=d["data_dir_target"], help="Cityscapes root (leftImg8bit/)")
    p.add_argument("--data-list-target", default=d["data_list_target"], help="Cityscapes list; default: every image")
    p.add_argument("--input-size-target", type=size_argument, default=d["input_size_target"], help="target WIDTH,HEIGHT")
    p.add_argument("--set", default=d["set"], help="Cityscapes split used as the target domain")
    p.add_argument("--is-training", action="store_true", help="accepted for compatibility; no effect")
    p.add_argument("--learning-rate", type=float, default=d["learning_rate"])
    p.add_argument("--learning-rate-D", type=float, default=d["learning_rate_D"])
    p.add_argument("--lambda-seg", type=float, default=d["lambda_seg"], help="weight of the conv4 head's seg loss")
    p.add_argument("--lambda-adv-target1", type=float, default=d["lambda_adv_target1"])
    p.add_argument("--lambda-adv-target2", type=float, default=d["lambda_adv_target2"])
    p.add_argument("--momentum", type=float, default=d["momentum"])
    p.add_argument("--not-restore-last", action="store_true", help="accepted for compatibility; no effect")
    p.add_argument("--num-classes", type=int, default=d["num_classes"])
    p.add_argument("--num-steps", type=int, default=d["num_steps"], help="length of the poly schedule")
    p.add_argument("--num-steps-stop", type=int, default=d["num_steps_stop"], help="stop after this many iterations")
    p.add_argument("--power", type=float, default=d["power"], help="poly decay power")
    p.add_argument("--random-mirror", action="store_true", help="mirror image and label together at random")
    p.add_argument("--random-scale", action="store_true", help="not supported: the original never rescaled")
    p.add_argument("--random-seed", type=int, default=d["random_seed"], help="seeds initialisation and data order")
    p.add_argument("--restore-from", default=d["restore_from"],
                   help="initial segmentation weights: the ImageNet/COCO init .pth ('Scale.' keys) or any "
                        ".pth/.pdparams state dict")
    p.add_argument("--from-scratch", action="store_true",
                   help="start the segmentation network from random weights (without --restore-from)")
    p.add_argument("--restore-from-D1", default=None,
                   help="initial weights of the conv4-head discriminator (.pth or .pdparams)")
    p.add_argument("--restore-from-D2", default=None,
                   help="initial weights of the conv5-head discriminator (.pth or .pdparams)")
    p.add_argument("--save-num-images", type=int, default=2, help="accepted for compatibility; no effect")
    p.add_argument("--save-pred-every", type=int, default=d["save_pred_every"], help="snapshot period (iterations)")
    p.add_argument("--snapshot-dir", "--checkpoint-dir", dest="snapshot_dir", default=d["snapshot_dir"],
                   help="where snapshots and logs go")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--gan", default=d["gan"], choices=GAN_KINDS, help="Vanilla: BCE; LS: least squares")
    p.add_argument("--continue-train", action="store_true", help="resume a run from its snapshot in --snapshot-dir")
    p.add_argument("--start-iter", type=_start_iter, default="latest",
                   help="with --continue-train: 'latest' or the iteration of the snapshot to resume; "
                        "without it: the iteration a new run starts at (to finish a PyTorch run)")
    p.add_argument("--keep-last", type=int, default=None, help="keep only the newest K snapshots")
    p.add_argument("--stop-after-minutes", type=float, default=None,
                   help="write a snapshot and stop cleanly after this long (before a notebook session ends); "
                        "continue later with --continue-train")
    p.add_argument("--log-every", type=int, default=10, help="iterations between logged losses")
    p.add_argument("--picture-every", type=int, default=1000,
                   help="iterations between logged target predictions (0: never)")
    add_device_args(p)
    return p


def get_arguments(argv=None):
    parser = training_parser()
    args = parser.parse_args(argv)
    args.input_size, args.input_size_target = tuple(args.input_size), tuple(args.input_size_target)
    for flag, value in (("--batch-size", args.batch_size), ("--iter-size", args.iter_size),
                        ("--num-steps", args.num_steps), ("--num-steps-stop", args.num_steps_stop),
                        ("--save-pred-every", args.save_pred_every), ("--log-every", args.log_every)):
        if value < 1:
            parser.error("{} must be at least 1, got {}".format(flag, value))
    if args.num_steps_stop > args.num_steps:
        parser.error("--num-steps-stop {} is past the end of the schedule --num-steps {}".format(
            args.num_steps_stop, args.num_steps))
    if args.random_scale:
        parser.error("--random-scale is not supported: the original accepted it but never rescaled")
    if args.stop_after_minutes is not None and args.stop_after_minutes <= 0:
        parser.error("--stop-after-minutes must be positive")
    if args.keep_last is not None and args.keep_last < 1:
        parser.error("--keep-last must be at least 1")
    if not args.continue_train and args.restore_from is None and not args.from_scratch:
        parser.error("--restore-from is required to start a run: the paper starts from "
                     "DeepLab_resnet_pretrained_init-f81d91e8.pth (a .pth works as it is). To train from random "
                     "weights, say --from-scratch; to resume, --continue-train")
    if args.from_scratch and args.restore_from:
        parser.error("--from-scratch and --restore-from contradict each other: choose one")
    if args.continue_train and (args.restore_from or args.restore_from_D1 or args.restore_from_D2):
        parser.error("--continue-train resumes the snapshot's weights; --restore-from* would be ignored. "
                     "Drop them, or start a new run without --continue-train")
    if args.num_workers < 0:
        parser.error("--num-workers must be 0 or more")
    return args

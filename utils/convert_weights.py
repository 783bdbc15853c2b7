"""Convert the authors' PyTorch weights to `.pdparams`, without PyTorch installed.

    python -m utils.convert_weights DeepLab_resnet_pretrained_init-f81d91e8.pth init.pdparams --model DeeplabMulti
    python -m utils.convert_weights GTA2Cityscapes_multi-ed35151c.pth GTA2Cityscapes_multi.pdparams --model DeeplabMulti

Both PyTorch file formats (pre-1.6 legacy and zip) are read; the result is checked key by key
against the model before anything is written. A name with a hash suffix in torch.hub's style
(-f81d91e8) is first checked against the file's SHA-256 (--no-hash-check skips that).
"""
import argparse
import sys

from model import build_model
from model.deeplab_multi import ResNetMulti
from utils.files.checkpoint import atomic_save
from utils.files.weights import CLASSIFIER_PREFIXES, WeightsError, read_weights
from utils.stopping import run_interruptible
from utils.files.download import add_arguments as add_download_arguments, restore_checks, weights_file


def convert(src, dst, model_name="DeeplabMulti", num_classes=19, check_hash=True):
    """Convert ``src`` (.pth) into ``dst`` (.pdparams) for the named model; returns the LoadReport.

    The init file holds only a backbone: its converted file leaves the classifiers out, and
    training starts them fresh as the reference does. ``check_hash=False`` skips the check of
    ``src``'s hash suffix.
    """
    model = build_model(model_name, num_classes=num_classes)
    report = read_weights(src, model, allow_fresh=CLASSIFIER_PREFIXES if isinstance(model, ResNetMulti) else (),
                          check_hash=check_hash)
    if report.fresh and report.kind != "init":
        raise WeightsError("{} has no classifier weights ({}); only the ImageNet/COCO init file "
                           "('Scale.' keys) may lack them".format(src, ", ".join(report.fresh)))
    atomic_save(report.params, dst)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch weights (.pth)")
    parser.add_argument("dst", help="where to write the Paddle weights (.pdparams)")
    parser.add_argument("--model", default="DeeplabMulti",
                        choices=["DeeplabMulti", "DeepLab", "DeeplabMulti4", "DeeplabVGG", "FCDiscriminator", "CWDiscriminator"])
    parser.add_argument("--num-classes", type=int, default=19)
    add_download_arguments(parser)
    parser.add_argument("--no-hash-check", action="store_true",
                        help="do not check a name's hash suffix (-f81d91e8) against the file's SHA-256: for a "
                             "file renamed on purpose")
    args = parser.parse_args(argv)
    if not args.dst.endswith(".pdparams"):
        parser.error("dst must end with .pdparams: {}".format(args.dst))
    try:
        report = convert(weights_file(args.src, **restore_checks(args)), args.dst, args.model, args.num_classes,
                         check_hash=not args.no_hash_check)
    except WeightsError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 1
    print(report.summary())
    print("wrote {}".format(args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(run_interruptible(main, lambda: "the output is written whole or not at all; run the command "
                                                  "again"))

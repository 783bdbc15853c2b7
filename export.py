"""Export a trained segmentation model for deployment: Paddle Inference (Python, C++, Serving),
PaddleSeg's deploy tools and, with --onnx, ONNX Runtime.

    python export.py --restore-from GTA2Cityscapes_multi-ed35151c.pth --input-shape 1024,512
    python export.py --restore-from snapshots/GTA2Cityscapes_multi --output-op softmax --onnx
    python predict.py --restore-from output/inference_model --images photos/

--save-dir (default output/inference_model) receives the static graph (model.json with Paddle 3,
model.pdmodel with Paddle 2.6) and model.pdiparams, deploy.yaml in PaddleSeg's format (its
transforms are this project's preprocessing), class_set.json and, with --onnx, model.onnx. It is
written under a hidden name and renamed when complete, replacing an earlier export there.

By default the exported graph predicts what evaluation scored, on an image of any size: it resizes
the image to --input-size (evaluation's, 1024,512) as evaluation does, runs the network and brings
the result back to the image's size (README: Export for deployment). Other kinds: --input-shape
WIDTH,HEIGHT or N,3,H,W, a fixed input the image is resized to before the graph; --any-size, the
network sees each image at its own resolution. --output-op: argmax (int32 train ids), softmax
(probabilities) or none (the network's low-resolution logits).

Exit status: 0 exported; 2 nothing exported: a path, flag or file at fault.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import argparse
import os
import sys

from dataset.classes import model_classes
from model import MODEL_HELP, SEGMENTATION_MODELS, build_model
from model.export import OUTPUT_OPS, check_save_dir, export_model, onnx_converter
from model.restore import resolve_restore
from utils.cli import size_argument
from utils.files.weights import load_weights
from utils.runtime import add_device_args, select_device
from utils.stopping import run_interruptible
from utils.files.download import add_arguments as add_download_arguments, restore_checks, weights_file

EXIT_REFUSED = 2


def input_shape_argument(text):
    """'WIDTH,HEIGHT' -> [-1, 3, HEIGHT, WIDTH]; 'N,3,H,W' -> [N, 3, H, W] (N -1: any batch size)."""
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 2:
        values = [-1, 3, values[1], values[0]]
    if len(values) != 4 or values[1] != 3 or min(values[2:]) <= 0 or values[0] == 0 or values[0] < -1:
        raise argparse.ArgumentTypeError("expected WIDTH,HEIGHT such as 1024,512 or N,3,HEIGHT,WIDTH such as "
                                         "1,3,512,1024 (N -1: any batch size), got {!r}".format(text))
    return values


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restore-from", required=True,
                        help=".pdparams or PyTorch .pth weights (or their http(s) URL), or a run's snapshot "
                             "directory (its best snapshot, else its newest complete one)")
    parser.add_argument("--model", default="DeeplabMulti", choices=SEGMENTATION_MODELS, help=MODEL_HELP)
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="the class file of a model of your own classes (README: Your own data); default: the "
                             "class set recorded beside the weights, else the 19 Cityscapes classes")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the class set's")
    parser.add_argument("--save-dir", default="output/inference_model",
                        help="the export folder (default output/inference_model); an earlier export there is replaced")
    parser.add_argument("--input-size", type=size_argument, default=(1024, 512), metavar="W,H",
                        help="what the graph resizes each image to before the network, as evaluation does (default "
                             "1024,512, evaluation's)")
    parser.add_argument("--input-shape", type=input_shape_argument, default=None, metavar="W,H or N,3,H,W",
                        help="instead: a fixed graph input, the image resized to it before the graph (deploy.yaml's "
                             "Resize); argmax ids come back to the image's size by nearest resizing")
    parser.add_argument("--any-size", action="store_true",
                        help="instead: no resize; the network sees each image at its own resolution")
    parser.add_argument("--output-op", choices=OUTPUT_OPS, default="argmax",
                        help="argmax: int32 train ids at the input's size (default); softmax: probabilities at the "
                             "input's size; none: the network's low-resolution logits")
    parser.add_argument("--onnx", action="store_true",
                        help="also model.onnx for ONNX Runtime (needs paddle2onnx: pip install -r "
                             "requirements-deploy.txt)")
    add_download_arguments(parser)
    parser.add_argument("--no-hash-check", action="store_true",
                        help="do not check a hash suffix in --restore-from's name (-ed35151c) against its SHA-256")
    add_device_args(parser)
    args = parser.parse_args(argv)
    if args.any_size and args.input_shape:
        parser.error("--any-size and --input-shape are two kinds of export: choose one")
    return args


def main(argv=None):
    args = get_arguments(argv)
    try:
        if args.onnx:
            onnx_converter()  # a missing converter is named before the long part
        check_save_dir(args.save_dir)
        restored = resolve_restore(weights_file(args.restore_from, **restore_checks(args)))
        if restored.kind == "export":
            raise ValueError("--restore-from {}: already an exported model; export from its weights (.pth, "
                             ".pdparams or a snapshot directory)".format(args.restore_from))
        print(restored.note)
        classes = model_classes(restored.classes, args.classes, args.num_classes, restored.path)
        select_device(args)
        model = build_model(args.model, num_classes=classes.num_classes)
        print(load_weights(model, restored.path, check_hash=not args.no_hash_check).summary())
        resize_to = None if args.any_size or args.input_shape else args.input_size
        files = export_model(model, args.save_dir, classes, args.output_op, args.input_shape, args.onnx, resize_to)
    except (ValueError, FileNotFoundError) as error:  # ExportError, ClassSetError and WeightsError are ValueErrors
        print("error: {}".format(error), file=sys.stderr)
        return EXIT_REFUSED
    shape = args.input_shape
    kind = "{}x{} (WxH), resized before the graph".format(shape[3], shape[2]) if shape else \
        "any size, not resized" if args.any_size else \
        "any size, resized to {}x{} inside the graph as evaluation does".format(*resize_to)
    print("class set {} ({} classes); input {}; output {}".format(classes.name, classes.num_classes, kind,
                                                                  args.output_op))
    print("exported to {}: {}".format(os.path.abspath(args.save_dir), ", ".join(files)))
    print("predict with it: python predict.py --restore-from {} --images PATH{}".format(
        args.save_dir, " [--backend onnx]" if args.onnx else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_interruptible(main, lambda: "nothing was exported (an export appears whole or not at all); "
                                                  "run the command again"))

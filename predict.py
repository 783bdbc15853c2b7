"""Run a trained model on your own images and write PaddleSeg-style predictions.

    python predict.py --restore-from GTA2Cityscapes_multi-ed35151c.pth --images photos/
    python predict.py --restore-from snapshots/GTA2Cityscapes_multi --images street.jpg --confidence --entropy
    python predict.py --restore-from GTA5_best.pdparams --images test.txt --label-ids --save output/submission
    python predict.py --restore-from output/inference_model --images photos/ --backend onnx   # export.py --onnx
    python predict.py --restore-from advent.pdparams minent.pdparams --model DeeplabMulti4 --images photos/   # an ensemble

--images takes image files, folders (searched recursively: png, jpg, jpeg, bmp, webp, tif, any
letter case) and list files (.txt, one image a line, relative to the list's folder). Images of any
size are resized to --input-size for the network and predicted at their own size. For an input
<name> (its path relative to its folder or list, without the extension) --save receives
<name>.png (train ids), pseudo_color_prediction/<name>.png (class colours),
added_prediction/<name>.jpg (the image blended with them) and, when asked, label_ids/,
confidence/ and entropy/. Run it again after a stop: images with all their outputs are skipped
(--overwrite predicts them again).

Exit status: 0 every image predicted; 1 some images could not be read (named, skipped, listed at
the end; --strict stops at the first); 2 nothing predicted: a path, flag or file at fault.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import argparse
import sys

from model import MODEL_HELP, SEGMENTATION_MODELS
from model.restore import resolve_restore
from utils.cli import add_model_weights_argument, size_argument
from utils.prediction import PredictionError
from utils.prediction.inputs import check_save_folder, find_images
from utils.prediction.outputs import DEFAULT_ALPHA, Outputs
from utils.prediction.pipeline import describe_summary, predict_images
from utils.prediction.predictor import BACKENDS, choose_classes, describe_size, load_segmenter
from utils.runtime import add_device_args, select_device
from utils.stopping import run_interruptible
from utils.files.download import add_arguments as add_download_arguments, restore_checks, weights_file

EXIT_UNREADABLE, EXIT_REFUSED = 1, 2


def get_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restore-from", required=True, nargs="+", metavar="WEIGHTS",
                        help=".pdparams or PyTorch .pth weights (or their http(s) URL), a run's snapshot directory "
                             "(its best snapshot, else its newest complete one) or an exported model's directory; "
                             "several weights: their ensemble (the weighted sum of their logits, as "
                             "evaluate_cityscapes.py's)")
    add_model_weights_argument(parser)
    parser.add_argument("--images", required=True, nargs="+", metavar="PATH",
                        help="image files, folders of images and .txt lists of images")
    parser.add_argument("--save", default="./output/predict", help="where the outputs go (default ./output/predict)")
    parser.add_argument("--model", default="DeeplabMulti", choices=SEGMENTATION_MODELS, help=MODEL_HELP)
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="the class file of a model of your own classes (README: Your own data); default: "
                             "the record beside the model, else the 19 Cityscapes classes")
    parser.add_argument("--num-classes", type=int, default=None, help="default: the class set's")
    parser.add_argument("--input-size", type=size_argument, default=None,
                        help="WIDTH,HEIGHT images are resized to for the network (default 1024,512 as evaluation; "
                             "an exported model has its own)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                        help="the image's weight in added_prediction/, the colours' is 1 - alpha (default {}, as "
                             "PaddleSeg)".format(DEFAULT_ALPHA))
    parser.add_argument("--label-ids", action="store_true",
                        help="also label_ids/<name>.png: the class set's label values (Cityscapes: its label ids, "
                             "the benchmark server's format)")
    parser.add_argument("--confidence", action="store_true",
                        help="also confidence/<name>.png: the largest softmax probability, 0..1 as 0..255")
    parser.add_argument("--entropy", action="store_true",
                        help="also entropy/<name>.png: the softmax's entropy over log(classes), 0..1 as 0..255")
    parser.add_argument("--overwrite", action="store_true",
                        help="predict every image again (default: skip those whose outputs are all there)")
    parser.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="threads decoding images ahead of the network, and as many writing behind it")
    parser.add_argument("--backend", choices=BACKENDS, default="inference",
                        help="inference: Paddle Inference (fastest); dygraph: dynamic graph; onnx: an exported "
                             "model run by ONNX Runtime")
    add_download_arguments(parser)
    parser.add_argument("--no-hash-check", action="store_true",
                        help="do not check a hash suffix in --restore-from's name (-ed35151c) against its SHA-256")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_args(parser)
    args = parser.parse_args(argv)
    if args.num_workers < 0:
        parser.error("--num-workers must be 0 or more")
    return args


def _refuse(error):
    for line in str(error).splitlines():
        print("error: {}".format(line), file=sys.stderr)
    return EXIT_REFUSED


def _inputs(specs, save_dir):
    """The InputImages of --images; a PredictionError with a line for every problem of --images and --save."""
    problems, images = [], []
    for check in (lambda: images.extend(find_images(specs)), lambda: check_save_folder(save_dir, specs)):
        try:
            check()
        except PredictionError as error:
            problems.append(str(error))
    if problems:
        raise PredictionError("\n".join(problems))
    return images


def main(argv=None):
    args = get_arguments(argv)
    try:
        images = _inputs(args.images, args.save)
        restored, *ensemble = [resolve_restore(weights_file(path, **restore_checks(args)))
                               for path in args.restore_from]
        for member in [restored] + ensemble:
            print(member.note)
        classes = choose_classes(restored.classes, args.classes, args.num_classes, restored.path)
        outputs = Outputs(args.save, classes, args.label_ids, args.confidence, args.entropy, args.alpha)
        if outputs.label_note:
            print(outputs.label_note)
        outputs.check_names(images)
        settings = outputs.settings(restored, args.model, args.input_size, ensemble, args.model_weights)
        outputs.check_settings(settings, args.overwrite)
        use_gpu, gpu_id = select_device(args)
        segmenter = load_segmenter(restored, classes, args.model, args.input_size, args.backend, use_gpu, gpu_id,
                                   check_hash=not args.no_hash_check, confidence=args.confidence,
                                   entropy=args.entropy, ensemble=ensemble, model_weights=args.model_weights)
    except (ValueError, FileNotFoundError) as error:  # PredictionError, ClassSetError and WeightsError are ValueErrors
        return _refuse(error)
    print("{} images; class set {} ({} classes); network input {}".format(
        len(images), classes.name, classes.num_classes, describe_size(segmenter.input_size)))
    outputs.begin(settings)
    summary = predict_images(segmenter, images, outputs, args.overwrite, args.strict, args.num_workers,
                             progress=not args.no_progress)
    for line in describe_summary(summary, args.save):
        print(line)
    return 0 if summary.ok else EXIT_UNREADABLE


if __name__ == "__main__":
    sys.exit(run_interruptible(main, lambda: "the outputs written so far are complete; the same command "
                                                  "skips them and goes on with the rest"))

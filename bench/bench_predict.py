"""predict.py's throughput on a folder of Cityscapes-sized images, per backend, and how much of it
the network is.

    python -m bench.bench_predict [--images 6] [--workers 2] [--threads 2] [--width 2048 --height 1024]
                                  [--input-size 1024,512] [--export DIR]
                                  [--agreement-images 2 | --no-agreement]     (from the repository root)

One process, DeeplabMulti with random weights (paddle.seed(0): the same on every run), float32, on
generated street scenes saved as PNG. Prints the GEMM limit of the network as bench_eval does,
the cost of each stage of one image run alone (decode, resize, network, upsample + argmax, encode
+ write of the three default outputs), then images/s of utils.prediction.pipeline.predict_images over the
folder for the dynamic graph and Paddle Inference (with --workers threads reading ahead and
writing behind, and with none), and the share of the wall time spent outside the network. The
export rows run the network as export.py exports it by default (each image resized to
--input-size inside the graph, the network, the logits upsampled to the image's size, argmax; all
of it counts as the export's network) with Paddle Inference and, when onnxruntime and paddle2onnx
are installed (requirements-deploy.txt), ONNX Runtime; without them a line says it is skipped.

Then how far each kind of export agrees with evaluation: the benchmark's network exported by
model.export.export_model as export.py's default, at a fixed --input-size (argmax, softmax, none)
and at any size without a resize; on the first --agreement-images images (default 2) the share of
pixels whose train ids from ExportedModel(...).predict equal those of the weights as evaluation
predicts them (utils.prediction.predictor.WeightsSegmenter, Paddle Inference: resize to
--input-size, network, bilinear upsampling of the logits with align_corners=True to the image's
size, argmax), with Paddle Inference and with ONNX Runtime (skipped without it). A fixed-size
argmax export can only bring its train ids back to the image's size by nearest resizing; an
export without a resize runs the network at the image's own resolution. With --export the export
rows run that model, but the agreement is always the benchmark's network's. A line says how many
classes evaluation's predictions hold and how much of the image the commonest covers: random
weights that paint nearly everything one class would make any agreement look perfect.
--no-agreement skips it: five exports and, per image, one more run of the network by evaluation's
way and five per backend.
"""
import utils.runtime  # noqa: F401  (first: sets MKL_DEBUG_CPU_TYPE, imports PIL before paddle)

import argparse
import os
import shutil
import statistics
import tempfile
import time

from PIL import Image

from utils.cli import size_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="predict.py's images/s per backend and its time outside the network.")
    parser.add_argument("--images", type=int, default=6, help="images in the folder (default 6)")
    parser.add_argument("--width", type=int, default=2048, help="image width (default 2048, Cityscapes)")
    parser.add_argument("--height", type=int, default=1024, help="image height (default 1024)")
    parser.add_argument("--input-size", type=size_argument, default=(1024, 512),
                        help="WIDTH,HEIGHT of the network input (default 1024,512 as evaluation)")
    parser.add_argument("--workers", type=int, default=2, help="predict.py's --num-workers (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Paddle and Paddle Inference")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="an exported model (with model.onnx) for the export rows; default: the random "
                             "network exported here")
    parser.add_argument("--agreement-images", type=int, default=2, metavar="N",
                        help="images on which exports are compared with evaluation's predictions (default 2)")
    parser.add_argument("--no-agreement", action="store_true",
                        help="skip exporting the network with each output op and comparing it with evaluation")
    args = parser.parse_args(argv)
    if args.images < 1 or args.workers < 1 or args.threads < 1 or args.agreement_images < 1:
        parser.error("--images, --workers, --threads and --agreement-images must be at least 1")
    return args


if __name__ == "__main__":
    # numpy's OpenBLAS fixes its thread count when it is loaded: apply --threads before importing it.
    os.environ["OPENBLAS_NUM_THREADS"] = str(parse_args().threads)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from bench.bench_eval import count_macs, gemm_peak, numpy_blas, set_threads, with_others_load  # noqa: E402
from dataset.classes import CITYSCAPES  # noqa: E402
from dataset.synthetic import TARGET_STYLE, render, scene_label_ids  # noqa: E402
from model.deeplab_multi import DeeplabMulti  # noqa: E402
from utils.prediction.inputs import find_images, read_rgb  # noqa: E402
from utils.prediction.outputs import Outputs  # noqa: E402
from utils.prediction.pipeline import predict_images  # noqa: E402
from utils.prediction.predictor import ExportSegmenter, WeightsSegmenter, upsample_prediction  # noqa: E402


def write_images(folder, count, width, height, seed=0):
    """``count`` street scenes as PNGs (what a Cityscapes folder holds); each one different."""
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        picture = render(scene_label_ids(width, height, rng), TARGET_STYLE, rng)
        Image.fromarray(picture).save(os.path.join(folder, "{:04d}.png".format(index)))


def stage_seconds(segmenter, outputs, images):
    """{stage: median seconds over ``images``} of one image run alone, stage after stage (after an untimed one)."""
    segmenter.network(segmenter.prepare(read_rgb(images[0].path))[None])
    times = {"decode": [], "resize + mean": [], "network": [], "upsample + argmax": [], "encode + write": []}
    for image in images:
        start = time.perf_counter()
        rgb = read_rgb(image.path)
        decoded = time.perf_counter()
        prepared = segmenter.prepare(rgb)
        resized = time.perf_counter()
        logits = segmenter.network(prepared[None])
        networked = time.perf_counter()
        result = upsample_prediction(logits, rgb.shape[:2])
        upsampled = time.perf_counter()
        outputs.write(image.name, rgb, result, outputs.kinds)
        written = time.perf_counter()
        for stage, seconds in zip(times, (decoded - start, resized - decoded, networked - resized,
                                          upsampled - networked, written - upsampled)):
            times[stage].append(seconds)
    return {stage: statistics.median(values) for stage, values in times.items()}


def time_folder(segmenter, images, save_dir, workers):
    """(Summary of predicting every image, others' load) after one untimed image."""
    outputs = Outputs(save_dir, CITYSCAPES)
    predict_images(segmenter, images[:1], outputs, overwrite=True, num_workers=workers, progress=False)
    return with_others_load(lambda: predict_images(segmenter, images, outputs, overwrite=True, num_workers=workers,
                                                   progress=False))


def onnx_missing():
    """None when ONNX Runtime can run an export and paddle2onnx can write one, else why not."""
    from model.export import ExportError, onnx_converter
    try:
        import onnxruntime  # noqa: F401
        onnx_converter()
    except (ImportError, ExportError) as error:
        return "{} (requirements-deploy.txt)".format(error)
    return None


def export_segmenters(model, input_size, export_dir):
    """([(row name, ExportSegmenter)], why the ONNX row is skipped or None): ``model`` exported into
    ``export_dir`` as export.py does by default (train ids out, each image resized to ``input_size``
    inside the graph) unless an export is there, run by Paddle Inference and ONNX Runtime."""
    from model.export import ExportedModel, export_model
    missing = onnx_missing()
    if not os.path.isfile(os.path.join(export_dir, "deploy.yaml")):
        export_model(model, export_dir, CITYSCAPES, "argmax", onnx=not missing, resize_to=input_size)
    rows = [("export", ExportSegmenter(ExportedModel(export_dir, False, 0, "inference"), CITYSCAPES))]
    if not missing:
        rows.append(("export+onnx", ExportSegmenter(ExportedModel(export_dir, False, 0, "onnx"), CITYSCAPES)))
    return rows, missing


def evaluation_train_ids(segmenter, images):
    """[(RGB, train ids)] of ``images`` as ``segmenter`` (a WeightsSegmenter: evaluation's way) predicts them."""
    predicted = []
    for image in images:
        rgb = read_rgb(image.path)
        predicted.append((rgb, segmenter.predict(segmenter.prepare(rgb), rgb.shape[:2]).train_ids))
    return predicted


def export_kinds(input_size):
    """(name, output op, input shape, size resized to in the graph) of each kind of export.py export."""
    fixed = [1, 3, input_size[1], input_size[0]]
    return ([("default", "argmax", None, input_size)] +
            [("fixed-size {}".format(output_op), output_op, fixed, None) for output_op in ("argmax", "softmax", "none")] +
            [("any-size", "argmax", None, None)])


def agreement(model, expected, input_size, export_root, backends):
    """{backend: {kind: share of pixels}}: ``model`` exported as each of export_kinds into
    ``export_root``, run by ExportedModel with each of ``backends`` on the images of ``expected``
    ([(RGB, train ids)] from evaluation_train_ids), and the share of the pixels of all of them
    whose train ids equal the expected ones."""
    from model.export import ExportedModel, export_model
    pixels = sum(train_ids.size for _, train_ids in expected)
    shares = {backend: {} for backend in backends}
    for number, (kind, output_op, shape, resize_to) in enumerate(export_kinds(input_size)):
        folder = os.path.join(export_root, str(number))
        export_model(model, folder, CITYSCAPES, output_op, shape, onnx="onnx" in backends, resize_to=resize_to)
        for backend in backends:
            exported = ExportedModel(folder, False, 0, backend)
            equal = sum(int(np.count_nonzero(exported.predict(rgb)[0] == train_ids)) for rgb, train_ids in expected)
            shares[backend][kind] = equal / float(pixels)
    return shares


def describe_classes(expected):
    """How varied evaluation's predictions are: classes present and the commonest one's share."""
    counts = np.bincount(np.concatenate([train_ids.ravel() for _, train_ids in expected]),
                         minlength=CITYSCAPES.num_classes)
    commonest = int(np.argmax(counts))
    share = counts[commonest] / float(counts.sum())
    text = "evaluation's predictions with these weights: {} of {} classes, the commonest ({}) on {:.1f}% of the " \
           "pixels".format(np.count_nonzero(counts), CITYSCAPES.num_classes, CITYSCAPES.names[commonest], 100 * share)
    if share > 0.95:
        text += " (near-constant: the agreement below says little)"
    return text, share


def percent(share):
    """A share as a percentage with two decimals that reads 100.00% only when it is exactly 1."""
    return "{:.2f}%".format(100 * share) if share == 1 or share < 0.99995 else ">99.99%"


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    paddle.set_device("cpu")
    in_w, in_h = args.input_size
    print("predict.py benchmark: DeeplabMulti(19), random weights, float32; {} PNG images of {}x{}, network input "
          "{}x{}, {} workers".format(args.images, args.width, args.height, in_w, in_h, args.workers))
    print("MKL_DEBUG_CPU_TYPE={}  threads={}  CPUs={}  paddle {}  numpy {} ({}); load average at start {:.2f}".format(
        os.environ.get("MKL_DEBUG_CPU_TYPE", "(unset)"), args.threads, os.cpu_count(), paddle.__version__,
        np.__version__, numpy_blas(), os.getloadavg()[0]))
    (numpy_rate, _), gemm_others = with_others_load(gemm_peak)
    paddle.seed(0)
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    model.eval()
    macs = count_macs(model, in_h, in_w)[0]
    limit = 2.0 * macs / (numpy_rate * 1e9)
    print("GEMM peak {:.1f} GFLOP/s (others {:.2f}); network {:.1f} GMAC: physical limit {:.3f} s/image".format(
        numpy_rate, gemm_others, macs / 1e9, limit))

    work = tempfile.mkdtemp(prefix="bench_predict_")
    try:
        folder = os.path.join(work, "images")
        write_images(folder, args.images, args.width, args.height)
        images = find_images([folder])
        segmenters = [("dygraph", WeightsSegmenter(model, CITYSCAPES, args.input_size, backend="dygraph")),
                      ("inference", WeightsSegmenter(model, CITYSCAPES, args.input_size, backend="inference"))]
        stages = stage_seconds(segmenters[1][1], Outputs(os.path.join(work, "stages"), CITYSCAPES), images[:3])
        print()
        print("one image alone, Paddle Inference (median of {}):".format(min(3, len(images))))
        for stage, seconds in stages.items():
            print("  {:<22}{:>8.3f} s".format(stage, seconds))
        outside_alone = 1.0 - stages["network"] / sum(stages.values())
        print("  {:<22}{:>8.3f} s  ({:.0f}% outside the network)".format("total", sum(stages.values()),
                                                                        100 * outside_alone))

        runs = [(name, segmenter, args.workers) for name, segmenter in segmenters]
        runs.append(("inference", segmenters[1][1], 0))
        exported, skipped = export_segmenters(model, args.input_size, args.export or os.path.join(work, "export"))
        runs += [(name, segmenter, args.workers) for name, segmenter in exported]
        print()
        print("{:<12}{:>8}{:>10}{:>10}{:>12}{:>12}{:>8}".format("backend", "workers", "images/s", "s/image",
                                                                "network s", "outside %", "others"))
        rows = []
        for name, segmenter, workers in runs:
            summary, others = time_folder(segmenter, images, os.path.join(work, "{}_{}".format(name, workers)),
                                          workers)
            per_image = summary.seconds / summary.predicted
            outside = 1.0 - summary.network_seconds / summary.seconds
            rows.append({"backend": name, "workers": workers, "images_per_s": summary.predicted / summary.seconds,
                         "network_s": summary.network_seconds / summary.predicted, "outside": outside,
                         "others": others})
            print("{:<12}{:>8}{:>10.3f}{:>10.3f}{:>12.3f}{:>11.1f}%{:>8.2f}".format(
                name, workers, summary.predicted / summary.seconds, per_image,
                summary.network_seconds / summary.predicted, 100 * outside, others))
        if skipped:
            print("{:<12}skipped: {}".format("export+onnx", skipped))

        shares, commonest = None, None
        if not args.no_agreement:
            expected = evaluation_train_ids(segmenters[1][1], images[:args.agreement_images])
            backends = ["inference"] + ([] if skipped else ["onnx"])
            shares = agreement(model, expected, args.input_size, os.path.join(work, "agreement"), backends)
            classes_line, commonest = describe_classes(expected)
            where = "export at {}x{}, {} image{} of {}x{}".format(in_w, in_h, len(expected),
                                                                  "s" if len(expected) > 1 else "", args.width,
                                                                  args.height)
            print()
            print(classes_line)
            for backend in backends:
                print("{:<12}agreement with evaluation ({}): {}".format(backend, where, "  ".join(
                    "{} {}".format(kind, percent(share)) for kind, share in shares[backend].items())))
            if skipped:
                print("{:<12}agreement skipped: {}".format("onnx", skipped))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = max((row for row in rows if row["workers"] == args.workers), key=lambda row: row["images_per_s"])
    serial = next(row for row in rows if row["workers"] == 0)
    pipelined = next(row for row in rows if row["backend"] == "inference" and row["workers"] == args.workers)
    print()
    print("SUMMARY: {}; fastest {} {:.3f} images/s ({:.0f}% of the wall time outside the network with {} workers, "
          "{:.0f}% with none: {:.2f}x from overlapping); network alone {:.3f} s/image, {:.2f}x the limit".format(
              ", ".join("{}{} {:.3f} img/s".format(row["backend"], "" if row["workers"] else " (no workers)",
                                                   row["images_per_s"]) for row in rows),
              best["backend"], best["images_per_s"], 100 * best["outside"], args.workers, 100 * serial["outside"],
              pipelined["images_per_s"] / serial["images_per_s"], pipelined["network_s"],
              pipelined["network_s"] / limit))
    return {"limit": limit, "stages": stages, "rows": rows, "onnx_skipped": skipped, "agreement": shares,
            "commonest_share": commonest}


if __name__ == "__main__":
    main()

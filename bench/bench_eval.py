"""Evaluation speed of DeepLab-v2 ResNet-101 (DeeplabMulti) on this CPU against its physical limit.

    python -m bench.bench_eval [--runs 5] [--warmup 2] [--threads 2] [--height 512 --width 1024]
                               [--pairs 500 | --skip-iou]            (from the repository root)

One process, random weights, float32, batch 1: the machine's float32 GEMM peak (numpy), the
network's MACs counted by hooks on the convolutions actually executed, the physical limit
2 * MACs / peak, then seconds/image (median after warm-up) of the plain
dynamic graph, the BN-folded dynamic graph and Paddle Inference + oneDNN, the upsample + argmax
post-processing, compute_mIoU on synthetic Cityscapes-sized pairs and the peak RSS.
"""
import utils.runtime  # noqa: F401  (first: sets MKL_DEBUG_CPU_TYPE, imports PIL before paddle)

import argparse
import os
import resource
import statistics
import time

EVAL_SIZE = (1024, 2048)  # (H, W) of a Cityscapes label: what the logits are upsampled to
TARGET_RATIO = 1.3  # Paddle Inference within 1.3x of the physical limit
TARGET_IOU_SECONDS = 15.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Evaluation speed of DeeplabMulti vs. this CPU's physical limit.")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path; the median is reported (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing each path (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for numpy, Paddle and Paddle Inference")
    parser.add_argument("--height", type=int, default=512, help="input height (default 512)")
    parser.add_argument("--width", type=int, default=1024, help="input width (default 1024)")
    parser.add_argument("--pairs", type=int, default=500, help="compute_mIoU: 2048x1024 pairs (default 500)")
    parser.add_argument("--skip-iou", action="store_true", help="do not time compute_mIoU")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.pairs < 1:
        parser.error("--runs, --threads and --pairs must be at least 1, --warmup at least 0")
    return args


if __name__ == "__main__":
    # numpy's OpenBLAS fixes its thread count when it is loaded: apply --threads before importing it.
    os.environ["OPENBLAS_NUM_THREADS"] = str(parse_args().threads)

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402

from dataset.classes import CITYSCAPES  # noqa: E402
from model.common import Classifier_Module  # noqa: E402
from model.deeplab_multi import DeeplabMulti  # noqa: E402
from model.inference import SegmentationPredictor, upsample_argmax  # noqa: E402


def set_threads(threads):
    """Paddle's own CPU math (MKL, OpenMP): Paddle sets OMP_NUM_THREADS=1 on import unless told."""
    paddle.base.core.set_num_threads(threads)


def numpy_blas():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return "{} {}".format(blas["name"], blas["version"])
    except Exception:  # older numpy: no mode="dicts"
        return "unknown BLAS"


def time_runs(fn, runs, warmup):
    """Seconds of each of `runs` calls of fn(), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def cpu_seconds_of_others():
    """CPU seconds used so far by every other process on the machine (Linux /proc/stat)."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK") - sum(os.times()[:2])


def with_others_load(fn):
    """(fn(), mean number of cores other processes kept busy meanwhile): 0 for a clean measurement."""
    others, start = cpu_seconds_of_others(), time.perf_counter()
    result = fn()
    return result, max(0.0, (cpu_seconds_of_others() - others) / (time.perf_counter() - start))


def gemm_gflops(matmul, a, b, repeats):
    """Best GFLOP/s of matmul(a, b) over `repeats` timed calls (after one untimed)."""
    best = min(time_runs(lambda: matmul(a, b), repeats, 1))
    return 2.0 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def gemm_peak(size=4096, repeats=5):
    """(numpy GFLOP/s, paddle.matmul GFLOP/s) of a float32 size x size x size product."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    numpy_rate = gemm_gflops(np.matmul, a, b, repeats)
    pa, pb = paddle.to_tensor(a), paddle.to_tensor(b)
    paddle_rate = gemm_gflops(lambda x, y: paddle.matmul(x, y).numpy(), pa, pb, repeats)
    return numpy_rate, paddle_rate


def count_macs(model, height, width):
    """MACs per image of one forward at height x width, counted on the Conv2D layers that run.

    Returns (total, {top-level sublayer name: MACs}, MACs the unused ASPP branches would add).
    """
    top_level = {}
    for name, layer in model.named_sublayers():
        top_level[id(layer)] = name.split(".")[0]
    per_layer = {}
    branch_macs = {}

    def hook(layer, inputs, output):
        out_c, in_c_per_group, kh, kw = layer.weight.shape
        macs = int(np.prod(output.shape[1:])) * in_c_per_group * kh * kw
        name = top_level[id(layer)]
        per_layer[name] = per_layer.get(name, 0) + macs
        branch_macs[id(layer)] = macs

    handles = [layer.register_forward_post_hook(hook) for layer in model.sublayers()
               if isinstance(layer, nn.Conv2D)]
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, height, width], dtype="float32"))
    finally:
        for handle in handles:
            handle.remove()
    unused = 0
    for layer in model.sublayers():
        if isinstance(layer, Classifier_Module) and not layer.use_all_branches:
            # All branches pad by their dilation, so each costs what the first one did.
            unused += (len(layer.conv2d_list) - 2) * branch_macs[id(layer.conv2d_list[0])]
    return sum(per_layer.values()), per_layer, unused


def build_paths(model, threads):
    """name -> fn(images) returning the evaluation logits (layer6) as numpy, fastest last."""
    folded = SegmentationPredictor(model, backend="dygraph")
    fast = SegmentationPredictor(model, backend="inference", cpu_threads=threads)

    def plain(images):
        with paddle.no_grad():
            return model(paddle.to_tensor(images))[-1].numpy()

    return [("(a) dygraph, plain", plain),
            ("(b) dygraph, BN folded", folded),
            ("(c) Paddle Inference+oneDNN", fast)]


def time_paths(paths, images, runs, warmup):
    """[(name, median s/image, max |logits - first path's| / max |first path's|, others' load)]."""
    rows = []
    reference = None
    for name, fn in paths:
        logits = fn(images)
        if reference is None:
            reference = logits
        rel_diff = float(np.abs(logits - reference).max() / max(np.abs(reference).max(), 1e-30))
        seconds, others = with_others_load(lambda: time_runs(lambda: fn(images), runs, warmup))
        rows.append((name, statistics.median(seconds) / images.shape[0], rel_diff, others))
    return rows, reference


def time_upsample(logits, runs, warmup, size=EVAL_SIZE):
    return statistics.median(time_runs(lambda: upsample_argmax(logits, size), runs, warmup))


def time_iou(pairs):
    from bench.bench_iou import bench_iou  # imports the dataset package: only when needed
    return bench_iou(pairs)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv=None):
    args = parse_args(argv)
    set_threads(args.threads)
    paddle.set_device("cpu")
    h, w = args.height, args.width
    print("AdaptSegNet evaluation benchmark: DeeplabMulti(19), random weights, float32, input 1x3x{}x{}".format(h, w))
    print("MKL_DEBUG_CPU_TYPE={}  threads={}  CPUs={}  paddle {}  numpy {} ({})".format(
        os.environ.get("MKL_DEBUG_CPU_TYPE", "(unset)"), args.threads, os.cpu_count(), paddle.__version__,
        np.__version__, numpy_blas()))
    print("timings: median of {} runs after {} warm-up runs; load average at start {:.2f}".format(
        args.runs, args.warmup, os.getloadavg()[0]))

    (numpy_rate, paddle_rate), gemm_others = with_others_load(gemm_peak)
    print("'others' = CPU cores other processes kept busy during a measurement (0 = clean)")
    print()
    print("{:<44}{:>10.1f} GFLOP/s   others {:.2f}".format("GEMM peak, numpy float32 4096^3 (best of 5)",
                                                           numpy_rate, gemm_others))
    print("{:<44}{:>10.1f} GFLOP/s".format("  same on paddle.matmul (bundled MKL)", paddle_rate))

    paddle.seed(0)
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    model.eval()
    macs, per_layer, unused = count_macs(model, h, w)
    limit = 2.0 * macs / (numpy_rate * 1e9)
    share = 100.0 * (per_layer.get("layer3", 0) + per_layer.get("layer4", 0)) / macs
    print("{:<44}{:>10.1f} GMAC  = {:.1f} GFLOP".format("network, counted (convs executed)",
                                                          macs / 1e9, 2 * macs / 1e9))
    print("  layer3+layer4 {:.1f}%, layer5 head {:.2f} GMAC (not needed by evaluation); unused ASPP"
          " branches 3-4 excluded (would add {:.2f} GMAC)".format(share, per_layer.get("layer5", 0) / 1e9,
                                                                  unused / 1e9))
    print("{:<44}{:>10.3f} s/image".format("physical limit = 2*MACs / numpy GEMM peak", limit))

    images = np.random.default_rng(0).standard_normal((1, 3, h, w), dtype=np.float32)
    rows, logits = time_paths(build_paths(model, args.threads), images, args.runs, args.warmup)
    upsample = time_upsample(logits, args.runs, args.warmup)
    print()
    print("{:<30}{:>10}{:>10}{:>10}{:>14}{:>8}".format("path", "s/image", "x limit", "GFLOP/s", "rel.diff(a)",
                                                        "others"))
    for name, seconds, rel_diff, others in rows:
        print("{:<30}{:>10.3f}{:>10.2f}{:>10.1f}{:>14.1e}{:>8.2f}".format(
            name, seconds, seconds / limit, 2 * macs / seconds / 1e9, rel_diff, others))
    print("{:<30}{:>10.3f}   (logits {}x{}x{} -> {}x{})".format(
        "upsample_argmax", upsample, *logits.shape[1:], *EVAL_SIZE))
    plain_s, fast_s = rows[0][1], rows[-1][1]
    fast_ratio = fast_s / limit
    print("speed-up (c) over (a): {:.2f}x; (c) at {:.2f}x the limit (target <= {}x): {}".format(
        plain_s / fast_s, fast_ratio, TARGET_RATIO, "met" if fast_ratio <= TARGET_RATIO else "MISSED"))

    iou_seconds = None
    worst_others = max([gemm_others] + [row[3] for row in rows])
    if not args.skip_iou:
        iou_seconds, iou_others = with_others_load(lambda: time_iou(args.pairs))
        worst_others = max(worst_others, iou_others)
        print()
        print("compute_mIoU, {} pairs of 2048x1024: {:.2f} s ({:.1f} ms/pair; target 500 pairs < {:.0f} s: {}); "
              "others {:.2f}".format(args.pairs, iou_seconds, 1000 * iou_seconds / args.pairs, TARGET_IOU_SECONDS,
                                     "met" if iou_seconds * 500.0 / args.pairs < TARGET_IOU_SECONDS else "MISSED",
                                     iou_others))
    rss = peak_rss_mib()
    print("peak RSS of this process: {:.0f} MiB".format(rss))
    print()
    iou_text = "IoU skipped" if iou_seconds is None else "IoU {} pairs {:.1f} s".format(args.pairs, iou_seconds)
    print("SUMMARY: limit {:.2f} s/image ({:.1f} GMAC @ {:.0f} GFLOP/s); plain {:.2f}, folded {:.2f}, inference {:.2f} "
          "s/image ({:.2f}x limit, {:.2f}x faster than plain); upsample+argmax {:.3f} s; {}; peak RSS {:.0f} MiB; "
          "others' load up to {:.2f} cores".format(limit, macs / 1e9, numpy_rate, plain_s, rows[1][1], fast_s,
                                                   fast_ratio, plain_s / fast_s, upsample, iou_text, rss,
                                                   worst_others))
    return {"limit": limit, "macs": macs, "rows": rows, "upsample": upsample, "iou": iou_seconds, "rss": rss}


if __name__ == "__main__":
    main()

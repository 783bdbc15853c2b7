"""Seconds per training iteration, split into waiting for data and computing, and peak memory.

    python -m bench.bench_train [--batch-size 1] [--num-workers 2] [--iterations 4] [--warmup 2]

Runs the real training iteration (train_gta2cityscapes_multi.train_iteration) on synthetic data at
PERF.md's reduced sizes (source 640x360, target 512x256), timing only after the warm-up iterations:
the first optimizer steps are slower. With --num-workers 2 or more the data wait should be ~0.
"""
import utils.runtime  # noqa: F401  (first: settings that must precede paddle)

import argparse
import os
import resource
import statistics
import tempfile
import time

import train_gta2cityscapes_multi as train
from dataset.sampler import SOURCE_STREAM, TARGET_STREAM
from dataset.synthetic import make_synthetic
from utils.train_options import get_arguments


def bench_train(batch_size=1, num_workers=2, iterations=4, warmup=2, source_size=(640, 360),
                target_size=(512, 256), device="cpu"):
    """{"data_wait": [s...], "compute": [s...]} per timed iteration, and peak RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        gta5, cityscapes = make_synthetic(os.path.join(tmp, "data"), num_source=8, num_target_train=8,
                                          num_target_val=1, source_size=source_size, target_size=target_size)
        args = get_arguments([
            "--data-dir", gta5, "--data-dir-target", cityscapes, "--snapshot-dir", os.path.join(tmp, "run"),
            "--input-size", "{},{}".format(*source_size), "--input-size-target", "{},{}".format(*target_size),
            "--batch-size", str(batch_size), "--num-workers", str(num_workers), "--random-mirror",
            "--num-steps-stop", str(warmup + iterations), "--device", device])
        run = train.prepare(args)
        source = iter(train.data_loader(run.source, args, SOURCE_STREAM, 0, run.parallel))
        target = iter(train.data_loader(run.target, args, TARGET_STREAM, 0, run.parallel))
        timings = {"data_wait": [], "compute": []}
        for iteration in range(warmup + iterations):
            start = time.perf_counter()
            batches = [(next(source), next(target))]
            loaded = time.perf_counter()
            train.train_iteration(run.nets, run.optimizers, batches, iteration, args)
            done = time.perf_counter()
            if iteration >= warmup:
                timings["data_wait"].append(loaded - start)
                timings["compute"].append(done - loaded)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return timings, peak_mib


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    timings, peak_mib = bench_train(args.batch_size, args.num_workers, args.iterations, args.warmup)
    data_wait, compute = statistics.median(timings["data_wait"]), statistics.median(timings["compute"])
    print("MKL_DEBUG_CPU_TYPE={}  batch {} per domain  workers {}  source 640x360  target 512x256".format(
        os.environ.get("MKL_DEBUG_CPU_TYPE"), args.batch_size, args.num_workers))
    print("per iteration (median of {} after {} warm-up):".format(args.iterations, args.warmup))
    print("  data wait  {:8.3f} s".format(data_wait))
    print("  compute    {:8.3f} s".format(compute))
    print("  total      {:8.3f} s".format(data_wait + compute))
    print("peak RSS     {:8.0f} MiB".format(peak_mib))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds per training iteration, split into waiting for data and computing, and peak memory.

    python -m bench.bench_train [--batch-size 1] [--num-workers 2] [--iterations 4] [--warmup 2]
    python -m bench.bench_train --recipe authors,paddle-port --batch-size 2   # two recipes, one run
    python -m bench.bench_train --method adaptsegnet,weak      # AdaptSegNet's and the weak-label iteration
    python -m bench.bench_train --method adaptsegnet,advent-minent,advent-advent   # ADVENT's two beside it
    python -m bench.bench_train --ranks 1,2 --batch-size 2     # data-parallel scaling

Runs the real training iteration (utils.methods.adaptsegnet.AdaptSegNet) on synthetic data at
the project's baseline sizes (source 640x360, target 512x256), timing only after the warm-up iterations:
the first optimizer steps are slower. With --num-workers 2 or more the data wait should be ~0.

--method weak times utils.methods.weak_labels.WeakLabels in its full UDA mode (pseudo-weak labels,
category-wise alignment, pixel adaptation); advent-minent and advent-advent time
utils.methods.advent.Advent (--da-method MinEnt, AdvEnt) with its four-branch network; with two
methods or more, each runs in its own process, so that each peak memory is its own.

--ranks runs the same global batch on 1, 2, ... processes (paddle.distributed.launch, gloo on a
CPU; each rank gets cores / ranks threads) and reports iterations/s and the scaling efficiency.
On GPUs every rank is its own card, so there the figures mean something different: this CPU
version only shows that the ranks' work and communication overlap as they should.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # also runnable as a file, which is how the distributed launcher starts it

import utils.runtime  # noqa: E402,F401  (first: settings that must precede paddle)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from utils.runtime import usable_cpus  # noqa: E402

SOURCE_SIZE, TARGET_SIZE = (640, 360), (512, 256)


def time_iterations(args, warmup, iterations, synchronize=None, method=None):
    """Run the real training iteration (``method``, default utils.methods.adaptsegnet.AdaptSegNet,
    in a TrainingSession from ``args``) ``warmup + iterations`` times; return ({"data_wait": [s...], "compute": [s...],
    "sgd_step": [s...]} per timed iteration, rank). "sgd_step" has no entry for an iteration whose
    step was skipped (--amp fp16 skips a step whose gradients overflowed).

    ``synchronize`` (e.g. paddle.device.cuda.synchronize) is called before every clock reading: a
    GPU runs its work after the Python call that queued it has returned.
    """
    import train_gta2cityscapes_multi as train
    from utils.training.session import TrainingSession

    synchronize = synchronize or (lambda: None)
    timings = {"data_wait": [], "compute": [], "sgd_step": []}
    method = method or train.AdaptSegNet
    with TrainingSession(args, method) as session:
        args.freeze()
        method = method(args)
        session.start(method)
        sgd = method.optimizers[0]
        step, step_seconds = sgd.step, []

        def timed_step():
            synchronize()
            started = time.perf_counter()
            step()
            synchronize()
            step_seconds.append(time.perf_counter() - started)

        sgd.step = timed_step
        for iteration in range(warmup + iterations):
            steps_before = len(step_seconds)
            synchronize()
            start = time.perf_counter()
            batches = session.next_batches()
            synchronize()
            loaded = time.perf_counter()
            method.run_step(batches, iteration, session.parallel)
            synchronize()
            done = time.perf_counter()
            if iteration >= warmup:
                timings["data_wait"].append(loaded - start)
                timings["compute"].append(done - loaded)
                if len(step_seconds) > steps_before:
                    timings["sgd_step"].append(step_seconds[-1])
        rank = session.parallel.rank
    return timings, rank


WEAK_LABEL_UDA = ["--use-weak", "--use-pseudo", "--use-weak-cw", "--use-pixeladapt"]
# --method name -> ADVENT's --da-method
ADVENT_MODES = {"advent-minent": "MinEnt", "advent-advent": "AdvEnt"}


def bench_train(batch_size=1, num_workers=2, iterations=4, warmup=2, source_size=SOURCE_SIZE,
                target_size=TARGET_SIZE, device="cpu", data_root=None, recipe=None, method="adaptsegnet"):
    """({"data_wait": [s...], "compute": [s...], "sgd_step": [s...]} per timed iteration, peak RSS in
    MiB, rank)."""
    import train_gta2cityscapes_multi as train
    import train_weak_labels as weak
    from dataset.synthetic import make_synthetic

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data_root = data_root or os.path.join(tmp, "data")
        gta5, cityscapes = os.path.join(data_root, "GTA5"), os.path.join(data_root, "Cityscapes")
        if not os.path.isdir(gta5):
            make_synthetic(data_root, num_source=8, num_target_train=8, num_target_val=1,
                           source_size=source_size, target_size=target_size)
        argv = ["--data-dir", gta5, "--data-dir-target", cityscapes, "--snapshot-dir", os.path.join(tmp, "run"),
                "--input-size", "{},{}".format(*source_size), "--input-size-target", "{},{}".format(*target_size),
                "--batch-size", str(batch_size), "--num-workers", str(num_workers), "--random-mirror",
                "--num-steps-stop", str(warmup + iterations), "--device", device, "--from-scratch"]
        if recipe is not None:  # ADVENT's "advent" recipe is the authors' schedule under its own name
            argv += ["--recipe", "advent" if method in ADVENT_MODES and recipe == "authors" else recipe]
        if method == "weak":  # the source images stand in for their CycleGAN translations: same cost
            argv += WEAK_LABEL_UDA + ["--pixeladapt-dir", gta5]
            timings, rank = time_iterations(weak.get_arguments(argv), warmup, iterations, method=weak.WeakLabels)
        elif method in ADVENT_MODES:
            from utils.methods.advent import Advent
            from utils.training.options import parse_settings
            settings = parse_settings(Advent, argv + ["--da-method", ADVENT_MODES[method]])
            timings, rank = time_iterations(settings, warmup, iterations, method=Advent)
        else:
            timings, rank = time_iterations(train.get_arguments(argv), warmup, iterations)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return timings, peak_mib, rank


def run_ranks(ranks, args, data_root):
    """Seconds per iteration with ``ranks`` processes, as measured by rank 0."""
    threads = str(max(1, usable_cpus() // ranks))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    worker = [os.path.abspath(__file__), "--worker", "--batch-size", str(args.batch_size), "--num-workers",
              str(args.num_workers), "--iterations", str(args.iterations), "--warmup", str(args.warmup),
              "--data-root", data_root]
    with tempfile.TemporaryDirectory(prefix="bench_ranks_") as log_dir:
        if ranks == 1:
            command = [sys.executable] + worker
        else:
            command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(ranks),
                       "--log_dir", log_dir] + worker
        output = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                check=True).stdout.decode(errors="replace")
        if ranks > 1:
            with open(os.path.join(log_dir, "workerlog.0"), errors="replace") as f:
                output = f.read()
    result = [line for line in output.splitlines() if line.startswith("{")]
    return json.loads(result[-1])


def compare_methods(methods, args):
    """Each method's iteration in its own process, on the same synthetic data and schedule (--recipe,
    default authors: batch statistics in BN and the authors' SGD, which ADVENT's recipe also is)."""
    from dataset.synthetic import make_synthetic

    results, recipe = {}, args.recipe or "authors"
    if "," in recipe:
        raise SystemExit("--recipe: one recipe when comparing methods")
    with tempfile.TemporaryDirectory(prefix="bench_data_") as data_root:
        make_synthetic(data_root, num_source=8, num_target_train=8, num_target_val=1,
                       source_size=SOURCE_SIZE, target_size=TARGET_SIZE)
        for method in methods:
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--method", method, "--batch-size",
                       str(args.batch_size), "--num-workers", str(args.num_workers), "--iterations",
                       str(args.iterations), "--warmup", str(args.warmup), "--data-root", data_root,
                       "--recipe", recipe]
            output = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    check=True).stdout.decode(errors="replace")
            results[method] = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    print("recipe {}, batch {} per domain, workers {}, source 640x360, target 512x256; median of {} after {} "
          "warm-up".format(recipe, args.batch_size, args.num_workers, args.iterations, args.warmup))
    print("method        s/iter  data wait  peak RSS    vs {}".format(methods[0]))
    for method, r in results.items():
        print("{:12s}  {:6.2f}  {:8.3f}s  {:6.0f} MiB  {:5.2f}x".format(
            method, r["seconds"], r["data_wait"], r["peak_mib"], r["seconds"] / results[methods[0]]["seconds"]))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1, help="global batch per domain")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ranks", default=None, help="comma-separated process counts, e.g. 1,2")
    parser.add_argument("--recipe", default=None,
                        help="a training recipe (default: the script's), or two (authors,paddle-port): the time of "
                             "each at the same --batch-size and their ratio")
    parser.add_argument("--method", default="adaptsegnet",
                        help="adaptsegnet, weak (the weak-label UDA iteration), advent-minent, advent-advent, or "
                             "several, comma-separated (adaptsegnet,advent-minent,advent-advent)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ranks:
        from dataset.synthetic import make_synthetic
        with tempfile.TemporaryDirectory(prefix="bench_data_") as data_root:
            make_synthetic(data_root, num_source=8, num_target_train=8, num_target_val=1,
                           source_size=SOURCE_SIZE, target_size=TARGET_SIZE)
            results = {int(r): run_ranks(int(r), args, data_root) for r in args.ranks.split(",")}
        base = results[min(results)]
        print("global batch {} per domain, source 640x360, target 512x256".format(args.batch_size))
        print("ranks  s/iter  iter/s  speed-up  efficiency  data wait  peak RSS (rank 0)")
        for ranks, r in sorted(results.items()):
            speedup = base["seconds"] / r["seconds"]
            print("{:5d}  {:6.2f}  {:6.3f}  {:8.2f}  {:10.0%}  {:8.3f}s  {:6.0f} MiB".format(
                ranks, r["seconds"], 1 / r["seconds"], speedup, speedup / ranks * min(results), r["data_wait"],
                r["peak_mib"]))
        return 0

    methods = args.method.split(",")
    if len(methods) > 1:
        return compare_methods(methods, args)
    modes = args.recipe.split(",") if args.recipe else [None]
    results = {mode: bench_train(args.batch_size, args.num_workers, args.iterations, args.warmup,
                                 data_root=args.data_root, recipe=mode, method=methods[0]) for mode in modes}
    if args.worker:
        timings, peak_mib, rank = results[modes[0]]
        if rank == 0:
            data_wait, compute = statistics.median(timings["data_wait"]), statistics.median(timings["compute"])
            print(json.dumps({"seconds": data_wait + compute, "data_wait": data_wait, "peak_mib": peak_mib}))
        return 0
    print("MKL_DEBUG_CPU_TYPE={}  batch {} per domain  workers {}  source 640x360  target 512x256".format(
        os.environ.get("MKL_DEBUG_CPU_TYPE"), args.batch_size, args.num_workers))
    print("per iteration (median of {} after {} warm-up), one process:".format(args.iterations, args.warmup))
    print("--recipe      data wait   compute     total   SGD step  peak RSS (process so far)")
    totals = {}
    for mode, (timings, peak_mib, _) in results.items():
        medians = {k: statistics.median(v) for k, v in timings.items()}
        totals[mode] = medians["data_wait"] + medians["compute"]
        print("{:11s}  {:8.3f}s  {:8.3f}s  {:8.3f}s  {:8.3f}s  {:6.0f} MiB".format(
            mode or "default", medians["data_wait"], medians["compute"], totals[mode], medians["sgd_step"], peak_mib))
    if len(totals) == 2:
        first, second = modes
        print("iteration time {} / {}: {:.3f}".format(first, second, totals[first] / totals[second]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds from a stop signal to the end of a training run: the iteration in progress, then the
snapshot (README: Stopping). The notebooks' grace period (notebooks/aistudio/commands.py
STOP_GRACE) must cover it.

    python -m bench.bench_stop                 # the demo's size and the documented size, one run each
    python -m bench.bench_stop --sizes demo

Each run trains train_gta2cityscapes_multi.py on synthetic data from random weights (two loader
workers, --save-pred-every past the run, so the only snapshot is the stop's), sends SIGINT once
the first iteration is logged, and times the exit. Printed per size: seconds per iteration (the
last logged speed), seconds from the signal to the exit, and the snapshot's size on disk.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

# (source W,H, target W,H, batch): the demo's (utils/demo) and the documented schedule's.
SIZES = {"demo": ("96,56", "96,48", 2), "documented": ("1280,720", "1024,512", 2)}


def logged(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def time_stop(data, work, source_size, target_size, batch_size):
    """(seconds per iteration, seconds from SIGINT to exit, snapshot MB, exit status)."""
    run_dir = os.path.join(work, "run_{}".format(source_size.replace(",", "x")))
    command = [sys.executable, os.path.join(ROOT, "train_gta2cityscapes_multi.py"), "--data-dir", data[0],
               "--data-dir-target", data[1], "--input-size", source_size, "--input-size-target", target_size,
               "--batch-size", str(batch_size), "--num-workers", "2", "--num-steps", "1000", "--num-steps-stop", "1000",
               "--save-pred-every", "1000", "--log-every", "1", "--picture-every", "0", "--snapshot-dir", run_dir,
               "--from-scratch", "--device", "cpu"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(logged(run_dir)) < 2:  # the second iteration's speed is past the first's set-up
        if process.poll() is not None:
            raise SystemExit("the training run ended early with status {}: {}".format(process.returncode, command))
        time.sleep(0.05)
    per_iteration = 1.0 / logged(run_dir)[-1]["scalars"]["speed/iter_per_s"]
    signalled = time.time()
    process.send_signal(signal.SIGINT)
    status = process.wait()
    seconds = time.time() - signalled
    snapshot = sum(os.path.getsize(os.path.join(run_dir, name)) for name in os.listdir(run_dir)
                   if name.endswith((".pdparams", ".pdopt")))
    return per_iteration, seconds, snapshot / 2.0 ** 20, status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="demo,documented", help="comma-separated: " + ", ".join(SIZES))
    args = parser.parse_args(argv)
    from dataset.synthetic import make_synthetic
    with tempfile.TemporaryDirectory() as work:
        data = make_synthetic(os.path.join(work, "data"), num_source=6, num_target_train=6, num_target_val=1)
        for name in args.sizes.split(","):
            source, target, batch = SIZES[name]
            per_iteration, seconds, megabytes, status = time_stop(data, work, source, target, batch)
            print("{}: source {}, target {}, batch {}: {:.2f} s per iteration; SIGINT to exit {:.2f} s; snapshot "
                  "{:.0f} MB; exit status {}".format(name, source, target, batch, per_iteration, seconds, megabytes,
                                                     status))
    return 0


if __name__ == "__main__":
    sys.exit(main())

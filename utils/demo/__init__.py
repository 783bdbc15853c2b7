"""The whole workflow in a few minutes on a CPU, on synthetic data: no dataset needed.

    python -m utils.demo [--out demo_output] [--source synthia | --source custom]

Generates GTA5- and Cityscapes-format data (with --source custom: two domains of your own kind,
a list file, two folders and a 5-class class file), trains a few iterations at a small size, stops,
continues from the latest snapshot with the same command, evaluates the result, and says where
everything is. It runs the same command lines as a real run, only with smaller sizes; each is
printed before it runs. Run again, it replaces its own earlier output.

``utils.demo.torch_writer`` writes PyTorch ``.pth`` files without PyTorch: the notebooks' DEMO
mode fabricates stand-ins for the authors' weights with it (and the tests their fixtures).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys

from dataset.sources import CUSTOM, SOURCES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = ".adaptsegnet_demo"  # marks a folder this demo wrote, which a later demo may replace


def run(command):
    print("\n$ " + " ".join(shlex.quote(part) for part in command), flush=True)
    subprocess.run([sys.executable] + command[1:], cwd=ROOT, check=True)


def prepare_output(out):
    """An empty ``out``: a folder of an earlier demo is replaced, any other non-empty one refused."""
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.exists(os.path.join(out, MARKER)):
            sys.exit("{} exists and was not written by the demo; pass another --out".format(out))
        print("replacing the previous demo in {}".format(out))
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    open(os.path.join(out, MARKER), "w").close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output", help="where data, snapshots and predictions go")
    parser.add_argument("--iterations", type=int, default=6, help="training iterations (stopped half-way once)")
    parser.add_argument("--source", default="gta5", choices=("gta5", "synthia", CUSTOM),
                        help="the source domain; custom: a 5-class pair of your own kind of domains (README: Your own "
                             "data)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    data, snapshots, predictions = (os.path.join(out, name) for name in ("data", "snapshots", "predictions"))
    prepare_output(out)
    prefix = SOURCES[args.source].snapshot_prefix
    if args.source == CUSTOM:
        custom = os.path.join(data, CUSTOM)
        classes = ["--classes", os.path.join(custom, "classes.json")]
        domains = ["--source", CUSTOM, "--target", CUSTOM, "--data-dir", os.path.join(custom, "source"), "--data-list",
                   os.path.join(custom, "source", "train.txt"), "--data-dir-target", os.path.join(custom, "target")]
        scored = ["--target", CUSTOM, "--data-dir", os.path.join(custom, "target")] + classes
        domains += classes
        generate = ["python", "-m", "dataset.synthetic", data, "--custom"]
    else:
        domains = ["--source", args.source, "--data-dir", os.path.join(data, prefix), "--data-dir-target",
                   os.path.join(data, "Cityscapes")]
        scored = ["--data-dir", os.path.join(data, "Cityscapes")]
        generate = ["python", "-m", "dataset.synthetic", data]
    train = ["python", "train_gta2cityscapes_multi.py"] + domains + [
        "--input-size", "96,56", "--input-size-target", "96,48", "--random-mirror", "--num-workers", "2",
        "--num-steps", "100", "--save-pred-every", "2", "--log-every", "1", "--picture-every", "2",
        "--snapshot-dir", snapshots, "--from-scratch", "--continue-train"]
    half = max(1, args.iterations // 2)
    run(generate)
    run(train + ["--num-steps-stop", str(half)])
    print("\n(stopped at iteration {}: as if the notebook session had died; the same command continues)".format(half))
    run(train + ["--num-steps-stop", str(args.iterations)])
    run(["python", "evaluate_cityscapes.py", "--restore-from",
         os.path.join(snapshots, "{}_{}.pdparams".format(prefix, args.iterations))] + scored +
        ["--input-size", "96,48", "--save", predictions])
    report = os.path.join(out, "report")
    run(["python", "report.py", snapshots, "--out", report, "--backend", "dygraph"])  # small images: no predictor to build
    print("\npredictions:  {}".format(predictions))
    print("snapshots:    {}".format(snapshots))
    print("VisualDL log: visualdl --logdir {}".format(os.path.join(snapshots, "visualdl")))
    print("report:       {}".format(os.path.join(report, "report.md")))
    return 0


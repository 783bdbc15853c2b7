"""Whether two revisions of this repository train and evaluate the benchmarks identically.

    python -m bench.compare_revisions BASE [--head HEAD] [--iterations 2] [--keep DIR]
                                                                  (from the repository root)

A refactor must not change a result. This writes one synthetic tree (GTA5, Cityscapes, SYNTHIA and
an NTHU city, by this checkout's ``dataset.synthetic``), extracts BASE and HEAD with ``git archive``
(HEAD by default: a copy of the work tree as it is, committed or not), and runs the same commands in each:
AdaptSegNet GTA5 -> Cityscapes (each recipe), SYNTHIA -> Cityscapes, GTA5 -> NTHU Rome and between
two custom domains, its source-only baseline, and the weak-label method, each for --iterations steps from random weights (--from-scratch), then
``evaluate_cityscapes.py`` on each final snapshot. It compares every array of every snapshot file
bit for bit, the evaluation's prediction PNGs pixel for pixel and the lines that hold the IoU
numbers, prints one line per run, and exits with 1 when anything differs. Entries that only the
head's snapshots hold (a flag added since, recorded with the run's arguments) are listed, not
counted as differences; the states of Python's and numpy's global generators, which a state file
keeps for the user's own code but no run seeds, are left out. Both revisions run with this Python,
so both must accept the same command lines.
"""
import utils.runtime  # noqa: F401  (first: sets MKL_DEBUG_CPU_TYPE, imports PIL before paddle)

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK_TREE = "work tree"
TRAIN = ["--input-size", "48,32", "--input-size-target", "48,32", "--num-steps", "20", "--num-workers", "0",
         "--from-scratch", "--random-mirror", "--device", "cpu", "--log-every", "1", "--picture-every", "0"]
EVALUATE = ["--input-size", "48,24", "--backend", "dygraph", "--num-workers", "0", "--device", "cpu"]
UNSEEDED = ("random_states.python", "random_states.numpy")
# Where and when a run ran: each revision writes its snapshots in its own folder, at its own time.
WHERE_AND_WHEN = ("extra.environment.command", "extra.environment.recorded", "extra.settings.snapshot_dir")
IOU_LINE = re.compile(r"\d\.\d|\d%")


def runs(data):
    """{name: (training script, its flags, evaluation flags)}."""
    gta5, cityscapes = os.path.join(data, "GTA5"), os.path.join(data, "Cityscapes")
    adaptsegnet = ["--data-dir", gta5, "--data-dir-target", cityscapes]
    on_cityscapes = ["--data-dir", cityscapes]
    custom = os.path.join(data, "custom")  # dataset.synthetic --custom's layout
    custom_target = ["--target", "custom", "--classes", os.path.join(custom, "classes.json"), "--data-dir",
                     os.path.join(custom, "target")]
    return {
        "custom": ("train_gta2cityscapes_multi.py",
                   ["--source", "custom", "--data-dir", os.path.join(custom, "source"), "--data-list",
                    os.path.join(custom, "source", "train.txt"), "--data-dir-target", os.path.join(custom, "target"),
                    "--target", "custom", "--classes", os.path.join(custom, "classes.json")], custom_target),
        "source-only": ("train_gta2cityscapes_multi.py", adaptsegnet + ["--source-only"], on_cityscapes),
        "gta5-authors": ("train_gta2cityscapes_multi.py", adaptsegnet + ["--recipe", "authors"], on_cityscapes),
        "gta5-paper": ("train_gta2cityscapes_multi.py", adaptsegnet + ["--recipe", "paper"], on_cityscapes),
        "gta5": ("train_gta2cityscapes_multi.py", adaptsegnet, on_cityscapes),
        "synthia": ("train_gta2cityscapes_multi.py",
                    ["--source", "synthia", "--data-dir", os.path.join(data, "SYNTHIA"), "--data-dir-target",
                     cityscapes], on_cityscapes),
        "nthu": ("train_gta2cityscapes_multi.py",
                 ["--target", "nthu", "--city", "Rome", "--data-dir", gta5, "--data-dir-target",
                  os.path.join(data, "NTHU")],
                 ["--target", "nthu", "--city", "Rome", "--data-dir", os.path.join(data, "NTHU")]),
        "weak": ("train_weak_labels.py", adaptsegnet, on_cityscapes),
    }


def extract(revision, into):
    """The files of ``revision`` (or of the work tree) in ``into``."""
    if revision == WORK_TREE:
        shutil.copytree(ROOT, into, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", "output*"))
        return
    archive = os.path.join(os.path.dirname(into), os.path.basename(into) + ".tar")
    subprocess.run(["git", "archive", "--format=tar", "-o", archive, revision], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into)


def run(tree, script, argv, log):
    command = [sys.executable, script] + argv
    with open(log, "a") as out:
        out.write("$ {}\n".format(" ".join(command)))
        out.flush()
        result = subprocess.run(command, cwd=tree, stdout=subprocess.PIPE, stderr=out, universal_newlines=True)
        out.write(result.stdout)
    if result.returncode != 0:
        sys.exit("{} failed in {} (exit {}); see {}".format(script, tree, result.returncode, log))
    return result.stdout


def run_revision(tree, data, out, iterations):
    """{run name: printed IoU lines}, having written each run's snapshots and predictions in out/<run>."""
    printed = {}
    os.makedirs(out, exist_ok=True)
    for name, (script, train_flags, evaluate_flags) in sorted(runs(data).items()):
        directory = os.path.join(out, name)
        log = os.path.join(out, name + ".log")
        run(tree, script, TRAIN + train_flags + ["--num-steps-stop", str(iterations), "--save-pred-every",
                                                 str(iterations), "--snapshot-dir", directory], log)
        weights = [f for f in os.listdir(directory) if re.search(r"_{}\.pdparams$".format(iterations), f)
                   and "_D" not in f]
        if len(weights) != 1:
            sys.exit("{}: expected one generator snapshot of iteration {}, found {}".format(directory, iterations,
                                                                                            weights))
        stdout = run(tree, "evaluate_cityscapes.py", EVALUATE + evaluate_flags + [
            "--restore-from", os.path.join(directory, weights[0]), "--save", os.path.join(directory, "pred")], log)
        # The environment line names each revision's commit: not a result.
        printed[name] = [line for line in stdout.splitlines() if IOU_LINE.search(line) and "s/" not in line
                         and not line.startswith("environment:")]
    return printed


def differences(base_dir, head_dir):
    """(what differs, how many files were compared, the keys only the head's snapshots hold: a
    new flag recorded with the run's arguments, say) of two runs' output folders."""
    import paddle
    found, added = [], set()
    base_files = sorted(os.path.relpath(os.path.join(d, f), base_dir) for d, _, fs in os.walk(base_dir) for f in fs)
    head_files = sorted(os.path.relpath(os.path.join(d, f), head_dir) for d, _, fs in os.walk(head_dir) for f in fs)
    compared = [f for f in base_files if f.endswith((".pdparams", ".pdopt", ".png"))]
    missing = [f for f in compared if f not in head_files]
    found += ["{}: only in the base".format(f) for f in missing]
    for name in compared:
        if name in missing:
            continue
        a, b = os.path.join(base_dir, name), os.path.join(head_dir, name)
        if name.endswith(".png"):
            if not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))):
                found.append(name)
            continue
        first, second = (dict(flat(paddle.load(path, return_numpy=True))) for path in (a, b))
        for state in (first, second):  # Python's and numpy's global generators: unseeded, other every run
            for key in [k for k in state if k.startswith(UNSEEDED + WHERE_AND_WHEN)]:
                del state[key]
        found += ["{} {}: {}".format(name, key, "not in the head" if key not in second else "differs")
                  for key in sorted(first) if key not in second or not equal(first[key], second[key])]
        added.update(re.sub(r"(\.\d+)+$", "", key) for key in second if key not in first)
    return found, len(compared), sorted(added)


def summarized(keys):
    """Keys grouped by their first two parts: "extra.settings (72 entries)"."""
    groups = collections.OrderedDict()
    for key in keys:
        groups.setdefault(".".join(key.split(".")[:2]), []).append(key)
    return [members[0] if len(members) == 1 else "{} ({} entries)".format(group, len(members))
            for group, members in groups.items()]


def flat(value, key=""):
    """(dotted key, leaf) of a loaded state, whose values may be dicts or lists of arrays."""
    if isinstance(value, dict):
        for k in sorted(value, key=str):
            yield from flat(value[k], "{}.{}".format(key, k) if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from flat(item, "{}.{}".format(key, i))
    else:
        yield key, value


def equal(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train and evaluate the benchmarks with two revisions; compare.")
    parser.add_argument("base", help="a git revision, e.g. a commit before a refactor")
    parser.add_argument("--head", default=WORK_TREE, help="a git revision (default: the work tree as it is)")
    parser.add_argument("--iterations", type=int, default=2, help="training iterations of each run (default 2)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (default: a temporary "
                                                                     "folder, removed)")
    args = parser.parse_args(argv)
    work = args.keep or tempfile.mkdtemp(prefix="compare_revisions_")
    os.makedirs(work, exist_ok=True)
    try:
        data = os.path.join(work, "data")
        subprocess.run([sys.executable, "-m", "dataset.synthetic", data, "--num-source", "4", "--num-target-train",
                        "3", "--num-target-val", "2", "--num-synthia", "4", "--num-nthu", "3"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "dataset.synthetic", data, "--custom", "--num-source", "4",
                        "--num-target-train", "3"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        printed = {}
        for side, revision in (("base", args.base), ("head", args.head)):
            tree = os.path.join(work, side + "_tree")
            extract(revision, tree)
            print("{}: {} ...".format(side, revision), flush=True)
            printed[side] = run_revision(tree, data, os.path.join(work, side), args.iterations)
        status = 0
        for name in sorted(printed["base"]):
            found, compared, added = differences(os.path.join(work, "base", name), os.path.join(work, "head", name))
            if printed["base"][name] != printed["head"][name]:
                found.append("the printed IoU lines")
            if not printed["base"][name]:
                found.append("no IoU line printed")
            print("{:12s} {} files compared, {} IoU lines: {}{}".format(
                name, compared, len(printed["base"][name]),
                "identical" if not found else "DIFFERENT: " + "; ".join(found[:5]),
                " (the head's snapshots also hold: {})".format(", ".join(summarized(added))) if added else ""))
            status = status or int(bool(found))
        return status
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

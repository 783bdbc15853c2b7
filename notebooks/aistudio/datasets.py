"""What the AI Studio notebooks do in more than a few lines: importable, and tested by
tests/test_notebooks.py.

- ``run``: one of the project's command lines, with this kernel's interpreter, from the repo
  root, its output streamed into the notebook; a failure raises.
- ``environment_report``: Paddle, the GPU and the free disk, before anything long starts.
- ``find_archives`` / ``extract_archives`` / ``check_layout``: the datasets AI Studio mounts as
  zip archives, extracted into the layout the scripts read; a re-run extracts only what is
  missing or incomplete. ``check_translated``: the CycleGAN images of pixel adaptation.
- ``convert_weights``: the authors' ``.pth`` files to ``.pdparams``, once.
- ``read_metrics`` / ``plot_losses`` (AdaptSegNet's losses, or the weak-label ones with
  ``panels=WEAK_LABEL_PANELS``), ``read_snapshot_table`` / ``plot_snapshot_miou``,
  ``comparison_pictures``: what a run and its evaluation look like.
- ``make_demo_archives``: DEMO mode's stand-ins for AI Studio's archives and the authors'
  weights, so every step above runs on a CPU in about a minute.

    python -m notebooks.aistudio clear notebooks/*.ipynb   # drop outputs before committing
"""
from PIL import Image

import codecs
import collections
import glob
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from typing import Callable, NamedTuple, Optional

import numpy as np

from dataset.files import files_below, load_label_ids, summarize
from dataset.cityscapes_dataset import IMAGE_SUFFIX, LABEL_SUFFIX, gtfine_entry
from dataset.classes import CLASS_NAMES, PALETTE, colorize, label_id_to_train_id_lut
from utils.evaluation.cityscapes import SNAPSHOT_TABLE_NAME
from utils.files.snapshots import SnapshotDir
from utils.training.log import METRICS_FILE, PICTURES_DIR, read_metrics as _read_metrics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2.0 ** 30
# Seed of DEMO mode's stand-ins for the authors' weights (tests compare against it; the
# weak-label paper's gta5_pretrained.pth stand-in uses the next one).
DEMO_WEIGHTS_SEED = 0


# -- running the project's scripts -------------------------------------------------------------

class CommandFailed(RuntimeError):
    """A command exited with an error; its output was shown above the traceback."""

    def __init__(self, command, returncode, tail):
        self.command, self.returncode, self.tail = command, returncode, tail
        super().__init__("{} failed with exit code {}; its last lines (all of its output is above):\n{}".format(
            command, returncode, tail))


def _last_lines(text, count=6):
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return "\n".join(lines[-count:])


def _stop(process):
    """After an interrupt: let the script run its ``finally`` blocks, then insist."""
    # Jupyter's interrupt reaches the whole process group, so the script usually has it already.
    for how, wait in ((None, 10), (signal.SIGINT, 30), (signal.SIGKILL, 30)):
        if how is not None:
            process.send_signal(how)
        try:
            process.communicate(timeout=wait)  # reads (and drops) its output, so it cannot block on it
            return
        except subprocess.TimeoutExpired:
            continue


def run(arguments, cwd=None):
    """Run ``python ARGUMENTS...`` with this kernel's interpreter in the repo root.

    The output appears in the notebook as it comes (progress bars included); a non-zero exit
    raises CommandFailed, an interrupt of the kernel stops the command too.
    """
    arguments = [str(argument) for argument in arguments]
    shown = "python " + " ".join(shlex.quote(argument) for argument in arguments)
    print("$ " + shown, flush=True)
    process = subprocess.Popen([sys.executable] + arguments, cwd=cwd or REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    try:
        while True:
            chunk = process.stdout.read1(1 << 16)
            if not chunk:
                break
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-8192:]
        returncode = process.wait()
    except BaseException:
        _stop(process)
        raise
    finally:
        process.stdout.close()
    if returncode != 0:
        raise CommandFailed(shown, returncode, _last_lines(tail))


# -- the machine -------------------------------------------------------------------------------

def _existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def free_bytes(path):
    """Free bytes on the disk that holds (or will hold) ``path``."""
    return shutil.disk_usage(_existing_parent(path)).free


def environment_report(directories):
    """Python, Paddle, the GPU (or its absence), missing modules and the free disk, as text."""
    import paddle

    lines = ["Python {} ({})".format(platform.python_version(), sys.executable),
             "PaddlePaddle {}".format(paddle.__version__)]
    gpus = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    if gpus:
        for gpu in range(gpus):
            memory = paddle.device.cuda.get_device_properties(gpu).total_memory / GIB
            lines.append("GPU {}: {} ({:.0f} GB), CUDA {}".format(
                gpu, paddle.device.cuda.get_device_name(gpu), memory, paddle.version.cuda()))
    elif paddle.device.is_compiled_with_cuda():
        lines.append("GPU: none visible, though this Paddle was built with CUDA: start the project with a GPU "
                     "environment, or add --device cpu to the commands")
    else:
        lines.append("GPU: none (CPU-only Paddle): enough for DEMO mode; training needs a GPU environment "
                     "(AI Studio's GPU images come with paddlepaddle-gpu)")
    missing = []
    for module in ("numpy", "PIL", "tqdm", "visualdl", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append({"PIL": "pillow"}.get(module, module))
    if missing:
        # Not `pip install -r requirements.txt`: its CPU paddlepaddle would replace the GPU build.
        lines.append("missing modules: {0}; install them with: pip install {0}".format(" ".join(missing)))
    for directory in directories:
        usage = shutil.disk_usage(_existing_parent(directory))
        note = "" if os.path.exists(directory) else " (does not exist yet; this is its disk)"
        lines.append("{}: {:.1f} GB free of {:.1f} GB{}".format(directory, usage.free / GIB, usage.total / GIB, note))
    return "\n".join(lines)


# -- datasets from archives --------------------------------------------------------------------

class ArchiveError(RuntimeError):
    """Archives missing, incomplete, or not fitting on the disk; the message says what was found."""


class DatasetError(RuntimeError):
    """The extracted dataset is not in the layout the scripts read; the message names the files."""


class ArchiveGroup(NamedTuple):
    """Archives of one kind: ``parts`` files matching ``pattern`` (a glob below the archive
    directory; ``**`` crosses folders), numbered 1..parts when there are several.
    ``destination(member)`` says where a member goes below the data directory (None: skip it)."""
    name: str
    pattern: str
    parts: int
    destination: Callable[[str], Optional[str]]


def _is_junk(parts):
    return any(part == "__MACOSX" or part.startswith(".") or part == ".." for part in parts)


def gta5_files(folder):
    """``destination`` for GTA5 archives: every ``.png`` goes to ``GTA5/<folder>/``.

    The official parts hold ``images/00001.png`` (or ``labels/...``); uploads differ in nesting,
    so any folder will do, except that a member inside an ``images`` or ``labels`` folder must be
    in ``folder`` (which lets one archive with both feed both groups).
    """
    other = {"images": "labels", "labels": "images"}[folder]

    def destination(member):
        parts = member.split("/")
        if _is_junk(parts) or not parts[-1].endswith(".png") or other in parts[:-1]:
            return None
        return posixpath.join("GTA5", folder, parts[-1])
    return destination


def cityscapes_files(top, splits, suffix):
    """``destination`` for a Cityscapes archive: ``.../<top>/<split>/<city>/<name><suffix>`` goes to
    ``Cityscapes/<top>/<split>/<city>/``, for the given splits only (the test split and the
    colour, instance and polygon files are not needed)."""
    def destination(member):
        parts = member.split("/")
        if top not in parts[:-1] or _is_junk(parts):
            return None
        rest = parts[parts.index(top):]
        if len(rest) != 4 or rest[1] not in splits or not rest[3].endswith(suffix):
            return None
        return posixpath.join("Cityscapes", *rest)
    return destination


def _part_digits(stem):
    """The digits that number a part: the last run of digits in the name, the 5 of GTA5 aside."""
    runs = [m for m in re.finditer(r"\d+", stem) if not stem[:m.start()].lower().endswith("gta")]
    return runs[-1] if runs else None


def _part_number(path):
    """01_images.zip -> 1; GTA5_images_part3.zip -> 3; GTA5_images.zip -> None."""
    digits = _part_digits(os.path.splitext(os.path.basename(path))[0])
    return int(digits.group()) if digits else None


def _missing_part(example, number):
    """'part 4 (04_images.zip)': the name part ``number`` would have, going by ``example``."""
    stem, ext = os.path.splitext(os.path.basename(example))
    digits = _part_digits(stem)
    if digits is None:
        return "part {}".format(number)
    return "part {} ({}{}{}{})".format(number, stem[:digits.start()], str(number).zfill(len(digits.group())),
                                       stem[digits.end():], ext)


def _archives_below(directory):
    found = []
    for ext in ("zip", "tar", "tar.gz", "tgz", "rar", "7z"):
        found += glob.glob(os.path.join(directory, "**", "*." + ext), recursive=True)
    return sorted(os.path.relpath(path, directory) for path in found)


def find_archives(archive_dir, groups):
    """[(group, [archive paths in part order])] for every group; all problems in one ArchiveError."""
    if not os.path.isdir(archive_dir):
        raise ArchiveError("the archive directory {} does not exist: add the datasets to the project (AI Studio "
                           "mounts them under /home/aistudio/data/dataNNNN/ when the environment starts) or "
                           "change ARCHIVE_DIR".format(archive_dir))
    found, problems = [], []
    for group in groups:
        pattern = os.path.join(archive_dir, group.pattern)
        matches = sorted(glob.glob(pattern, recursive=True), key=lambda p: (os.path.basename(p), p))
        names = [os.path.relpath(path, archive_dir) for path in matches]
        if not matches:
            problems.append("{}: no archive matches {}".format(group.name, pattern))
            continue
        if group.parts == 1:
            chosen = {1: matches[0]}
            duplicates = matches[1:]
        else:
            chosen, duplicates = {}, []
            for path in matches:
                number = _part_number(path)
                if number in chosen:
                    duplicates.append(path)
                else:
                    chosen[number] = path
            missing = [n for n in range(1, group.parts + 1) if n not in chosen]
            unexpected = [os.path.relpath(chosen[n], archive_dir) for n in chosen
                          if n is None or not 1 <= n <= group.parts]
            if missing or unexpected:
                problem = "{}: expected {} parts numbered 1..{} matching {}; found {}: {}".format(
                    group.name, group.parts, group.parts, pattern, len(matches), ", ".join(names))
                if missing:
                    numbered = [path for path in matches if _part_number(path) is not None] or matches
                    problem += "; missing: {}".format(", ".join(_missing_part(numbered[0], n) for n in missing))
                if unexpected:
                    problem += "; not numbered 1..{}: {}".format(group.parts, ", ".join(unexpected))
                problems.append(problem)
                continue
        for path in duplicates:
            print("note: {} also matches {}; using {}".format(
                path, group.pattern, chosen[_part_number(path) if group.parts > 1 else 1]))
        found.append((group, [chosen[n] for n in sorted(chosen)]))
    if problems:
        raise ArchiveError("archives missing under {}:\n  - {}\narchives there: {}\nAdd the missing dataset files "
                           "to the project, or fix the pattern (or the number of parts) in the parameters "
                           "cell.".format(archive_dir, "\n  - ".join(problems),
                                          summarize(_archives_below(archive_dir), shown=30) or "none"))
    return found


class ExtractionReport(object):
    """What extract_archives did: files written and files found complete, per archive."""

    def __init__(self):
        self.per_archive = collections.OrderedDict()  # path -> (extracted, already there)
        self.written = []  # the files this extraction wrote

    @property
    def extracted(self):
        return sum(done for done, _ in self.per_archive.values())

    @property
    def skipped(self):
        return sum(there for _, there in self.per_archive.values())

    def __str__(self):
        lines = ["{}: {} extracted, {} already there".format(os.path.basename(path), done, there)
                 for path, (done, there) in self.per_archive.items()]
        lines.append("total: {} files extracted, {} already there".format(self.extracted, self.skipped))
        return "\n".join(lines)


def _plan(archive, destination, data_dir):
    """(members to extract as (ZipInfo, path), number already complete) of one open archive."""
    pending, complete = [], 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        relative = destination(info.filename)
        if relative is None:
            continue
        path = os.path.join(data_dir, *relative.split("/"))
        if os.path.isfile(path) and os.path.getsize(path) == info.file_size:
            complete += 1
        else:
            pending.append((info, path))
    return pending, complete


def extract_archives(found, data_dir, progress=True):
    """Extract what ``find_archives`` found into ``data_dir``; returns an ExtractionReport.

    A file already there with the member's size counts as complete and is not written again;
    every file is written to a temporary name first, so a session that dies mid-way leaves no
    file that looks complete.
    """
    from tqdm import tqdm

    plans, report = [], ExtractionReport()
    for group, paths in found:
        for path in paths:
            try:
                with zipfile.ZipFile(path) as archive:
                    pending, complete = _plan(archive, group.destination, data_dir)
                    if not pending and not complete:
                        raise ArchiveError("{} ({}) holds no file this group takes; its first entries: {}".format(
                            path, group.name, summarize(archive.namelist(), shown=8)))
            except zipfile.BadZipFile as exc:
                raise ArchiveError("{} ({}) cannot be read as a zip archive: {}. Is the upload complete?".format(
                    path, group.name, exc))
            plans.append((path, pending, complete))
    needed = sum(info.file_size for _, pending, _ in plans for info, _ in pending)
    free = free_bytes(data_dir)
    if needed > free:
        raise ArchiveError("extracting needs {:.1f} GB but {} has {:.1f} GB free: free some space or set "
                           "DATA_DIR to a larger disk".format(needed / GIB, _existing_parent(data_dir), free / GIB))
    bar = tqdm(total=needed, unit="B", unit_scale=True, unit_divisor=1024, desc="extracting", file=sys.stdout,
               mininterval=1.0, disable=not progress or not needed)
    try:
        for path, pending, complete in plans:
            bar.set_postfix_str(os.path.basename(path), refresh=False)
            if pending:
                with zipfile.ZipFile(path) as archive:
                    for info, target in pending:
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        partial = target + ".part"
                        with archive.open(info) as source, open(partial, "wb") as out:
                            shutil.copyfileobj(source, out, 1 << 20)
                        os.replace(partial, target)
                        report.written.append(target)
                        bar.update(info.file_size)
            report.per_archive[path] = (len(pending), complete)
    finally:
        bar.close()
    return report


def check_extracted(report, data_dir, num_workers=None):
    """Decode every image and label ``report`` says was just written (python -m dataset.check), so
    that a damaged archive member shows now rather than hours into training. Returns the number
    of samples checked; raises ValueError listing the bad files."""
    from dataset.check import check_datasets, datasets_below, samples_of

    written = set(report.written)
    if not written:
        return 0
    datasets = datasets_below(data_dir)
    checked = sum(1 for d in datasets for job in samples_of(d) if job[0] in written or job[1] in written)
    check_datasets(datasets, num_workers, only=written)
    return checked


def check_layout(gta5_dir=None, cityscapes_dir=None, target_splits=("train", "val"), label_splits=("val",)):
    """Counts of the dataset files the scripts will read; DatasetError naming what is missing.

    ``gta5_dir``: images/ and labels/ (None: not checked); ``cityscapes_dir``: leftImg8bit/<split>/
    for ``target_splits`` and gtFine/<split>/ labels for every image of the ``label_splits`` among
    them (val for scoring; train too for training with weak labels).
    """
    if isinstance(label_splits, str):
        label_splits = (label_splits,)
    counts, problems = collections.OrderedDict(), []
    if gta5_dir is not None:
        images = files_below(os.path.join(gta5_dir, "images"), ".png")
        labels = set(files_below(os.path.join(gta5_dir, "labels"), ".png"))
        counts["GTA5 images"], counts["GTA5 labels"] = len(images), len(labels)
        if not images:
            problems.append("no GTA5 images in {}".format(os.path.join(gta5_dir, "images")))
        unlabelled = [name for name in images if name not in labels]
        if unlabelled:
            problems.append("{} GTA5 images have no label in {}: {}".format(
                len(unlabelled), os.path.join(gta5_dir, "labels"), summarize(unlabelled)))
    for split in target_splits if cityscapes_dir is not None else ():
        image_dir = os.path.join(cityscapes_dir, "leftImg8bit", split)
        entries = files_below(image_dir, IMAGE_SUFFIX)
        counts["Cityscapes {} images".format(split)] = len(entries)
        if not entries:
            problems.append("no Cityscapes images in {}".format(image_dir))
        if split in label_splits:
            gt_dir = os.path.join(cityscapes_dir, "gtFine", split)
            missing = [gtfine_entry(e) for e in entries if not os.path.isfile(os.path.join(gt_dir, gtfine_entry(e)))]
            counts["Cityscapes {} labels".format(split)] = len(entries) - len(missing)
            if missing:
                problems.append("{} Cityscapes {} images have no labels in {}: {}".format(
                    len(missing), split, gt_dir, summarize(missing)))
    if problems:
        raise DatasetError("the datasets are incomplete:\n  - {}\nRun 01_prepare_data_and_weights.ipynb (again: it "
                           "extracts only what is missing).".format("\n  - ".join(problems)))
    return counts


def check_translated(gta5_dir, translated_dir):
    """The number of CycleGAN translations of the GTA5 images (``translated_dir/images/``, named as
    the originals) that pixel adaptation reads; DatasetError naming those missing."""
    images = files_below(os.path.join(gta5_dir, "images"), ".png")
    translated = set(files_below(os.path.join(translated_dir, "images"), ".png"))
    missing = [name for name in images if name not in translated]
    if missing:
        raise DatasetError("{} of the {} GTA5 images have no translation in {}: {}. Upload the CycleGAN output "
                           "(GTA5 translated to Cityscapes' look, one image per GTA5 image, same names) there, "
                           "or set PIXEL_ADAPT = False.".format(len(missing), len(images),
                                                               os.path.join(translated_dir, "images"),
                                                               summarize(missing)))
    return len(images)


# -- weights -----------------------------------------------------------------------------------

def find_file(directory, pattern, what):
    """The first file matching ``pattern`` below ``directory``; ArchiveError listing the .pth files there."""
    matches = sorted(glob.glob(os.path.join(directory, pattern), recursive=True))
    if not matches:
        present = sorted(os.path.relpath(p, directory)
                         for p in glob.glob(os.path.join(directory, "**", "*.pth"), recursive=True))
        raise ArchiveError("{}: no file matches {}; .pth files under {}: {}. Upload it to the project as a "
                           "dataset file, or fix the pattern in the parameters cell.".format(
                               what, os.path.join(directory, pattern), directory, summarize(present) or "none"))
    return matches[0]


def convert_weights(source, target, model="DeeplabMulti"):
    """``python -m utils.convert_weights SOURCE TARGET --model MODEL``, unless TARGET exists."""
    if os.path.isfile(target):
        print("{} exists: already converted (delete it to convert again)".format(target))
        return target
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    run(["-m", "utils.convert_weights", source, target, "--model", model])
    return target


# -- a training run ----------------------------------------------------------------------------

def latest_snapshot(snapshot_dir):
    """The iteration of the run's newest complete snapshot, or None before its first."""
    return SnapshotDir.detect(snapshot_dir).latest()


def read_metrics(snapshot_dir):
    """The run's metrics.jsonl as {tag: (steps, values)}, tags in the order first logged."""
    metrics = _read_metrics(snapshot_dir)
    if not metrics:
        raise ValueError("{} holds no logged step yet; the first line comes after --log-every iterations".format(
            os.path.join(snapshot_dir, METRICS_FILE)))
    return metrics


def _trailing_mean(values, window):
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def latest_picture(snapshot_dir):
    """The newest ``predictions/iter_<N>.png`` of the run (a target image and its prediction), or None."""
    pictures = {}
    for path in glob.glob(os.path.join(snapshot_dir, PICTURES_DIR, "iter_*.png")):
        match = re.match(r"^iter_(\d+)\.png$", os.path.basename(path))
        if match:
            pictures[int(match.group(1))] = path
    return pictures[max(pictures)] if pictures else None


# Panel title -> (tag, legend) of each line it draws. AdaptSegNet's heads: 1 on conv4 features, 2 on conv5.
ADAPTSEGNET_PANELS = collections.OrderedDict([
    ("segmentation loss (GTA5)", (("loss/seg1", "seg1 (conv4 head)"), ("loss/seg2", "seg2 (conv5 head)"))),
    ("adversarial loss (Cityscapes)", (("loss/adv_target1", "adv_target1 (conv4 head)"),
                                       ("loss/adv_target2", "adv_target2 (conv5 head)"))),
    ("discriminator loss", (("loss/D1", "D1 (conv4 head)"), ("loss/D2", "D2 (conv5 head)"))),
    ("learning rate", (("lr/G", "G (segmentation network)"), ("lr/D", "D (discriminators)"))),
])
# train_weak_labels.py: the conv5 head only, plus the weak-label terms.
WEAK_LABEL_PANELS = collections.OrderedDict([
    ("segmentation loss (GTA5)", (("loss/seg2", "seg2"),)),
    ("adversarial losses (Cityscapes)", (("loss/adv_target2", "adv_target2 (output space)"),
                                         ("loss/cw_adv", "cw_adv (category-wise)"))),
    ("discriminator losses", (("loss/D2", "D2 (output space)"), ("loss/cw_D", "cw_D (category-wise)"))),
    ("weak-label losses (Cityscapes)", (("loss/weak", "weak (image-level labels)"),
                                        ("loss/point", "point (one point per class)"))),
    ("classes marked present", (("loss/present", "fraction of the 19 classes"),)),
    ("learning rate", (("lr/G", "G (segmentation network)"), ("lr/D", "D (discriminators)"))),
])


def plot_losses(metrics, path=None, smooth=1, panels=ADAPTSEGNET_PANELS):
    """The logged losses and learning rates against the iteration, one panel per entry of
    ``panels`` (ADAPTSEGNET_PANELS, WEAK_LABEL_PANELS); ``smooth``: logged points averaged.

    A tag the run did not log is left out; one that stayed 0 is only named in the legend, so that
    it does not squash the others' scale (the weak-label script logs every term, 0 for those its
    mode does not use).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = 2 if len(panels) <= 4 else 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.5 * rows), sharex=True, squeeze=False)
    for ax, (title, lines) in zip(axes.ravel(), panels.items()):
        for tag, legend in lines:
            if tag not in metrics:
                continue
            steps, values = metrics[tag]
            if not np.any(np.asarray(values, dtype=np.float64)):
                ax.plot([], [], linestyle="none", label=legend + ": 0 throughout (not used in this run)")
                continue
            shown = _trailing_mean(values, smooth) if tag.startswith("loss/") else values
            ax.plot(steps, shown, label=legend)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if smooth > 1:
        figure.suptitle("losses averaged over {} logged points".format(smooth))
    figure.tight_layout()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


# -- evaluation --------------------------------------------------------------------------------

def read_snapshot_table(snapshot_dir):
    """(OrderedDict iteration -> mIoU in [0, 1], best iteration) from the directory evaluation."""
    path = os.path.join(snapshot_dir, SNAPSHOT_TABLE_NAME)
    with open(path) as f:
        saved = json.load(f)
    table = collections.OrderedDict(sorted((int(k), v) for k, v in saved["mIoU"].items()))
    return table, saved["best_iteration"]


def snapshot_table_markdown(table, best):
    rows = ["| iteration | mIoU |", "|---:|---:|"]
    for iteration, miou in table.items():
        cell = "{:.2f}".format(miou * 100)
        rows.append("| {} | {} |".format(iteration, "**{}** (best)".format(cell) if iteration == best else cell))
    return "\n".join(rows)


def plot_snapshot_miou(table, best, path=None, reference=None):
    """mIoU of every snapshot; ``reference``: {label: mIoU in [0, 1]} drawn as horizontal lines."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=(9, 4))
    iterations = list(table)
    ax.plot(iterations, [table[i] * 100 for i in iterations], marker="o", label="snapshots of this run")
    ax.plot([best], [table[best] * 100], marker="*", markersize=16, linestyle="none",
            label="best: GTA5_{} ({:.2f})".format(best, table[best] * 100))
    for (label, value), style in zip(sorted((reference or {}).items()), ("--", ":", "-.")):
        ax.axhline(value * 100, linestyle=style, color="grey", label="{} ({:.2f})".format(label, value * 100))
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Cityscapes val mIoU of each snapshot")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


def _evenly(items, count):
    if count >= len(items):
        return list(items)
    return [items[int(i * len(items) / count)] for i in range(count)]


def _fit_width(picture, width):
    if picture.width <= width:
        return picture
    return picture.resize((width, max(1, round(picture.height * width / picture.width))), Image.NEAREST)


class Comparison(NamedTuple):
    """One validation image next to its ground truth and predictions, saved as one picture."""
    path: str
    titles: list
    panels: list  # PIL images, in the order of titles


def comparison_pictures(cityscapes_dir, predictions, count, out_dir, split="val", width=1024):
    """Image | ground truth | one prediction per entry of ``predictions`` ({title: --save dir}).

    ``count`` validation images, spread over the set; each row is saved as ``out_dir/<name>.png``
    with panels at most ``width`` wide, 8 pixels apart. Returns [Comparison].
    """
    image_dir = os.path.join(cityscapes_dir, "leftImg8bit", split)
    entries = _evenly(files_below(image_dir, IMAGE_SUFFIX), count)
    if not entries:
        raise DatasetError("no Cityscapes images in {}".format(image_dir))
    lut = label_id_to_train_id_lut()
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for entry in entries:
        name = posixpath.basename(entry)
        with Image.open(os.path.join(image_dir, entry)) as image:
            panels = [image.convert("RGB")]
        truth = lut[np.asarray(load_label_ids(os.path.join(cityscapes_dir, "gtFine", split, gtfine_entry(entry))))]
        panels.append(Image.fromarray(colorize(truth)))
        for title, directory in predictions.items():
            path = os.path.join(directory, name[:-len(".png")] + "_color.png")
            if not os.path.isfile(path):
                raise FileNotFoundError("no prediction {} for {}: run its evaluation with --save {} first".format(
                    path, title, directory))
            with Image.open(path) as prediction:
                panels.append(prediction.convert("RGB"))
        size = panels[0].size
        panels = [_fit_width(p if p.size == size else p.resize(size, Image.NEAREST), width) for p in panels]
        gap = 8
        row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
        for index, panel in enumerate(panels):
            row.paste(panel, (index * (panel.width + gap), 0))
        path = os.path.join(out_dir, name[:-len(IMAGE_SUFFIX)] + ".png")
        row.save(path)
        rows.append(Comparison(path, ["image", "ground truth"] + list(predictions), panels))
    return rows


def show_pictures(rows):
    """The rows of comparison_pictures as one figure, the class colours as its legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = len(rows[0].panels)
    width, height = rows[0].panels[0].size
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(14, (14.0 / columns * height / width + 0.3) * len(rows) + 1.0))
    for row, row_axes in zip(rows, axes):
        for index, (ax, panel, title) in enumerate(zip(row_axes, row.panels, row.titles)):
            ax.imshow(np.asarray(panel))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if index else "{}: {}".format(os.path.basename(row.path)[:-len(".png")], title),
                         fontsize="small")
    handles = [Patch(color=np.asarray(colour) / 255.0, label=name) for name, colour in zip(CLASS_NAMES, PALETTE)]
    figure.legend(handles=handles, loc="lower center", ncol=10, fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


# -- DEMO mode: stand-ins for AI Studio's archives and the authors' weights ---------------------

DEMO_WEIGHT_FILES = ("DeepLab_resnet_pretrained_init-f81d91e8.pth", "GTA2Cityscapes_multi-ed35151c.pth",
                     "gta5_pretrained.pth")


def make_demo_weights(out_dir, seed=DEMO_WEIGHTS_SEED):
    """Stand-ins for the authors' three files, written as PyTorch 0.x wrote them (legacy format,
    CUDA storages) so that the conversion really runs; returns their paths, in DEMO_WEIGHT_FILES' order.

    AdaptSegNet's init file and released model come from a DeeplabMulti initialised with ``seed``;
    the weak-label paper's GTA5 source-only model (``gta5_pretrained.pth``, a full DeeplabMulti)
    from one initialised with ``seed + 1``. Files already there are kept.
    """
    paths = tuple(os.path.join(out_dir, name) for name in DEMO_WEIGHT_FILES)
    if all(os.path.isfile(path) for path in paths):
        return paths
    import paddle

    from model import build_model
    from utils.files.torch_writer import save_legacy
    from utils.files.weights import CLASSIFIER_PREFIXES, INIT_FILE_PREFIX, as_torch_state

    os.makedirs(out_dir, exist_ok=True)
    paddle.seed(seed)
    released = as_torch_state(build_model("DeeplabMulti", num_classes=len(CLASS_NAMES)).state_dict())
    # The init file: a backbone with a 21-class (COCO) layer5 and no layer6, every key prefixed.
    coco = as_torch_state(build_model("DeeplabMulti", num_classes=21).layer5.state_dict())
    init = {INIT_FILE_PREFIX + k: v for k, v in released.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    init.update((INIT_FILE_PREFIX + "layer5." + k, v) for k, v in coco.items())
    paddle.seed(seed + 1)
    source_only = as_torch_state(build_model("DeeplabMulti", num_classes=len(CLASS_NAMES)).state_dict())
    for state, path in zip((init, released, source_only), paths):
        if not os.path.isfile(path):
            save_legacy(state, path, device="cuda:0", old_tensors=True)
    return paths


def _zip_tree(path, root, members, extra=()):
    """Write ``members`` (paths relative to ``root``) and ``extra`` ((name, bytes)) to a zip."""
    with zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            archive.write(os.path.join(root, member), member)
        for name, data in extra:
            archive.writestr(name, data)
    os.replace(path + ".part", path)


def make_demo_archives(out_dir, gta5_parts=10):
    """Synthetic data packed as AI Studio mounts the real datasets; returns ``out_dir``.

    data1001/NN_images.zip and NN_labels.zip: GTA5 in ``gta5_parts`` parts; data1002/: Cityscapes'
    leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (train and val labels), with a test
    split and colour labels that extraction must leave out; data1003/: stand-ins for the three .pth
    files (make_demo_weights).
    """
    done = os.path.join(out_dir, ".complete")
    if os.path.isfile(done):
        make_demo_weights(os.path.join(out_dir, "data1003"))  # earlier demo archives lack gta5_pretrained.pth
        print("demo archives already in {}".format(out_dir))
        return out_dir
    from dataset.synthetic import make_synthetic

    staging = os.path.join(out_dir, "synthetic")
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    gta5_root, cityscapes_root = make_synthetic(staging)
    gta5_zips = os.path.join(out_dir, "data1001")
    os.makedirs(gta5_zips, exist_ok=True)
    names = sorted(os.listdir(os.path.join(gta5_root, "images")))
    for part in range(gta5_parts):
        chunk = names[part * len(names) // gta5_parts:(part + 1) * len(names) // gta5_parts]
        for folder in ("images", "labels"):
            _zip_tree(os.path.join(gta5_zips, "{:02d}_{}.zip".format(part + 1, folder)), gta5_root,
                      [posixpath.join(folder, name) for name in chunk])

    cityscapes_zips = os.path.join(out_dir, "data1002")
    os.makedirs(cityscapes_zips, exist_ok=True)
    images = ["leftImg8bit/" + p for p in files_below(os.path.join(cityscapes_root, "leftImg8bit"), IMAGE_SUFFIX)]
    labels = ["gtFine/" + p for p in files_below(os.path.join(cityscapes_root, "gtFine"), LABEL_SUFFIX)]
    with open(os.path.join(cityscapes_root, images[-1]), "rb") as f:
        test_image = f.read()
    readme = ("README", b"synthetic stand-in for the Cityscapes archive\n")
    _zip_tree(os.path.join(cityscapes_zips, "leftImg8bit_trainvaltest.zip"), cityscapes_root, images,
              [readme, ("leftImg8bit/test/berlin/berlin_000000_000019" + IMAGE_SUFFIX, test_image)])
    colour_labels = []
    for label in labels:
        with Image.open(os.path.join(cityscapes_root, label)) as label_ids:
            rgb = colorize(label_id_to_train_id_lut()[np.asarray(label_ids)])
        path = os.path.join(cityscapes_root, label[:-len(LABEL_SUFFIX)] + "_gtFine_color.png")
        Image.fromarray(rgb).save(path)
        colour_labels.append(label[:-len(LABEL_SUFFIX)] + "_gtFine_color.png")
    _zip_tree(os.path.join(cityscapes_zips, "gtFine_trainvaltest.zip"), cityscapes_root, labels + colour_labels,
              [readme])

    make_demo_weights(os.path.join(out_dir, "data1003"))
    shutil.rmtree(staging)
    with open(done, "w") as f:
        f.write("ok\n")
    return out_dir


# -- keeping committed notebooks clean ---------------------------------------------------------

def clear_outputs(paths):
    """Drop outputs and execution counts, as the notebooks are committed."""
    import nbformat

    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
                cell.metadata.pop("execution", None)
        nbformat.write(notebook, path)
        print("cleared {}".format(path))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "clear":
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    clear_outputs(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

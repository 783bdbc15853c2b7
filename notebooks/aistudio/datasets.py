"""The datasets AI Studio mounts as zip archives, extracted into the layout the scripts read and
checked there."""
import collections
import glob
import os
import posixpath
import re
import shutil
import sys
import zipfile
from typing import Callable, NamedTuple, Optional

from dataset.cityscapes_dataset import IMAGE_SUFFIX, gtfine_entry
from dataset.files import files_below, summarize
from notebooks.aistudio.environment import GIB, existing_parent, free_bytes


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
                           "DATA_DIR to a larger disk".format(needed / GIB, existing_parent(data_dir), free / GIB))
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

"""Decode every image and label of the datasets once, before a long run meets a bad file.

    python -m dataset.check data/GTA5 data/Cityscapes [data/SYNTHIA data/NTHU] [--num-workers N]
    python -m dataset.check data            # every dataset found below data/
    python -m dataset.check data/mine --classes mine.json   # your own domain (dataset/custom.py)

Reports files that cannot be decoded (a cut-short extraction), labels holding ids outside the
dataset's class set (neither a class's nor ignored), and image/label pairs whose sizes disagree
(GTA5 has a few of those; training resizes both, so they are reported but not counted as errors
there). Exits 1 if anything is wrong. Training does the same with --check-data.
"""
import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from PIL import Image

import numpy as np
from tqdm import tqdm

from dataset.custom import SYNSCAPES_IMAGES, CustomDataSet, SynscapesDataSet, as_class_set, label_value_text, \
    values_present
from dataset.files import summarize
from utils.runtime import usable_cpus
from utils.stopping import ignore_stop_signals, run_interruptible

SIZE_MISMATCH_IS_NORMAL = ("GTA5DataSet",)


def _check_sample(image_path, label_path, read_label, known, table):
    """(errors, notes) of one image and its label; ``known`` holds the values its label may hold,
    ``table`` names them in errors."""
    errors, notes = [], []
    try:
        with Image.open(image_path) as image:
            image.load()
            image_size = image.size
    except Exception as exc:  # noqa: BLE001  (every decoding failure is a finding)
        return ["{}: cannot be decoded ({})".format(image_path, exc)], notes
    if label_path is None:
        return errors, notes
    try:
        ids = np.asarray(read_label(label_path))
    except Exception as exc:  # noqa: BLE001
        return ["{}: cannot be decoded ({})".format(label_path, exc)], notes
    unknown = [value for value in values_present(ids).tolist() if value not in known]
    if unknown:
        errors.append("{}: label ids {} are outside the dataset's table ({})".format(
            label_path, ", ".join(label_value_text(v) for v in unknown[:8]), table))
    if (ids.shape[1], ids.shape[0]) != image_size:
        notes.append("{}: label is {}x{} but its image {} is {}x{}".format(
            label_path, ids.shape[1], ids.shape[0], image_path, *image_size))
    return errors, notes


def _check_chunk(chunk):
    return [_check_sample(*job) for job in chunk]


def listed_dataset(dataset):
    """The dataset of files below the training scripts' wrappers (SourceWithPresentClasses,
    TranslatedImages, WeakTargetDataSet): what is checked."""
    while not hasattr(type(dataset), "raw_label_ids"):
        inner = next((getattr(dataset, name) for name in ("dataset", "source", "images") if hasattr(dataset, name)),
                     None)
        if inner is None:
            return dataset
        dataset = inner
    return dataset


def samples_of(dataset):
    """(image path, label path or None, label reader, known label values, their name in errors) of
    every entry. The values a label may hold are its class set's (a class's or ignored); a custom
    dataset's also include the colours of colour labels."""
    reader = type(dataset).raw_label_ids
    if hasattr(dataset, "known_label_values"):
        known = frozenset(dataset.known_label_values())
    else:
        known = frozenset(dataset.classes.known_values())
    if known and max(known) - min(known) + 1 == len(known):
        table = "{}..{}".format(min(known), max(known))
    else:
        table = getattr(dataset, "class_source", None) or "class set {}".format(dataset.classes.name)
    jobs = []
    for entry in dict.fromkeys(dataset.img_ids):
        label = dataset.label_path(entry) if dataset.with_labels else None
        jobs.append((dataset.image_path(entry), label, reader, known, table))
    return jobs


def check_datasets(datasets, num_workers=None, progress=True, only=None):
    """Check every sample of ``datasets`` (with ``only``: those reading one of these paths).

    Returns (errors, notes); raises ValueError listing the errors if there are any.
    """
    errors, notes = [], []
    for dataset in map(listed_dataset, datasets):
        jobs = samples_of(dataset)
        if only is not None:
            jobs = [job for job in jobs if job[0] in only or job[1] in only]
        if not jobs:
            continue
        chunks = [jobs[i:i + 32] for i in range(0, len(jobs), 32)]
        name = type(dataset).__name__
        bar = tqdm(total=len(jobs), unit="file", desc="checking {}".format(name), disable=not progress)
        pool = ProcessPoolExecutor(max_workers=num_workers or usable_cpus(), initializer=ignore_stop_signals)
        futures = [pool.submit(_check_chunk, chunk) for chunk in chunks]
        try:
            for chunk, future in zip(chunks, futures):
                for sample_errors, sample_notes in future.result():
                    errors += sample_errors
                    (notes if name in SIZE_MISMATCH_IS_NORMAL else errors).extend(sample_notes)
                bar.update(len(chunk))
        except BaseException:  # an interrupt: the chunks not started are dropped, not checked first
            for future in futures:
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True)
        bar.close()
    if errors:
        raise ValueError("{} problem(s) in the data: {}. Re-extract or replace these files (or leave them out "
                         "of the list file)".format(len(errors), summarize(errors, shown=10, separator="\n  ")))
    return errors, notes


def datasets_below(root, classes=None):
    """The datasets at ``root`` (a GTA5, Cityscapes, SYNTHIA, NTHU or Synscapes root) or in its
    sub-folders. With ``classes`` (a class file, a preset's name or a ClassSet), a folder holding
    images/ is a custom dataset of these classes (dataset/custom.py), GTA5's layout included."""
    from dataset.cityscapes_dataset import cityscapesDataSet
    from dataset.gta5_dataset import GTA5DataSet
    from dataset.nthu_dataset import NTHU_CITIES, NTHUDataSet
    from dataset.synthia_dataset import SYNTHIADataSet

    def at(folder):
        found = []
        if classes is not None and os.path.isdir(os.path.join(folder, "images")):
            found.append(CustomDataSet(folder, classes=classes))
        elif os.path.isdir(os.path.join(folder, "images")) and os.path.isdir(os.path.join(folder, "labels")):
            found.append(GTA5DataSet(folder))
        if os.path.isdir(os.path.join(folder, SYNSCAPES_IMAGES)):
            found.append(SynscapesDataSet(folder))
        if os.path.isdir(os.path.join(folder, "RGB")):
            found.append(SYNTHIADataSet(folder))
        for split in ("train", "val"):
            if os.path.isdir(os.path.join(folder, "leftImg8bit", split)):
                with_labels = os.path.isdir(os.path.join(folder, "gtFine", split))
                found.append(cityscapesDataSet(folder, set=split, return_label=with_labels))
        for city in NTHU_CITIES:
            for split, folder_name in (("train", "Train"), ("test", "Test")):
                if os.path.isdir(os.path.join(folder, city, "Images", folder_name)):
                    found.append(NTHUDataSet(folder, city, split))
        return found

    found = at(root)
    if not found and os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            found += at(os.path.join(root, name))
    if not found:
        raise FileNotFoundError("{}: no GTA5 (images/, labels/), Cityscapes (leftImg8bit/), SYNTHIA (RGB/), NTHU "
                                "(<City>/Images/), Synscapes ({}/) or, with --classes, custom (images/) dataset there "
                                "or in its folders".format(root, SYNSCAPES_IMAGES))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dataset.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="dataset roots, or folders holding them")
    parser.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: CPU count)")
    parser.add_argument("--classes", default=None,
                        help="class file (JSON or YAML) or preset name: folders holding images/ (and labels/ of the "
                             "same names) are then your own datasets of these classes, not GTA5")
    args = parser.parse_args(argv)
    try:
        if args.classes is not None:
            as_class_set(args.classes)  # a bad class file is refused before any folder is read
        datasets = [d for root in args.roots for d in datasets_below(root, args.classes)]
        for dataset in datasets:
            print("{}: {} samples in {}".format(type(dataset).__name__, len(set(dataset.img_ids)), dataset.root))
        _, notes = check_datasets(datasets, args.num_workers)
    except (OSError, ValueError) as exc:
        sys.exit("error: {}".format(exc))
    for note in notes:
        print("note (resized anyway): {}".format(note))
    print("all files decode{}".format("; {} size differences noted".format(len(notes)) if notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_interruptible(main, lambda: "no file was changed; run it again to check them all"))

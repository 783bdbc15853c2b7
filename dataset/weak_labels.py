"""Image-level ("weak") labels of the target domain for the weak-label method (Paul et al., ECCV 2020):
per-class pixel thresholds, labels from ground truth or from a file, one point per class, the
target dataset that yields what a mode needs, and the source samples with the classes present.

    python -m dataset.weak_labels thresholds data/Cityscapes --set train [--size 1024,512] [--out tau.json]
    python -m dataset.weak_labels thresholds ROOT --dataset custom [--list LIST] --classes FILE [--out tau.json]

A class is present in an image when it covers more than tau_c pixels. The reference derives tau
from per-image class pixel counts (``thresholds_from_counts``); its figures are the defaults
here. It compares counts made at a certain label resolution (GTA5 and SYNTHIA at the training
input size, Cityscapes at the full 2048x1024 of its labels, although its Cityscapes table looks
counted at 1024x512: a quirk reproduced as it is). Labels of another size are compared with tau
scaled by their share of that resolution, which changes nothing at the reference's sizes.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

from dataset.base import split_index
from dataset.classes import CITYSCAPES
from dataset.files import summarize

# tau per class in train-id order: thresholds_from_counts of the reference's published count tables
# (sujoyp/weak-da-seg, pixel_counts/<dataset>_pixel_counts.npy): the mean its
# daweak/engine/trainer_base.py's load_threshold computes, times the PER_TH get_weak_labels applies.
REFERENCE_THRESHOLDS = {
    "gta5": (69189.3, 19341.3, 36676.0, 6429.2, 4025.1, 2251.0, 540.1, 518.9, 16499.7, 7438.9, 28458.6, 1756.4,
             1507.8, 8661.7, 9813.2, 18027.6, 15159.8, 1585.3, 1044.7),
    "cityscapes": (17359.0, 3315.0, 11311.7, 1311.2, 1247.3, 611.3, 228.7, 307.8, 8281.1, 1483.5, 2252.1, 1040.1,
                   243.8, 4014.8, 1912.8, 1948.5, 4126.6, 423.9, 480.0),
    "synthia": (18978.2, 17831.8, 26889.5, 394.8, 355.1, 1002.2, 141.7, 194.3, 10624.2, 95.6, 7709.4, 3797.6,
                526.8, 5038.6, 61.4, 2818.8, 25.8, 285.4, 158.3),
}
# Pixels of the labels the reference compared those thresholds with.
REFERENCE_PIXELS = {"gta5": 1280 * 720, "synthia": 1280 * 760, "cityscapes": 2048 * 1024}
RATIO, ROUNDS = 0.1, 10


class Thresholds(object):
    """tau (per class of ``classes``) for labels of ``pixels`` pixels; ``for_pixels(n)`` scales them to n."""

    def __init__(self, tau, pixels, source="the reference", classes=CITYSCAPES):
        self.tau = np.asarray(tau, dtype=np.float64)
        self.pixels = int(pixels)
        self.source = source
        if self.tau.shape != (classes.num_classes,):
            raise ValueError("{}: {} thresholds, expected one per class of {} ({})".format(
                source, self.tau.size, classes.name, classes.num_classes))

    @classmethod
    def reference(cls, dataset):
        return cls(REFERENCE_THRESHOLDS[dataset], REFERENCE_PIXELS[dataset], "the reference's {} table".format(dataset))

    @classmethod
    def of_dataset(cls, dataset, classes):
        """The reference's table for a benchmark dataset, else tau computed from ``dataset``'s own
        labels at its input size by the reference's rule (``thresholds_from_counts``)."""
        name = {"GTA5DataSet": "gta5", "SYNTHIADataSet": "synthia", "cityscapesDataSet": "cityscapes"}.get(
            type(dataset).__name__)
        if name is not None:
            return cls.reference(name)
        counts, (width, height) = count_table(dataset, dataset.crop_size)
        return cls(thresholds_from_counts(counts), width * height,
                   "thresholds_from_counts of the {} labels of {}".format(len(counts), dataset.root), classes)

    @classmethod
    def from_file(cls, path, classes=CITYSCAPES):
        """A JSON file written by ``python -m dataset.weak_labels thresholds``."""
        try:
            with open(path) as f:
                saved = json.load(f)
            return cls([saved["tau"][name] for name in classes.names], saved["pixels"], path, classes)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError("{}: not a thresholds file of python -m dataset.weak_labels thresholds ({}: {})".format(
                path, type(exc).__name__, exc))

    def for_pixels(self, pixels):
        return self.tau * (float(pixels) / self.pixels)


def thresholds_from_counts(counts, ratio=RATIO, rounds=ROUNDS):
    """tau per class from an (images, classes) table of pixel counts, by the reference's rule: the
    mean of the counts above ``ratio`` times the previous mean, ``rounds`` times (starting from
    the mean of the non-zero counts), then ``ratio`` times that mean."""
    counts = np.asarray(counts, dtype=np.float64)
    means = np.zeros(counts.shape[1])
    for _ in range(rounds):
        means = np.array([counts[counts[:, c] > ratio * means[c], c].mean() if np.any(counts[:, c] > ratio * means[c])
                          else 0.0 for c in range(counts.shape[1])])
    return ratio * means


def class_pixel_counts(train_ids, num_classes):
    """(classes,) pixel count of each train id in a label map (ignored pixels not counted)."""
    ids = np.asarray(train_ids).ravel()
    return np.bincount(ids[ids < num_classes], minlength=num_classes)[:num_classes]


def present_classes(train_ids, thresholds):
    """(classes,) float32 1/0: the classes covering more than their threshold in ``train_ids``."""
    tau = thresholds.for_pixels(np.asarray(train_ids).size)
    return (class_pixel_counts(train_ids, len(tau)) > tau).astype(np.float32)


def sample_points(train_ids, rng, num_classes):
    """(classes, 2) int64 (row, column) of one pixel of every class in ``train_ids``; -1 where a
    class is absent. The reference clicks one point per class present in the label."""
    points = np.full((num_classes, 2), -1, dtype=np.int64)
    flat = np.asarray(train_ids).ravel()
    for c in np.unique(flat):
        if c < num_classes:
            where = np.flatnonzero(flat == c)
            points[c] = np.unravel_index(where[rng.integers(len(where))], train_ids.shape)
    return points


def read_label_file(path, entries, classes=CITYSCAPES):
    """{entry: (classes,) float32} from a file of one line per image: its entry, then the names (or
    train ids) of the classes present, separated by spaces; every entry needs a line."""
    by_name = {name: i for i, name in enumerate(classes.names)}
    num_classes = classes.num_classes
    labels = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            vector = np.zeros(num_classes, np.float32)
            for field in fields[1:]:
                index = int(field) if field.isdigit() else by_name.get(field)
                if index is None or not 0 <= index < num_classes:
                    raise ValueError("{}, line {}: {!r} is neither a class name ({}) nor a train id 0..{}".format(
                        path, number, field, ", ".join(classes.names), num_classes - 1))
                vector[index] = 1.0
            labels[fields[0]] = vector
    missing = [entry for entry in dict.fromkeys(entries) if entry not in labels]
    if missing:
        raise ValueError("{}: no line for {} image(s): {}".format(path, len(missing), ", ".join(missing[:5])))
    return labels


class WeakTargetDataSet(object):
    """The target images with what a weak-label mode needs: ``(image, weak labels, size, name)``, or
    with points ``(image, weak labels, points, size, name)``.

    ``images``: a target dataset without labels. Weak labels are the classes present in the
    image's ground truth at its own resolution (or listed in ``label_file``); points are one pixel
    per class of the label resized to the input size, drawn once per image from ``seed`` (every
    run and every resume sees the same points).
    """

    def __init__(self, images, thresholds, with_points=False, label_file=None, seed=0):
        self.images, self.thresholds, self.with_points, self.seed = images, thresholds, with_points, seed
        self.file_labels = read_label_file(label_file, images.img_ids, images.classes) if label_file else None
        if self.file_labels is None or with_points:
            missing = [path for path in dict.fromkeys(map(images.label_path, images.img_ids))
                       if not os.path.isfile(path)]
            if missing:
                raise FileNotFoundError(
                    "weakly supervised training (image labels from ground truth, or points) needs the target "
                    "images' labels; {} of them are missing: {}. Extract them too (Cityscapes: gtFine), give the "
                    "image labels as a file (--weak-label-file), or train with --use-pseudo".format(
                        len(missing), summarize(missing)))

    def __len__(self):
        return len(self.images)

    @property
    def fields(self):
        return ("images", "weak", "points", "sizes", "names") if self.with_points else ("images", "weak", "sizes", "names")

    def files(self, index):
        return self.images.files(index) + [self.images.label_path(self.images.img_ids[split_index(index)[0]])]

    def __getitem__(self, index):
        sample = self.images[index]  # (image, size, name), or a custom target's (image, label, size, name)
        image, size, entry = sample[0], sample[-2], sample[-1]
        if self.file_labels is not None and not self.with_points:
            return image, self.file_labels[entry], size, entry
        train_ids = self.images.read_train_ids(self.images.label_path(entry))
        weak = self.file_labels[entry] if self.file_labels is not None else \
            present_classes(train_ids, self.thresholds)
        if not self.with_points:
            return image, weak, size, entry
        # NEAREST picks the same pixels from train ids as from the label ids they map.
        resized = np.asarray(Image.fromarray(train_ids).resize(self.images.crop_size, Image.NEAREST))
        position, flip = split_index(index)
        points = sample_points(resized, np.random.default_rng([self.seed, position]), len(weak))
        if flip:  # the image was mirrored: so are its points
            points[:, 1] = np.where(points[:, 1] >= 0, resized.shape[1] - 1 - points[:, 1], -1)
        return image, weak, points, size, entry


class SourceWithPresentClasses(object):
    """A labelled source dataset whose samples also say which classes their label holds:
    ``(image, label, present, size, name)``, ``present`` = ``present_classes(label, thresholds)``
    ((classes,) float32 1/0), the category-wise discriminator's source targets. Computed in the
    loader's workers, from the label at the input size as the iteration did, so that the iteration
    needs no copy of the labels from the device."""

    fields = ("images", "labels", "present", "sizes", "names")

    def __init__(self, dataset, thresholds):
        self.dataset, self.thresholds = dataset, thresholds
        self.img_ids = dataset.img_ids

    def __len__(self):
        return len(self.dataset)

    def files(self, index):
        return self.dataset.files(index)

    def __getitem__(self, index):
        image, label, size, entry = self.dataset[index]
        return image, label, present_classes(label, self.thresholds), size, entry


def count_table(dataset, size=None):
    """(images, classes) pixel counts of every label of ``dataset`` (a dataset with labels), at
    ``size`` = (width, height) or at the labels' own size."""
    rows = []
    for entry in dict.fromkeys(dataset.img_ids):
        train_ids = dataset.read_train_ids(dataset.label_path(entry))
        if size is not None:
            train_ids = np.asarray(Image.fromarray(train_ids).resize(size, Image.NEAREST))
        rows.append(class_pixel_counts(train_ids, dataset.classes.num_classes))
    return np.array(rows), (size or train_ids.shape[::-1])


def main(argv=None):
    from dataset.cityscapes_dataset import cityscapesDataSet
    from dataset.custom import CustomDataSet
    from dataset.gta5_dataset import GTA5DataSet
    from dataset.synthia_dataset import SYNTHIADataSet
    from utils.cli import size_argument

    parser = argparse.ArgumentParser(prog="python -m dataset.weak_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    thresholds = commands.add_parser("thresholds", help="tau per class from a dataset's labels (JSON for "
                                                        "--source-thresholds / --target-thresholds)")
    thresholds.add_argument("root", help="a GTA5, SYNTHIA, Cityscapes or custom root")
    thresholds.add_argument("--dataset", choices=("cityscapes", "gta5", "synthia", "custom"), default="cityscapes")
    thresholds.add_argument("--list", default=None, help="custom: the 'image label' list file (default: the "
                                                           "folders root/images and root/labels)")
    thresholds.add_argument("--classes", default=None, help="custom: the class file (JSON or YAML)")
    thresholds.add_argument("--set", default="train", help="Cityscapes split whose gtFine labels are counted")
    thresholds.add_argument("--size", type=size_argument, default=None,
                            help="WIDTH,HEIGHT to count at (the labels' size at comparison); default: as stored")
    thresholds.add_argument("--out", default=None, help="write the thresholds to this JSON file")
    args = parser.parse_args(argv)
    if (args.dataset == "custom") != (args.classes is not None):
        parser.error("--classes goes with --dataset custom, which needs it")
    try:
        dataset = {"gta5": lambda: GTA5DataSet(args.root), "synthia": lambda: SYNTHIADataSet(args.root),
                   "cityscapes": lambda: cityscapesDataSet(args.root, set=args.set, return_label=True),
                   "custom": lambda: CustomDataSet(args.root, args.list, classes=args.classes, with_labels=True)
                   }[args.dataset]()
        counts, (width, height) = count_table(dataset, args.size)
    except (OSError, ValueError) as exc:
        sys.exit("error: {}".format(exc))
    tau = thresholds_from_counts(counts)
    result = {"tau": {name: float(t) for name, t in zip(dataset.classes.names, tau)}, "pixels": width * height,
              "images": len(counts), "dataset": args.dataset, "root": os.path.abspath(args.root)}
    for name, value in result["tau"].items():
        print("{:>12s} {:10.1f}".format(name, value))
    print("counted on {} labels at {}x{}".format(len(counts), width, height))
    if args.out:
        from utils.files.atomic import atomic_write_json
        atomic_write_json(args.out, result)
        print("wrote {}".format(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

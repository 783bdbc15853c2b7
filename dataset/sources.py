"""The domains the training scripts take: the labelled sources (--source) and the unlabelled
targets (--target), and what each one decides: its dataset, default input size, snapshot names
and the classes its models are scored on."""
import importlib
import os
from typing import NamedTuple, Optional, Tuple

from dataset.base import split_index
from dataset.classes import SOURCE_CLASS_SETS, TARGET_CLASS_SETS
from dataset.files import summarize


class Source(NamedTuple):
    dataset: str          # the dataset class, in module:name form (imported on use: Paddle)
    input_size: Tuple[int, int]
    snapshot_prefix: str  # snapshots are <prefix>_<N>.pdparams
    class_sets: Tuple[str, ...]
    options: Tuple[Tuple[str, object], ...] = ()  # keyword arguments of the dataset class


SOURCES = {
    "gta5": Source("dataset.gta5_dataset:GTA5DataSet", (1280, 720), "GTA5", SOURCE_CLASS_SETS["gta5"]),
    "synthia": Source("dataset.synthia_dataset:SYNTHIADataSet", (1280, 760), "SYNTHIA", SOURCE_CLASS_SETS["synthia"]),
    # Cross-city adaptation: Cityscapes train with its gtFine labels is the labelled source.
    "cityscapes": Source("dataset.cityscapes_dataset:cityscapesDataSet", (1024, 512), "Cityscapes",
                         SOURCE_CLASS_SETS["cityscapes"], (("set", "train"), ("return_label", True))),
}
SOURCE_OF_PREFIX = {source.snapshot_prefix: name for name, source in SOURCES.items()}


class Target(NamedTuple):
    dataset: str                          # module:name, as Source.dataset
    input_size: Tuple[int, int]
    class_sets: Optional[Tuple[str, ...]]  # None: the source's decide
    val_split: str                        # the labelled split validation and evaluation score
    data_dir: str                         # the default root


TARGETS = {
    "cityscapes": Target("dataset.cityscapes_dataset:cityscapesDataSet", (1024, 512),
                         TARGET_CLASS_SETS["cityscapes"], "val", "./data/Cityscapes"),
    # Cross-city: one city of the NTHU dataset (--city), its images used at 1024x512 as Cityscapes'.
    "nthu": Target("dataset.nthu_dataset:NTHUDataSet", (1024, 512), TARGET_CLASS_SETS["nthu"], "test", "./data/NTHU"),
}


def _import(dataset):
    module, cls = dataset.split(":")
    return getattr(importlib.import_module(module), cls)


def source_class(name):
    return _import(SOURCES[name].dataset)


def target_class(name):
    return _import(TARGETS[name].dataset)


def scored_class_sets(source="gta5", target="cityscapes"):
    """The class sets (names in CLASS_SETS, the headline first) a model trained on ``source`` and
    evaluated on ``target`` is scored on: the target's if its labels hold fewer classes, else the
    source's."""
    if source not in SOURCES:
        raise ValueError("unknown source {!r}: choose one of {}".format(source, ", ".join(sorted(SOURCES))))
    if target not in TARGETS:
        raise ValueError("unknown target {!r}: choose one of {}".format(target, ", ".join(sorted(TARGETS))))
    return TARGETS[target].class_sets or SOURCES[source].class_sets


def make_source(args):
    """The source dataset of a training command line (--source, --data-dir, --data-list, --input-size)."""
    return source_class(args.source)(args.data_dir, args.data_list, crop_size=args.input_size,
                                     ignore_label=args.ignore_label, **dict(SOURCES[args.source].options))


def make_target(args):
    """The unlabelled target images of a training command line (--target, --data-dir-target,
    --data-list-target, --input-size-target, and --set for Cityscapes or --city for NTHU)."""
    target = getattr(args, "target", "cityscapes")
    dataset = target_class(target)
    if target == "nthu":
        from dataset.nthu_dataset import NTHU_CITIES
        city = getattr(args, "city", None)
        if not city:
            raise ValueError("--target nthu needs --city (one of {})".format(", ".join(NTHU_CITIES)))
        return dataset(args.data_dir_target, city, args.set, list_path=args.data_list_target,
                       crop_size=args.input_size_target, return_label=False)
    return dataset(args.data_dir_target, args.data_list_target, crop_size=args.input_size_target, set=args.set)


class TranslatedImages(object):
    """Every source sample twice: as it is, and with its image replaced by its translated version
    (same relative path under ``translated_root``, same label): the weak-label method's pixel-level
    adaptation, as the reference lists its source images."""

    def __init__(self, source, translated_root):
        self.source, self.translated_root = source, translated_root
        missing = [self.translated(entry) for entry in dict.fromkeys(source.img_ids)
                   if not os.path.isfile(self.translated(entry))]
        if missing:
            raise FileNotFoundError("--use-pixeladapt: {} of the translated source images are missing under {}: {}; "
                                    "they must mirror the source's layout (same relative paths)".format(
                                        len(missing), translated_root, summarize(missing)))
        self.img_ids = source.img_ids

    def translated(self, entry):
        return os.path.join(self.translated_root, os.path.relpath(self.source.image_path(entry), self.source.root))

    def __len__(self):
        return 2 * len(self.source)

    def files(self, index):
        position, flip = split_index(index)
        files = self.source.files((position // 2, flip))
        if position % 2:
            files[0] = self.translated(self.source.img_ids[position // 2])
        return files

    def __getitem__(self, index):
        position, flip = split_index(index)
        if position % 2 == 0:
            return self.source[(position // 2, flip)]
        return self.source.sample(position // 2, flip, image_path=self.translated(self.source.img_ids[position // 2]))

"""The domains the training scripts take: the labelled sources (--source) and the unlabelled
targets (--target), and what each one decides: its dataset, default input size, snapshot names
and the classes its models are scored on."""
import importlib
import os
from typing import NamedTuple, Optional, Tuple

from dataset.base import split_index
from dataset.classes import CITYSCAPES, NTHU, SYNSCAPES, SYNTHIA, ClassSet, ClassSetError, few_names, load_class_file
from dataset.files import summarize

CUSTOM = "custom"  # a domain described by files: a list or two folders, and a class file (--classes)


class Source(NamedTuple):
    dataset: str          # the dataset class, in module:name form (imported on use: Paddle)
    input_size: Tuple[int, int]
    snapshot_prefix: str  # snapshots are <prefix>_<N>.pdparams (custom: --name)
    classes: Optional[ClassSet]  # what its labels mean and what its models are scored on (custom: --classes)
    options: Tuple[Tuple[str, object], ...] = ()  # keyword arguments of the dataset class


SOURCES = {
    "gta5": Source("dataset.gta5_dataset:GTA5DataSet", (1280, 720), "GTA5", CITYSCAPES),
    "synthia": Source("dataset.synthia_dataset:SYNTHIADataSet", (1280, 760), "SYNTHIA", SYNTHIA),
    # Cross-city adaptation: Cityscapes train with its gtFine labels is the labelled source.
    "cityscapes": Source("dataset.cityscapes_dataset:cityscapesDataSet", (1024, 512), "Cityscapes", CITYSCAPES,
                         (("set", "train"), ("return_label", True))),
    "synscapes": Source("dataset.custom:SynscapesDataSet", (1440, 720), "Synscapes", SYNSCAPES),
    CUSTOM: Source("dataset.custom:CustomDataSet", (1024, 512), CUSTOM, None),
}
SOURCE_OF_PREFIX = {source.snapshot_prefix: name for name, source in SOURCES.items()}


class Target(NamedTuple):
    dataset: str                     # module:name, as Source.dataset
    input_size: Tuple[int, int]
    classes: Optional[ClassSet]      # what its labels mean (custom: --classes)
    narrows: bool                    # its labels hold fewer classes: its subsets are scored, not the source's
    val_split: str                   # the labelled split validation and evaluation score
    data_dir: str                    # the default root


TARGETS = {
    "cityscapes": Target("dataset.cityscapes_dataset:cityscapesDataSet", (1024, 512), CITYSCAPES, False, "val",
                         "./data/Cityscapes"),
    # Cross-city: one city of the NTHU dataset (--city), its images used at 1024x512 as Cityscapes'.
    "nthu": Target("dataset.nthu_dataset:NTHUDataSet", (1024, 512), NTHU, True, "test", "./data/NTHU"),
    CUSTOM: Target("dataset.custom:CustomDataSet", (1024, 512), None, False, "val", None),
}


def _import(dataset):
    module, cls = dataset.split(":")
    return getattr(importlib.import_module(module), cls)


def source_class(name):
    return _import(SOURCES[name].dataset)


def target_class(name):
    return _import(TARGETS[name].dataset)


def domain_classes(name, domains, class_file=None, flag="--source"):
    """The ClassSet of domain ``name`` (of SOURCES or TARGETS): its own, or a custom one's class file."""
    if name not in domains:
        raise ValueError("unknown {} {!r}: choose one of {}".format(flag, name, ", ".join(sorted(domains))))
    if domains[name].classes is not None:
        return domains[name].classes
    if not class_file:
        raise ClassSetError("{} {} needs --classes FILE: the class file saying the classes, their colours and "
                            "label values (README, \"Your own data\")".format(flag, name))
    return load_class_file(class_file)


def target_classes(target, class_file=None, model_classes=None):
    """The ClassSet ``target``'s label files are read with: its own, or a custom one's class file
    (without one, the classes recorded with a custom run's model)."""
    if target == CUSTOM and not class_file and model_classes is not None:
        return model_classes
    return domain_classes(target, TARGETS, class_file, "--target")


def scored_classes(source="gta5", target="cityscapes", class_file=None, model_classes=None):
    """The ClassSet a model trained on ``source`` and evaluated on ``target`` is scored with: the
    source's classes (or ``model_classes``, those recorded with the model), scored on the
    target's subsets if its labels hold fewer classes, else on the source's. The target's labels
    must name the same classes (a class file ``--classes`` serves every custom domain)."""
    if model_classes is not None:
        classes = model_classes
    else:
        classes = domain_classes(source, SOURCES, class_file)
    labels = target_classes(target, class_file, model_classes)
    if tuple(labels.names) != tuple(classes.names):
        raise ClassSetError("--target {}'s labels name the {} classes of {} ({}), but a model of --source {} "
                            "predicts the {} of {} ({}): give a class file (--classes) naming the model's classes, "
                            "or the --source the model was trained on".format(
                                target, labels.num_classes, labels.name, few_names(labels.names), source,
                                classes.num_classes, classes.name, few_names(classes.names)))
    if TARGETS[target].narrows:
        return classes.derive(classes.name, scored=labels.scored)
    return classes


def snapshot_prefix(source, name=CUSTOM):
    """Snapshots of a run are <prefix>_<N>.pdparams: the source's name for it, a custom run's --name."""
    return name if source == CUSTOM else SOURCES[source].snapshot_prefix


def make_source(args):
    """The source dataset of a training command line (--source, --data-dir, --data-list, --input-size)."""
    options = dict(SOURCES[args.source].options)
    if args.source == CUSTOM:
        options["classes"] = domain_classes(CUSTOM, SOURCES, args.classes)
    return source_class(args.source)(args.data_dir, args.data_list, crop_size=args.input_size,
                                     ignore_label=args.ignore_label, **options)


def make_target(args, with_labels=False):
    """The unlabelled target images of a training command line (--target, --data-dir-target,
    --data-list-target, --input-size-target, and --set for Cityscapes or --city for NTHU); a custom
    target ``with_labels`` also reads its labels (weak labels from the ground truth)."""
    target = getattr(args, "target", "cityscapes")
    dataset = target_class(target)
    if target == "nthu":
        from dataset.nthu_dataset import NTHU_CITIES
        city = getattr(args, "city", None)
        if not city:
            raise ValueError("--target nthu needs --city (one of {})".format(", ".join(NTHU_CITIES)))
        return dataset(args.data_dir_target, city, args.set, list_path=args.data_list_target,
                       crop_size=args.input_size_target, return_label=False)
    if target == CUSTOM:  # its labels, if any, are for validation
        return dataset(args.data_dir_target, args.data_list_target, crop_size=args.input_size_target,
                       classes=domain_classes(CUSTOM, TARGETS, args.classes, "--target"), with_labels=with_labels)
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
        self.fields = source.fields

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

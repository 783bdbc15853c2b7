"""The labelled source domains the training scripts take (--source), and what each one decides:
its dataset, default input size, snapshot names and the classes its models are scored on."""
import os
from typing import NamedTuple, Tuple

from dataset.classes import SOURCE_CLASS_SETS
from dataset.files import summarize


class Source(NamedTuple):
    dataset: str          # the dataset class, in module:name form (imported on use: Paddle)
    input_size: Tuple[int, int]
    snapshot_prefix: str  # snapshots are <prefix>_<N>.pdparams
    class_sets: Tuple[str, ...]


SOURCES = {
    "gta5": Source("dataset.gta5_dataset:GTA5DataSet", (1280, 720), "GTA5", SOURCE_CLASS_SETS["gta5"]),
    "synthia": Source("dataset.synthia_dataset:SYNTHIADataSet", (1280, 760), "SYNTHIA", SOURCE_CLASS_SETS["synthia"]),
}
SOURCE_OF_PREFIX = {source.snapshot_prefix: name for name, source in SOURCES.items()}


def source_class(name):
    import importlib
    module, cls = SOURCES[name].dataset.split(":")
    return getattr(importlib.import_module(module), cls)


def make_source(args):
    """The source dataset of a training command line (--source, --data-dir, --data-list, --input-size)."""
    return source_class(args.source)(args.data_dir, args.data_list, crop_size=args.input_size,
                                     ignore_label=args.ignore_label)


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
        position, flip = index if isinstance(index, tuple) else (index, False)
        files = self.source.files((position // 2, flip))
        if position % 2:
            files[0] = self.translated(self.source.img_ids[position // 2])
        return files

    def __getitem__(self, index):
        position, flip = index if isinstance(index, tuple) else (index, False)
        if position % 2 == 0:
            return self.source[(position // 2, flip)]
        return self.source.sample(position // 2, flip, image_path=self.translated(self.source.img_ids[position // 2]))

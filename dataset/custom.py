"""Your own domains: images, with or without labels, whose classes a class file names
(dataset.classes.load_class_file). Two layouts:

    a list file of "image [label]" lines, paths relative to root, separated by white space
    (PaddleSeg's train.txt / val.txt format: such lists work as they are); or

    root/images/<sub/path>/<name>.png (or .jpg, .jpeg, .bmp, .webp, .tif, .tiff)
    root/labels/<sub/path>/<name>.png   the label of the image with the same relative path and stem

A label PNG is one of
  - 8-bit, one channel: mode L, or P whose palette index is the value (as PaddleSeg writes them);
  - 16-bit, one channel: values up to 65535;
  - colour (RGB; an alpha channel is not read): each pixel one of the class colours of the class
    file; black (0, 0, 0) means "not labelled", unless black is the colour of a class.
Values are looked up in the class file: a class's "values", or "ignore". The dataset refuses,
while it is built, any label holding something else, a label whose size differs from its image's,
and a listed file that does not exist; it decodes every label once to do so, in threads.

Synscapes is the folder form with other folder names: SynscapesDataSet.
"""
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

import numpy as np

from dataset.base import ListDataSet
from dataset.classes import IGNORE_LABEL, IMG_MEAN_BGR, PRESETS, SYNSCAPES, ClassSet, ClassSetError, \
    load_class_file
from dataset.files import IMAGE_EXTENSIONS, images_below, summarize
from utils.runtime import usable_cpus

LABEL_EXTENSION = ".png"
IGNORE_COLOUR = (0, 0, 0)  # in colour labels, unless a class has it
# A colour label's pixel as one number: above every 16-bit value, so values and colours never meet.
COLOUR_CODE = 1 << 24

# Synscapes (Wrenninge and Unger, 2018): root/img/rgb/<n>.png, 1440x720 (its native size), and
# root/img/class/<n>.png, single-channel Cityscapes label ids, n = 1..25000. Source:
# https://synscapes.on.liu.se/features.html (the dataset's page; img/rgb-2k, a 2048x1024 upscale,
# is not read).
SYNSCAPES_IMAGES, SYNSCAPES_LABELS = "img/rgb", "img/class"
SYNSCAPES_INPUT_SIZE = (1440, 720)


def as_class_set(classes):
    """(ClassSet, how errors name it) of a ClassSet, a class file (JSON or YAML) or a preset's name."""
    if isinstance(classes, ClassSet):
        return classes, "class file {}".format(classes.path) if classes.path else "class set {!r}".format(classes.name)
    if not isinstance(classes, str):
        raise TypeError("classes must be a ClassSet, a class file or one of {}, got {!r}".format(
            ", ".join(PRESETS), classes))
    if os.path.isfile(classes):
        return load_class_file(classes), "class file {}".format(classes)
    if classes in PRESETS:
        return PRESETS[classes], "class set {!r}".format(classes)
    raise ClassSetError("--classes {}: no such class file, nor a preset ({})".format(classes, ", ".join(PRESETS)))


def colour_codes(rgb):
    """HxWx3 uint8 colours -> HxW uint32 codes COLOUR_CODE + 0xRRGGBB."""
    rgb = rgb.astype(np.uint32)
    return COLOUR_CODE | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def label_value_text(code):
    """A label value or colour code as an error shows it."""
    code = int(code)
    if code >= COLOUR_CODE:
        return "colour ({}, {}, {})".format((code >> 16) & 255, (code >> 8) & 255, code & 255)
    return str(code)


def values_present(codes):
    """Sorted distinct values of a label array; 8- and 16-bit ones counted, which is several times
    faster than np.unique's sort."""
    if codes.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(codes.ravel()))
    return np.unique(codes)


def read_label_codes(path):
    """HxW array of what a label PNG stores: its values (uint8 or uint16; int32 for Pillow's mode I),
    or for a colour PNG uint32 colour codes (COLOUR_CODE + 0xRRGGBB)."""
    try:
        with Image.open(path) as label:
            label.load()
    except Exception as error:  # noqa: BLE001  (Pillow raises OSError, SyntaxError or ValueError on a damaged file)
        raise OSError("cannot read label {}: {}".format(path, error)) from error
    if label.mode in ("L", "P", "1"):
        return np.asarray(label).astype(np.uint8, copy=False)
    if label.mode.startswith("I;16"):
        return np.asarray(label).astype(np.uint16)
    if label.mode == "I":  # older Pillow reads 16-bit PNGs as 32-bit integers
        return np.asarray(label).astype(np.int32, copy=False)
    if label.mode in ("RGB", "RGBA"):
        return colour_codes(np.asarray(label.convert("RGB")))
    raise ValueError("label {} has PIL mode {}; expected an 8-bit (L or P) or 16-bit single-channel PNG of "
                     "label values, or an RGB PNG in the class colours".format(path, label.mode))


class CustomDataSet(ListDataSet):
    """A domain of your own, read as the other datasets are: (image, label, size, name), or (image,
    size, name) without labels. Images are float32 CHW BGR minus ``mean``, BICUBIC-resized to
    ``crop_size`` = (width, height); labels are uint8 HxW train ids (NEAREST-resized), ignored
    pixels ``ignore_label``. ``name`` is the image's path relative to root.

    ``list_path``: a file of "image [label]" lines (paths relative to root); None reads the folders
    root/``images_dir`` and root/``labels_dir``. ``classes``: a ClassSet, a class file or a preset's
    name. ``with_labels``: None reads labels if every line gives one (if root/``labels_dir``
    exists), True requires them, False reads the images only. ``set`` is accepted, as the training
    scripts pass it to every target, and not used: a custom domain's splits are its list files or
    roots.
    """

    LIST_HINT = ("give one 'image [label]' line per sample, paths relative to root (PaddleSeg's list format), "
                 "or list_path=None to read root/images with the labels of the same names in root/labels")

    def __init__(self, root, list_path=None, max_iters=None, crop_size=(1024, 512), mean=IMG_MEAN_BGR,
                 scale=False, mirror=False, ignore_label=IGNORE_LABEL, seed=0, *, classes, with_labels=None,
                 images_dir="images", labels_dir="labels", set=None):
        self.classes, self.class_source = as_class_set(classes)
        self.images_dir, self.labels_dir = images_dir, labels_dir
        self.LAYOUT = ("root/{0}/<sub/path>/<name>.png (or {1}) with its label in root/{2}/<sub/path>/<name>.png, "
                       "or a list file of 'image [label]' lines relative to root".format(
                           images_dir, ", ".join(IMAGE_EXTENSIONS[1:]), labels_dir))
        self._list_file = list_path
        self._wanted_labels = with_labels
        self._table = LabelTable(self.classes)
        # The list is read by scan_entries, which the base class calls once root and crop_size are checked.
        super().__init__(root, None, max_iters, crop_size, mean, scale, mirror, ignore_label, seed, with_labels)
        self.list_path = list_path

    # --- what the base class asks of a dataset --------------------------------------------------

    def scan_entries(self):
        if self._list_file is not None:
            samples = self._listed_samples(self._list_file)
        else:
            samples = self._folder_samples()
        self.with_labels = self._decide_labels(samples)
        if not self.with_labels:
            samples = [(where, image, None) for where, image, _ in samples]
        self._require_listed_files(samples)
        self._label_of, first_line = {}, {}
        for where, image, label in samples:
            if self._label_of.setdefault(image, label) != label:
                raise ValueError("{}: {} gives image {} the label {}, but {} gave it {}".format(
                    self._owner, where, image, label, first_line[image], self._label_of[image]))
            first_line.setdefault(image, where)
        if self.with_labels:
            self._check_labels(samples)
        return [image for _, image, _ in samples]

    def image_path(self, entry):
        return os.path.join(self.root, entry)

    def prediction_stem(self, entry):
        """Where evaluation writes the image's prediction: its path below the images folder (the
        folder form; labels/ has the same) or its file name (a list), without extension."""
        folder = self.images_dir + "/"
        relative = entry[len(folder):] if self._list_file is None and entry.startswith(folder) else \
            entry.rsplit("/", 1)[-1]
        return os.path.splitext(relative)[0]

    def label_path(self, entry):
        return os.path.join(self.root, self._label_of[entry])

    raw_label_ids = staticmethod(read_label_codes)

    def train_id_table(self):
        return np.arange(256, dtype=np.uint8)  # read_label_ids yields train ids already

    def read_label_ids(self, path):
        """The label file as an 8-bit PIL image of train ids (IGNORE_LABEL where not labelled)."""
        return Image.fromarray(self._table.train_ids(read_label_codes(path)))

    def known_label_values(self):
        """Every value and colour code a label may hold (python -m dataset.check)."""
        return self._table.known_values | self._table.known_colours

    # --- reading the list or the folders --------------------------------------------------------

    @property
    def _owner(self):
        return type(self).__name__

    def _listed_samples(self, list_path):
        """[(where, image, label or None)] of a list file; ``where`` is "<list> line <n>"."""
        if not os.path.isfile(list_path):
            raise FileNotFoundError("{}: list file {!r} does not exist; {}".format(
                self._owner, list_path, self.LIST_HINT))
        samples = []
        with open(list_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                where = "{} line {}".format(list_path, number)
                if len(fields) > 2:
                    raise ValueError("{}: {} has {} fields ({!r}); expected 'image [label]' (paths without spaces)"
                                     .format(self._owner, where, len(fields), line.strip()))
                samples.append((where, fields[0], fields[1] if len(fields) == 2 else None))
        if not samples:
            raise ValueError("{}: list file {!r} has no entries; {}".format(self._owner, list_path, self.LIST_HINT))
        return samples

    def _folder_samples(self):
        """[(where, image, label or None)] of root/images_dir, each label at root/labels_dir with
        the image's relative path and stem (None if the labels folder does not exist)."""
        images = os.path.join(self.root, self.images_dir)
        if not os.path.isdir(images):
            raise FileNotFoundError("{}: no list file given and no folder {}; expected the layout {}".format(
                self._owner, images, self.LAYOUT))
        found = images_below(images)
        if not found:
            raise ValueError("{}: no images ({}) under {}; expected the layout {}".format(
                self._owner, ", ".join("*" + e for e in IMAGE_EXTENSIONS), images, self.LAYOUT))
        has_labels = os.path.isdir(os.path.join(self.root, self.labels_dir))
        samples = []
        for relative in found:
            label = self.labels_dir + "/" + os.path.splitext(relative)[0] + LABEL_EXTENSION if has_labels else None
            samples.append((None, self.images_dir + "/" + relative, label))
        return samples

    def _decide_labels(self, samples):
        """Whether labels are read: ``with_labels``, or (None) whether the samples have them."""
        with_label = [sample for sample in samples if sample[2] is not None]
        without = [sample for sample in samples if sample[2] is None]
        if self._wanted_labels is False or not with_label and self._wanted_labels is None:
            return False
        if not without:
            return True
        where, image, _ = without[0]
        if self._list_file is None:
            raise FileNotFoundError("{}: labels are wanted, but there is no folder {}; put the labels there "
                                    "(same relative path and name as the image, .png), or with_labels=False".format(
                                        self._owner, os.path.join(self.root, self.labels_dir)))
        given = "other lines give one ({})".format(with_label[0][0]) if with_label else "labels are wanted"
        raise ValueError("{}: {} names image {} without a label, but {}; give every line a label, or "
                         "with_labels=False to read the images only".format(self._owner, where, image, given))

    def _require_listed_files(self, samples):
        missing = []
        for where, image, label in samples:
            for kind, relative in (("image", image), ("label", label)):
                if relative is not None and not os.path.isfile(os.path.join(self.root, relative)):
                    missing.append((where, image, kind, os.path.join(self.root, relative)))
        if not missing:
            return
        where, image, kind, path = missing[0]
        others = " (and {} more missing files)".format(len(missing) - 1) if len(missing) > 1 else ""
        if where is None:  # the folders: an image without its label
            raise FileNotFoundError("{}: image {} has no label {}{}; put it there (same relative path and name, "
                                    ".png), or with_labels=False to read the images only".format(
                                        self._owner, os.path.join(self.root, image), path, others))
        raise FileNotFoundError("{}: {} names the {} {}, which does not exist{}".format(
            self._owner, where, kind, path, others))

    # --- decoding every label once --------------------------------------------------------------

    def _check_labels(self, samples):
        """Refuse the first label (in list order) that cannot be decoded, holds a value or colour the
        class set does not know, or differs in size from its image."""
        pairs = list(dict.fromkeys((image, label) for _, image, label in samples))
        where_of = {}
        for where, image, label in samples:
            where_of.setdefault((image, label), where)
        with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
            futures = [pool.submit(self._label_problem, image, label) for image, label in pairs]
            try:
                for pair, future in zip(pairs, futures):
                    problem = future.result()
                    if problem is not None:
                        where = where_of[pair]
                        at = "" if where is None else where + ": "
                        raise ValueError("{}: {}{}".format(self._owner, at, problem).replace("\n", " "))
            finally:
                for future in futures:
                    future.cancel()

    def _label_problem(self, image, label):
        """What is wrong with one label, as a sentence naming the file; None if nothing is."""
        label_path, image_path = os.path.join(self.root, label), os.path.join(self.root, image)
        try:
            codes = read_label_codes(label_path)
        except (OSError, ValueError) as error:
            return str(error)
        try:
            with Image.open(image_path) as picture:
                image_size = picture.size
        except Exception as error:  # noqa: BLE001  (as read_label_codes)
            return "cannot read image {}: {}".format(image_path, error)
        if (codes.shape[1], codes.shape[0]) != image_size:
            return "label {} is {}x{} but its image {} is {}x{}; labels must have their image's size".format(
                label_path, codes.shape[1], codes.shape[0], image_path, *image_size)
        unknown = self._table.unknown(codes)
        if not unknown:
            return None
        if unknown[0] >= COLOUR_CODE:
            black = "" if self._table.ignore_colour is None else ", nor black (not labelled)"
            grey = all(((v >> 16) & 255) == ((v >> 8) & 255) == (v & 255) for v in unknown)
            return "label {} holds {}: not among the class colours of the {}{}{}".format(
                label_path, summarize(label_value_text(v) for v in unknown), self.class_source, black,
                " (label values saved as a grey RGB image? save them as a single-channel PNG)" if grey else "")
        return "label {} holds the value(s) {}, which the {} neither gives a class nor ignores; add them to a " \
               "class's \"values\" or to \"ignore\"".format(label_path, summarize(label_value_text(v) for v in unknown),
                                                           self.class_source)


class LabelTable(object):
    """A class set's label values and colours -> train ids (uint8, IGNORE_LABEL where not labelled)."""

    def __init__(self, classes):
        self.values = classes.lut(65536, np.uint8)
        self.known_values = frozenset(classes.known_values())
        colours = {int(code): train_id for train_id, code in enumerate(colour_codes(classes.colours[None])[0])}
        black = int(colour_codes(np.array([[IGNORE_COLOUR]], np.uint8))[0, 0])
        self.ignore_colour = None if black in colours else IGNORE_COLOUR
        if self.ignore_colour is not None:
            colours[black] = IGNORE_LABEL
        self.known_colours = frozenset(colours)
        self.colour_codes = np.array(sorted(colours), dtype=np.uint32)
        self.colour_train_ids = np.array([colours[code] for code in sorted(colours)], dtype=np.uint8)

    def train_ids(self, codes):
        """HxW uint8 train ids of read_label_codes' array; what the table does not know is ignored."""
        if codes.dtype == np.uint32:
            index = np.minimum(np.searchsorted(self.colour_codes, codes), len(self.colour_codes) - 1)
            return np.where(self.colour_codes[index] == codes, self.colour_train_ids[index], IGNORE_LABEL).astype(
                np.uint8)
        if codes.dtype == np.int32:
            inside = (codes >= 0) & (codes < len(self.values))
            return np.where(inside, self.values[np.where(inside, codes, 0)], IGNORE_LABEL).astype(np.uint8)
        return self.values[codes]

    def unknown(self, codes):
        """Sorted values (or colour codes) in ``codes`` that are neither a class's nor ignored."""
        known = self.known_colours if codes.dtype == np.uint32 else self.known_values
        return [value for value in values_present(codes).tolist() if value not in known]


class LabelReader(object):
    """A label file of ``classes`` (8-bit, 16-bit or colour) -> HxW uint8 train ids at its own size;
    a value the class set does not know is an error naming the file (scoring must not skip it)."""

    def __init__(self, classes):
        self.table = LabelTable(classes)

    def __call__(self, path):
        codes = read_label_codes(path)
        unknown = self.table.unknown(codes)
        if unknown:
            raise ValueError("label {} holds {}, which the class set neither gives a class nor ignores".format(
                path, summarize(label_value_text(v) for v in unknown)))
        return self.table.train_ids(codes)


class SynscapesDataSet(CustomDataSet):
    """Synscapes: root/img/rgb/<n>.png with Cityscapes label ids in root/img/class/<n>.png, a
    CustomDataSet of the Cityscapes classes at the images' native size; arguments as CustomDataSet's."""

    def __init__(self, root, list_path=None, max_iters=None, crop_size=SYNSCAPES_INPUT_SIZE, mean=IMG_MEAN_BGR,
                 scale=False, mirror=False, ignore_label=IGNORE_LABEL, seed=0, *, classes=SYNSCAPES, with_labels=None,
                 set=None):
        super().__init__(root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label, seed,
                         classes=classes, with_labels=with_labels, images_dir=SYNSCAPES_IMAGES,
                         labels_dir=SYNSCAPES_LABELS, set=set)

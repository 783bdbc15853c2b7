"""What the source (GTA5) and target (Cityscapes) datasets share.

Both read an entry list (or scan the image folder), resize every image to crop_size with
BICUBIC, turn RGB into BGR minus the Caffe mean (no std division), and, when labels are
wanted, resize the label-id image with NEAREST before mapping it to train ids.
"""
# PIL must come before paddle: Paddle 2.6 on Python 3.11 segfaults when zlib is first
# loaded after it.
import PIL  # noqa: F401
from PIL import Image

import math
import operator
import os

import numpy as np
import paddle

from dataset.classes import IGNORE_LABEL, label_id_to_train_id_lut

SHOWN_IN_ERRORS = 5


def summarize(items, shown=SHOWN_IN_ERRORS, separator=", "):
    """'a, b, c (and 7 more)': keeps error messages readable when thousands of files fail."""
    items = list(items)
    text = separator.join(str(item) for item in items[:shown])
    if len(items) > shown:
        text += " (and {} more)".format(len(items) - shown)
    return text


def read_list(list_path, owner, hint):
    """Non-blank, stripped lines of an original-format list file."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(
            "{}: list file {!r} does not exist; {}".format(owner, list_path, hint))
    with open(list_path) as handle:
        entries = [line.strip() for line in handle if line.strip()]
    if not entries:
        raise ValueError("{}: list file {!r} has no entries; {}".format(owner, list_path, hint))
    return entries


def scan(directory, suffix, owner, layout):
    """Sorted '/'-separated paths below directory ending in suffix, so a scan is reproducible."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            "{}: directory {!r} does not exist; expected the layout {}".format(owner, directory, layout))
    found = []
    for folder, _, files in os.walk(directory):
        relative = os.path.relpath(folder, directory)
        for file_name in files:
            if file_name.endswith(suffix):
                path = file_name if relative == "." else os.path.join(relative, file_name)
                found.append(path.replace(os.sep, "/"))
    if not found:
        raise ValueError(
            "{}: no *{} files under {!r}; expected the layout {}".format(owner, suffix, directory, layout))
    return sorted(found)


def load_image(path):
    """RGB PIL image; a file PIL cannot decode raises OSError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise OSError("cannot read image {}: {}".format(path, error)) from error


def load_label_ids(path):
    """Single-channel PIL image of Cityscapes label ids (GTA5 stores them palettised: mode P)."""
    try:
        with Image.open(path) as label:
            label.load()
    except OSError as error:
        raise OSError("cannot read label {}: {}".format(path, error)) from error
    if label.mode not in ("L", "P"):
        raise ValueError(
            "label {} has PIL mode {}; expected an 8-bit single-channel PNG of Cityscapes "
            "label ids (mode L or P)".format(path, label.mode))
    return label


def image_to_input(image, crop_size, mean_bgr):
    """PIL RGB -> float32 CHW network input: BICUBIC to crop_size, BGR, minus the mean."""
    resized = np.asarray(image.resize(crop_size, Image.BICUBIC), dtype=np.float32)
    bgr = resized[:, :, ::-1] - mean_bgr
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


def label_to_train_ids(label, crop_size, lut):
    """PIL label ids -> int64 HxW train ids; resizing the 8-bit ids first keeps the LUT pass small."""
    return lut[np.asarray(label.resize(crop_size, Image.NEAREST))]


def check_crop_size(crop_size, owner):
    try:
        width, height = (int(side) for side in crop_size)
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise ValueError(
            "{}: crop_size must be (width, height) with positive sides, got {!r}".format(owner, crop_size))
    return width, height


class ListDataSet(paddle.io.Dataset):
    """Entries from a list file or a sorted scan; every entry gives one image and maybe a label.

    Subclasses set LAYOUT and LIST_HINT (shown in errors) and define scan_entries(),
    image_path(entry) and label_path(entry).

    Index with an int, or with (int, flip) so that a sampler decides the mirroring
    explicitly and reproducibly. With a plain int and mirror=True the flip is drawn from
    a numpy Generator seeded with `seed`; note that DataLoader workers each hold a copy of
    that generator, which is why the trainer's sampler passes the decision instead.
    """

    LAYOUT = ""
    LIST_HINT = ""

    def __init__(self, root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label,
                 seed, with_labels):
        owner = type(self).__name__
        if scale:
            raise ValueError(
                "{}: scale=True is not supported; the original AdaptSegNet accepted the flag but "
                "never rescaled, every image is resized to crop_size".format(owner))
        if not os.path.isdir(root):
            raise FileNotFoundError(
                "{}: root {!r} is not a directory; expected the layout {}".format(owner, root, self.LAYOUT))
        self.root = root
        self.list_path = list_path
        self.crop_size = check_crop_size(crop_size, owner)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.is_mirror = bool(mirror)
        self.ignore_label = ignore_label
        self.with_labels = with_labels
        self._lut = label_id_to_train_id_lut().astype(np.int64)
        self._lut[self._lut == IGNORE_LABEL] = ignore_label
        self._rng = np.random.default_rng(seed)

        if list_path is None:
            entries = self.scan_entries()
        else:
            entries = read_list(list_path, owner, self.LIST_HINT)
        self._require_files(entries, owner)
        if max_iters is not None:
            if max_iters < 1:
                raise ValueError("{}: max_iters must be positive or None, got {}".format(owner, max_iters))
            # Original semantics: whole copies of the list, enough to cover max_iters items.
            entries = entries * int(math.ceil(float(max_iters) / len(entries)))
        self.img_ids = entries

    def _require_files(self, entries, owner):
        missing = []
        for entry in dict.fromkeys(entries):
            paths = [self.image_path(entry)]
            if self.with_labels:
                paths.append(self.label_path(entry))
            missing.extend(path for path in paths if not os.path.isfile(path))
        if missing:
            source = self.list_path if self.list_path is not None else "a scan of " + self.root
            raise FileNotFoundError(
                "{}: {} file(s) named by {} do not exist: {}; expected the layout {}".format(
                    owner, len(missing), source, summarize(missing), self.LAYOUT))

    def __len__(self):
        return len(self.img_ids)

    def _position_and_flip(self, index):
        if isinstance(index, tuple):
            if len(index) != 2:
                raise TypeError("index must be an int or a tuple (int, flip), got {!r}".format(index))
            return operator.index(index[0]), bool(index[1])
        flip = self.is_mirror and bool(self._rng.random() < 0.5)
        return operator.index(index), flip

    def __getitem__(self, index):
        position, flip = self._position_and_flip(index)
        entry = self.img_ids[position]
        image = image_to_input(load_image(self.image_path(entry)), self.crop_size, self.mean)
        # The original reports the resized image's shape in HWC order.
        size = np.array(image.shape[1:] + image.shape[:1])
        if flip:
            image = np.ascontiguousarray(image[:, :, ::-1])
        if not self.with_labels:
            return image, size, entry
        label = label_to_train_ids(load_label_ids(self.label_path(entry)), self.crop_size, self._lut)
        if flip:
            label = np.ascontiguousarray(label[:, ::-1])
        return image, label, size, entry

"""What the datasets share: a map-style dataset over a list of entries (numpy and Pillow only; the
loaders in dataset/loader.py hand it to Paddle).

Both read an entry list (or scan the image folder), resize every image to crop_size with
BICUBIC, turn RGB into BGR minus the Caffe mean (no std division), and, when labels are
wanted, resize the label-id image with NEAREST before mapping it to train ids.
"""

import math
import operator
import os

import numpy as np

from dataset.classes import CITYSCAPES, IGNORE_LABEL
from dataset.files import image_to_input, label_to_train_ids, load_image, load_label_ids, read_list, summarize



def split_index(index):
    """(position, flip) of a dataset index: the sampler's (int, flip), or an int (not mirrored)."""
    return (index[0], bool(index[1])) if isinstance(index, tuple) else (index, False)


def train_id_dtype(ignore_label=IGNORE_LABEL):
    """The dtype of the label arrays the datasets yield: uint8 when ``ignore_label`` fits in it (the 19
    train ids do), which is 8x less than int64 to carry through the loaders' shared memory;
    utils/loss.py casts to int64 on the device. int64 for an ignore label such as -1."""
    return np.uint8 if 0 <= ignore_label <= 255 else np.int64


def check_crop_size(crop_size, owner):
    try:
        width, height = (int(side) for side in crop_size)
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        raise ValueError(
            "{}: crop_size must be (width, height) with positive sides, got {!r}".format(owner, crop_size))
    return width, height


class ListDataSet(object):
    """Entries from a list file or a sorted scan; every entry gives one image and maybe a label.

    Subclasses set LAYOUT and LIST_HINT (shown in errors) and define scan_entries(),
    image_path(entry) and label_path(entry); CLASSES (a dataset.classes.ClassSet) says what its
    label values mean (Cityscapes label ids by default), and a dataset whose labels are not an
    8-bit PNG also defines read_label_ids(path) and raw_label_ids(path).

    Index with an int, or with (int, flip) so that a sampler decides the mirroring
    explicitly and reproducibly. With a plain int and mirror=True the flip is drawn from
    a numpy Generator seeded with `seed`; note that DataLoader workers each hold a copy of
    that generator, which is why the trainer's sampler passes the decision instead.
    """

    LAYOUT = ""
    LIST_HINT = ""
    CLASSES = CITYSCAPES

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
        self.classes = getattr(self, "classes", None) or self.CLASSES
        self._train_ids = self.train_id_table()
        self._lut = self._train_ids.astype(train_id_dtype(ignore_label))
        self._lut[self._train_ids == IGNORE_LABEL] = ignore_label
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

    @staticmethod
    def raw_label_ids(path):
        """HxW array of the label file's ids, as stored."""
        return np.asarray(load_label_ids(path))

    @staticmethod
    def read_label_ids(path):
        """The label file as a PIL image of 8-bit label ids (what is resized)."""
        return load_label_ids(path)

    def train_id_table(self):
        """256-entry uint8 table from what read_label_ids yields to train ids (IGNORE_LABEL where
        not labelled)."""
        return self.classes.lut()

    def read_train_ids(self, path):
        """HxW uint8 train ids of the label file ``path`` at its own size, IGNORE_LABEL where not
        labelled (whatever ignore_label the training samples use)."""
        return self._train_ids[np.asarray(self.read_label_ids(path))]

    def _position_and_flip(self, index):
        if isinstance(index, tuple):
            if len(index) != 2:
                raise TypeError("index must be an int or a tuple (int, flip), got {!r}".format(index))
            return operator.index(index[0]), bool(index[1])
        flip = self.is_mirror and bool(self._rng.random() < 0.5)
        return operator.index(index), flip

    @property
    def fields(self):
        """The names of a sample's fields (dataset.loader.Batch)."""
        return ("images", "labels", "sizes", "names") if self.with_labels else ("images", "sizes", "names")

    def files(self, index):
        """The files sample ``index`` reads."""
        entry = self.img_ids[split_index(index)[0]]
        return [self.image_path(entry)] + ([self.label_path(entry)] if self.with_labels else [])

    def __getitem__(self, index):
        return self.sample(*self._position_and_flip(index))

    def sample(self, position, flip=False, image_path=None):
        """Entry ``position``, mirrored or not; ``image_path`` replaces its image (same label)."""
        entry = self.img_ids[position]
        image = image_to_input(load_image(image_path or self.image_path(entry)), self.crop_size, self.mean)
        # The original reports the resized image's shape in HWC order.
        size = np.array(image.shape[1:] + image.shape[:1])
        if flip:
            image = np.ascontiguousarray(image[:, :, ::-1])
        if not self.with_labels:
            return image, size, entry
        label = label_to_train_ids(self.read_label_ids(self.label_path(entry)), self.crop_size, self._lut)
        if flip:
            label = np.ascontiguousarray(label[:, ::-1])
        return image, label, size, entry

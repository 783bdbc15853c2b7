"""Cityscapes, the target domain: images in root/leftImg8bit/<set>/<city>/, and for
validation the label ids in root/gtFine/<set>/<city>/."""
import os

from dataset.base import ListDataSet
from dataset.files import scan
from dataset.classes import IGNORE_LABEL, IMG_MEAN_BGR

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
_EXAMPLE_ENTRY = "frankfurt/frankfurt_000000_000294" + IMAGE_SUFFIX


def gtfine_entry(entry):
    """Image entry '<city>/<city>_<seq>_<frame>_leftImg8bit.png' -> its gtFine labelIds entry."""
    if not entry.endswith(IMAGE_SUFFIX):
        raise ValueError("Cityscapes entry {!r} does not end with {!r}; entries look like {}".format(
            entry, IMAGE_SUFFIX, _EXAMPLE_ENTRY))
    return entry[:-len(IMAGE_SUFFIX)] + LABEL_SUFFIX


def gtfine_path(root, entry, set="val"):
    """Where the label ids of an image entry live: root/gtFine/<set>/<city>/..._gtFine_labelIds.png."""
    return os.path.join(root, "gtFine", set, gtfine_entry(entry))


def image_name_of_label(label_name):
    """'<city>_<seq>_<frame>_gtFine_labelIds.png' -> '<city>_<seq>_<frame>_leftImg8bit.png'
    (also works on paths); evaluation names flat predictions this way."""
    if not label_name.endswith(LABEL_SUFFIX):
        raise ValueError("Cityscapes label {!r} does not end with {!r}".format(label_name, LABEL_SUFFIX))
    return label_name[:-len(LABEL_SUFFIX)] + IMAGE_SUFFIX


class cityscapesDataSet(ListDataSet):
    """Yields (image, size, name) like the original, or (image, label, size, name) with
    return_label=True (label = gtFine labelIds mapped to uint8 train ids). Images are
    float32 CHW BGR minus the mean, BICUBIC-resized to crop_size = (width, height)."""

    LAYOUT = ("root/leftImg8bit/<set>/<city>/<city>_<seq>_<frame>" + IMAGE_SUFFIX +
              " and, for labels, root/gtFine/<set>/<city>/<city>_<seq>_<frame>" + LABEL_SUFFIX)
    LIST_HINT = ("give one entry per line relative to root/leftImg8bit/<set> (e.g. " + _EXAMPLE_ENTRY +
                 "), or list_path=None to use every image of the set")

    def __init__(self, root, list_path=None, max_iters=None, crop_size=(1024, 512), mean=IMG_MEAN_BGR,
                 scale=False, mirror=False, ignore_label=IGNORE_LABEL, set="val", seed=0,
                 return_label=False):
        self.set = set
        super().__init__(root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label,
                         seed, with_labels=return_label)

    def scan_entries(self):
        return scan(os.path.join(self.root, "leftImg8bit", self.set), IMAGE_SUFFIX,
                    type(self).__name__, self.LAYOUT)

    def image_path(self, entry):
        return os.path.join(self.root, "leftImg8bit", self.set, entry)

    def label_path(self, entry):
        return gtfine_path(self.root, entry, self.set)

"""GTA5, the labelled source domain: root/images/NNNNN.png with label ids at root/labels/NNNNN.png."""
import os

from dataset.base import ListDataSet
from dataset.files import scan
from dataset.classes import IGNORE_LABEL, IMG_MEAN_BGR


class GTA5DataSet(ListDataSet):
    """Yields (image, label, size, name): float32 CHW BGR-minus-mean image, uint8 HxW train
    ids (dataset.base.train_id_dtype), the original's size array and the list entry. crop_size is (width, height); a few
    GTA5 labels differ in size from their image, both are resized to crop_size anyway."""

    LAYOUT = "root/images/00001.png with its label ids in root/labels/00001.png"
    LIST_HINT = ("give one image name per line relative to root/images (e.g. 00001.png), "
                 "or list_path=None to use every image in root/images")

    def __init__(self, root, list_path=None, max_iters=None, crop_size=(1280, 720), mean=IMG_MEAN_BGR,
                 scale=False, mirror=False, ignore_label=IGNORE_LABEL, seed=0):
        super().__init__(root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label,
                         seed, with_labels=True)

    def scan_entries(self):
        return scan(os.path.join(self.root, "images"), ".png", type(self).__name__, self.LAYOUT)

    def image_path(self, entry):
        return os.path.join(self.root, "images", entry)

    def label_path(self, entry):
        return os.path.join(self.root, "labels", entry)

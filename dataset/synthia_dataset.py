"""SYNTHIA-RAND-CITYSCAPES, a labelled source domain: root/RGB/0000000.png with its labels at
root/GT/LABELS/0000000.png.

The label PNGs are 16-bit with the class id in the first channel (the second holds instance
ids). Their ids map to Cityscapes train ids for the 16 classes the two share (dataset.classes.
SYNTHIA); everything else is ignored. Sources for the sizes (read, not copied): the dataset's
README (RGB images are 1280x760), valeoai/DADA dada/domain_adaptation/config.py and JDAI-CV/FADA
configs/deeplabv2_r101_adv_synthia.yaml (training input 1280x760).
"""
import os

from PIL import Image

import numpy as np

from dataset.base import ListDataSet
from dataset.classes import CITYSCAPES, IGNORE_LABEL, IMG_MEAN_BGR, SYNTHIA
from dataset.files import load_first_channel_16bit, scan

INPUT_SIZE = (1280, 760)


def synthia_label_ids(path):
    """HxW uint16 SYNTHIA class ids of a GT/LABELS file."""
    return load_first_channel_16bit(path)


class SYNTHIADataSet(ListDataSet):
    """Yields (image, label, size, name) as GTA5DataSet does: float32 CHW BGR-minus-mean image and
    uint8 HxW train ids, both resized to crop_size = (width, height)."""

    LAYOUT = "root/RGB/0000000.png with its 16-bit labels in root/GT/LABELS/0000000.png"
    LIST_HINT = ("give one image name per line relative to root/RGB (e.g. 0000000.png), "
                 "or list_path=None to use every image in root/RGB")
    CLASSES = SYNTHIA

    def __init__(self, root, list_path=None, max_iters=None, crop_size=INPUT_SIZE, mean=IMG_MEAN_BGR,
                 scale=False, mirror=False, ignore_label=IGNORE_LABEL, seed=0):
        super().__init__(root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label,
                         seed, with_labels=True)

    def scan_entries(self):
        return scan(os.path.join(self.root, "RGB"), ".png", type(self).__name__, self.LAYOUT)

    def image_path(self, entry):
        return os.path.join(self.root, "RGB", entry)

    def label_path(self, entry):
        return os.path.join(self.root, "GT", "LABELS", entry)

    raw_label_ids = staticmethod(synthia_label_ids)

    @staticmethod
    def read_label_ids(path):
        ids = synthia_label_ids(path)
        # Ids past the table are unknown: send them to the void id, which the table ignores.
        return Image.fromarray(np.where(ids < 256, ids, 0).astype(np.uint8))


def cityscapes_ids_to_synthia(label_ids):
    """Cityscapes label ids -> the SYNTHIA ids of the same classes (0, void, where SYNTHIA has
    none): how the synthetic data generator writes a SYNTHIA-format tree."""
    table = np.zeros(256, np.uint16)
    train_to_synthia = {train_id: synthia for synthia, train_id in SYNTHIA.label_values.items()}
    for label_id, train_id in CITYSCAPES.label_values.items():
        table[label_id] = train_to_synthia.get(train_id, 0)
    return table[label_ids]

"""NTHU cross-city, the target domain of cross-city adaptation (Cityscapes -> one city):

    root/<City>/Images/Train/<id>.jpg or .png    3,200 unlabelled images per city
    root/<City>/Images/Test/<id>.jpg or .png     100 images per city
    root/<City>/Labels/Test/<id>_eval.png        their labels: Cityscapes label ids

for the cities Rome, Rio, Tokyo and Taipei; the images are 2048x1024 and are used at 1024x512.
Only 13 classes are annotated (CROSS_CITY_CLASSES); the other Cityscapes ids are ignored. Sources
for the layout, the mixed extensions and the 13-class labels (read, not copied): the public
cross-city loaders ZJULearning/MaxSquareLoss datasets/crosscity_Dataset.py and joonh-kim/ETM
dataset/crosscity_dataset.py.
"""
import os

from dataset.base import ListDataSet
from dataset.classes import IGNORE_LABEL, IMG_MEAN_BGR, NTHU
from dataset.files import files_below

NTHU_CITIES = ("Rome", "Rio", "Tokyo", "Taipei")
SPLITS = {"train": "Train", "test": "Test"}  # only Test has labels
IMAGE_SUFFIXES = (".jpg", ".png")
LABEL_SUFFIX = "_eval.png"
INPUT_SIZE = (1024, 512)
_LAYOUT = ("root/<City>/Images/{Train,Test}/<id>.jpg or <id>.png, with the test labels (Cityscapes label ids) "
           "in root/<City>/Labels/Test/<id>" + LABEL_SUFFIX + " (cities: " + ", ".join(NTHU_CITIES) + ")")


def label_name(entry):
    """Image entry '<id>.jpg' (or .png) -> its label file name '<id>_eval.png'."""
    return os.path.splitext(entry)[0] + LABEL_SUFFIX


class NTHUDataSet(ListDataSet):
    """One city's images, as cityscapesDataSet yields them: (image, size, name), or with labels
    (the default for split "test") (image, label, size, name), the label in uint8 train ids of
    the 13 annotated classes (everything else ignore_label). Images are float32 CHW BGR minus the
    mean, BICUBIC-resized to crop_size = (width, height).

    Entries are file names relative to Images/<Split>; a list file may also give bare ids (as
    MaxSquareLoss's lists do): the .jpg or, failing that, the .png of that id is read."""

    LAYOUT = _LAYOUT
    LIST_HINT = ("give one image per line relative to root/<City>/Images/<Split> (e.g. 0001.jpg, or the bare "
                 "id 0001), or list_path=None to use every image of the split")
    CLASSES = NTHU

    def __init__(self, root, city, split="train", list_path=None, max_iters=None, crop_size=INPUT_SIZE,
                 mean=IMG_MEAN_BGR, scale=False, mirror=False, ignore_label=IGNORE_LABEL, seed=0,
                 return_label=None):
        owner = type(self).__name__
        if split not in SPLITS:
            raise ValueError("{}: split {!r} is not one of {}".format(owner, split, ", ".join(sorted(SPLITS))))
        if return_label is None:
            return_label = split == "test"
        if return_label and split != "test":
            raise ValueError("{}: the NTHU dataset labels only its Test images; split {!r} has no labels "
                             "(return_label=False)".format(owner, split))
        city_dir = os.path.join(root, city)
        if os.path.isdir(root) and not os.path.isdir(city_dir):
            found = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name)))
            raise FileNotFoundError("{}: no folder {!r} for city {!r} (found: {}); expected the layout {}".format(
                owner, city_dir, city, ", ".join(found) or "nothing", self.LAYOUT))
        self.city, self.split = city, split
        self.image_dir = os.path.join(city_dir, "Images", SPLITS[split])
        self.label_dir = os.path.join(city_dir, "Labels", SPLITS[split])
        super().__init__(root, list_path, max_iters, crop_size, mean, scale, mirror, ignore_label,
                         seed, with_labels=return_label)

    def scan_entries(self):
        owner = type(self).__name__
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError("{}: directory {!r} does not exist; expected the layout {}".format(
                owner, self.image_dir, self.LAYOUT))
        found = files_below(self.image_dir, IMAGE_SUFFIXES)
        if not found:
            raise ValueError("{}: no *.jpg or *.png images under {!r}; expected the layout {}".format(
                owner, self.image_dir, self.LAYOUT))
        return found

    def image_path(self, entry):
        if entry.endswith(IMAGE_SUFFIXES):
            return os.path.join(self.image_dir, entry)
        candidates = [os.path.join(self.image_dir, entry + suffix) for suffix in IMAGE_SUFFIXES]
        return next((path for path in candidates if os.path.isfile(path)), candidates[0])

    def label_path(self, entry):
        return os.path.join(self.label_dir, label_name(entry))

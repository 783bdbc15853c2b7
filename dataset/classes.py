"""The one home of the Cityscapes class facts: names, label-id table, palette, image mean.

Every other module imports these; nothing else spells them out.
"""
import numpy as np

IGNORE_LABEL = 255

# (name, Cityscapes label id, colour) in train-id order: train id = position.
_CLASSES = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("light", 19, (250, 170, 30)),
    ("sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)

NUM_CLASSES = len(_CLASSES)
CLASS_NAMES = tuple(name for name, _, _ in _CLASSES)
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for train_id, (_, label_id, _) in enumerate(_CLASSES)}
PALETTE = np.array([colour for _, _, colour in _CLASSES], dtype=np.uint8)

# Caffe-style BGR mean of the DeepLab ImageNet/COCO weights; images are not divided by a std.
IMG_MEAN_BGR = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)


def label_id_to_train_id_lut(label_id_to_train_id=LABEL_ID_TO_TRAIN_ID):
    """256-entry uint8 table: label id -> train id (Cityscapes ids by default), else IGNORE_LABEL."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label_id, train_id in label_id_to_train_id.items():
        lut[label_id] = train_id
    return lut


def palette_256():
    """256x3 uint8: the class colours, then black (ignored and unknown ids); a PNG palette."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = PALETTE
    return palette


def colorize(train_ids):
    """HxW train ids -> HxWx3 uint8 RGB picture; ignored and unknown ids are black."""
    return palette_256()[np.asarray(train_ids, dtype=np.uint8)]


# Classes scored by the evaluation (train ids). A model trained on SYNTHIA never sees terrain,
# truck or train: the literature scores it on the other 16 classes, and the AdaptSegNet paper on
# 13 (also without wall, fence and pole). Every set is scored from the same 19x19 confusion
# matrix, as the weak-label reference does (it deletes the IoUs of the classes left out).
CLASS_SETS = {
    "19": tuple(range(NUM_CLASSES)),
    "16": tuple(c for c in range(NUM_CLASSES) if CLASS_NAMES[c] not in ("terrain", "truck", "train")),
    "13": tuple(c for c in range(NUM_CLASSES) if CLASS_NAMES[c] not in ("terrain", "truck", "train", "wall",
                                                                     "fence", "pole")),
}
# The sets a model of each source domain is scored on; the first is its headline.
SOURCE_CLASS_SETS = {"gta5": ("19",), "synthia": ("16", "13")}

# Cross-city adaptation (Cityscapes -> Rome, Rio, Tokyo or Taipei of the NTHU dataset): its test
# labels annotate these 13 classes, and both public cross-city loaders (ZJULearning/MaxSquareLoss
# datasets/crosscity_Dataset.py, joonh-kim/ETM dataset/crosscity_dataset.py) score exactly them.
# By train id they are the same classes as SYNTHIA's "13"; they are named apart because a
# different fact decides them (what the target's labels hold, not what the source lacks).
CROSS_CITY_CLASSES = ("road", "sidewalk", "building", "light", "sign", "vegetation", "sky", "person", "rider",
                      "car", "bus", "motorcycle", "bicycle")
CLASS_SETS["crosscity13"] = tuple(CLASS_NAMES.index(name) for name in CROSS_CITY_CLASSES)
# Cityscapes as a labelled source (for cross-city adaptation) has all 19 classes.
SOURCE_CLASS_SETS["cityscapes"] = ("19",)
# A target whose labels hold fewer classes decides the scored set whatever the source;
# the others leave it to the source.
TARGET_CLASS_SETS = {"cityscapes": None, "nthu": ("crosscity13",)}

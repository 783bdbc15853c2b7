"""DEMO mode: stand-ins for AI Studio's archives and the authors' weights, made from synthetic data."""
from PIL import Image

import os
import posixpath
import shutil
import zipfile

import numpy as np

from dataset.cityscapes_dataset import IMAGE_SUFFIX, LABEL_SUFFIX
from dataset.classes import CITYSCAPES
from dataset.files import files_below

# Seed of the stand-ins for the authors' weights (tests compare against it; the weak-label
# paper's gta5_pretrained.pth stand-in uses the next one).
DEMO_WEIGHTS_SEED = 0
DEMO_WEIGHT_FILES = ("DeepLab_resnet_pretrained_init-f81d91e8.pth", "GTA2Cityscapes_multi-ed35151c.pth",
                     "gta5_pretrained.pth")


def make_demo_weights(out_dir, seed=DEMO_WEIGHTS_SEED):
    """Stand-ins for the authors' three files, written as PyTorch 0.x wrote them (legacy format,
    CUDA storages) so that the conversion really runs; returns their paths, in DEMO_WEIGHT_FILES' order.

    AdaptSegNet's init file and released model come from a DeeplabMulti initialised with ``seed``;
    the weak-label paper's GTA5 source-only model (``gta5_pretrained.pth``, a full DeeplabMulti)
    from one initialised with ``seed + 1``. Files already there are kept.
    """
    paths = tuple(os.path.join(out_dir, name) for name in DEMO_WEIGHT_FILES)
    if all(os.path.isfile(path) for path in paths):
        return paths
    import paddle

    from model import build_model
    from utils.demo.torch_writer import save_legacy
    from utils.files.weights import CLASSIFIER_PREFIXES, INIT_FILE_PREFIX, as_torch_state

    os.makedirs(out_dir, exist_ok=True)
    paddle.seed(seed)
    released = as_torch_state(build_model("DeeplabMulti", num_classes=CITYSCAPES.num_classes).state_dict())
    # The init file: a backbone with a 21-class (COCO) layer5 and no layer6, every key prefixed.
    coco = as_torch_state(build_model("DeeplabMulti", num_classes=21).layer5.state_dict())
    init = {INIT_FILE_PREFIX + k: v for k, v in released.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    init.update((INIT_FILE_PREFIX + "layer5." + k, v) for k, v in coco.items())
    paddle.seed(seed + 1)
    source_only = as_torch_state(build_model("DeeplabMulti", num_classes=CITYSCAPES.num_classes).state_dict())
    for state, path in zip((init, released, source_only), paths):
        if not os.path.isfile(path):
            save_legacy(state, path, device="cuda:0", old_tensors=True)
    return paths


def _zip_tree(path, root, members, extra=()):
    """Write ``members`` (paths relative to ``root``) and ``extra`` ((name, bytes)) to a zip."""
    with zipfile.ZipFile(path + ".part", "w", zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            archive.write(os.path.join(root, member), member)
        for name, data in extra:
            archive.writestr(name, data)
    os.replace(path + ".part", path)


def make_demo_archives(out_dir, gta5_parts=10):
    """Synthetic data packed as AI Studio mounts the real datasets; returns ``out_dir``.

    data1001/NN_images.zip and NN_labels.zip: GTA5 in ``gta5_parts`` parts; data1002/: Cityscapes'
    leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip (train and val labels), with a test
    split and colour labels that extraction must leave out; data1003/: stand-ins for the three .pth
    files (make_demo_weights).
    """
    done = os.path.join(out_dir, ".complete")
    if os.path.isfile(done):
        make_demo_weights(os.path.join(out_dir, "data1003"))  # earlier demo archives lack gta5_pretrained.pth
        print("demo archives already in {}".format(out_dir))
        return out_dir
    from dataset.synthetic import make_synthetic

    staging = os.path.join(out_dir, "synthetic")
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    gta5_root, cityscapes_root = make_synthetic(staging)
    gta5_zips = os.path.join(out_dir, "data1001")
    os.makedirs(gta5_zips, exist_ok=True)
    names = sorted(os.listdir(os.path.join(gta5_root, "images")))
    for part in range(gta5_parts):
        chunk = names[part * len(names) // gta5_parts:(part + 1) * len(names) // gta5_parts]
        for folder in ("images", "labels"):
            _zip_tree(os.path.join(gta5_zips, "{:02d}_{}.zip".format(part + 1, folder)), gta5_root,
                      [posixpath.join(folder, name) for name in chunk])

    cityscapes_zips = os.path.join(out_dir, "data1002")
    os.makedirs(cityscapes_zips, exist_ok=True)
    images = ["leftImg8bit/" + p for p in files_below(os.path.join(cityscapes_root, "leftImg8bit"), IMAGE_SUFFIX)]
    labels = ["gtFine/" + p for p in files_below(os.path.join(cityscapes_root, "gtFine"), LABEL_SUFFIX)]
    with open(os.path.join(cityscapes_root, images[-1]), "rb") as f:
        test_image = f.read()
    readme = ("README", b"synthetic stand-in for the Cityscapes archive\n")
    _zip_tree(os.path.join(cityscapes_zips, "leftImg8bit_trainvaltest.zip"), cityscapes_root, images,
              [readme, ("leftImg8bit/test/berlin/berlin_000000_000019" + IMAGE_SUFFIX, test_image)])
    colour_labels = []
    for label in labels:
        with Image.open(os.path.join(cityscapes_root, label)) as label_ids:
            rgb = CITYSCAPES.colorize(CITYSCAPES.lut()[np.asarray(label_ids)])
        path = os.path.join(cityscapes_root, label[:-len(LABEL_SUFFIX)] + "_gtFine_color.png")
        Image.fromarray(rgb).save(path)
        colour_labels.append(label[:-len(LABEL_SUFFIX)] + "_gtFine_color.png")
    _zip_tree(os.path.join(cityscapes_zips, "gtFine_trainvaltest.zip"), cityscapes_root, labels + colour_labels,
              [readme])

    make_demo_weights(os.path.join(out_dir, "data1003"))
    shutil.rmtree(staging)
    with open(done, "w") as f:
        f.write("ok\n")
    return out_dir

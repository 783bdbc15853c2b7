"""Tiny synthetic stand-ins for GTA5, SYNTHIA, Cityscapes and NTHU, written in their real on-disk layouts.

    python -m dataset.synthetic OUT_DIR [--num-source N] [--num-target-train N]
        [--num-target-val N] [--num-synthia N] [--num-nthu N] [--num-synscapes N]
        [--source-size W,H] [--target-size W,H] [--seed S]
    python -m dataset.synthetic OUT_DIR --custom [--label-format gray|palette|16bit|colour] ...

writes OUT_DIR/GTA5/{images,labels}/NNNNN.png, OUT_DIR/Cityscapes/leftImg8bit/{train,val}/ with
their gtFine labels, and OUT_DIR/SYNTHIA/{RGB,GT/LABELS}/NNNNNNN.png (16-bit labels, as SYNTHIA
ships them); with --num-nthu, OUT_DIR/NTHU/Rome/{Images,Labels} as the cross-city dataset
(make_nthu); with --num-synscapes, OUT_DIR/Synscapes/img/{rgb,class}/<n>.png (make_synscapes).
With --custom it writes only OUT_DIR/custom, a pair of domains of your own kind (dataset/custom.py;
make_custom_pair): a class file, a source in the list-file form and a target in the folder form.
Every scene is a street: sky on top, buildings and trees
along a skyline, road and sidewalk below the horizon, with cars, persons and poles as shapes.
Each class has its own colour (the class palette) and texture, so a tiny network can learn
it, and the two domains are rendered with different colour, brightness and noise statistics,
so adaptation has a gap to close.
"""
from PIL import Image

import argparse
import json
import os
import struct
import zlib
from collections import OrderedDict
from typing import NamedTuple, Tuple

import numpy as np

from dataset.classes import CITYSCAPES
from dataset.cityscapes_dataset import IMAGE_SUFFIX, LABEL_SUFFIX
from dataset.synthia_dataset import cityscapes_ids_to_synthia
from utils.cli import size_argument

# Cityscapes label ids outside the 19 classes; real labels are full of them and the
# loaders must send them to the ignore label.
UNLABELED, EGO_VEHICLE, STATIC = 0, 1, 4

TRAIN_CITIES = ("aachen", "bochum")
VAL_CITIES = ("frankfurt", "lindau")

_ID = {CITYSCAPES.names[train_id]: label_id for label_id, train_id in CITYSCAPES.label_values.items()}


class Style(NamedTuple):
    """How a domain's camera (or renderer) turns class colours into pixels."""
    saturation: float
    gain: Tuple[float, float, float]  # per RGB channel
    bias: Tuple[float, float, float]
    noise: float  # std of per-pixel Gaussian noise


# The game renders vivid, warm and clean; the real camera is washed out, darker, bluish and noisy.
SOURCE_STYLE = Style(saturation=1.25, gain=(1.1, 1.0, 0.9), bias=(12.0, 4.0, -6.0), noise=3.0)
TARGET_STYLE = Style(saturation=0.55, gain=(0.7, 0.8, 0.85), bias=(-4.0, 6.0, 18.0), noise=9.0)

# Label id -> base RGB colour (class palette; ignored ids get muted colours of their own).
_BASE_COLOUR = CITYSCAPES.colorize(CITYSCAPES.lut()).astype(np.float32)
_BASE_COLOUR[EGO_VEHICLE] = (50, 50, 55)
_BASE_COLOUR[STATIC] = (110, 90, 70)
_BASE_COLOUR[UNLABELED] = (15, 15, 15)

# Label id -> strength of the fine grain; foliage and facades are rough, road and sky smooth.
_GRAIN = np.full(256, 4.0, dtype=np.float32)
_GRAIN[_ID["vegetation"]] = 18.0
_GRAIN[_ID["building"]] = 8.0
_GRAIN[_ID["road"]] = 6.0
_GRAIN[_ID["sky"]] = 1.0


def _box(ys, xs, top, bottom, left, right):
    return (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)


def scene_label_ids(width, height, rng):
    """HxW uint8 Cityscapes label ids of one random street scene."""
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    horizon = int(round(height * rng.uniform(0.45, 0.55)))
    ids = np.full((height, width), _ID["sky"], dtype=np.uint8)

    # Skyline: blocks of random width, each a building or a tree with its own top.
    num_blocks = int(rng.integers(4, 8))
    cuts = np.sort(rng.choice(np.arange(1, width), num_blocks - 1, replace=False))
    block = np.searchsorted(cuts, xs[0], side="right")
    top = (height * rng.uniform(0.08, 0.4, num_blocks)).astype(int)[block]
    kind = np.where(rng.random(num_blocks) < 0.35, _ID["vegetation"], _ID["building"])[block]
    ids = np.where((ys >= top) & (ys < horizon), kind, ids).astype(np.uint8)

    # Ground: the road widens towards the camera, sidewalk on both sides.
    depth = (ys - horizon) / max(height - horizon, 1)
    centre = width * rng.uniform(0.4, 0.6)
    on_road = np.abs(xs - centre) < width * (0.04 + 0.5 * depth)
    ground = np.where(on_road, _ID["road"], _ID["sidewalk"])
    ids = np.where(ys >= horizon, ground, ids).astype(np.uint8)

    # A static object (ignored) at the foot of the facades.
    left = int(rng.integers(0, max(width - width // 10, 1)))
    ids[_box(ys, xs, horizon - max(height // 20, 1), horizon, left, left + max(width // 10, 1))] = STATIC

    # Poles on the sidewalk, some carrying a sign.
    pole_width = max(width // 80, 1)
    for _ in range(int(rng.integers(1, 4))):
        x = int(rng.integers(0, width - pole_width))
        pole_top = int(horizon - height * rng.uniform(0.15, 0.3))
        pole_foot = int(horizon + (height - horizon) * rng.uniform(0.1, 0.4))
        ids[_box(ys, xs, pole_top, pole_foot, x, x + pole_width)] = _ID["pole"]
        if rng.random() < 0.5:
            side = max(height // 15, 2)
            ids[_box(ys, xs, pole_top, pole_top + side, x - side // 2, x + pole_width + side // 2)] = _ID["sign"]

    # Cars on the road and persons on the sidewalk, nearer ones (lower foot) drawn last.
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        foot = horizon + (height - horizon) * rng.uniform(0.15, 0.8)
        tall = height * (0.05 + 0.2 * (foot - horizon) / (height - horizon + 1))
        x = centre + width * rng.uniform(-0.2, 0.2)
        objects.append((foot, tall, 1.8 * tall, x, _ID["car"]))
    for _ in range(int(rng.integers(0, 3))):
        foot = horizon + (height - horizon) * rng.uniform(0.05, 0.6)
        tall = height * (0.12 + 0.3 * (foot - horizon) / (height - horizon + 1))
        x = width * rng.choice([rng.uniform(0.02, 0.25), rng.uniform(0.75, 0.98)])
        objects.append((foot, tall, max(0.3 * tall, 1.0), x, _ID["person"]))
    for foot, tall, wide, x, label_id in sorted(objects):
        ids[_box(ys, xs, int(foot - tall), int(foot), int(x - wide / 2), int(x + wide / 2) + 1)] = label_id

    # The ego vehicle's bonnet along the bottom and an unlabelled frame, as in real labels.
    ids[height - max(height // 16, 1):] = EGO_VEHICLE
    ids[:, 0] = UNLABELED
    ids[:, -1] = UNLABELED
    return ids


def render(ids, style, rng):
    """HxWx3 uint8 RGB picture of a label-id map: class colour + class texture, then the domain style."""
    height, width = ids.shape
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    image = _BASE_COLOUR[ids]

    windows = ((ys // 3) % 3 == 1) & ((xs // 3) % 3 == 1)
    paving = (xs + 2 * ys) % 8 == 0
    blotches = np.kron(rng.standard_normal((height // 6 + 1, width // 6 + 1)), np.ones((6, 6)))[:height, :width]
    shade = np.zeros((height, width), dtype=np.float32)
    shade -= 45.0 * ((ids == _ID["building"]) & windows)
    shade -= 35.0 * ((ids == _ID["sidewalk"]) & paving)
    shade += 25.0 * (ids == _ID["vegetation"]) * blotches
    shade += 50.0 * (ids == _ID["sky"]) * (ys / height)  # brighter towards the horizon
    shade += _GRAIN[ids] * rng.standard_normal((height, width))
    image = image + shade[:, :, None]

    grey = image.mean(axis=2, keepdims=True)
    image = grey + style.saturation * (image - grey)
    image = image * np.asarray(style.gain, np.float32) + np.asarray(style.bias, np.float32)
    image = image + style.noise * rng.standard_normal(image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_png16(path, channels):
    """An HxWxC uint16 array (C = 3) as a 16-bit RGB PNG, which Pillow cannot write."""
    height, width, _ = channels.shape
    rows = channels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_synthia(out_dir, count=12, size=(160, 95), seed=0):
    """Write a SYNTHIA-RAND-CITYSCAPES-format tree under out_dir/SYNTHIA; return its root. Its
    scenes are rendered in the source style; labels hold SYNTHIA class ids in the first of three
    16-bit channels and instance numbers in the second."""
    if count < 1:
        raise ValueError("--num-synthia must be at least 1, got {}".format(count))
    _check_size(size, "--source-size")
    root = os.path.join(out_dir, "SYNTHIA")
    for folder in ("RGB", os.path.join("GT", "LABELS")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    width, height = size
    for index in range(count):
        rng = np.random.default_rng([seed, 3, index])
        ids = scene_label_ids(width, height, rng)
        name = "{:07d}.png".format(index)
        Image.fromarray(render(ids, SOURCE_STYLE, rng)).save(os.path.join(root, "RGB", name))
        channels = np.zeros((height, width, 3), np.uint16)
        channels[..., 0] = cityscapes_ids_to_synthia(ids)
        channels[..., 1] = rng.integers(0, 3000, (height, width))
        write_png16(os.path.join(root, "GT", "LABELS", name), channels)
    return root


def _check_size(size, flag):
    width, height = size
    if width < 16 or height < 16:
        raise ValueError("{} must be at least 16,16 (width,height), got {},{}".format(flag, width, height))


def make_synthetic(out_dir, num_source=20, num_target_train=10, num_target_val=6,
                   source_size=(160, 90), target_size=(128, 64), seed=0):
    """Write the synthetic GTA5 and Cityscapes trees under out_dir; return (gta5_root, cityscapes_root).

    Deterministic for a seed; each image has its own generator, so changing one count
    leaves the other images unchanged. Sizes are (width, height).
    """
    for count, flag in ((num_source, "--num-source"), (num_target_train, "--num-target-train"),
                        (num_target_val, "--num-target-val")):
        if count < 1:
            raise ValueError("{} must be at least 1, got {}".format(flag, count))
    _check_size(source_size, "--source-size")
    _check_size(target_size, "--target-size")
    gta5_root = os.path.join(out_dir, "GTA5")
    cityscapes_root = os.path.join(out_dir, "Cityscapes")

    # GTA5 stores label ids as palettised PNGs; show them in their class colours.
    palette = CITYSCAPES.colorize(CITYSCAPES.lut()).ravel().tolist()
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(gta5_root, folder), exist_ok=True)
    width, height = source_size
    for index in range(num_source):
        rng = np.random.default_rng([seed, 0, index])
        ids = scene_label_ids(width, height, rng)
        name = "{:05d}.png".format(index + 1)
        Image.fromarray(render(ids, SOURCE_STYLE, rng)).save(os.path.join(gta5_root, "images", name))
        label = Image.frombytes("P", (width, height), ids.tobytes())
        label.putpalette(palette)
        if index % 10 == 4:  # real GTA5 has a few labels whose size differs from the image
            label = label.resize((width + 2, height + 1), Image.NEAREST)
        label.save(os.path.join(gta5_root, "labels", name))

    width, height = target_size
    for split, count, cities, stream in (("train", num_target_train, TRAIN_CITIES, 1),
                                         ("val", num_target_val, VAL_CITIES, 2)):
        for index in range(count):
            rng = np.random.default_rng([seed, stream, index])
            ids = scene_label_ids(width, height, rng)
            city = cities[index % len(cities)]
            stem = os.path.join(city, "{}_000000_{:06d}".format(city, 19 + index))
            image_path = os.path.join(cityscapes_root, "leftImg8bit", split, stem + IMAGE_SUFFIX)
            os.makedirs(os.path.dirname(image_path), exist_ok=True)
            Image.fromarray(render(ids, TARGET_STYLE, rng)).save(image_path)
            label_path = os.path.join(cityscapes_root, "gtFine", split, stem + LABEL_SUFFIX)
            os.makedirs(os.path.dirname(label_path), exist_ok=True)
            Image.fromarray(ids).save(label_path)
    return gta5_root, cityscapes_root


# The cities' cameras: between the game's vivid colours and Cityscapes' washed-out ones, warmer
# and brighter than Cityscapes, so Cityscapes -> city adaptation has a gap of its own.
CITY_STYLE = Style(saturation=0.85, gain=(1.0, 0.92, 0.8), bias=(14.0, 8.0, 0.0), noise=6.0)


def make_nthu(out_dir, cities=("Rome",), num_train=4, num_test=3, size=(128, 64), seed=0):
    """Write an NTHU cross-city tree under out_dir/NTHU; return its root. For each city:
    Images/Train/<id> (unlabelled) and Images/Test/<id>, as .jpg or .png like the real files
    (mixed), with Labels/Test/<id>_eval.png holding Cityscapes label ids. The scenes' poles stay in
    the labels, though the real cities do not annotate poles: the evaluation must ignore them."""
    from dataset.nthu_dataset import LABEL_SUFFIX, SPLITS
    for count, flag in ((num_train, "--num-nthu (train images)"), (num_test, "--num-nthu (test images)")):
        if count < 1:
            raise ValueError("{} must be at least 1, got {}".format(flag, count))
    _check_size(size, "--target-size")
    root = os.path.join(out_dir, "NTHU")
    width, height = size
    for city_index, city in enumerate(cities):
        for split, count in (("train", num_train), ("test", num_test)):
            images = os.path.join(root, city, "Images", SPLITS[split])
            labels = os.path.join(root, city, "Labels", SPLITS[split])
            os.makedirs(images, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([seed, 4, city_index, int(split == "test"), index])
                ids = scene_label_ids(width, height, rng)
                stem = "pic_{:03d}".format(index + 1)
                suffix = ".png" if index % 3 == 1 else ".jpg"
                Image.fromarray(render(ids, CITY_STYLE, rng)).save(os.path.join(images, stem + suffix), quality=95)
                if split == "test":
                    os.makedirs(labels, exist_ok=True)
                    Image.fromarray(ids).save(os.path.join(labels, stem + LABEL_SUFFIX))
    return root


def make_synscapes(out_dir, count=3, size=(144, 72), seed=0):
    """Write a Synscapes-format tree under out_dir/Synscapes; return its root: img/rgb/<n>.png
    (rendered in the source style) and img/class/<n>.png (8-bit Cityscapes label ids), n from 1,
    not zero-padded, as the real files are (dataset/custom.py cites the layout's source)."""
    if count < 1:
        raise ValueError("--num-synscapes must be at least 1, got {}".format(count))
    _check_size(size, "--source-size")
    root = os.path.join(out_dir, "Synscapes")
    for folder in ("rgb", "class"):
        os.makedirs(os.path.join(root, "img", folder), exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng([seed, 5, index])
        ids = scene_label_ids(size[0], size[1], rng)
        name = "{}.png".format(index + 1)
        Image.fromarray(render(ids, SOURCE_STYLE, rng)).save(os.path.join(root, "img", "rgb", name))
        Image.fromarray(ids).save(os.path.join(root, "img", "class", name))
    return root


# The custom pair's class file: 5 of the scenes' classes, under label values that are not their
# train ids; road has a second value past 8 bits, which only the 16-bit labels write. Every other
# pixel of a scene is ignored: 0 on the frame, 255 elsewhere (cars, persons, poles, ...).
CUSTOM_CLASSES = OrderedDict([
    ("name", "streets5"),
    ("classes", [
        {"name": "road", "colour": [128, 64, 128], "values": [10, 1000]},
        {"name": "sidewalk", "colour": [244, 35, 232], "values": [20]},
        {"name": "building", "colour": [70, 70, 70], "values": [30]},
        {"name": "vegetation", "colour": [107, 142, 35], "values": [40]},
        {"name": "sky", "colour": [70, 130, 180], "values": [50]},
    ]),
    ("ignore", [0, 255]),
])
CUSTOM_LABEL_FORMATS = ("gray", "palette", "16bit", "colour")


def custom_label_values(ids):
    """Cityscapes label ids of a scene -> the custom class file's first values (uint16; all below 256)."""
    table = np.full(256, 255, np.uint16)
    table[UNLABELED] = 0
    for entry in CUSTOM_CLASSES["classes"]:
        table[_ID[entry["name"]]] = entry["values"][0]
    return table[ids]


def custom_label_image(values, label_format):
    """A PIL image of custom label values in one of CUSTOM_LABEL_FORMATS: gray (8-bit, mode L),
    palette (mode P, the palette index is the value, as PaddleSeg writes labels), 16bit (road as
    its 16-bit value) or colour (the class colours, black where not labelled)."""
    colours = np.zeros((65536, 3), np.uint8)
    for entry in CUSTOM_CLASSES["classes"]:
        colours[entry["values"]] = entry["colour"]
    if label_format == "gray":
        return Image.fromarray(values.astype(np.uint8))
    if label_format == "palette":
        label = Image.fromarray(values.astype(np.uint8)).convert("P")
        label.putpalette(colours[:256].ravel().tolist())
        return label
    if label_format == "16bit":
        narrow, wide = CUSTOM_CLASSES["classes"][0]["values"]  # road's two values
        return Image.fromarray(np.where(values == narrow, wide, values).astype(np.uint16))
    if label_format == "colour":
        return Image.fromarray(colours[values])
    raise ValueError("--label-format must be one of {}, got {!r}".format(", ".join(CUSTOM_LABEL_FORMATS),
                                                                         label_format))


class CustomPair(NamedTuple):
    class_file: str    # the 5-class JSON file
    source_root: str   # source/: rgb/<n>.jpg, gt/<n>.png, listed in train.txt
    source_list: str   # source/train.txt: "rgb/<n>.jpg gt/<n>.png" lines
    target_root: str   # target/: images/<street>/<n>.png, labels/<street>/<n>.png


def make_custom_pair(out_dir, num_source=8, num_target=6, source_size=(160, 90), target_size=(128, 64),
                     label_format="gray", seed=0):
    """Write out_dir/custom, two domains in dataset/custom.py's two forms with the class file
    CUSTOM_CLASSES (custom/classes.json), and return its CustomPair: a labelled source in the
    list-file form (JPEG images, source style) and a target in the folder form, two streets in
    sub-folders (PNG images, target style), with labels for scoring. Labels are written in
    ``label_format`` (CUSTOM_LABEL_FORMATS)."""
    if label_format not in CUSTOM_LABEL_FORMATS:
        raise ValueError("--label-format must be one of {}, got {!r}".format(", ".join(CUSTOM_LABEL_FORMATS),
                                                                             label_format))
    for count, flag in ((num_source, "--num-source"), (num_target, "--num-target-train")):
        if count < 1:
            raise ValueError("{} must be at least 1, got {}".format(flag, count))
    _check_size(source_size, "--source-size")
    _check_size(target_size, "--target-size")
    root = os.path.join(out_dir, "custom")
    source, target = os.path.join(root, "source"), os.path.join(root, "target")
    for folder in (os.path.join(source, "rgb"), os.path.join(source, "gt")):
        os.makedirs(folder, exist_ok=True)
    class_file = os.path.join(root, "classes.json")
    with open(class_file, "w") as handle:  # one class a line, as a user would write it
        handle.write('{{\n  "name": {},\n  "classes": [\n    {}\n  ],\n  "ignore": {}\n}}\n'.format(
            json.dumps(CUSTOM_CLASSES["name"]), ",\n    ".join(json.dumps(c) for c in CUSTOM_CLASSES["classes"]),
            json.dumps(CUSTOM_CLASSES["ignore"])))

    lines = []
    for index in range(num_source):
        rng = np.random.default_rng([seed, 6, index])
        ids = scene_label_ids(source_size[0], source_size[1], rng)
        image, label = "rgb/{:04d}.jpg".format(index + 1), "gt/{:04d}.png".format(index + 1)
        Image.fromarray(render(ids, SOURCE_STYLE, rng)).save(os.path.join(source, image), quality=95)
        custom_label_image(custom_label_values(ids), label_format).save(os.path.join(source, label))
        lines.append("{} {}\n".format(image, label))
    source_list = os.path.join(source, "train.txt")
    with open(source_list, "w") as handle:
        handle.writelines(lines)

    for index in range(num_target):
        rng = np.random.default_rng([seed, 7, index])
        ids = scene_label_ids(target_size[0], target_size[1], rng)
        relative = os.path.join("street_{}".format("ab"[index % 2]), "{:04d}".format(index + 1))
        for folder in ("images", "labels"):
            os.makedirs(os.path.dirname(os.path.join(target, folder, relative)), exist_ok=True)
        Image.fromarray(render(ids, TARGET_STYLE, rng)).save(os.path.join(target, "images", relative + ".png"))
        custom_label_image(custom_label_values(ids), label_format).save(
            os.path.join(target, "labels", relative + ".png"))
    return CustomPair(class_file, source, source_list, target)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write tiny synthetic GTA5 and SYNTHIA (source) and Cityscapes (target) trees in their "
                    "real layouts.")
    parser.add_argument("out_dir", help="writes OUT_DIR/GTA5, OUT_DIR/Cityscapes and OUT_DIR/SYNTHIA")
    parser.add_argument("--num-source", type=int, default=20, help="GTA5 image/label pairs (default 20)")
    parser.add_argument("--num-target-train", type=int, default=10,
                        help="Cityscapes train images, with gtFine labels for weak supervision (default 10)")
    parser.add_argument("--num-target-val", type=int, default=6,
                        help="Cityscapes val images with gtFine labelIds (default 6)")
    parser.add_argument("--num-synthia", type=int, default=12, help="SYNTHIA image/label pairs (default 12)")
    parser.add_argument("--num-nthu", type=int, default=0,
                        help="NTHU cross-city (Rome): this many Train and as many labelled Test images, at "
                             "--target-size (default 0: none)")
    parser.add_argument("--num-synscapes", type=int, default=0,
                        help="Synscapes image/label pairs, at --source-size (default 0: none)")
    parser.add_argument("--custom", action="store_true",
                        help="write only OUT_DIR/custom instead: a class file, a source domain in the list-file form "
                             "(--num-source images) and a target in the folder form (--num-target-train images), "
                             "as dataset/custom.py reads them")
    parser.add_argument("--label-format", choices=CUSTOM_LABEL_FORMATS, default="gray",
                        help="the custom domains' labels: 8-bit gray, 8-bit palette (PaddleSeg's), 16bit or colour "
                             "PNGs (default gray)")
    parser.add_argument("--source-size", type=size_argument, default=(160, 90), help="W,H of GTA5 images (default 160,90)")
    parser.add_argument("--target-size", type=size_argument, default=(128, 64),
                        help="W,H of Cityscapes images (default 128,64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.custom:
        try:
            pair = make_custom_pair(args.out_dir, args.num_source, args.num_target_train, args.source_size,
                                    args.target_size, args.label_format, args.seed)
        except ValueError as error:
            parser.error(str(error))
        print("class file:  {}\nsource list: {} (root {})\ntarget root: {}".format(
            pair.class_file, pair.source_list, pair.source_root, pair.target_root))
        return
    try:
        roots = make_synthetic(args.out_dir, args.num_source, args.num_target_train, args.num_target_val,
                               args.source_size, args.target_size, args.seed)
        synthia = make_synthia(args.out_dir, args.num_synthia, (args.source_size[0], args.source_size[1] * 19 // 18),
                               args.seed)
        nthu = make_nthu(args.out_dir, num_train=args.num_nthu, num_test=args.num_nthu, size=args.target_size,
                         seed=args.seed) if args.num_nthu else None
        synscapes = make_synscapes(args.out_dir, args.num_synscapes, args.source_size,
                                   args.seed) if args.num_synscapes else None
    except ValueError as error:
        parser.error(str(error))
    print("GTA5 root:       {}\nCityscapes root: {}\nSYNTHIA root:    {}".format(roots[0], roots[1], synthia))
    if nthu:
        print("NTHU root:       {}".format(nthu))
    if synscapes:
        print("Synscapes root:  {}".format(synscapes))


if __name__ == "__main__":
    main()

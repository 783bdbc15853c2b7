"""The images to predict: ``--images`` as image files, folders and list files, and one image decoded."""
from PIL import Image, ImageOps

import os
from typing import NamedTuple

import numpy as np

from dataset.files import IMAGE_EXTENSIONS, images_below
from utils.prediction import PredictionError

LIST_SUFFIX = ".txt"


class ImageError(Exception):
    """One input image cannot be decoded; the message names it."""


class InputImage(NamedTuple):
    path: str  # the file to read
    name: str  # where its outputs go: '/'-separated, relative to the save folder, no extension


def _stem(relative_path):
    return os.path.splitext(relative_path.replace(os.sep, "/"))[0]


def _list_entries(list_path, problems):
    """(path, name) of each line of a list file; a line may be PaddleSeg's "image label"."""
    folder = os.path.dirname(os.path.abspath(list_path))
    entries = []
    with open(list_path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = line if os.path.isfile(os.path.join(folder, line)) else line.split()[0]
            path = os.path.normpath(os.path.join(folder, entry))
            if not os.path.isfile(path):
                problems.append("--images {} line {}: no such image {}".format(list_path, number, path))
                continue
            relative = os.path.relpath(path, folder)
            entries.append((path, _stem(os.path.basename(path) if relative.startswith("..") else relative)))
    if not entries and not problems:
        problems.append("--images {}: the list names no images".format(list_path))
    return entries


def find_images(specs):
    """[InputImage] of ``--images`` arguments: image files, folders (searched recursively, sorted) and
    list files (.txt, one image a line, relative to the list's folder). Raises PredictionError with
    a line for each missing path, empty folder or empty list."""
    problems, images = [], []
    for spec in specs:
        if os.path.isdir(spec):
            found = images_below(spec)
            if not found:
                problems.append("--images {}: no images ({}) in this folder or below it".format(
                    spec, ", ".join("*" + suffix for suffix in IMAGE_EXTENSIONS)))
            images += [InputImage(os.path.join(spec, entry), _stem(entry)) for entry in found]
        elif os.path.isfile(spec) and spec.lower().endswith(LIST_SUFFIX):
            images += [InputImage(path, name) for path, name in _list_entries(spec, problems)]
        elif os.path.isfile(spec):
            images.append(InputImage(spec, _stem(os.path.basename(spec))))
        else:
            problems.append("--images {}: no such file or folder".format(spec))
    if problems:
        raise PredictionError("\n".join(problems))
    unique, seen = [], set()
    for image in images:  # the same file named twice (a folder and a file in it) is predicted once
        key = (os.path.realpath(image.path), image.name)
        if key not in seen:
            seen.add(key)
            unique.append(image)
    return unique


def check_save_folder(save_dir, specs):
    """Refuse a save folder that is, or is inside, an input folder: a later run would read the
    outputs as images to predict."""
    save = os.path.realpath(save_dir)
    problems = []
    for spec in specs:
        if os.path.isdir(spec):
            folder = os.path.realpath(spec)
            if save == folder or save.startswith(folder.rstrip(os.sep) + os.sep):
                problems.append("--save {}: inside the input folder {}; the next run would take the outputs for "
                                "images to predict: choose a --save outside it".format(save_dir, spec))
    if problems:
        raise PredictionError("\n".join(problems))


def read_rgb(path):
    """HxWx3 uint8 RGB of an image file, turned as its EXIF orientation says; grey, palette, 16-bit
    and CMYK images are converted, an alpha channel is dropped (as OpenCV's imread does for
    PaddleSeg). Raises ImageError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            image.load()
            try:
                image = ImageOps.exif_transpose(image)
            except Exception:  # a damaged EXIF block: keep the pixels as stored
                pass
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: its top 8 bits
                image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        raise ImageError("cannot read image {}: {}".format(path, str(error) or type(error).__name__))

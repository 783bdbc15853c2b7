"""Finding and decoding the datasets' files: numpy and Pillow only, so that scoring and checking
tools need no Paddle."""
from PIL import Image

import os

import numpy as np

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


def files_below(directory, suffix):
    """Sorted '/'-separated paths below ``directory`` ending in ``suffix`` (none if it does not exist)."""
    found = []
    for folder, _, files in os.walk(directory):
        relative = os.path.relpath(folder, directory)
        for file_name in files:
            if file_name.endswith(suffix):
                path = file_name if relative == "." else os.path.join(relative, file_name)
                found.append(path.replace(os.sep, "/"))
    return sorted(found)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def images_below(directory):
    """Sorted '/'-separated paths of the images below ``directory`` (IMAGE_EXTENSIONS, any letter case)."""
    found = []
    for folder, _, files in os.walk(directory):
        for file_name in files:
            if os.path.splitext(file_name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(folder, file_name), directory).replace(os.sep, "/"))
    return sorted(found)


def scan(directory, suffix, owner, layout):
    """``files_below``, refusing a missing or empty directory with the expected layout."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            "{}: directory {!r} does not exist; expected the layout {}".format(owner, directory, layout))
    found = files_below(directory, suffix)
    if not found:
        raise ValueError(
            "{}: no *{} files under {!r}; expected the layout {}".format(owner, suffix, directory, layout))
    return found


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


def load_first_channel_16bit(path):
    """HxW uint16: the first channel of a label PNG (SYNTHIA's: 16-bit RGB, the class id first).

    Pillow reads a 16-bit colour PNG as an 8-bit image of its high bytes. Decoding the same data
    again as little-endian words yields the low bytes (the PNG filters are undone on the raw
    bytes either way), and the two together are the 16-bit values. 8-bit and single-channel
    files are read as they are.
    """
    try:
        with Image.open(path) as image:
            rawmode = image.tile[0][3] if len(image.tile) == 1 else None
            first = np.asarray(image)
        if rawmode in ("RGB;16B", "RGBA;16B"):
            with Image.open(path) as image:
                image.tile = [tuple(image.tile[0][:3]) + (rawmode[:-1] + "L",)]
                low = np.asarray(image)
            return (first[..., 0].astype(np.uint16) << 8) | low[..., 0]
    except OSError as error:
        raise OSError("cannot read label {}: {}".format(path, error)) from error
    return (first[..., 0] if first.ndim == 3 else first).astype(np.uint16)


def image_to_input(image, crop_size, mean_bgr):
    """PIL RGB -> float32 CHW network input: BICUBIC to crop_size, BGR, minus the mean."""
    resized = np.asarray(image.resize(crop_size, Image.BICUBIC), dtype=np.float32)
    bgr = resized[:, :, ::-1] - mean_bgr
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))


def label_to_train_ids(label, crop_size, lut):
    """PIL label ids -> HxW train ids of the lut's dtype; resizing the 8-bit ids first keeps the LUT pass small."""
    return lut[np.asarray(label.resize(crop_size, Image.NEAREST))]

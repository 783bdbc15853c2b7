"""What an evaluation looks like: the mIoU of every snapshot, and predictions beside the ground truth."""
from PIL import Image

import collections
import json
import os
import posixpath
from typing import NamedTuple

import numpy as np

from dataset.cityscapes_dataset import IMAGE_SUFFIX, gtfine_entry
from dataset.classes import CITYSCAPES
from dataset.files import files_below, load_label_ids
from utils.evaluation.cityscapes import SNAPSHOT_TABLE_NAME


def read_snapshot_table(snapshot_dir):
    """(OrderedDict iteration -> mIoU in [0, 1], best iteration) from the directory evaluation."""
    path = os.path.join(snapshot_dir, SNAPSHOT_TABLE_NAME)
    with open(path) as f:
        saved = json.load(f)
    table = collections.OrderedDict(sorted((int(k), v) for k, v in saved["mIoU"].items()))
    return table, saved["best_iteration"]


def snapshot_table_markdown(table, best):
    rows = ["| iteration | mIoU |", "|---:|---:|"]
    for iteration, miou in table.items():
        cell = "{:.2f}".format(miou * 100)
        rows.append("| {} | {} |".format(iteration, "**{}** (best)".format(cell) if iteration == best else cell))
    return "\n".join(rows)


def plot_snapshot_miou(table, best, path=None, reference=None):
    """mIoU of every snapshot; ``reference``: {label: mIoU in [0, 1]} drawn as horizontal lines."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=(9, 4))
    iterations = list(table)
    ax.plot(iterations, [table[i] * 100 for i in iterations], marker="o", label="snapshots of this run")
    ax.plot([best], [table[best] * 100], marker="*", markersize=16, linestyle="none",
            label="best: GTA5_{} ({:.2f})".format(best, table[best] * 100))
    for (label, value), style in zip(sorted((reference or {}).items()), ("--", ":", "-.")):
        ax.axhline(value * 100, linestyle=style, color="grey", label="{} ({:.2f})".format(label, value * 100))
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Cityscapes val mIoU of each snapshot")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


def _evenly(items, count):
    if count >= len(items):
        return list(items)
    return [items[int(i * len(items) / count)] for i in range(count)]


def _fit_width(picture, width):
    if picture.width <= width:
        return picture
    return picture.resize((width, max(1, round(picture.height * width / picture.width))), Image.NEAREST)


class Comparison(NamedTuple):
    """One validation image next to its ground truth and predictions, saved as one picture."""
    path: str
    titles: list
    panels: list  # PIL images, in the order of titles


def comparison_pictures(cityscapes_dir, predictions, count, out_dir, split="val", width=1024):
    """Image | ground truth | one prediction per entry of ``predictions`` ({title: --save dir}).

    ``count`` validation images, spread over the set; each row is saved as ``out_dir/<name>.png``
    with panels at most ``width`` wide, 8 pixels apart. Returns [Comparison].
    """
    image_dir = os.path.join(cityscapes_dir, "leftImg8bit", split)
    entries = _evenly(files_below(image_dir, IMAGE_SUFFIX), count)
    if not entries:
        raise FileNotFoundError("no Cityscapes images in {}".format(image_dir))
    lut = CITYSCAPES.lut()
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for entry in entries:
        name = posixpath.basename(entry)
        with Image.open(os.path.join(image_dir, entry)) as image:
            panels = [image.convert("RGB")]
        truth = lut[np.asarray(load_label_ids(os.path.join(cityscapes_dir, "gtFine", split, gtfine_entry(entry))))]
        panels.append(Image.fromarray(CITYSCAPES.colorize(truth)))
        for title, directory in predictions.items():
            path = os.path.join(directory, name[:-len(".png")] + "_color.png")
            if not os.path.isfile(path):
                raise FileNotFoundError("no prediction {} for {}: run its evaluation with --save {} first".format(
                    path, title, directory))
            with Image.open(path) as prediction:
                panels.append(prediction.convert("RGB"))
        size = panels[0].size
        panels = [_fit_width(p if p.size == size else p.resize(size, Image.NEAREST), width) for p in panels]
        gap = 8
        row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white")
        for index, panel in enumerate(panels):
            row.paste(panel, (index * (panel.width + gap), 0))
        path = os.path.join(out_dir, name[:-len(IMAGE_SUFFIX)] + ".png")
        row.save(path)
        rows.append(Comparison(path, ["image", "ground truth"] + list(predictions), panels))
    return rows


def show_pictures(rows, classes=CITYSCAPES):
    """The rows of comparison_pictures as one figure, the colours of ``classes`` as its legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = len(rows[0].panels)
    width, height = rows[0].panels[0].size
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(14, (14.0 / columns * height / width + 0.3) * len(rows) + 1.0))
    for row, row_axes in zip(rows, axes):
        for index, (ax, panel, title) in enumerate(zip(row_axes, row.panels, row.titles)):
            ax.imshow(np.asarray(panel))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if index else "{}: {}".format(os.path.basename(row.path)[:-len(".png")], title),
                         fontsize="small")
    handles = [Patch(color=np.asarray(colour) / 255.0, label=name) for name, colour in zip(classes.names, classes.colours)]
    figure.legend(handles=handles, loc="lower center", ncol=10, fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


class OwnImage(NamedTuple):
    """One of your images next to what predict.py wrote for it."""
    name: str
    titles: list
    panels: list  # HxWx3 RGB arrays, and the confidence as HxW (0..255) if it was written


def own_image_pictures(images, save_dir, count):
    """Image | class colours | overlay (| confidence) of ``count`` of ``images`` (predict.py's --images,
    spread over them) from predict.py's outputs in ``save_dir``; images without outputs (unreadable
    ones) are left out. Returns [OwnImage]."""
    from utils.prediction.inputs import find_images
    from utils.prediction.outputs import ADDED, CONFIDENCE, PSEUDO_COLOR, Outputs

    outputs = Outputs(save_dir, CITYSCAPES)
    done = [image for image in find_images(images) if os.path.isfile(outputs.path(PSEUDO_COLOR, image.name))]
    rows = []
    for image in _evenly(done, count):
        titles, panels = ["image", "classes", "overlay"], []
        for path in (image.path, outputs.path(PSEUDO_COLOR, image.name), outputs.path(ADDED, image.name)):
            with Image.open(path) as picture:
                panels.append(np.asarray(picture.convert("RGB")))
        confidence = outputs.path(CONFIDENCE, image.name)
        if os.path.isfile(confidence):
            with Image.open(confidence) as picture:
                panels.append(np.asarray(picture))
            titles.append("confidence")
        rows.append(OwnImage(image.name, titles, panels))
    return rows


def show_own_images(rows, classes=CITYSCAPES):
    """The rows of own_image_pictures as one figure: a row per image, the class colours as its legend."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = max(len(row.panels) for row in rows)
    height, width = rows[0].panels[0].shape[:2]
    figure, axes = plt.subplots(len(rows), columns, squeeze=False,
                                figsize=(14, (14.0 / columns * height / width + 0.3) * len(rows) + 1.0))
    for row, row_axes in zip(rows, axes):
        for index, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if index >= len(row.panels):
                ax.axis("off")
                continue
            panel = row.panels[index]
            if panel.ndim == 2:  # confidence: dark where the model hesitates
                ax.imshow(panel, cmap="magma", vmin=0, vmax=255)
            else:
                ax.imshow(panel)
            ax.set_title(row.titles[index] if index else "{}: image".format(row.name), fontsize="small")
    handles = [Patch(color=np.asarray(colour) / 255.0, label=name)
               for name, colour in zip(classes.names, classes.colours)]
    figure.legend(handles=handles, loc="lower center", ncol=10, fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure

"""Cityscapes evaluation: predictions as PNGs and mIoU in one pass, and the choice among snapshots.

The reference evaluates at 1024x512, upsamples layer6's output bilinearly (align_corners=True)
to the ground truth's 1024x2048 and takes the argmax; the confusion matrix is summed over all
images. Here the scores are computed in memory while the predictions are written in the
background, so no second pass over the PNGs is needed.
"""
import PIL.Image  # noqa: F401  (before paddle; see utils/runtime.py)
from PIL import Image

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
from tqdm import tqdm

from dataset.base import load_label_ids, summarize
from dataset.cityscapes_dataset import gtfine_entry
from dataset.classes import NUM_CLASSES, label_id_to_train_id_lut, palette_256
from model.inference import upsample_argmax
from utils.metrics import MIoUResult, confusion_matrix, devkit_lut, iou_report, mean_iou, per_class_iou
from utils.atomic import atomic_copy, atomic_write_json
from utils.checkpoint import SEGMENTATION_SNAPSHOT, evaluation_cache
from utils.weights import load_weights

BEST_MODEL_NAME = "GTA5_best.pdparams"
SNAPSHOT_TABLE_NAME = "snapshots_mIoU.json"


class _ValidationSet(paddle.io.Dataset):
    """(network input, full-resolution ground truth in train ids or the output size, index)."""

    def __init__(self, images, gt_paths, lut):
        self.images = images
        self.gt_paths = gt_paths
        self.lut = lut

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index][0]
        if self.gt_paths is None:
            with Image.open(self.images.image_path(self.images.img_ids[index])) as source:
                width, height = source.size
            return image, np.array([height, width], dtype=np.int64), index
        return image, self.lut[np.asarray(load_label_ids(self.gt_paths[index]))], index


def _collate(samples):
    images, targets, indices = zip(*samples)
    return np.stack(images), list(targets), list(indices)


_PALETTE_BYTES = palette_256().tobytes()


def save_prediction(train_ids, save_dir, name):
    """``<name>.png`` (train ids, 8-bit) and ``<stem>_color.png`` (palette), as the reference."""
    file_name = os.path.basename(name)
    Image.fromarray(train_ids, mode="L").save(os.path.join(save_dir, file_name))
    colour = Image.fromarray(train_ids, mode="L")
    colour.putpalette(_PALETTE_BYTES)
    colour.save(os.path.join(save_dir, os.path.splitext(file_name)[0] + "_color.png"))


def ground_truth_paths(images, gt_dir):
    """gtFine labelIds path of every image entry; all must exist."""
    paths = [os.path.join(gt_dir, gtfine_entry(entry)) for entry in images.img_ids]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError("{} of {} ground-truth files are missing under {}: {}".format(
            len(missing), len(paths), gt_dir, summarize(missing)))
    return paths


def evaluate(predictor, images, gt_paths=None, lut=None, save_dir=None, batch_size=1, num_workers=2,
             progress=True):
    """Run ``predictor`` over ``images`` (a cityscapesDataSet); returns an MIoUResult, or None
    without ground truth. With ``save_dir``, writes every prediction there."""
    lut = label_id_to_train_id_lut() if lut is None else lut
    loader = paddle.io.DataLoader(_ValidationSet(images, gt_paths, lut), batch_size=batch_size,
                                  shuffle=False, num_workers=num_workers, collate_fn=_collate)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    with ThreadPoolExecutor(max_workers=2) as writer:
        pending = []
        bar = tqdm(total=len(images), unit="img", desc="evaluating", disable=not progress)
        for batch, targets, indices in loader:
            logits = predictor(batch.numpy() if hasattr(batch, "numpy") else batch)
            for logit, target, index in zip(logits, targets, indices):
                target = target.numpy() if hasattr(target, "numpy") else target
                size = target.shape if gt_paths is not None else tuple(target)
                prediction = upsample_argmax(logit[None], size)[0]
                if gt_paths is not None:
                    total += confusion_matrix(target, prediction)
                if save_dir:
                    pending.append(writer.submit(save_prediction, prediction, save_dir,
                                                 images.img_ids[int(index)]))
            bar.update(len(indices))
        bar.close()
        for job in pending:
            job.result()  # re-raise a failed write
    if gt_paths is None:
        return None
    ious = per_class_iou(total)
    return MIoUResult(ious=ious, miou=mean_iou(ious), num_images=len(images), confusion=total)


def find_snapshots(directory):
    """{iteration: path} of the ``GTA5_<iter>.pdparams`` segmentation snapshots in ``directory``."""
    found = {}
    for name in os.listdir(directory):
        match = SEGMENTATION_SNAPSHOT.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(directory, name)
    return dict(sorted(found.items()))


def _cached_result(path, fingerprint):
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    return cached if cached.get("fingerprint") == fingerprint else None


def evaluate_snapshots(model, directory, make_predictor, images, gt_paths, lut, batch_size=1,
                       num_workers=2, settings=None, log=print):
    """Evaluate every snapshot in ``directory`` not already evaluated with the same settings.

    Each result is cached beside its snapshot (``GTA5_<iter>.eval.json``); the table
    iteration -> mIoU is saved as ``snapshots_mIoU.json`` and the best snapshot is copied to
    ``GTA5_best.pdparams``. Returns ``(table, best_iteration)``.
    """
    snapshots = find_snapshots(directory)
    if not snapshots:
        raise FileNotFoundError("no snapshots named GTA5_<iteration>.pdparams in {}; found: {}".format(
            directory, summarize(sorted(os.listdir(directory))) or "nothing"))
    table = {}
    for iteration, path in snapshots.items():
        stat = os.stat(path)
        fingerprint = dict(settings or {}, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        cache_path = evaluation_cache(path)
        cached = _cached_result(cache_path, fingerprint)
        if cached is not None:
            log("{}: mIoU {:.2f} (cached in {})".format(os.path.basename(path), cached["mIoU"] * 100, cache_path))
            table[iteration] = cached["mIoU"]
            continue
        load_weights(model, path)
        result = evaluate(make_predictor(model), images, gt_paths, lut, batch_size=batch_size,
                          num_workers=num_workers)
        atomic_write_json(cache_path, dict(iou_report(result.ious, result.num_images),
                                           fingerprint=fingerprint, iteration=iteration))
        log("{}: mIoU {:.2f}".format(os.path.basename(path), result.miou * 100))
        table[iteration] = result.miou
    best = max(table, key=lambda it: (table[it], -it))
    atomic_copy(snapshots[best], os.path.join(directory, BEST_MODEL_NAME))
    atomic_write_json(os.path.join(directory, SNAPSHOT_TABLE_NAME), {
        "mIoU": {str(k): v for k, v in table.items()}, "best_iteration": best, "best_mIoU": table[best]})
    return table, best


def lut_for(devkit_dir):
    """The label id -> train id table: the devkit's info.json if given, else our class table."""
    if devkit_dir:
        info = os.path.join(devkit_dir, "info.json")
        if os.path.isfile(info):
            return devkit_lut(info)
    return label_id_to_train_id_lut()


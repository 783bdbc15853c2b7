"""Cityscapes evaluation: predictions as PNGs and mIoU in one pass, and scores of snapshots.

The reference evaluates at 1024x512, upsamples layer6's output bilinearly (align_corners=True)
to the ground truth's 1024x2048 and takes the argmax; the confusion matrix is summed over all
images. Here the scores are computed in memory while the predictions are written in the
background, so no second pass over the PNGs is needed. Evaluating a snapshot directory and
validating during training share one cache per snapshot, so nothing is evaluated twice.
"""
from PIL import Image

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
from tqdm import tqdm

from dataset.cityscapes_dataset import gtfine_entry
from dataset.classes import NUM_CLASSES, label_id_to_train_id_lut, palette_256
from dataset.files import load_label_ids, summarize
from dataset.loader import Batches
from model import MODEL_ALIASES
from model.inference import upsample_argmax
from utils.evaluation.metrics import MIoUResult, confusion_matrix, devkit_lut, iou_report, mean_iou, per_class_iou
from utils.files.atomic import atomic_copy, atomic_write_json
from utils.files.snapshots import SnapshotDir, evaluation_cache
from utils.files.weights import load_weights

SNAPSHOT_TABLE_NAME = "snapshots_mIoU.json"


class _ValidationSet(paddle.io.Dataset):
    """(network input, full-resolution ground truth in train ids or the output size, index)."""

    def __init__(self, images, gt_paths, lut):
        self.images = images
        self.gt_paths = gt_paths
        self.lut = lut

    def __len__(self):
        return len(self.images)

    def files(self, index):
        return self.images.files(index) + ([self.gt_paths[index]] if self.gt_paths is not None else [])

    def __getitem__(self, index):
        image = self.images[index][0]
        if self.gt_paths is None:
            with Image.open(self.images.image_path(self.images.img_ids[index])) as source:
                width, height = source.size
            return image, np.array([height, width], dtype=np.int64), np.array(index)
        return image, self.lut[np.asarray(load_label_ids(self.gt_paths[index]))], np.array(index)


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
             progress=True, watchdog=None):
    """Run ``predictor`` over ``images`` (a cityscapesDataSet); returns an MIoUResult, or None
    without ground truth. With ``save_dir``, writes every prediction there."""
    lut = label_id_to_train_id_lut() if lut is None else lut
    dataset = _ValidationSet(images, gt_paths, lut)
    sampler = paddle.io.BatchSampler(paddle.io.SequenceSampler(dataset), batch_size=batch_size)
    loader = Batches(dataset, sampler, num_workers, name="the evaluation set", watchdog=watchdog)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    bar = tqdm(total=len(images), unit="img", desc="evaluating", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=2) as writer:
            pending = []
            for batch, targets, indices in loader:
                logits = predictor(batch.numpy())
                for logit, target, index in zip(logits, targets, indices):
                    target = target.numpy()
                    size = target.shape if gt_paths is not None else tuple(target)
                    prediction = upsample_argmax(logit[None], size)[0]
                    if gt_paths is not None:
                        total += confusion_matrix(target, prediction)
                    if save_dir:
                        pending.append(writer.submit(save_prediction, prediction, save_dir,
                                                     images.img_ids[int(index)]))
                bar.update(len(logits))
            for job in pending:
                job.result()  # re-raise a failed write
    finally:
        bar.close()
        loader.close()
    if gt_paths is None:
        return None
    ious = per_class_iou(total)
    return MIoUResult(ious=ious, miou=mean_iou(ious), num_images=len(images), confusion=total)


def evaluation_settings(data_dir, data_list, split, gt_dir, devkit_dir, model, input_size, num_images):
    """What a snapshot's cached score depends on besides its file: two evaluations with equal
    settings of the same file give the same numbers."""
    return {"data_dir": os.path.abspath(data_dir), "data_list": data_list, "set": split,
            "gt_dir": os.path.abspath(gt_dir), "devkit_dir": devkit_dir, "model": MODEL_ALIASES.get(model, model),
            "input_size": list(input_size), "num_images": num_images}


def _fingerprint(path, settings):
    stat = os.stat(path)
    return dict(settings, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def cached_score(path, settings):
    """The cached evaluation of snapshot file ``path`` under ``settings``, or None."""
    try:
        with open(evaluation_cache(path)) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    return cached if cached.get("fingerprint") == _fingerprint(path, settings) else None


def save_score(path, settings, result, iteration):
    """Cache ``result`` (an MIoUResult) of snapshot file ``path``; returns what was cached."""
    record = dict(iou_report(result.ious, result.num_images), fingerprint=_fingerprint(path, settings),
                  iteration=iteration)
    atomic_write_json(evaluation_cache(path), record)
    return record


def evaluate_snapshots(model, directory, make_predictor, images, gt_paths, lut, batch_size=1,
                       num_workers=2, settings=None, log=print):
    """Evaluate every snapshot in ``directory`` not already evaluated with the same settings.

    Each result is cached beside its snapshot (``<PREFIX>_<N>.eval.json``); the table
    iteration -> mIoU is saved as ``snapshots_mIoU.json`` and the best snapshot is copied to
    ``<PREFIX>_best.pdparams``. Returns ``(table, best_iteration, snapshots)``.
    """
    snapshots = SnapshotDir.detect(directory)
    files = snapshots.segmentation_files()
    if not files:
        raise FileNotFoundError("no snapshots named {}_<iteration>.pdparams in {}; found: {}".format(
            snapshots.prefix, directory, summarize(sorted(os.listdir(directory))) or "nothing"))
    settings = settings or {}
    table = {}
    for iteration, path in files.items():
        cached = cached_score(path, settings)
        if cached is not None:
            log("{}: mIoU {:.2f} (cached in {})".format(os.path.basename(path), cached["mIoU"] * 100,
                                                        evaluation_cache(path)))
            table[iteration] = cached["mIoU"]
            continue
        load_weights(model, path)
        result = evaluate(make_predictor(model), images, gt_paths, lut, batch_size=batch_size,
                          num_workers=num_workers)
        save_score(path, settings, result, iteration)
        log("{}: mIoU {:.2f}".format(os.path.basename(path), result.miou * 100))
        table[iteration] = result.miou
    best = max(table, key=lambda it: (table[it], -it))
    atomic_copy(files[best], snapshots.best_path)
    atomic_write_json(os.path.join(directory, SNAPSHOT_TABLE_NAME), {
        "mIoU": {str(k): v for k, v in table.items()}, "best_iteration": best, "best_mIoU": table[best]})
    return table, best, snapshots


def lut_for(devkit_dir):
    """The label id -> train id table: the devkit's info.json if given, else our class table."""
    if devkit_dir:
        info = os.path.join(devkit_dir, "info.json")
        if os.path.isfile(info):
            return devkit_lut(info)
    return label_id_to_train_id_lut()

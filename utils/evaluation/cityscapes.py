"""Evaluation on Cityscapes val (or an NTHU city's test images): predictions as PNGs and mIoU
in one pass, and scores of snapshots.

The reference evaluates at 1024x512, upsamples layer6's output bilinearly (align_corners=True)
to the ground truth's 1024x2048 and takes the argmax; the confusion matrix is summed over all
images. Here the scores are computed in memory while the predictions are written in the
background, so no second pass over the PNGs is needed. Evaluating a snapshot directory and
validating during training share one cache per snapshot, so nothing is evaluated twice.

What is scored follows the domains (dataset.sources.scored_classes): a SYNTHIA model on the 16
classes SYNTHIA shares with Cityscapes and on 13 of them, an NTHU city on its 13 annotated
classes, a custom domain as its class file says, anything else on all 19.
"""
from PIL import Image

import gc
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import numpy as np
import paddle
from tqdm import tqdm

from dataset.cityscapes_dataset import gtfine_entry
from dataset.classes import CITYSCAPES
from dataset.files import load_label_ids, summarize
from dataset.loader import Batches
from dataset.sources import CUSTOM, SOURCE_OF_PREFIX, SOURCES, TARGETS, target_class
from model import MODEL_ALIASES
from model.inference import upsample_argmax
from utils.evaluation.metrics import confusion_matrix, devkit_lut, iou_report, miou_result
from utils.files.atomic import atomic_copy, atomic_write_json
from utils.files.snapshots import SnapshotDir, evaluation_cache, prefix_of, read_class_record
from utils.files.weights import load_weights

SNAPSHOT_TABLE_NAME = "snapshots_mIoU.json"


class _ValidationSet(object):
    """(network input, full-resolution ground truth in train ids or the output size, index).

    ``lut``: the label value -> train id table of 8-bit label files, or a function reading a label
    file into train ids (a custom domain's 16-bit or colour labels)."""

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
        path = self.gt_paths[index]
        truth = self.lut(path) if callable(self.lut) else self.lut[np.asarray(load_label_ids(path))]
        return image, truth, np.array(index)


def prediction_stem(images, entry):
    """Where an image's prediction goes, without extension: its file name, as the reference (a
    Cityscapes image keeps its name, an NTHU ``<id>.jpg`` becomes ``<id>``); a custom dataset's
    path below its images folder, so that images of equal names in two folders stay apart."""
    if hasattr(images, "prediction_stem"):
        return images.prediction_stem(entry)
    return os.path.splitext(os.path.basename(entry))[0]


def _output_stems(images):
    stems, first = [], {}
    for entry in images.img_ids:
        stem = prediction_stem(images, entry)
        if first.setdefault(stem, entry) != entry:
            raise ValueError("{} and {} would both be saved as {}.png: give --save only for images of distinct "
                             "names".format(first[stem], entry, stem))
        stems.append(stem)
    return stems


def save_prediction(train_ids, save_dir, stem, classes=CITYSCAPES):
    """``<stem>.png`` (train ids, 8-bit) and ``<stem>_color.png`` (palette), as the reference."""
    if os.path.dirname(stem):
        os.makedirs(os.path.join(save_dir, os.path.dirname(stem)), exist_ok=True)
    Image.fromarray(train_ids, mode="L").save(os.path.join(save_dir, stem + ".png"))
    colour = Image.fromarray(train_ids, mode="L")
    colour.putpalette(classes.palette().tobytes())
    colour.save(os.path.join(save_dir, stem + "_color.png"))


def _all_present(paths, gt_dir):
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError("{} of {} ground-truth files are missing under {}: {}".format(
            len(missing), len(paths), gt_dir, summarize(missing)))
    return paths


def evaluate(predictor, images, gt_paths=None, lut=None, save_dir=None, batch_size=1, num_workers=2,
             progress=True, watchdog=None, classes=CITYSCAPES):
    """Run ``predictor`` over ``images`` (a dataset without labels); returns an MIoUResult scored
    with ``classes`` (see dataset.sources.scored_classes), or None without ground truth. With
    ``save_dir``, writes every prediction there."""
    lut = classes.lut() if lut is None else lut
    dataset = _ValidationSet(images, gt_paths, lut)
    sampler = paddle.io.BatchSampler(paddle.io.SequenceSampler(dataset), batch_size=batch_size)
    loader = Batches(dataset, sampler, num_workers, name="the evaluation set", watchdog=watchdog)
    if save_dir:
        stems = _output_stems(images)
        os.makedirs(save_dir, exist_ok=True)
    total = np.zeros((classes.num_classes, classes.num_classes), dtype=np.int64)
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
                        total += confusion_matrix(target, prediction, classes.num_classes)
                    if save_dir:
                        pending.append(writer.submit(save_prediction, prediction, save_dir, stems[int(index)],
                                                     classes))
                bar.update(len(logits))
            for job in pending:
                job.result()  # re-raise a failed write
    finally:
        bar.close()
        loader.close()
    if gt_paths is None:
        return None
    return miou_result(total, len(images), classes)


class EvaluationSet(NamedTuple):
    """What a target's evaluation reads: the images (no labels), the ground truth of each (None:
    predictions only) and the label value -> train id table (or a reader: see _ValidationSet)."""
    images: object
    gt_paths: Optional[list]
    gt_dir: str
    lut: object
    split: str


def evaluation_set(target, data_dir, input_size, data_list=None, split=None, gt_dir=None, devkit_dir=None,
                   city=None, labels=None):
    """The images and ground truth an evaluation on ``target`` scores, as evaluate_cityscapes.py and
    training's --val read them.

    Cityscapes: leftImg8bit/<split> (default val) against gt_dir (default gtFine/<split>), the
    labels mapped by the devkit's info.json if ``devkit_dir`` has one. NTHU: the ``city``'s
    Images/<Split> (default Test) against its Labels/<Split>, only the 13 annotated classes
    mapped. Custom (``labels``: the class set its labels are read with): the list's or the images/
    folder's images against their labels, if they have them. Ground truth is read when ``gt_dir``
    is given or the default one exists; then every file must be there."""
    if target not in TARGETS:
        raise ValueError("unknown target {!r}: choose one of {}".format(target, ", ".join(sorted(TARGETS))))
    split = split or TARGETS[target].val_split
    if target == CUSTOM:
        if devkit_dir or gt_dir or city:
            raise ValueError("a custom target's labels are those its list or labels/ folder names: --gt-dir, "
                             "--devkit-dir and --city do not apply")
        labelled = target_class(target)(data_dir, data_list, classes=labels, crop_size=input_size)
        images = target_class(target)(data_dir, data_list, classes=labels, crop_size=input_size, with_labels=False)
        gt_paths = [labelled.label_path(entry) for entry in labelled.img_ids] if labelled.with_labels else None
        return EvaluationSet(images, gt_paths, data_dir, labelled.read_train_ids, split)
    if target == "nthu":
        from dataset.nthu_dataset import label_name
        if devkit_dir:
            raise ValueError("devkit_dir (--devkit-dir) holds Cityscapes lists; the NTHU evaluation does not use it")
        images = target_class(target)(data_dir, city, split, list_path=data_list, crop_size=input_size,
                                      return_label=False)
        default_gt_dir = images.label_dir
        label_entry = label_name
        lut = images.classes.lut()
    else:
        images = target_class(target)(data_dir, data_list, crop_size=input_size, set=split)
        default_gt_dir = os.path.join(data_dir, "gtFine", split)
        label_entry = gtfine_entry
        lut = lut_for(devkit_dir)
    gt_paths = None
    if gt_dir or os.path.isdir(default_gt_dir):
        gt_dir = gt_dir or default_gt_dir
        gt_paths = _all_present([os.path.join(gt_dir, label_entry(entry)) for entry in images.img_ids], gt_dir)
    return EvaluationSet(images, gt_paths, gt_dir or default_gt_dir, lut, split)


def evaluation_settings(data_dir, data_list, split, gt_dir, devkit_dir, model, input_size, num_images,
                        classes=CITYSCAPES, labels=None):
    """What a snapshot's cached score depends on besides its file: two evaluations with equal
    settings of the same file give the same numbers. The subsets ``classes`` scores are part of
    them (a GTA5 and a SYNTHIA evaluation of one file are two entries), the whole class set when
    it is not the Cityscapes 19, and ``labels``, the set a custom target's labels are read with."""
    settings = {"data_dir": os.path.abspath(data_dir), "data_list": data_list, "set": split,
                "gt_dir": os.path.abspath(gt_dir), "devkit_dir": devkit_dir, "model": MODEL_ALIASES.get(model, model),
                "input_size": list(input_size), "num_images": num_images, "class_sets": list(classes.scored)}
    if classes.names != CITYSCAPES.names:
        settings["classes"] = classes.record()
    if labels is not None:
        settings["labels"] = labels.record()
    return settings


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


def save_score(path, settings, result, iteration, environment=None):
    """Cache ``result`` (an MIoUResult) of snapshot file ``path``, with the ``environment`` it was
    scored in (utils/environment.py); returns what was cached."""
    if "class_sets" in settings and list(settings["class_sets"]) != list(result.class_sets):
        raise ValueError("{}: the result is scored on the subsets {} but its settings say {}; pass the same "
                         "classes to evaluate() and evaluation_settings()".format(
                             path, list(result.class_sets), list(settings["class_sets"])))
    record = dict(iou_report(result.ious, result.num_images, result.classes),
                  fingerprint=_fingerprint(path, settings), iteration=iteration)
    if environment is not None:
        record["environment"] = environment
    atomic_write_json(evaluation_cache(path), record)
    return record


class SnapshotScores(NamedTuple):
    mious: dict             # {iteration: mIoU of the headline class set}
    best: int               # the iteration of the highest headline mIoU
    snapshots: SnapshotDir
    mious_by_classes: dict  # {iteration: {class set: mIoU}}


def _extra_sets(mious, classes):
    """' (13 classes: 48.20)' for each subset after the headline."""
    return "".join(" ({} classes: {:.2f})".format(len(classes.subsets[name]), value * 100)
                   for name, value in list(mious.items())[1:])


def evaluate_snapshots(model, directory, make_predictor, images, gt_paths, lut, batch_size=1,
                       num_workers=2, settings=None, log=print, classes=CITYSCAPES, prefix=None, watchdog=None,
                       environment=None):
    """Evaluate every snapshot in ``directory`` not already evaluated with the same settings,
    scored with ``classes``. ``prefix`` picks one run if the directory holds several.

    Each result is cached beside its snapshot (``<PREFIX>_<N>.eval.json``); the table
    iteration -> mIoU is saved as ``snapshots_mIoU.json`` and the best snapshot, by the headline
    class set's mIoU, is copied to ``<PREFIX>_best.pdparams``. Returns a SnapshotScores.
    """
    snapshots = SnapshotDir.detect(directory, prefix)
    files = snapshots.segmentation_files()
    if not files:
        raise FileNotFoundError("no snapshots named {}_<iteration>.pdparams in {}; found: {}".format(
            snapshots.prefix, directory, summarize(sorted(os.listdir(directory))) or "nothing"))
    settings = settings or {}
    class_sets = classes.scored
    by_classes = {}
    for iteration, path in files.items():
        cached = cached_score(path, settings)
        if cached is not None:
            by_classes[iteration] = {name: cached["mIoU_by_classes"][name] for name in class_sets}
            log("{}: mIoU {:.2f}{} (cached in {})".format(os.path.basename(path), cached["mIoU"] * 100,
                                                          _extra_sets(by_classes[iteration], classes),
                                                          evaluation_cache(path)))
            continue
        load_weights(model, path)
        predictor = make_predictor(model)
        result = evaluate(predictor, images, gt_paths, lut, batch_size=batch_size,
                          num_workers=num_workers, classes=classes, watchdog=watchdog)
        predictor = None  # its copy of the network goes before the next snapshot's is made
        gc.collect()
        save_score(path, settings, result, iteration, environment)
        by_classes[iteration] = dict(result.miou_by_classes)
        log("{}: mIoU {:.2f}{}".format(os.path.basename(path), result.miou * 100,
                                       _extra_sets(by_classes[iteration], classes)))
    headline = class_sets[0]
    table = {iteration: mious[headline] for iteration, mious in by_classes.items()}
    best = max(table, key=lambda it: (table[it], -it))
    atomic_copy(files[best], snapshots.best_path)
    atomic_write_json(os.path.join(directory, SNAPSHOT_TABLE_NAME), {
        "mIoU": {str(k): v for k, v in table.items()}, "best_iteration": best, "best_mIoU": table[best],
        "classes": headline,
        "mIoU_by_classes": {name: {str(k): v[name] for k, v in by_classes.items()} for name in class_sets}})
    return SnapshotScores(table, best, snapshots, by_classes)


def snapshot_source(restore_from, source=None):
    """The source domain of the run that wrote ``restore_from`` (a snapshot directory, or one of its
    ``<PREFIX>_<N>``/``<PREFIX>_best`` files), read off the snapshot names (SYNTHIA_<N> -> synthia),
    and the snapshot prefix (None for other files). ``source`` (--source) must agree with the names;
    without either, "gta5". A directory of snapshots of no known source needs ``source``."""
    if os.path.isdir(restore_from):
        try:
            prefix = SnapshotDir.detect(restore_from).prefix
        except ValueError:  # several runs: --source picks one
            if source is None:
                raise ValueError("{} holds snapshots of several runs: give --source to choose one".format(restore_from))
            return source, SOURCES[source].snapshot_prefix
        if not SnapshotDir(restore_from, prefix).present():
            prefix = None
    else:
        prefix = prefix_of(os.path.basename(restore_from))
    named = SOURCE_OF_PREFIX.get(prefix)
    if source is not None and named is not None and named != source:
        raise ValueError("--source {} contradicts the snapshots' names: {} is written by a {} run ({}_<N>); "
                         "drop --source or give --source {}".format(source, restore_from, named, prefix, named))
    if named is None and prefix is not None and read_class_record(restore_from) is not None:
        named = source or CUSTOM  # a custom run's --name; its class set is recorded beside it
    if source is None and named is None and prefix is not None and os.path.isdir(restore_from):
        known = ", ".join("{}_<N> {}".format(SOURCES[s].snapshot_prefix, s) for s in sorted(SOURCES))
        raise ValueError("{}: snapshots named {}_<N> are of no known source ({}): give --source".format(
            restore_from, prefix, known))
    return source or named or "gta5", prefix


def lut_for(devkit_dir):
    """The label id -> train id table: the devkit's info.json if given, else our class table."""
    if devkit_dir:
        info = os.path.join(devkit_dir, "info.json")
        if os.path.isfile(info):
            return devkit_lut(info)
    return CITYSCAPES.lut()

"""SYNTHIA -> Cityscapes: the label mapping, 16-bit labels, a short run and its 16- and 13-class scores.

The class tables and the PNG encoder here are written from SYNTHIA's README and the PNG
specification, independently of the code under test.
"""
from PIL import Image

import contextlib
import functools
import io
import json
import math
import os
import struct
import zlib

import numpy as np
import paddle
import pytest

import evaluate_cityscapes
import train_gta2cityscapes_multi as train
from compute_iou import compute_mIoU, main as compute_iou_main
from dataset.classes import CITYSCAPES, SYNTHIA
from dataset.files import load_first_channel_16bit
from dataset.sources import scored_classes
from dataset.synthetic import make_synthetic, make_synthia
from dataset.synthia_dataset import SYNTHIADataSet
from model.inference import SegmentationPredictor
from model.deeplab_multi import DeeplabMulti
from tests.helpers import training_args
from utils.evaluation.cityscapes import cached_score, evaluate, evaluation_set, evaluation_settings, save_score, \
    snapshot_source
from utils.files.weights import load_weights

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

# SYNTHIA-RAND-CITYSCAPES's README, class id -> name.
SYNTHIA_CLASSES = {0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation",
                   7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle",
                   13: "parking-slot", 14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider",
                   18: "truck", 19: "bus", 20: "train", 21: "wall", 22: "lane-marking"}
# Cityscapes' official class names in train-id order.
CITYSCAPES_TRAIN_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                            "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                            "bus", "train", "motorcycle", "bicycle")
SAME_CLASS = {"pedestrian": "person"}
NOT_IN_SYNTHIA_RAND = ("terrain", "truck", "train")  # left out of the 16 classes scored
SYNTHIA_16 = tuple(name for name in CITYSCAPES_TRAIN_CLASSES if name not in NOT_IN_SYNTHIA_RAND)
SYNTHIA_13 = tuple(name for name in SYNTHIA_16 if name not in ("wall", "fence", "pole"))
INPUT = "48,32"


def synthia_id_to_train_id_by_name():
    table = {}
    for synthia_id, name in SYNTHIA_CLASSES.items():
        name = SAME_CLASS.get(name, name)
        if name in CITYSCAPES_TRAIN_CLASSES:
            table[synthia_id] = CITYSCAPES_TRAIN_CLASSES.index(name)
    return table


# ----------------------------------------------------------------- (a) class ids


def test_synthia_ids_map_to_the_cityscapes_class_of_the_same_name():
    by_name = synthia_id_to_train_id_by_name()

    assert {synthia_id: by_name.get(synthia_id) for synthia_id in SYNTHIA.label_values} == SYNTHIA.label_values
    mapped = {CITYSCAPES_TRAIN_CLASSES[train_id] for train_id in SYNTHIA.label_values.values()}
    assert mapped >= set(SYNTHIA_16)
    # void, parking-slot, road-work and lane-marking have no Cityscapes class.
    assert not {0, 13, 14, 22} & set(SYNTHIA.label_values)


def test_scored_classes_of_a_synthia_model_are_the_16_and_the_13():
    official = dict(zip(CITYSCAPES.names, CITYSCAPES_TRAIN_CLASSES))
    synthia = scored_classes("synthia")

    assert synthia.scored == ("16", "13") and synthia.names == CITYSCAPES.names
    assert scored_classes("gta5").scored == ("19",)
    assert tuple(official[CITYSCAPES.names[c]] for c in synthia.subsets["16"]) == SYNTHIA_16
    assert tuple(official[CITYSCAPES.names[c]] for c in synthia.subsets["13"]) == SYNTHIA_13


# ----------------------------------------------------------------- (b) 16-bit labels


def png16(path, channels, filters):
    """A 16-bit RGB (3 channels) or RGBA (4) PNG, row r filtered with filters[r % len(filters)]
    (1 sub, 2 up, 3 average, 4 Paeth), its data split over two IDAT chunks."""
    height, width, depth = channels.shape
    rows = channels.astype(">u2").view(np.uint8).reshape(height, width * depth * 2).astype(np.int32)
    step = depth * 2  # bytes per pixel: the filters' "left" neighbour
    raw = b""
    previous = np.zeros_like(rows[0])
    for r, row in enumerate(rows):
        kind = filters[r % len(filters)]
        left = np.concatenate([np.zeros(step, np.int32), row[:-step]])
        up = previous
        up_left = np.concatenate([np.zeros(step, np.int32), previous[:-step]])
        if kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            estimate = left + up - up_left
            by_left, by_up, by_up_left = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - up_left)
            predicted = np.where((by_left <= by_up) & (by_left <= by_up_left), left,
                                 np.where(by_up <= by_up_left, up, up_left))
        raw += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()
        previous = row
    data = zlib.compress(raw, 9)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)

    colour_type = {3: 2, 4: 6}[depth]
    with open(str(path), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
                + chunk(b"IDAT", data[:len(data) // 2]) + chunk(b"IDAT", data[len(data) // 2:]) + chunk(b"IEND", b""))


def label_channels(rng, height, width, depth):
    channels = rng.integers(0, 65536, (height, width, depth)).astype(np.uint16)
    channels[..., 0] = rng.integers(0, 23, (height, width))
    channels[1, 2, 0], channels[3, 0, 0], channels[-1, -1, 0], channels[0, 5, 0] = 256, 300, 65535, 4097
    return channels


@pytest.mark.parametrize("depth", [3, 4])
def test_16bit_labels_are_read_exactly_whatever_the_png_filters(tmp_path, depth):
    rng = np.random.default_rng(depth)
    channels = label_channels(rng, 9, 13, depth)
    path = tmp_path / "0000001.png"
    png16(path, channels, filters=(1, 2, 3, 4))

    ids = load_first_channel_16bit(str(path))

    assert ids.dtype == np.uint16
    np.testing.assert_array_equal(ids, channels[..., 0])


def test_synthia_dataset_gives_train_ids_of_the_16bit_labels(tmp_path):
    rng = np.random.default_rng(5)
    channels = label_channels(rng, 10, 16, 3)
    root = tmp_path / "SYNTHIA"
    (root / "RGB").mkdir(parents=True)
    (root / "GT" / "LABELS").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (10, 16, 3)).astype(np.uint8)).save(str(root / "RGB" / "0000000.png"))
    png16(root / "GT" / "LABELS" / "0000000.png", channels, filters=(4, 3, 2, 1))
    by_name = synthia_id_to_train_id_by_name()

    _, label, _, _ = SYNTHIADataSet(str(root), crop_size=(16, 10))[0]

    for synthia_id in np.unique(channels[..., 0]):
        at = channels[..., 0] == synthia_id
        if synthia_id in SYNTHIA.label_values:
            assert (label[at] == by_name[synthia_id]).all(), SYNTHIA_CLASSES[synthia_id]
        else:  # no Cityscapes class, or an id past SYNTHIA's table
            assert (label[at] == 255).all(), synthia_id


# ----------------------------------------------------------------- (d) 16- and 13-class mIoU


def ious_by_masks(pairs):
    """{Cityscapes class name: IoU}, one class at a time from boolean masks."""
    ious = {}
    for c, name in enumerate(CITYSCAPES_TRAIN_CLASSES):
        tp = fp = fn = 0
        for label_ids, pred in pairs:
            gt = np.full(label_ids.shape, 255)
            for label_id, train_id in CITYSCAPES.label_values.items():
                gt[label_ids == label_id] = train_id
            scored = gt != 255
            tp += np.sum(scored & (gt == c) & (pred == c))
            fp += np.sum(scored & (gt != c) & (pred == c))
            fn += np.sum(scored & (gt == c) & (pred != c))
        ious[name] = tp / (tp + fp + fn) if tp + fp + fn else math.nan
    return ious


def test_16_and_13_class_miou_of_prediction_pngs(tmp_path, capsys):
    rng = np.random.default_rng(3)
    gt_dir, pred_dir = tmp_path / "gtFine" / "val" / "lindau", tmp_path / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    label_ids = np.array(sorted(CITYSCAPES.label_values) + [0, 1, 4])
    pairs = []
    for index in range(3):
        stem = "lindau_000000_{:06d}".format(index)
        labels = rng.choice(label_ids, (12, 20)).astype(np.uint8)
        labels[labels == 31] = 0  # train never in the ground truth ...
        pred = rng.integers(0, CITYSCAPES.num_classes, (12, 20)).astype(np.uint8)
        pred[pred == CITYSCAPES_TRAIN_CLASSES.index("train")] = 0  # ... nor predicted: its IoU is NaN
        Image.fromarray(labels).save(str(gt_dir / (stem + "_gtFine_labelIds.png")))
        Image.fromarray(pred).save(str(pred_dir / (stem + "_leftImg8bit.png")))
        pairs.append((labels, pred))
    ious = ious_by_masks(pairs)
    miou_16 = np.nanmean([ious[name] for name in SYNTHIA_16])
    miou_13 = np.nanmean([ious[name] for name in SYNTHIA_13])
    assert math.isnan(ious["train"]) and not np.isclose(miou_16, miou_13)

    result = compute_mIoU(str(tmp_path / "gtFine" / "val"), str(pred_dir), source="synthia")
    assert result.miou == pytest.approx(miou_16)
    assert dict(result.miou_by_classes) == pytest.approx({"16": miou_16, "13": miou_13})

    compute_iou_main([str(tmp_path / "gtFine" / "val"), str(pred_dir), "--source", "synthia"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:16] == ["===>{}:\t{}".format(name, round(ious[official] * 100, 2))
                          for name, official in zip(("road", "sidewalk", "building", "wall", "fence", "pole",
                                                     "light", "sign", "vegetation", "sky", "person", "rider",
                                                     "car", "bus", "motorcycle", "bicycle"), SYNTHIA_16)]
    assert lines[16] == "===> mIoU: {}".format(round(miou_16 * 100, 2))
    assert lines[17] == "===> mIoU (13 classes): {}".format(round(miou_13 * 100, 2))
    with open(str(pred_dir / "mIoU.json")) as f:
        report = json.load(f)
    assert report["classes"] == "16" and report["mIoU"] == pytest.approx(miou_16)
    assert report["mIoU_by_classes"] == pytest.approx({"16": miou_16, "13": miou_13})
    assert len(report["IoU"]) == CITYSCAPES.num_classes and report["IoU"]["train"] is None
    assert report["num_images"] == 3


# ----------------------------------------------------------------- (c) a run on synthetic SYNTHIA


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(SYNTHIA dir, Cityscapes dir): in this module, in place of conftest.py's GTA5 data."""
    out = str(tmp_path_factory.mktemp("data"))
    _, cityscapes = make_synthetic(out, num_source=1, num_target_train=3, num_target_val=2, target_size=(64, 32))
    return make_synthia(out, count=4, size=(64, 38)), cityscapes


run_args = functools.partial(training_args, source="synthia", size=INPUT, batch_size=1, mirror=True, log_every=None)


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """An uninterrupted 4-iteration run and one stopped after 2 and continued to 4."""
    straight, resumed = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
    train.main(run_args(data, straight, 4, save_every=4))
    train.main(run_args(data, resumed, 2, save_every=2))
    train.main(run_args(data, resumed, 4, save_every=2) + ["--continue-train"])
    return str(straight), str(resumed)


def test_resumed_synthia_run_equals_the_uninterrupted_run(runs):
    straight, resumed = runs
    assert sorted(n for n in os.listdir(resumed) if n.startswith("SYNTHIA_")) == [
        "SYNTHIA_{}{}".format(it, part) for it in (2, 4)
        for part in (".pdparams", "_D1.pdparams", "_D2.pdparams", "_state.pdopt")]
    for name in ("SYNTHIA_4.pdparams", "SYNTHIA_4_D1.pdparams", "SYNTHIA_4_D2.pdparams"):
        a = paddle.load(os.path.join(straight, name), return_numpy=True)
        b = paddle.load(os.path.join(resumed, name), return_numpy=True)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg="{} {}".format(name, key))


def test_snapshot_directory_is_scored_on_16_and_13_classes_read_from_the_names(data, runs):
    _, cityscapes = data
    _, resumed = runs
    # Training's --val scores SYNTHIA_2 into the cache that the evaluation then reuses.
    val = evaluation_set("cityscapes", cityscapes, (48, 32))
    classes = scored_classes("synthia", "cityscapes")
    settings = evaluation_settings(cityscapes, None, "val", val.gt_dir, None, "DeeplabMulti", (48, 32),
                                   len(val.images), classes)
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    snapshot_2 = os.path.join(resumed, "SYNTHIA_2.pdparams")
    load_weights(model, snapshot_2)
    result = evaluate(SegmentationPredictor(model, "dygraph"), val.images, val.gt_paths, val.lut, num_workers=0,
                      progress=False, classes=classes)
    save_score(snapshot_2, settings, result, 2)
    gta5_settings = evaluation_settings(cityscapes, None, "val", val.gt_dir, None, "DeeplabMulti", (48, 32),
                                        len(val.images))
    assert cached_score(snapshot_2, gta5_settings) is None

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert evaluate_cityscapes.main(["--restore-from", resumed, "--data-dir", cityscapes, "--input-size", INPUT,
                                         "--backend", "dygraph", "--num-workers", "0", "--device", "cpu"]) == 0
    stdout = printed.getvalue()

    assert "source: synthia (snapshots SYNTHIA_<N>); scored on 16 classes (mIoU), also 13 classes" in stdout
    assert "SYNTHIA_2.pdparams: mIoU {:.2f} (13 classes: {:.2f}) (cached".format(
        result.miou * 100, result.miou_by_classes["13"] * 100) in stdout
    assert "iteration\tmIoU\tmIoU (13 classes)" in stdout
    with open(os.path.join(resumed, "SYNTHIA_4.eval.json")) as f:
        record = json.load(f)
    iou = {name: math.nan if value is None else value for name, value in record["IoU"].items()}
    names_16 = [CITYSCAPES.names[CITYSCAPES_TRAIN_CLASSES.index(name)] for name in SYNTHIA_16]
    names_13 = [CITYSCAPES.names[CITYSCAPES_TRAIN_CLASSES.index(name)] for name in SYNTHIA_13]
    assert record["classes"] == "16"
    assert record["mIoU"] == pytest.approx(np.nanmean([iou[n] for n in names_16]))
    assert record["mIoU_by_classes"]["13"] == pytest.approx(np.nanmean([iou[n] for n in names_13]))
    with open(os.path.join(resumed, "snapshots_mIoU.json")) as f:
        table = json.load(f)
    assert table["classes"] == "16" and sorted(table["mIoU_by_classes"]) == ["13", "16"]
    mious = {2: result.miou, 4: record["mIoU"]}
    best = max(mious, key=lambda it: (mious[it], -it))
    assert table["best_iteration"] == best
    for iteration in (2, 4):
        row = "{}\t{:.2f}\t{:.2f}".format(iteration, mious[iteration] * 100,
                                          table["mIoU_by_classes"]["13"][str(iteration)] * 100)
        assert row + ("\t<- best" if iteration == best else "") in stdout.splitlines()
    assert "best: SYNTHIA_{}.pdparams".format(best) in stdout
    assert os.path.isfile(os.path.join(resumed, "SYNTHIA_best.pdparams"))


def test_source_contradicting_the_snapshot_names_is_an_error(data, runs):
    _, cityscapes = data
    with pytest.raises(ValueError) as error:
        evaluate_cityscapes.main(["--restore-from", runs[1], "--source", "gta5", "--data-dir", cityscapes,
                                  "--device", "cpu"])
    message = str(error.value)
    assert "--source gta5" in message and "SYNTHIA_<N>" in message and "synthia" in message


def test_source_is_read_off_snapshot_file_names(tmp_path):
    assert snapshot_source(os.path.join("runs", "SYNTHIA_best.pdparams")) == ("synthia", "SYNTHIA")
    assert snapshot_source("SYNTHIA_5.pdparams", "synthia") == ("synthia", "SYNTHIA")
    assert snapshot_source("GTA2Cityscapes_multi-ed35151c.pth") == ("gta5", None)
    assert snapshot_source("GTA2Cityscapes_multi-ed35151c.pth", "synthia") == ("synthia", None)
    with pytest.raises(ValueError, match="--source synthia contradicts"):
        snapshot_source("GTA5_5.pdparams", "synthia")

    for name in ("GTA5_5.pdparams", "SYNTHIA_5.pdparams"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="several runs: give --source"):
        snapshot_source(str(tmp_path))
    assert snapshot_source(str(tmp_path), "synthia") == ("synthia", "SYNTHIA")

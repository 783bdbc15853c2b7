"""compute_iou and utils.evaluation.metrics against a plain per-class mask computation."""
from PIL import Image

import json
import math
import os
import re
import shutil

import numpy as np
import pytest

from compute_iou import compute_mIoU, main
from dataset.classes import CITYSCAPES, ClassSet
from utils.evaluation.metrics import confusion_matrix, format_iou_table, mean_iou, per_class_iou

# The benchmark's class set, under test as the default of every scorer.
CLASS_NAMES, NUM_CLASSES, LABEL_ID_TO_TRAIN_ID = CITYSCAPES.names, CITYSCAPES.num_classes, CITYSCAPES.label_values
HEIGHT, WIDTH = 12, 20
TRAIN = CLASS_NAMES.index("train")  # never in the ground truth, never predicted -> NaN
MOTORCYCLE = CLASS_NAMES.index("motorcycle")  # never in the ground truth, but predicted -> 0
CITIES = ("frankfurt", "lindau")
STEMS = ["{}_000000_{:06d}".format(CITIES[index % 2], 19 + index) for index in range(4)]


def reference_ious(pairs, mapping=LABEL_ID_TO_TRAIN_ID):
    """IoU per class from boolean masks, one class at a time."""
    tp = np.zeros(NUM_CLASSES)
    fp = np.zeros(NUM_CLASSES)
    fn = np.zeros(NUM_CLASSES)
    for label_ids, pred in pairs:
        gt = np.full(label_ids.shape, 255)
        for label_id, train_id in mapping.items():
            gt[label_ids == label_id] = train_id
        scored = gt != 255
        for c in range(NUM_CLASSES):
            tp[c] += np.sum(scored & (gt == c) & (pred == c))
            fp[c] += np.sum(scored & (gt != c) & (pred == c))
            fn[c] += np.sum(scored & (gt == c) & (pred != c))
    return np.array([tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else math.nan
                     for c in range(NUM_CLASSES)])


def save_prediction(path, pred):
    """As the original evaluation writes them: palettised PNG of train ids."""
    image = Image.frombytes("P", (pred.shape[1], pred.shape[0]), pred.astype(np.uint8).tobytes())
    image.putpalette(CITYSCAPES.colorize(np.arange(256)).ravel().tolist())
    image.save(str(path))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """gt_dir in the gtFine layout, a flat pred_dir, and the arrays written."""
    root = tmp_path_factory.mktemp("iou")
    gt_dir, pred_dir = root / "gtFine" / "val", root / "pred"
    pred_dir.mkdir()
    rng = np.random.default_rng(0)
    gt_ids = [label_id for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items() if train_id not in (TRAIN, MOTORCYCLE)]
    choices = np.array(gt_ids + [0, 1, 4, 50])  # ignored ids too
    predictable = np.array([c for c in range(NUM_CLASSES) if c != TRAIN])
    pairs = []
    for stem in STEMS:
        label_ids = rng.choice(choices, size=(HEIGHT, WIDTH)).astype(np.uint8)
        # Mostly right, so the IoUs are far from trivial.
        pred = np.array([LABEL_ID_TO_TRAIN_ID.get(int(i), -1) for i in label_ids.ravel()]).reshape(HEIGHT, WIDTH)
        wrong = (pred < 0) | (rng.random(pred.shape) < 0.3)
        pred[wrong] = rng.choice(predictable, size=int(wrong.sum()))
        pred[0, 0] = MOTORCYCLE
        city = stem.split("_")[0]
        (gt_dir / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_ids).save(str(gt_dir / city / (stem + "_gtFine_labelIds.png")))
        save_prediction(pred_dir / (stem + "_leftImg8bit.png"), pred)
        pairs.append((label_ids, pred))
    return str(gt_dir), str(pred_dir), pairs


def copy_predictions(data, tmp_path):
    pred_dir = tmp_path / "pred"
    shutil.copytree(data[1], str(pred_dir))
    return pred_dir


# --- utils.evaluation.metrics -----------------------------------------------------------------------

def test_confusion_matrix_matches_masks():
    rng = np.random.default_rng(1)
    gt = rng.choice(np.r_[np.arange(NUM_CLASSES), 255], size=(30, 40))
    pred = rng.integers(0, NUM_CLASSES, size=(30, 40)).astype(np.uint8)
    confusion = confusion_matrix(gt.astype(np.uint8), pred)
    for g in range(NUM_CLASSES):
        for p in range(NUM_CLASSES):
            assert confusion[g, p] == np.sum((gt == g) & (pred == p))
    assert confusion.sum() == np.sum(gt != 255)


def test_confusion_matrix_rejects_bad_values():
    gt = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="prediction holds values 19, 200 outside the train ids 0..18"):
        confusion_matrix(gt, np.array([[0, 19], [200, 1]], np.uint8))
    with pytest.raises(ValueError, match="ground truth holds values 40"):
        confusion_matrix(np.array([[0, 40], [255, 1]], np.uint8), gt)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(gt, np.zeros((2, 3), np.uint8))


def test_iou_nan_and_zero_cases():
    confusion = np.zeros((3, 3), np.int64)
    confusion[0, 0], confusion[0, 1] = 6, 2  # class 1 absent from gt but predicted; class 2 absent everywhere
    ious = per_class_iou(confusion)
    assert ious[0] == pytest.approx(6 / 8) and ious[1] == 0 and math.isnan(ious[2])
    assert mean_iou(ious) == pytest.approx(6 / 16)
    assert format_iou_table(ious, ClassSet("abc", ("a", "b", "c"))) == "===>a:\t75.0\n===>b:\t0.0\n===>c:\tnan\n===> mIoU: 37.5"


# --- compute_mIoU --------------------------------------------------------------------------

def test_scan_mode_matches_reference(data):
    gt_dir, pred_dir, pairs = data
    result = compute_mIoU(gt_dir, pred_dir)
    expected = reference_ious(pairs)
    assert math.isnan(expected[TRAIN]) and expected[MOTORCYCLE] == 0
    np.testing.assert_allclose(result.ious, expected, equal_nan=True)
    assert result.miou == pytest.approx(np.nanmean(expected))
    assert result.num_images == 4
    for workers in (1, 3):
        np.testing.assert_array_equal(compute_mIoU(gt_dir, pred_dir, num_workers=workers).confusion,
                                      result.confusion)


def write_devkit(devkit, stems, info=None):
    devkit.mkdir()
    images = ["{}/{}_leftImg8bit.png".format(stem.split("_")[0], stem) for stem in stems]
    labels = ["{}/{}_gtFine_labelIds.png".format(stem.split("_")[0], stem) for stem in stems]
    (devkit / "val.txt").write_text("\n".join(images) + "\n")
    (devkit / "label.txt").write_text("\n".join(labels) + "\n")
    if info is not None:
        (devkit / "info.json").write_text(json.dumps(info))
    return str(devkit)


def test_devkit_mode_uses_the_original_lists(data, tmp_path):
    gt_dir, pred_dir, pairs = data
    devkit = write_devkit(tmp_path / "devkit", STEMS[:3])  # the lists decide which images count
    result = compute_mIoU(gt_dir, pred_dir, devkit_dir=devkit)
    assert result.num_images == 3
    np.testing.assert_allclose(result.ious, reference_ious(pairs[:3]), equal_nan=True)


def test_devkit_info_json_label2train_is_honoured(data, tmp_path):
    gt_dir, pred_dir, pairs = data
    mapping = dict(LABEL_ID_TO_TRAIN_ID)
    mapping[7] = 255  # road no longer scored
    label2train = [[-1, 255]] + [[label_id, train_id] for label_id, train_id in mapping.items()]
    devkit = write_devkit(tmp_path / "devkit", STEMS, {"classes": NUM_CLASSES, "label2train": label2train})
    result = compute_mIoU(gt_dir, pred_dir, devkit_dir=devkit)
    np.testing.assert_allclose(result.ious, reference_ious(pairs, mapping), equal_nan=True)


def test_devkit_without_lists(data, tmp_path):
    (tmp_path / "devkit").mkdir()
    with pytest.raises(FileNotFoundError, match="val.txt does not exist.*label.txt"):
        compute_mIoU(data[0], data[1], devkit_dir=str(tmp_path / "devkit"))


def test_missing_prediction_is_an_error(data, tmp_path):
    pred_dir = copy_predictions(data, tmp_path)
    os.remove(str(pred_dir / (STEMS[1] + "_leftImg8bit.png")))
    with pytest.raises(FileNotFoundError, match="1 of 4 predictions are missing: .*" + STEMS[1]):
        compute_mIoU(data[0], str(pred_dir))


def test_wrong_size_prediction_is_an_error(data, tmp_path):
    pred_dir = copy_predictions(data, tmp_path)
    save_prediction(pred_dir / (STEMS[2] + "_leftImg8bit.png"), np.zeros((HEIGHT, WIDTH + 1)))
    with pytest.raises(ValueError) as error:
        compute_mIoU(data[0], str(pred_dir))
    message = str(error.value)
    assert "1 of 4 predictions cannot be scored" in message
    assert STEMS[2] + "_leftImg8bit.png: 21x12 but its ground truth" in message
    assert STEMS[2] + "_gtFine_labelIds.png is 20x12" in message


def test_out_of_range_prediction_is_an_error(data, tmp_path):
    pred_dir = copy_predictions(data, tmp_path)
    for stem, value in ((STEMS[0], 19), (STEMS[3], 255)):
        pred = np.zeros((HEIGHT, WIDTH))
        pred[3, 4] = value
        save_prediction(pred_dir / (stem + "_leftImg8bit.png"), pred)
    with pytest.raises(ValueError) as error:
        compute_mIoU(data[0], str(pred_dir))
    message = str(error.value)
    assert "2 of 4 predictions cannot be scored" in message
    assert STEMS[0] + "_leftImg8bit.png: prediction holds values 19 outside the train ids 0..18" in message
    assert STEMS[3] + "_leftImg8bit.png: prediction holds values 255" in message


def test_colour_prediction_is_an_error(data, tmp_path):
    pred_dir = copy_predictions(data, tmp_path)
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(str(pred_dir / (STEMS[0] + "_leftImg8bit.png")))
    with pytest.raises(ValueError, match=STEMS[0] + "_leftImg8bit.png: PIL mode RGB"):
        compute_mIoU(data[0], str(pred_dir))


def test_missing_directories(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="pred_dir .*nothing.* is not a directory"):
        compute_mIoU(data[0], str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \*_gtFine_labelIds.png files under"):
        compute_mIoU(str(tmp_path / "empty"), data[1])


# --- CLI -------------------------------------------------------------------------------------

def test_cli_prints_the_original_table_and_saves_json(data, tmp_path, capsys):
    pred_dir = copy_predictions(data, tmp_path)
    main([data[0], str(pred_dir), "--num-workers", "2"])
    lines = capsys.readouterr().out.splitlines()
    expected = reference_ious(data[2])
    for line, name, iou in zip(lines, CLASS_NAMES, expected):
        assert re.fullmatch(r"===>{}:\t(nan|\d+\.\d{{1,2}})".format(name), line), line
        assert line.split("\t")[1] == str(round(iou * 100, 2))
    assert lines[NUM_CLASSES] == "===> mIoU: {}".format(round(np.nanmean(expected) * 100, 2))
    json_path = str(pred_dir / "mIoU.json")
    assert lines[NUM_CLASSES + 1] == "saved " + json_path
    with open(json_path) as handle:
        report = json.load(handle)
    assert report["num_images"] == 4
    assert report["mIoU"] == pytest.approx(np.nanmean(expected))
    assert report["IoU"]["train"] is None and report["IoU"]["motorcycle"] == 0
    assert list(report["IoU"]) == list(CLASS_NAMES)

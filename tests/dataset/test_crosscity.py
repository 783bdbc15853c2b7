"""Cross-city adaptation, Cityscapes -> one NTHU city: the dataset, its labels, its 13-class scores.

The label table here is written from Cityscapes' label definitions and the 13 classes the NTHU
cities annotate, independently of the code under test.
"""
from PIL import Image

import argparse
import contextlib
import filecmp
import io
import json
import os
import shutil

import numpy as np
import paddle
import pytest

import evaluate_cityscapes
from compute_iou import compute_mIoU, main as compute_iou_main
from dataset.nthu_dataset import NTHUDataSet
from dataset.sources import SOURCE_OF_PREFIX, SOURCES, make_source, make_target, scored_classes
from dataset.synthetic import main as synthetic_main, make_nthu, make_synthetic
from model.deeplab_multi import DeeplabMulti

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

# The 13 annotated classes: Cityscapes label id -> (train id, name).
CROSS_CITY = {7: (0, "road"), 8: (1, "sidewalk"), 11: (2, "building"), 19: (6, "light"), 20: (7, "sign"),
              21: (8, "vegetation"), 23: (10, "sky"), 24: (11, "person"), 25: (12, "rider"), 26: (13, "car"),
              28: (15, "bus"), 32: (17, "motorcycle"), 33: (18, "bicycle")}
# Cityscapes classes that exist but are not annotated in the cities: wall, fence, pole, terrain, truck, train.
OTHER_CLASSES = (12, 13, 17, 22, 27, 31)
SIZE = (64, 32)


def label_ids_to_train_ids(label_ids):
    train_ids = np.full(label_ids.shape, 255)
    for label_id, (train_id, _) in CROSS_CITY.items():
        train_ids[label_ids == label_id] = train_id
    return train_ids


@pytest.fixture(scope="module")
def nthu(tmp_path_factory):
    return make_nthu(str(tmp_path_factory.mktemp("data")), cities=("Rome",), num_train=2, num_test=3, size=SIZE)


# ----------------------------------------------------------------- the dataset


def test_synthetic_city_has_the_nthu_layout_with_mixed_extensions(nthu):
    images = sorted(os.listdir(os.path.join(nthu, "Rome", "Images", "Test")))
    assert images == ["pic_001.jpg", "pic_002.png", "pic_003.jpg"]
    assert sorted(os.listdir(os.path.join(nthu, "Rome", "Labels", "Test"))) == [
        "pic_001_eval.png", "pic_002_eval.png", "pic_003_eval.png"]
    assert len(os.listdir(os.path.join(nthu, "Rome", "Images", "Train"))) == 2

    test = NTHUDataSet(nthu, "Rome", "test", crop_size=(32, 16))
    image, label, _, name = test[0]
    assert image.shape == (3, 16, 32) and label.shape == (16, 32) and name == "pic_001.jpg"
    assert set(np.unique(label)) <= {train_id for train_id, _ in CROSS_CITY.values()} | {255}
    train = NTHUDataSet(nthu, "Rome", "train", crop_size=(32, 16))
    assert len(train) == 2 and len(train[1]) == 3  # (image, size, name): no labels


def test_labels_are_cityscapes_ids_of_the_13_classes(tmp_path):
    city = tmp_path / "NTHU" / "Taipei"
    (city / "Images" / "Test").mkdir(parents=True)
    (city / "Labels" / "Test").mkdir(parents=True)
    label_ids = np.arange(36, dtype=np.uint8).reshape(4, 9)  # every Cityscapes label id, and two past them
    Image.fromarray(np.zeros((4, 9, 3), np.uint8)).save(str(city / "Images" / "Test" / "0001.png"))
    Image.fromarray(label_ids).save(str(city / "Labels" / "Test" / "0001_eval.png"))

    _, label, _, _ = NTHUDataSet(str(tmp_path / "NTHU"), "Taipei", "test", crop_size=(9, 4))[0]

    np.testing.assert_array_equal(label, label_ids_to_train_ids(label_ids))
    assert (label[np.isin(label_ids, OTHER_CLASSES)] == 255).all()


def test_a_list_of_bare_ids_finds_jpg_and_png_images(nthu, tmp_path):
    listed = tmp_path / "test.txt"
    listed.write_text("pic_003\npic_002\n")

    dataset = NTHUDataSet(nthu, "Rome", "test", list_path=str(listed), crop_size=(32, 16))

    assert [os.path.basename(dataset.image_path(e)) for e in dataset.img_ids] == ["pic_003.jpg", "pic_002.png"]
    assert [os.path.basename(dataset.label_path(e)) for e in dataset.img_ids] == ["pic_003_eval.png",
                                                                                  "pic_002_eval.png"]


def test_layout_errors_name_what_is_missing(nthu, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        NTHUDataSet(nthu, "Tokyo")
    assert "'Tokyo'" in str(error.value) and "found: Rome" in str(error.value)
    assert "<City>/Images/{Train,Test}" in str(error.value)

    copy = str(tmp_path / "NTHU")
    shutil.copytree(nthu, copy)
    shutil.rmtree(os.path.join(copy, "Rome", "Images", "Train"))
    with pytest.raises(FileNotFoundError, match="Rome/Images/Train.* does not exist; expected the layout"):
        NTHUDataSet(copy, "Rome", "train")
    os.makedirs(os.path.join(copy, "Rome", "Images", "Train"))
    with pytest.raises(ValueError, match=r"no \*.jpg or \*.png images under .*Rome/Images/Train"):
        NTHUDataSet(copy, "Rome", "train")

    missing = os.path.join(copy, "Rome", "Labels", "Test", "pic_002_eval.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError) as error:
        NTHUDataSet(copy, "Rome", "test")
    assert missing in str(error.value)
    NTHUDataSet(copy, "Rome", "test", return_label=False)  # images alone are fine

    with pytest.raises(ValueError, match="labels only its Test images"):
        NTHUDataSet(nthu, "Rome", "train", return_label=True)
    with pytest.raises(ValueError, match="split 'val' is not one of test, train"):
        NTHUDataSet(nthu, "Rome", "val")


# ----------------------------------------------------------------- the domains


def test_cityscapes_is_a_labelled_source_and_nthu_a_target(nthu, tmp_path):
    _, cityscapes = make_synthetic(str(tmp_path), num_source=1, num_target_train=3, num_target_val=1,
                                   target_size=SIZE)
    args = argparse.Namespace(source="cityscapes", data_dir=cityscapes, data_list=None, input_size=(32, 16),
                              ignore_label=255, target="nthu", city="Rome", set="train", data_dir_target=nthu,
                              data_list_target=None, input_size_target=(32, 16))

    source, target = make_source(args), make_target(args)

    assert len(source) == 3 and source.set == "train" and len(source[0]) == 4  # with its gtFine labels
    assert SOURCES["cityscapes"].snapshot_prefix == "Cityscapes" and SOURCE_OF_PREFIX["Cityscapes"] == "cityscapes"
    assert isinstance(target, NTHUDataSet) and len(target) == 2 and len(target[0]) == 3
    assert scored_classes("cityscapes", "nthu").scored == scored_classes("gta5", "nthu").scored == ("crosscity13",)
    assert scored_classes("cityscapes", "cityscapes").scored == ("19",)


def test_synthetic_cli_writes_a_city_only_when_asked(tmp_path, capsys):
    synthetic_main([str(tmp_path / "a"), "--num-source", "1", "--num-target-train", "1", "--num-target-val", "1",
                    "--num-synthia", "1", "--target-size", "32,16", "--num-nthu", "2"])
    assert "NTHU root:" in capsys.readouterr().out
    assert sorted(os.listdir(str(tmp_path / "a" / "NTHU" / "Rome" / "Labels" / "Test"))) == [
        "pic_001_eval.png", "pic_002_eval.png"]
    synthetic_main([str(tmp_path / "b"), "--num-source", "1", "--num-target-train", "1", "--num-target-val", "1",
                    "--num-synthia", "1", "--target-size", "32,16"])
    assert "NTHU" not in capsys.readouterr().out and not os.path.exists(str(tmp_path / "b" / "NTHU"))


# ----------------------------------------------------------------- scores


def test_13_class_miou_of_prediction_pngs(tmp_path, capsys):
    rng = np.random.default_rng(7)
    gt_dir, pred_dir = tmp_path / "Labels" / "Test", tmp_path / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    tp, fp, fn = np.zeros(19), np.zeros(19), np.zeros(19)
    for index in range(3):
        label_ids = rng.choice(np.array(sorted(CROSS_CITY) + list(OTHER_CLASSES) + [0, 1]), (10, 14)).astype(np.uint8)
        pred = rng.integers(0, 19, (10, 14)).astype(np.uint8)
        Image.fromarray(label_ids).save(str(gt_dir / "{:04d}_eval.png".format(index)))
        Image.fromarray(pred).save(str(pred_dir / "{:04d}.png".format(index)))
        gt = label_ids_to_train_ids(label_ids)
        scored = gt != 255
        for c in range(19):
            tp[c] += np.sum(scored & (gt == c) & (pred == c))
            fp[c] += np.sum(scored & (gt != c) & (pred == c))
            fn[c] += np.sum(scored & (gt == c) & (pred != c))
    ious = {name: tp[c] / (tp[c] + fp[c] + fn[c]) for c, name in CROSS_CITY.values()}
    miou = np.mean(list(ious.values()))

    result = compute_mIoU(str(gt_dir), str(pred_dir), target="nthu")
    assert result.miou == pytest.approx(miou)
    assert result.class_sets == ("crosscity13",)

    compute_iou_main([str(gt_dir), str(pred_dir), "--target", "nthu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:14] == ["===>{}:\t{}".format(name, round(ious[name] * 100, 2)) for _, name in
                          sorted(CROSS_CITY.values())] + ["===> mIoU: {}".format(round(miou * 100, 2))]
    assert not lines[14].startswith("===>")
    with open(str(pred_dir / "mIoU.json")) as f:
        report = json.load(f)
    assert report["classes"] == "crosscity13" and report["mIoU"] == pytest.approx(miou)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    paddle.seed(3)
    path = str(tmp_path_factory.mktemp("weights") / "cityscapes_source_only.pdparams")
    paddle.save(DeeplabMulti(num_classes=19).state_dict(), path)
    return path


def run_evaluation(*argv):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert evaluate_cityscapes.main(list(argv) + ["--input-size", "48,24", "--backend", "dygraph",
                                                      "--num-workers", "0", "--device", "cpu"]) == 0
    return printed.getvalue()


def test_evaluate_on_a_city_scores_its_test_images_on_13_classes(nthu, weights, tmp_path):
    save = str(tmp_path / "rome")

    stdout = run_evaluation("--restore-from", weights, "--target", "nthu", "--city", "Rome", "--data-dir", nthu,
                            "--save", save)

    for stem in ("pic_001", "pic_002", "pic_003"):
        with Image.open(os.path.join(save, stem + ".png")) as prediction:
            assert prediction.mode == "L" and prediction.size == SIZE
        assert os.path.isfile(os.path.join(save, stem + "_color.png"))
    from_files = compute_mIoU(os.path.join(nthu, "Rome", "Labels", "Test"), save, target="nthu")
    table = [line for line in stdout.splitlines() if line.startswith("===>")]
    assert [line.split(":")[0] for line in table] == ["===>" + name for _, name in sorted(CROSS_CITY.values())] + [
        "===> mIoU"]
    assert table[-1] == "===> mIoU: {}".format(round(from_files.miou * 100, 2))
    with open(os.path.join(save, "mIoU.json")) as f:
        report = json.load(f)
    assert report["classes"] == "crosscity13" and report["num_images"] == 3
    assert report["mIoU"] == pytest.approx(from_files.miou)

    run_dir = str(tmp_path / "Cityscapes2Rome")
    os.makedirs(run_dir)
    shutil.copyfile(weights, os.path.join(run_dir, "Cityscapes_3.pdparams"))
    stdout = run_evaluation("--restore-from", run_dir, "--target", "nthu", "--city", "Rome", "--data-dir", nthu)

    assert "source: cityscapes (snapshots Cityscapes_<N>); scored on 13 classes (mIoU)" in stdout
    assert "3\t{:.2f}\t<- best".format(from_files.miou * 100) in stdout.splitlines()
    assert filecmp.cmp(os.path.join(run_dir, "Cityscapes_best.pdparams"), weights, shallow=False)
    assert "--target nthu --city Rome" in stdout
    with open(os.path.join(run_dir, "Cityscapes_3.eval.json")) as f:
        assert json.load(f)["classes"] == "crosscity13"


def test_evaluate_needs_a_city_for_nthu(nthu, weights, capsys):
    with pytest.raises(SystemExit):
        evaluate_cityscapes.main(["--restore-from", weights, "--target", "nthu", "--data-dir", nthu])
    assert "--target nthu needs --city" in capsys.readouterr().err


def test_dataset_check_decodes_a_city(nthu, capsys):
    from dataset.check import main as check_main
    assert check_main([nthu]) == 0
    printed = capsys.readouterr().out
    assert "NTHUDataSet: 2 samples" in printed and "NTHUDataSet: 3 samples" in printed

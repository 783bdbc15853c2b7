"""dataset.synthetic writes trees the datasets accept, deterministically, with a domain gap."""
from PIL import Image

import glob
import os

import numpy as np
import pytest

from dataset import GTA5DataSet, cityscapesDataSet
from dataset.classes import CITYSCAPES
from dataset.synthetic import EGO_VEHICLE, STATIC, UNLABELED, main, make_synthetic


def tree(root):
    """Every file below root (relative, sorted) with its decoded pixels."""
    files = sorted(os.path.relpath(path, root) for path in glob.glob(os.path.join(root, "**", "*.png"), recursive=True))
    return files, [np.asarray(Image.open(os.path.join(root, path))) for path in files]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    make_synthetic(out, seed=5)
    return out


def test_layout(out_dir):
    files, _ = tree(out_dir)
    gta5 = ["GTA5/{}/{:05d}.png".format(folder, index) for folder in ("images", "labels") for index in range(1, 21)]
    assert [path for path in files if path.startswith("GTA5")] == sorted(gta5)
    train = [path for path in files if path.startswith("Cityscapes/leftImg8bit/train/")]
    val = [path for path in files if path.startswith("Cityscapes/leftImg8bit/val/")]
    labels = [path for path in files if path.startswith("Cityscapes/gtFine/")]
    assert len(train) == 10 and len(val) == 6 and len(files) == 40 + 2 * (10 + 6)
    assert "Cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png" in val
    assert sorted(path.replace("leftImg8bit/", "gtFine/").replace("_leftImg8bit.png", "_gtFine_labelIds.png")
                  for path in train + val) == labels
    assert {path.split("/")[3] for path in train}.isdisjoint({path.split("/")[3] for path in val})  # cities


def test_sizes_and_modes(out_dir):
    image = Image.open(os.path.join(out_dir, "GTA5", "images", "00001.png"))
    assert image.mode == "RGB" and image.size == (160, 90)
    assert Image.open(os.path.join(out_dir, "GTA5", "labels", "00001.png")).mode == "P"
    assert Image.open(os.path.join(out_dir, "GTA5", "labels", "00005.png")).size != (160, 90)  # as in real GTA5
    city = Image.open(os.path.join(out_dir, "Cityscapes", "leftImg8bit", "val", "frankfurt",
                                   "frankfurt_000000_000019_leftImg8bit.png"))
    assert city.mode == "RGB" and city.size == (128, 64)
    label = Image.open(os.path.join(out_dir, "Cityscapes", "gtFine", "val", "frankfurt",
                                    "frankfurt_000000_000019_gtFine_labelIds.png"))
    assert label.mode == "L" and label.size == (128, 64)


def test_datasets_accept_the_tree(out_dir):
    source = GTA5DataSet(os.path.join(out_dir, "GTA5"), crop_size=(80, 45))
    assert len(source) == 20 and source[4][1].shape == (45, 80)
    target = cityscapesDataSet(os.path.join(out_dir, "Cityscapes"), crop_size=(64, 32), set="train")
    assert len(target) == 10 and len(target[0]) == 3
    val = cityscapesDataSet(os.path.join(out_dir, "Cityscapes"), crop_size=(64, 32), return_label=True)
    assert len(val) == 6 and val[5][1].shape == (32, 64)


def test_labels_hold_classes_and_ignored_ids(out_dir):
    _, arrays = tree(os.path.join(out_dir, "GTA5", "labels"))
    _, val_arrays = tree(os.path.join(out_dir, "Cityscapes", "gtFine"))
    for group in (arrays, val_arrays):
        ids = set(np.unique(np.concatenate([array.ravel() for array in group])).tolist())
        assert {UNLABELED, EGO_VEHICLE, STATIC} <= ids
        train_ids = {CITYSCAPES.label_values[i] for i in ids if i in CITYSCAPES.label_values}
        assert len(train_ids) >= 8  # road, sidewalk, building, vegetation, sky, pole, car, ...


def test_deterministic_for_a_seed(out_dir, tmp_path):
    make_synthetic(str(tmp_path / "again"), seed=5)
    make_synthetic(str(tmp_path / "other"), seed=6)
    files, arrays = tree(out_dir)
    again_files, again_arrays = tree(str(tmp_path / "again"))
    other_files, other_arrays = tree(str(tmp_path / "other"))
    assert files == again_files == other_files
    assert all(np.array_equal(a, b) for a, b in zip(arrays, again_arrays))
    assert not all(np.array_equal(a, b) for a, b in zip(arrays, other_arrays) if a.shape == b.shape)


def test_domain_shift_is_measurable(out_dir):
    _, source = tree(os.path.join(out_dir, "GTA5", "images"))
    _, target = tree(os.path.join(out_dir, "Cityscapes", "leftImg8bit"))
    source_pixels = np.concatenate([image.reshape(-1, 3) for image in source]).astype(np.float64)
    target_pixels = np.concatenate([image.reshape(-1, 3) for image in target]).astype(np.float64)
    assert np.abs(source_pixels.mean(0) - target_pixels.mean(0)).max() > 15  # colour cast and brightness
    assert source_pixels.mean() > target_pixels.mean() + 10  # target is darker


def test_same_class_looks_alike_within_a_domain(out_dir):
    """Learnable: a class's mean colour varies little between source images."""
    lut = CITYSCAPES.lut()
    colours = []
    for index in range(1, 6):
        name = "{:05d}.png".format(index)
        image = np.asarray(Image.open(os.path.join(out_dir, "GTA5", "images", name)), dtype=np.float64)
        label = Image.open(os.path.join(out_dir, "GTA5", "labels", name)).resize((160, 90), Image.NEAREST)
        colours.append(image[lut[np.asarray(label)] == CITYSCAPES.names.index("sky")].mean(0))
    assert np.ptp(np.array(colours), axis=0).max() < 20


def test_cli(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--num-source", "2", "--num-target-train", "1", "--num-target-val", "1",
          "--num-synthia", "3", "--source-size", "32,18", "--target-size", "32,16", "--seed", "1"])
    printed = capsys.readouterr().out
    assert "GTA5 root:" in printed and "SYNTHIA root:" in printed
    files, _ = tree(str(tmp_path / "cli"))
    assert len(files) == 4 + 2 * 2 + 2 * 3
    assert "SYNTHIA/GT/LABELS/0000002.png" in files and "SYNTHIA/RGB/0000000.png" in files
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad"), "--source-size", "8,8"])
    assert "--source-size must be at least 16,16" in capsys.readouterr().err

"""GTA5DataSet and cityscapesDataSet on tiny synthetic trees in the real on-disk layouts."""
from PIL import Image

import os
import shutil

import numpy as np
import pytest

from dataset import GTA5DataSet, cityscapesDataSet
from dataset.cityscapes_dataset import gtfine_entry, gtfine_path
from dataset.classes import CITYSCAPES, IMG_MEAN_BGR

LABEL_ID_TO_TRAIN_ID = CITYSCAPES.label_values
from dataset.synthetic import make_synthetic

SOURCE_SIZE = (40, 24)  # (width, height)
TARGET_SIZE = (32, 16)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(str(out), num_source=12, num_target_train=3, num_target_val=4,
                          source_size=SOURCE_SIZE, target_size=TARGET_SIZE, seed=3)


@pytest.fixture(scope="module")
def gta5_root(roots):
    return roots[0]


@pytest.fixture(scope="module")
def cityscapes_root(roots):
    return roots[1]


def expected_input(path, crop_size):
    """Independent reading of the preprocessing: PIL BICUBIC, channels reversed, mean off, CHW."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize(crop_size, Image.BICUBIC), dtype=np.float32)
    bgr = np.stack([rgb[:, :, 2], rgb[:, :, 1], rgb[:, :, 0]])
    return bgr - IMG_MEAN_BGR.reshape(3, 1, 1)


def expected_train_ids(path, crop_size):
    ids = np.asarray(Image.open(path).resize(crop_size, Image.NEAREST))
    train_ids = np.full(ids.shape, 255, dtype=np.int64)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        train_ids[ids == label_id] = train_id
    return train_ids


def write_list(path, entries):
    path.write_text("".join(entry + "\n" for entry in entries))
    return str(path)


# --- shapes, dtypes, preprocessing -------------------------------------------------------

def test_gta5_item_shapes_and_dtypes(gta5_root):
    dataset = GTA5DataSet(gta5_root, crop_size=(30, 20))
    image, label, size, name = dataset[0]
    assert image.shape == (3, 20, 30) and image.dtype == np.float32
    assert label.shape == (20, 30) and label.dtype == np.uint8  # 8x less than int64 through the loaders
    assert size.tolist() == [20, 30, 3]  # the original's resized HWC shape
    assert name == "00001.png"
    assert len(dataset) == 12


def test_cityscapes_item_with_and_without_label(cityscapes_root):
    plain = cityscapesDataSet(cityscapes_root, crop_size=(24, 12))
    image, size, name = plain[0]
    assert image.shape == (3, 12, 24) and image.dtype == np.float32
    assert size.tolist() == [12, 24, 3]
    assert name == "frankfurt/frankfurt_000000_000019_leftImg8bit.png"
    labelled = cityscapesDataSet(cityscapes_root, crop_size=(24, 12), return_label=True)
    image2, label, size2, name2 = labelled[0]
    np.testing.assert_array_equal(image, image2)
    assert label.shape == (12, 24) and label.dtype == np.uint8
    assert name2 == name and size2.tolist() == size.tolist()


def test_bgr_order_and_mean_at_native_size(gta5_root):
    dataset = GTA5DataSet(gta5_root, crop_size=SOURCE_SIZE)
    image, _, _, name = dataset[2]
    rgb = np.asarray(Image.open(os.path.join(gta5_root, "images", name)).convert("RGB"), dtype=np.float64)
    y, x = 5, 7
    blue, green, red = rgb[y, x, 2], rgb[y, x, 1], rgb[y, x, 0]
    assert image[:, y, x] == pytest.approx([blue - 104.00698793, green - 116.66876762, red - 122.67891434],
                                           abs=1e-4)
    np.testing.assert_allclose(image, expected_input(os.path.join(gta5_root, "images", name), SOURCE_SIZE),
                               atol=1e-4)


def test_resize_filters_match_pil(gta5_root, cityscapes_root):
    crop = (25, 13)
    dataset = GTA5DataSet(gta5_root, crop_size=crop)
    for index in (0, 4):  # 00005.png has a label of a different size than its image
        image, label, _, name = dataset[index]
        np.testing.assert_allclose(image, expected_input(os.path.join(gta5_root, "images", name), crop), atol=1e-4)
        np.testing.assert_array_equal(label, expected_train_ids(os.path.join(gta5_root, "labels", name), crop))
    target = cityscapesDataSet(cityscapes_root, crop_size=crop, return_label=True)
    image, label, _, name = target[1]
    np.testing.assert_allclose(
        image, expected_input(os.path.join(cityscapes_root, "leftImg8bit", "val", name), crop), atol=1e-4)
    np.testing.assert_array_equal(label, expected_train_ids(gtfine_path(cityscapes_root, name), crop))


def test_label_and_image_of_different_sizes_both_reach_crop_size(gta5_root):
    name = "00005.png"
    image_size = Image.open(os.path.join(gta5_root, "images", name)).size
    label_size = Image.open(os.path.join(gta5_root, "labels", name)).size
    assert image_size != label_size
    image, label, _, _ = GTA5DataSet(gta5_root, crop_size=(20, 10))[4]
    assert image.shape[1:] == label.shape == (10, 20)


def test_lut_matches_the_class_table_for_every_id():
    lut = CITYSCAPES.lut()
    assert lut.shape == (256,)
    for label_id in range(256):
        assert lut[label_id] == LABEL_ID_TO_TRAIN_ID.get(label_id, 255)


def test_dataset_maps_all_256_ids(tmp_path):
    root = tmp_path / "gta"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(str(root / "images" / "00001.png"))
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(str(root / "labels" / "00001.png"))
    _, label, _, _ = GTA5DataSet(str(root), crop_size=(16, 16))[0]
    expected = [LABEL_ID_TO_TRAIN_ID.get(label_id, 255) for label_id in range(256)]
    assert label.ravel().tolist() == expected


def test_ignore_label_argument_replaces_255(gta5_root):
    _, label, _, _ = GTA5DataSet(gta5_root, crop_size=SOURCE_SIZE, ignore_label=250)[0]
    assert 250 in label and 255 not in label


def test_an_ignore_label_past_uint8_keeps_int64_labels(gta5_root):
    _, label, _, _ = GTA5DataSet(gta5_root, crop_size=SOURCE_SIZE, ignore_label=-1)[0]
    expected = expected_train_ids(os.path.join(gta5_root, "labels", "00001.png"), SOURCE_SIZE)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, np.where(expected == 255, -1, expected))


# --- mirroring ---------------------------------------------------------------------------

def test_tuple_index_flips_image_and_label_together(gta5_root):
    dataset = GTA5DataSet(gta5_root, crop_size=SOURCE_SIZE)
    image, label, size, name = dataset[(3, False)]
    flipped_image, flipped_label, flipped_size, flipped_name = dataset[(3, True)]
    np.testing.assert_array_equal(flipped_image, image[:, :, ::-1])
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    assert flipped_name == name and flipped_size.tolist() == size.tolist()
    np.testing.assert_array_equal(dataset[3][0], image)  # mirror=False: plain ints never flip
    np.testing.assert_array_equal(dataset[(3, True)][0], flipped_image)  # explicit and reproducible


def test_random_mirror_is_seeded_and_consistent(gta5_root):
    def flips(seed):
        dataset = GTA5DataSet(gta5_root, crop_size=SOURCE_SIZE, mirror=True, seed=seed)
        plain_image, plain_label, _, _ = dataset[(1, False)]
        decisions = []
        for _ in range(16):
            image, label, _, _ = dataset[1]
            flipped = not np.array_equal(image, plain_image)
            if flipped:
                np.testing.assert_array_equal(image, plain_image[:, :, ::-1])
            np.testing.assert_array_equal(label, plain_label[:, ::-1] if flipped else plain_label)
            decisions.append(flipped)
        return decisions

    first = flips(seed=7)
    assert first == flips(seed=7)
    assert any(first) and not all(first)


def test_cityscapes_tuple_index_flips_too(cityscapes_root):
    dataset = cityscapesDataSet(cityscapes_root, crop_size=TARGET_SIZE, return_label=True)
    image, label, _, _ = dataset[(2, False)]
    flipped_image, flipped_label, _, _ = dataset[(2, True)]
    np.testing.assert_array_equal(flipped_image, image[:, :, ::-1])
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])


# --- lists, scans, repetition --------------------------------------------------------------

def test_list_file_and_scan_agree(gta5_root, cityscapes_root, tmp_path):
    scanned = GTA5DataSet(gta5_root, crop_size=(20, 12))
    listed = GTA5DataSet(gta5_root, write_list(tmp_path / "gta5.txt", scanned.img_ids), crop_size=(20, 12))
    assert listed.img_ids == scanned.img_ids
    for got, want in zip(listed[5], scanned[5]):
        np.testing.assert_array_equal(got, want)

    scanned = cityscapesDataSet(cityscapes_root, crop_size=(20, 10), set="train")
    assert scanned.img_ids == sorted(scanned.img_ids) and len(scanned) == 3
    listed = cityscapesDataSet(cityscapes_root, write_list(tmp_path / "train.txt", scanned.img_ids),
                               crop_size=(20, 10), set="train")
    np.testing.assert_array_equal(listed[2][0], scanned[2][0])
    assert listed[2][2] == scanned[2][2]


def test_list_order_and_blank_lines_are_respected(gta5_root, tmp_path):
    list_path = tmp_path / "some.txt"
    list_path.write_text("00003.png\n\n  00001.png  \n")
    assert GTA5DataSet(gta5_root, str(list_path)).img_ids == ["00003.png", "00001.png"]


def test_max_iters_repeats_whole_list(gta5_root):
    dataset = GTA5DataSet(gta5_root, max_iters=30)
    assert len(dataset) == 36  # ceil(30 / 12) copies
    assert dataset.img_ids[12:24] == dataset.img_ids[:12]


def test_gtfine_entry_and_path():
    entry = "frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert gtfine_entry(entry) == "frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    assert gtfine_path("/data/cs", entry) == os.path.join(
        "/data/cs", "gtFine", "val", "frankfurt/frankfurt_000000_000294_gtFine_labelIds.png")
    with pytest.raises(ValueError, match="leftImg8bit"):
        gtfine_entry("frankfurt/frankfurt_000000_000294.png")


# --- construction and load errors ----------------------------------------------------------

def test_missing_root_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        GTA5DataSet(str(tmp_path / "nowhere"))
    assert "nowhere" in str(error.value)
    assert "images/00001.png" in str(error.value) and "labels/00001.png" in str(error.value)
    with pytest.raises(FileNotFoundError) as error:
        cityscapesDataSet(str(tmp_path / "nowhere"))
    assert "leftImg8bit/<set>/<city>/" in str(error.value) and "gtFine_labelIds.png" in str(error.value)


def test_missing_list_file(gta5_root, cityscapes_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="list file .*absent.txt.* does not exist.*00001.png"):
        GTA5DataSet(gta5_root, str(tmp_path / "absent.txt"))
    with pytest.raises(FileNotFoundError, match="list file .*absent.txt.* does not exist"):
        cityscapesDataSet(cityscapes_root, str(tmp_path / "absent.txt"))


def test_empty_list_file(gta5_root, cityscapes_root, tmp_path):
    list_path = tmp_path / "empty.txt"
    list_path.write_text("\n   \n")
    with pytest.raises(ValueError, match="empty.txt.* has no entries"):
        GTA5DataSet(gta5_root, str(list_path))
    with pytest.raises(ValueError, match="empty.txt.* has no entries"):
        cityscapesDataSet(cityscapes_root, str(list_path))


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=r"no \*\.png files under .*images"):
        GTA5DataSet(str(tmp_path))


def test_listed_files_that_do_not_exist(gta5_root, tmp_path):
    names = ["00001.png"] + ["9{:04d}.png".format(index) for index in range(7)]
    with pytest.raises(FileNotFoundError) as error:
        GTA5DataSet(gta5_root, write_list(tmp_path / "bad.txt", names))
    message = str(error.value)
    assert "14 file(s)" in message  # 7 images and their 7 labels
    assert os.path.join(gta5_root, "images", "90000.png") in message
    assert "(and 9 more)" in message and "bad.txt" in message


def test_missing_label_only(tmp_path):
    root = tmp_path / "gta"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(str(root / "images" / "00001.png"))
    with pytest.raises(FileNotFoundError, match="1 file.*labels.*00001.png"):
        GTA5DataSet(str(root))


def test_missing_gtfine_when_labels_are_asked_for(cityscapes_root, tmp_path):
    images_only = str(tmp_path / "Cityscapes")
    shutil.copytree(os.path.join(cityscapes_root, "leftImg8bit"), os.path.join(images_only, "leftImg8bit"))
    with pytest.raises(FileNotFoundError, match="gtFine.*train.*aachen_000000_000019_gtFine_labelIds.png"):
        cityscapesDataSet(images_only, set="train", return_label=True)
    assert len(cityscapesDataSet(images_only, set="train")) == 3  # images alone are enough


def test_bad_arguments(gta5_root):
    with pytest.raises(ValueError, match="scale=True"):
        GTA5DataSet(gta5_root, scale=True)
    with pytest.raises(ValueError, match="crop_size"):
        GTA5DataSet(gta5_root, crop_size=(0, 10))
    with pytest.raises(ValueError, match="max_iters"):
        GTA5DataSet(gta5_root, max_iters=0)


def test_unreadable_image_names_the_file(tmp_path):
    root = tmp_path / "gta"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "images" / "00001.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(str(root / "labels" / "00001.png"))
    dataset = GTA5DataSet(str(root))  # existence is checked up front, decoding only on load
    with pytest.raises(OSError, match="cannot read image .*00001.png"):
        dataset[0]


def test_label_that_is_not_single_channel(tmp_path):
    root = tmp_path / "gta"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(str(root / "images" / "00001.png"))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(str(root / "labels" / "00001.png"))
    with pytest.raises(ValueError, match="labels.*00001.png has PIL mode RGB"):
        GTA5DataSet(str(root), crop_size=(4, 4))[0]

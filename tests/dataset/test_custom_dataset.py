"""CustomDataSet: your own domains, from a PaddleSeg-style list file or from images/ + labels/
folders, with 8-bit, 16-bit or colour labels whose values a class file names; and Synscapes."""
from PIL import Image

import json
import os
import shutil

import numpy as np
import pytest

from dataset.check import check_datasets, datasets_below, main as check_main
from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, SYNSCAPES, load_class_file
from dataset.custom import CustomDataSet, SynscapesDataSet
from dataset.synthetic import CUSTOM_LABEL_FORMATS, main as synthetic_main, make_custom_pair, make_synscapes

CROP = (40, 20)  # (width, height): a resize, so NEAREST is exercised


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{label format: CustomPair} of the same scenes, written once per format."""
    out = tmp_path_factory.mktemp("custom")
    return {label_format: make_custom_pair(str(out / label_format), num_source=4, num_target=4,
                                           source_size=(48, 27), target_size=(44, 22), label_format=label_format)
            for label_format in CUSTOM_LABEL_FORMATS}


@pytest.fixture
def pair(pairs, tmp_path):
    """A copy of the gray pair that a test may damage."""
    root = str(tmp_path / "custom")
    shutil.copytree(os.path.dirname(pairs["gray"].class_file), root)
    return pairs["gray"]._replace(class_file=os.path.join(root, "classes.json"),
                                  source_root=os.path.join(root, "source"),
                                  source_list=os.path.join(root, "source", "train.txt"),
                                  target_root=os.path.join(root, "target"))


def expected_train_ids(gray_label_path, class_file, crop_size):
    """Independent reading of a gray label: NEAREST first, then the class file's values looked up."""
    with open(class_file) as handle:
        spec = json.load(handle)
    values = np.asarray(Image.open(gray_label_path).resize(crop_size, Image.NEAREST)).astype(np.int64)
    train_ids = np.full(values.shape, 255, np.int64)
    for train_id, entry in enumerate(spec["classes"]):
        for value in entry["values"]:
            train_ids[values == value] = train_id
    return train_ids


def samples(dataset):
    return [dataset[index] for index in range(len(dataset))]


def assert_same_samples(a, b):
    assert len(a) == len(b)
    for sample_a, sample_b in zip(a, b):
        assert len(sample_a) == len(sample_b)
        for x, y in zip(sample_a, sample_b):
            np.testing.assert_array_equal(x, y)


def one_line_error(kind, build):
    with pytest.raises(kind) as info:
        build()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- reading the two forms and the label formats -----------------------------------------------

def test_target_folder_form_item(pairs):
    target = CustomDataSet(pairs["gray"].target_root, classes=pairs["gray"].class_file, crop_size=CROP)
    assert len(target) == 4 and target.with_labels
    assert target.img_ids == ["images/street_a/0001.png", "images/street_a/0003.png",
                              "images/street_b/0002.png", "images/street_b/0004.png"]
    image, label, size, name = target[0]
    assert image.shape == (3, 20, 40) and image.dtype == np.float32
    assert label.shape == (20, 40) and label.dtype == np.uint8 and list(size) == [20, 40, 3]
    assert name == "images/street_a/0001.png"
    rgb = np.asarray(Image.open(os.path.join(pairs["gray"].target_root, name)).resize(CROP, Image.BICUBIC), np.float32)
    np.testing.assert_allclose(image, (rgb[:, :, ::-1] - IMG_MEAN_BGR).transpose(2, 0, 1), atol=1e-4)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4, 255}


def test_list_form_and_folder_form_yield_the_same_samples(pairs, tmp_path):
    pair = pairs["gray"]
    listed = CustomDataSet(pair.source_root, pair.source_list, classes=pair.class_file, crop_size=CROP)
    folders = CustomDataSet(pair.source_root, classes=pair.class_file, crop_size=CROP, images_dir="rgb",
                            labels_dir="gt")
    assert listed.img_ids == folders.img_ids == ["rgb/000{}.jpg".format(i) for i in range(1, 5)]
    assert_same_samples(samples(listed), samples(folders))

    target = CustomDataSet(pair.target_root, classes=pair.class_file, crop_size=CROP)
    list_file = tmp_path / "val.txt"  # PaddleSeg's format: any white space, blank lines skipped
    list_file.write_text("".join("{}\t {}\n\n".format(entry, target._label_of[entry]) for entry in target.img_ids))
    assert_same_samples(samples(target), samples(CustomDataSet(pair.target_root, str(list_file),
                                                               classes=pair.class_file, crop_size=CROP)))


@pytest.mark.parametrize("label_format", CUSTOM_LABEL_FORMATS)
def test_label_formats_give_the_same_train_ids(pairs, label_format):
    pair = pairs[label_format]
    expected_mode = {"gray": "L", "palette": "P", "16bit": "I;16", "colour": "RGB"}[label_format]
    first_label = os.path.join(pair.target_root, "labels", "street_a", "0001.png")
    assert Image.open(first_label).mode in (expected_mode, "I")  # Pillow before 10 reads 16 bits as I
    if label_format == "16bit":
        assert 1000 in np.asarray(Image.open(first_label))  # road's value past 8 bits
    for root, list_path, crop in ((pair.target_root, None, CROP), (pair.source_root, pair.source_list, (48, 27))):
        dataset = CustomDataSet(root, list_path, classes=pair.class_file, crop_size=crop)
        for index, entry in enumerate(dataset.img_ids):
            gray_label = os.path.join(root.replace(os.sep + label_format + os.sep, os.sep + "gray" + os.sep),
                                      dataset._label_of[entry])
            np.testing.assert_array_equal(dataset[index][1], expected_train_ids(gray_label, pair.class_file, crop),
                                          err_msg="{} {}".format(label_format, entry))


def test_class_set_by_value_preset_or_file(pairs):
    pair = pairs["gray"]
    by_file = CustomDataSet(pair.target_root, classes=pair.class_file, crop_size=CROP)
    by_value = CustomDataSet(pair.target_root, classes=load_class_file(pair.class_file), crop_size=CROP)
    assert_same_samples(samples(by_file), samples(by_value))
    assert by_file.classes.names == ("road", "sidewalk", "building", "vegetation", "sky")
    with pytest.raises(ValueError, match="cityscapes"):  # the scenes' values 40 and 50 are no Cityscapes ids
        CustomDataSet(pair.target_root, classes="cityscapes", crop_size=CROP)


def test_target_without_labels(pairs, tmp_path):
    pair = pairs["gray"]
    images_only = CustomDataSet(pair.target_root, classes=pair.class_file, crop_size=CROP, with_labels=False,
                                set="train")  # the training scripts pass set= to every target
    image, size, name = images_only[1]
    assert not images_only.with_labels and name == "images/street_a/0003.png" and image.shape == (3, 20, 40)

    root = str(tmp_path / "unlabelled")
    shutil.copytree(os.path.join(pair.target_root, "images"), os.path.join(root, "images"))
    assert not CustomDataSet(root, classes=pair.class_file, crop_size=CROP).with_labels  # no labels/ folder
    list_file = tmp_path / "train.txt"
    list_file.write_text("images/street_a/0001.png\nimages/street_b/0002.png\n")
    listed = CustomDataSet(root, str(list_file), classes=pair.class_file, crop_size=CROP, max_iters=5)
    assert not listed.with_labels and len(listed) == 6 and listed[5][2] == "images/street_b/0002.png"


def test_mirror_and_ignore_label(pairs):
    pair = pairs["colour"]
    dataset = CustomDataSet(pair.target_root, classes=pair.class_file, crop_size=CROP, ignore_label=-1)
    image, label, _, _ = dataset[0]
    flipped_image, flipped_label, _, _ = dataset[(0, True)]
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    np.testing.assert_array_equal(flipped_image, image[:, :, ::-1])
    assert label.dtype == np.int64 and -1 in label and 255 not in label


def test_source_classes_are_learnable(pairs):
    """Each class has its own colour in the source images: a tiny network can tell them apart."""
    pair = pairs["gray"]
    dataset = CustomDataSet(pair.source_root, pair.source_list, classes=pair.class_file, crop_size=(48, 27))
    pixels = [(np.asarray(Image.open(os.path.join(pair.source_root, entry)), np.float64), dataset[i][1])
              for i, entry in enumerate(dataset.img_ids)]
    means = np.array([np.concatenate([image[label == c] for image, label in pixels]).mean(0) for c in range(5)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert distances[np.triu_indices(5, 1)].min() > 20


# --- refusing bad input, one line naming the file ---------------------------------------------

def rewrite_list(pair, edit):
    with open(pair.source_list) as handle:
        lines = handle.read().splitlines()
    edit(lines)
    with open(pair.source_list, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def source(pair, **options):
    return CustomDataSet(pair.source_root, pair.source_list, classes=pair.class_file, crop_size=CROP, **options)


def target(pair, **options):
    return CustomDataSet(pair.target_root, classes=pair.class_file, crop_size=CROP, **options)


def test_listed_image_that_does_not_exist(pair):
    os.remove(os.path.join(pair.source_root, "rgb", "0003.jpg"))
    message = one_line_error(FileNotFoundError, lambda: source(pair))
    assert "{} line 3 names the image {}".format(pair.source_list, os.path.join(pair.source_root, "rgb/0003.jpg")) \
        in message


def test_listed_label_that_does_not_exist(pair):
    rewrite_list(pair, lambda lines: lines.__setitem__(1, "rgb/0002.jpg gt/missing.png"))
    message = one_line_error(FileNotFoundError, lambda: source(pair))
    assert "line 2 names the label" in message and "gt/missing.png" in message


def test_folder_image_without_its_label(pair):
    os.remove(os.path.join(pair.target_root, "labels", "street_b", "0004.png"))
    message = one_line_error(FileNotFoundError, lambda: target(pair))
    assert "image {} has no label {}".format(os.path.join(pair.target_root, "images/street_b/0004.png"),
                                             os.path.join(pair.target_root, "labels/street_b/0004.png")) in message
    assert len(target(pair, with_labels=False)) == 4


def test_line_without_a_label_among_labelled_ones(pair):
    rewrite_list(pair, lambda lines: lines.__setitem__(2, "rgb/0003.jpg"))
    message = one_line_error(ValueError, lambda: source(pair))
    assert "{} line 3 names image rgb/0003.jpg without a label".format(pair.source_list) in message
    rewrite_list(pair, lambda lines: lines.__setitem__(slice(None), [line.split()[0] for line in lines]))
    message = one_line_error(ValueError, lambda: source(pair, with_labels=True))
    assert "line 1 names image rgb/0001.jpg without a label, but labels are wanted" in message
    assert not source(pair).with_labels


def test_line_with_too_many_fields(pair):
    rewrite_list(pair, lambda lines: lines.__setitem__(3, "rgb/0004.jpg gt/0004.png extra"))
    assert "line 4 has 3 fields" in one_line_error(ValueError, lambda: source(pair))


def test_label_value_outside_the_class_file(pair):
    path = os.path.join(pair.source_root, "gt", "0002.png")
    values = np.array(Image.open(path))
    values[3, 4], values[5, 6] = 77, 300 % 256
    Image.fromarray(values).save(path)
    message = one_line_error(ValueError, lambda: source(pair))
    assert "{} line 2: label {} holds the value(s) 44, 77".format(pair.source_list, path) in message
    assert "class file {}".format(pair.class_file) in message and '"ignore"' in message


def test_colour_outside_the_class_colours(pairs, tmp_path):
    root = str(tmp_path / "colour")
    shutil.copytree(os.path.dirname(pairs["colour"].class_file), root)
    path = os.path.join(root, "target", "labels", "street_a", "0003.png")
    rgb = np.array(Image.open(path))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    message = one_line_error(ValueError, lambda: CustomDataSet(os.path.join(root, "target"),
                                                               classes=os.path.join(root, "classes.json")))
    assert "label {} holds colour (1, 2, 3): not among the class colours of the class file".format(path) in message
    assert "nor black (not labelled)" in message


def test_label_of_another_size_than_its_image(pair):
    path = os.path.join(pair.target_root, "labels", "street_a", "0003.png")
    Image.open(path).resize((40, 22), Image.NEAREST).save(path)
    message = one_line_error(ValueError, lambda: target(pair))
    assert "label {} is 40x22 but its image".format(path) in message and "is 44x22" in message


def test_label_that_cannot_be_read_or_has_two_channels(pair):
    path = os.path.join(pair.target_root, "labels", "street_b", "0002.png")
    Image.open(path).convert("LA").save(path)
    assert "label {} has PIL mode LA".format(path) in one_line_error(ValueError, lambda: target(pair))
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n broken")
    assert "cannot read label {}".format(path) in one_line_error(ValueError, lambda: target(pair))


def test_empty_list_and_empty_or_missing_folders(pair, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    message = one_line_error(ValueError, lambda: CustomDataSet(pair.source_root, str(empty), classes=pair.class_file))
    assert "list file {!r} has no entries".format(str(empty)) in message
    missing = str(tmp_path / "nowhere.txt")
    assert "list file {!r} does not exist".format(missing) in one_line_error(
        FileNotFoundError, lambda: CustomDataSet(pair.source_root, missing, classes=pair.class_file))
    os.makedirs(str(tmp_path / "bare" / "images" / "sub"))
    assert "no images (*.png" in one_line_error(
        ValueError, lambda: CustomDataSet(str(tmp_path / "bare"), classes=pair.class_file))
    assert "no list file given and no folder" in one_line_error(
        FileNotFoundError, lambda: CustomDataSet(pair.source_root, classes=pair.class_file))
    shutil.rmtree(os.path.join(pair.target_root, "labels"))
    assert "labels are wanted, but there is no folder {}".format(os.path.join(pair.target_root, "labels")) in \
        one_line_error(FileNotFoundError, lambda: target(pair, with_labels=True))


# --- python -m dataset.check --------------------------------------------------------------------

def test_dataset_check_on_a_custom_root(pairs, capsys):
    for label_format in ("gray", "colour"):
        pair = pairs[label_format]
        assert check_main([pair.target_root, "--classes", pair.class_file, "--num-workers", "1"]) == 0
        printed = capsys.readouterr().out
        assert "CustomDataSet: 4 samples in {}".format(pair.target_root) in printed and "all files decode" in printed
    # The same layout without --classes is GTA5's.
    assert [type(d).__name__ for d in datasets_below(pairs["gray"].target_root)] == ["GTA5DataSet"]


def test_dataset_check_catches_a_bad_value(pair, capsys):
    dataset = target(pair)
    path = os.path.join(pair.target_root, "labels", "street_b", "0004.png")
    values = np.array(Image.open(path))
    values[1, 1] = 77
    Image.fromarray(values).save(path)
    with pytest.raises(ValueError) as info:
        check_datasets([dataset], num_workers=1, progress=False)
    assert "{}: label ids 77 are outside the dataset's table (class file {})".format(path, pair.class_file) \
        in str(info.value)
    with pytest.raises(SystemExit) as exit_info:  # building the dataset already refuses it
        check_main([pair.target_root, "--classes", pair.class_file])
    assert "label {} holds the value(s) 77".format(path) in str(exit_info.value)


# --- Synscapes and the generator's command line -------------------------------------------------

def test_synscapes_layout(tmp_path, capsys):
    root = make_synscapes(str(tmp_path), count=3, size=(48, 24), seed=2)
    dataset = SynscapesDataSet(root, crop_size=(48, 24))
    assert dataset.classes is SYNSCAPES and dataset.img_ids == ["img/rgb/1.png", "img/rgb/2.png", "img/rgb/3.png"]
    ids = np.asarray(Image.open(os.path.join(root, "img", "class", "2.png")))
    np.testing.assert_array_equal(dataset[1][1], CITYSCAPES.lut()[ids])
    assert SynscapesDataSet(root).crop_size == (1440, 720)  # Synscapes' native size
    assert check_main([str(tmp_path)]) == 0
    assert "SynscapesDataSet: 3 samples in {}".format(root) in capsys.readouterr().out


def test_synthetic_cli_writes_a_custom_pair(tmp_path, capsys):
    synthetic_main([str(tmp_path), "--custom", "--label-format", "16bit", "--num-source", "2",
                    "--num-target-train", "3", "--source-size", "32,18", "--target-size", "32,16", "--seed", "1"])
    printed = capsys.readouterr().out
    root = str(tmp_path / "custom")
    assert "class file:  {}".format(os.path.join(root, "classes.json")) in printed
    assert not os.path.exists(str(tmp_path / "GTA5"))
    source_set = CustomDataSet(os.path.join(root, "source"), os.path.join(root, "source", "train.txt"),
                               classes=os.path.join(root, "classes.json"), crop_size=(32, 18))
    target_set = CustomDataSet(os.path.join(root, "target"), classes=os.path.join(root, "classes.json"),
                               crop_size=(32, 16))
    assert len(source_set) == 2 and len(target_set) == 3 and source_set[1][1].shape == (18, 32)
    with pytest.raises(SystemExit):
        synthetic_main([str(tmp_path / "bad"), "--custom", "--label-format", "jpeg"])
    assert "invalid choice: 'jpeg'" in capsys.readouterr().err

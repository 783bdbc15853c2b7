"""Adapting between your own domains: a 5-class (and a 2-class) class file, a source in the list
form and a target in the folder form, trained with both scripts, resumed, validated, evaluated and
scored, every number checked against numpy on the files themselves."""
import contextlib
import io
import json
import os

import numpy as np
import paddle
import pytest
from PIL import Image

import compute_iou
import evaluate_cityscapes
import train_gta2cityscapes_multi as train
import train_weak_labels
from dataset.classes import CITYSCAPES
from dataset.synthetic import make_custom_pair, make_synscapes
from model.deeplab_multi import DeeplabMulti
from tests.helpers import assert_same_snapshot, training_args

SIZE = "48,32"
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
SYNTHETIC_DATA = dict(num_source=2, num_target_train=2, num_target_val=2)  # Cityscapes, Synscapes' target


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{label format: CustomPair} of the same two domains, their labels written three ways."""
    return {fmt: make_custom_pair(str(tmp_path_factory.mktemp(fmt)), num_source=4, num_target=4, label_format=fmt)
            for fmt in ("gray", "16bit", "colour")}


def custom_args(pair, snapshot_dir, stop, *extra, **options):
    return training_args((pair.source_root, pair.target_root), snapshot_dir, stop, "--source", "custom",
                         "--target", "custom", "--data-list", pair.source_list, "--classes", pair.class_file,
                         *extra, size=SIZE, **options)


def class_file_mapping(class_file):
    """{label value: train id} and the ignored values, read from the class file with json alone."""
    with open(class_file) as f:
        spec = json.load(f)
    table = {value: train_id for train_id, entry in enumerate(spec["classes"])
             for value in entry.get("values", [train_id])}  # a class without values is meant by its train id
    return spec, table, set(spec["ignore"])


def numpy_miou(label_dir, pred_dir, class_file):
    """mIoU of the predictions in pred_dir (at the labels' relative paths) against the 8-bit labels,
    from masks."""
    spec, table, ignored = class_file_mapping(class_file)
    num_classes = len(spec["classes"])
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for folder, _, names in os.walk(label_dir):
        for name in names:
            values = np.asarray(Image.open(os.path.join(folder, name)))
            pred = np.asarray(Image.open(os.path.join(pred_dir, os.path.relpath(folder, label_dir), name)))
            labelled = ~np.isin(values, list(ignored))
            for c in range(num_classes):
                truth = np.isin(values, [v for v, t in table.items() if t == c]) & labelled
                guess = (pred == c) & labelled
                inter[c] += (truth & guess).sum()
                union[c] += (truth | guess).sum()
    ious = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return np.nanmean(ious), spec


def printed(main, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def test_adaptsegnet_between_custom_domains_resumes_exactly_validates_and_is_scored(pairs, tmp_path):
    pair = pairs["gray"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.main(custom_args(pair, straight, 4, "--name", "streets", mirror=True)) == 0
    assert train.main(custom_args(pair, resumed, 2, "--name", "streets", "--val", mirror=True)) == 0
    assert train.main(custom_args(pair, resumed, 4, "--name", "streets", "--val", mirror=True,
                                  continue_train=True)) == 0
    assert_same_snapshot(straight, resumed, 4, prefix="streets")

    with open(str(resumed / "class_set.json")) as f:
        recorded = json.load(f)
    spec, _, _ = class_file_mapping(pair.class_file)
    assert recorded["names"] == [c["name"] for c in spec["classes"]]
    assert recorded["colours"] == [c["colour"] for c in spec["classes"]]
    with open(str(resumed / "streets_4.eval.json")) as f:
        validated = json.load(f)
    assert list(validated["IoU"]) == recorded["names"] and validated["classes"] == "5"

    # Evaluation reads the class set off the run's directory; its table names the 5 classes.
    save = tmp_path / "eval"
    out = printed(evaluate_cityscapes.main, ["--restore-from", str(resumed / "streets_4.pdparams"), "--target",
                                             "custom", "--data-dir", pair.target_root, "--classes", pair.class_file,
                                             "--input-size", SIZE, "--num-workers", "0", "--save", str(save),
                                             "--device", "cpu"])
    table = [line for line in out.splitlines() if line.startswith("===>")]
    assert [line[4:].split(":")[0] for line in table[:5]] == recorded["names"]
    with open(str(save / "mIoU.json")) as f:
        report = json.load(f)
    expected, _ = numpy_miou(os.path.join(pair.target_root, "labels"), str(save), pair.class_file)
    assert report["mIoU"] == pytest.approx(expected, abs=1e-12)
    # Validation scored the same snapshot on the same images at the same size: the same number.
    assert validated["mIoU"] == pytest.approx(report["mIoU"], abs=1e-12)

    # The run's directory, its class_set.json standing for the class file: validation's scores are
    # evaluation's, so both snapshots come from the cache.
    out = printed(evaluate_cityscapes.main, ["--restore-from", str(resumed), "--target", "custom", "--data-dir",
                                             pair.target_root, "--input-size", SIZE, "--num-workers", "0",
                                             "--device", "cpu"])
    assert out.count("(cached in") == 2 and "best: streets_" in out

    # compute_iou.py scores the written predictions to the same number.
    result = compute_iou.compute_mIoU(os.path.join(pair.target_root, "labels"), str(save), target="custom",
                                      source="custom", class_file=pair.class_file)
    assert result.miou == pytest.approx(expected, abs=1e-12)
    assert list(result.classes.names) == recorded["names"]


def test_labels_written_8_bit_16_bit_or_in_colour_train_the_same_network(pairs, tmp_path):
    runs = {}
    for fmt, pair in pairs.items():
        runs[fmt] = tmp_path / fmt
        assert train.main(custom_args(pair, runs[fmt], 2)) == 0
    for fmt in ("16bit", "colour"):
        assert_same_snapshot(runs["gray"], runs[fmt], 2, prefix="custom")


def test_the_weak_label_method_between_custom_domains_resumes_exactly(pairs, tmp_path):
    """Category-wise alignment needs the source's class thresholds: computed from its own labels."""
    pair = pairs["gray"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    weak = ("--use-weak", "--use-weak-cw", "--use-pointloss")
    assert train_weak_labels.main(custom_args(pair, straight, 2, *weak)) == 0
    assert train_weak_labels.main(custom_args(pair, resumed, 1, *weak, save_every=1)) == 0
    assert train_weak_labels.main(custom_args(pair, resumed, 2, *weak, save_every=1, continue_train=True)) == 0
    assert_same_snapshot(straight, resumed, 2, discriminators=("D2", "cwD"), prefix="custom")
    with open(str(straight / "train.log")) as f:
        log = f.read()
    assert "source class thresholds: thresholds_from_counts of the 4 labels of {}".format(pair.source_root) in log


def two_class_file(pair, path):
    """Road against everything else: the 5-class labels read as a binary task."""
    spec, table, ignored = class_file_mapping(pair.class_file)
    road = [v for v, t in table.items() if t == 0]
    rest = [v for v, t in table.items() if t != 0]
    with open(str(path), "w") as f:
        json.dump({"name": "road-or-not", "classes": [{"name": "road", "colour": [128, 64, 128], "values": road},
                                                      {"name": "background", "colour": [0, 0, 0], "values": rest}],
                   "ignore": sorted(ignored)}, f)
    return str(path)


def test_a_binary_task_trains_and_is_scored_on_its_two_classes(pairs, tmp_path):
    pair = pairs["gray"]
    classes = two_class_file(pair, tmp_path / "binary.json")
    run = tmp_path / "run"
    args = custom_args(pair, run, 2, "--val")
    args[args.index(pair.class_file)] = classes
    assert train.main(args) == 0
    weights = paddle.load(str(run / "custom_2.pdparams"), return_numpy=True)
    assert weights["layer6.conv2d_list.0.weight"].shape[0] == 2
    assert paddle.load(str(run / "custom_2_D1.pdparams"), return_numpy=True)["conv1.weight"].shape[1] == 2
    with open(str(run / "custom_2.eval.json")) as f:
        assert list(json.load(f)["IoU"]) == ["road", "background"]

    # The 5-class file does not describe this model: evaluation refuses it, naming both sets.
    with pytest.raises(ValueError, match="trained on the class set road-or-not .2 classes.*streets5 .5 classes"):
        evaluate_cityscapes.main(["--restore-from", str(run / "custom_2.pdparams"), "--target", "custom",
                                  "--data-dir", pair.target_root, "--classes", pair.class_file, "--input-size", SIZE,
                                  "--num-workers", "0", "--device", "cpu"])
    # Nor can the run continue with another class file.
    message = train.command_line(lambda: train.main(custom_args(pair, run, 4, continue_train=True)))
    assert message.startswith("error: {} was trained on the class set road-or-not (2 classes: road, background), "
                              "but this run uses streets5 (5 classes".format(run))


@pytest.mark.parametrize("damage, expected", [
    ("value", "holds the value(s) 77, which the class file {classes} neither gives a class nor ignores"),
    ("unlabelled", "line 2 names image rgb/0002.jpg without a label"),
    ("size", "is 10x10 but its image"),
])
def test_bad_custom_data_ends_with_one_line_before_iteration_1(pairs, tmp_path, damage, expected):
    import shutil
    pair = pairs["gray"]
    root = str(tmp_path / "source")
    shutil.copytree(pair.source_root, root)
    listing = os.path.join(root, "train.txt")
    label = os.path.join(root, "gt", "0002.png")
    if damage == "value":
        values = np.array(Image.open(label))
        values[0, 0] = 77
        Image.fromarray(values).save(label)
    elif damage == "unlabelled":
        lines = open(listing).read().splitlines()
        lines[1] = lines[1].split()[0]
        open(listing, "w").write("\n".join(lines) + "\n")
    else:
        Image.fromarray(np.full((10, 10), 10, np.uint8)).save(label)
    args = training_args((root, pair.target_root), tmp_path / "run", 2, "--source", "custom", "--target", "custom",
                         "--data-list", listing, "--classes", pair.class_file, size=SIZE)
    message = train.command_line(lambda: train.main(args))
    assert message.startswith("error: ") and "\n" not in message
    assert expected.format(classes=pair.class_file) in message
    assert not os.path.exists(str(tmp_path / "run" / "custom_2.pdparams"))


def test_synscapes_is_a_source_of_a_few_lines_of_data(data, tmp_path):
    """A preset on the custom reader: its layout and the Cityscapes label ids, nothing else."""
    root = make_synscapes(str(tmp_path / "data"), count=3, size=(144, 72))
    _, cityscapes = data
    run = tmp_path / "run"
    assert train.main(training_args((root, cityscapes), run, 2, "--source", "synscapes", "--val", size=SIZE)) == 0
    with open(str(run / "Synscapes_2.eval.json")) as f:
        assert len(json.load(f)["IoU"]) == 19
    with open(str(run / "class_set.json")) as f:
        assert json.load(f)["name"] == "synscapes"


def test_a_benchmark_model_is_scored_on_a_custom_target_through_the_targets_own_class_file(pairs, tmp_path):
    """A GTA5 model (the 19 Cityscapes classes) on images whose labels say those classes in values of
    their own: the target's class file reads the labels, the model's classes are scored."""
    pair = pairs["gray"]
    spec, table, ignored = class_file_mapping(pair.class_file)
    own = {entry["name"]: entry["values"] for entry in spec["classes"]}
    cityscapes_named = tmp_path / "cityscapes_named.json"
    cityscapes_named.write_text(json.dumps({"name": "cityscapes-named", "classes": [
        dict({"name": name}, **({"values": own[name]} if name in own else {})) for name in CITYSCAPES.names],
        "ignore": sorted(ignored)}))
    paddle.seed(3)
    weights = str(tmp_path / "GTA5_best.pdparams")
    paddle.save(DeeplabMulti(num_classes=CITYSCAPES.num_classes).state_dict(), weights)
    save = tmp_path / "eval"
    printed(evaluate_cityscapes.main, ["--restore-from", weights, "--target", "custom", "--data-dir", pair.target_root,
                                       "--classes", str(cityscapes_named), "--input-size", SIZE, "--num-workers", "0",
                                       "--save", str(save), "--device", "cpu"])
    with open(str(save / "mIoU.json")) as f:
        report = json.load(f)
    expected, _ = numpy_miou(os.path.join(pair.target_root, "labels"), str(save), str(cityscapes_named))
    assert list(report["IoU"]) == list(CITYSCAPES.names)
    assert report["mIoU"] == pytest.approx(expected, abs=1e-12)


def test_image_labels_from_a_file_need_no_target_labels_nor_thresholds(pairs, tmp_path):
    pair = pairs["gray"]
    entries = sorted(os.path.relpath(os.path.join(folder, name), pair.target_root).replace(os.sep, "/")
                     for folder, _, names in os.walk(os.path.join(pair.target_root, "images")) for name in names)
    weak = tmp_path / "weak.txt"
    weak.write_text("".join("{} road sky\n".format(entry) for entry in entries))
    assert train_weak_labels.main(custom_args(pair, tmp_path / "run", 1, "--use-weak", "--weak-label-file",
                                              str(weak))) == 0


def test_a_new_run_of_other_classes_is_refused_in_a_folder_with_a_run(pairs, tmp_path):
    pair = pairs["gray"]
    run = tmp_path / "run"
    assert train.main(custom_args(pair, run, 1, "--name", "first")) == 0
    binary = two_class_file(pair, tmp_path / "binary.json")
    args = custom_args(pair, run, 1, "--name", "second")
    args[args.index(pair.class_file)] = binary
    message = train.command_line(lambda: train.main(args))
    assert message.startswith("error: the run in {} (another --snapshot-dir starts a new one) was trained on the "
                              "class set streets5".format(run))


def test_name_cannot_take_a_benchmark_sources_snapshot_name(pairs, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.get_arguments(custom_args(pairs["gray"], tmp_path / "run", 1, "--name", "GTA5"))
    assert "--name GTA5: the snapshots of --source gta5 are named so" in capsys.readouterr().err


def test_evaluation_refuses_to_save_two_images_under_one_name(pairs, tmp_path):
    """A list naming a/0001.png and b/0001.png: evaluation writes predictions by file name, so it stops first."""
    import shutil
    from dataset.custom import CustomDataSet
    from utils.evaluation.cityscapes import evaluate
    pair = pairs["gray"]
    root = str(tmp_path / "target")
    shutil.copytree(pair.target_root, root)
    listing = tmp_path / "val.txt"
    os.rename(os.path.join(root, "images", "street_b", "0002.png"), os.path.join(root, "images", "street_b", "0001.png"))
    listing.write_text("images/street_a/0001.png\nimages/street_b/0001.png\n")
    images = CustomDataSet(root, str(listing), classes=pair.class_file, crop_size=(48, 32), with_labels=False)
    with pytest.raises(ValueError, match="images/street_a/0001.png and images/street_b/0001.png would both be saved"):
        evaluate(lambda batch: None, images, save_dir=str(tmp_path / "out"), num_workers=0, progress=False)


def test_the_thresholds_command_counts_a_custom_domains_labels(pairs, tmp_path):
    """The weak-label method's tau per class from a custom list, on pixel counts taken here with numpy."""
    from dataset.weak_labels import Thresholds, main as weak_labels_main, thresholds_from_counts
    from dataset.classes import load_class_file
    pair = pairs["gray"]
    out = str(tmp_path / "tau.json")
    text = printed(weak_labels_main, ["thresholds", pair.source_root, "--dataset", "custom", "--list",
                                      pair.source_list, "--classes", pair.class_file, "--out", out])
    spec, table, _ = class_file_mapping(pair.class_file)
    rows = []
    with open(pair.source_list) as f:
        for line in f:
            values = np.asarray(Image.open(os.path.join(pair.source_root, line.split()[1])))
            rows.append([sum(int((values == v).sum()) for v, t in table.items() if t == c)
                         for c in range(len(spec["classes"]))])
    assert "counted on {} labels at {}x{}".format(len(rows), values.shape[1], values.shape[0]) in text
    thresholds = Thresholds.from_file(out, load_class_file(pair.class_file))
    np.testing.assert_allclose(thresholds.tau, thresholds_from_counts(np.array(rows)), rtol=1e-12)
    with pytest.raises(SystemExit):
        weak_labels_main(["thresholds", pair.source_root, "--dataset", "custom"])

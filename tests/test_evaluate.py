"""``evaluate_cityscapes.py`` on a tiny synthetic Cityscapes: predictions, scores, snapshot choice.

The network is DeeplabMulti with seeded weights, so its predictions are poor but deterministic;
what matters is that the files, the table and the numbers are the ones a user would check, and
that the scores equal what ``compute_iou.py`` computes independently from the written PNGs.
"""
from PIL import Image

import contextlib
import filecmp
import glob
import io
import json
import math
import os
import re
import shutil

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import evaluate_cityscapes
import utils.evaluation.cityscapes
from compute_iou import compute_mIoU
from dataset.classes import CITYSCAPES, IMG_MEAN_BGR
from dataset.files import image_to_input
from dataset.synthetic import make_synthetic
from model import build_model
import model.deeplab_multi as deeplab_multi
from model.deeplab_multi import DeeplabMulti
from model.inference import SegmentationPredictor, fold_batchnorm, upsample_argmax
from tests.fixtures.seeded_weights import seeded_input
from tests.helpers import seeded_torch_state
from utils.demo.torch_writer import save_legacy
from utils.files.weights import WeightsError, load_weights

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

# The network sees half the label resolution, as the reference (1024x512 in, 2048x1024 labels):
# predictions must be upsampled to the ground truth's size.
IMAGE_SIZE = (256, 128)
NUM_VAL_IMAGES = 4  # two per city
NETWORK_INPUT = ["--input-size", "128,64", "--device", "cpu"]
RELATIVE_TOLERANCE = 1e-5


def paddle_name(torch_key):
    module, _, leaf = torch_key.rpartition(".")
    return module + "." + {"running_mean": "_mean", "running_var": "_variance"}.get(leaf, leaf)


def run_evaluation(*args, **options):
    """``python evaluate_cityscapes.py ARGS`` in this process; returns what it printed."""
    argv = list(NETWORK_INPUT) + ["--num-workers", str(options.get("num_workers", 0))] + list(args)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert evaluate_cityscapes.main(argv) == 0
    return printed.getvalue()


def val_images(cityscapes):
    return sorted(glob.glob(os.path.join(cityscapes, "leftImg8bit", "val", "*", "*_leftImg8bit.png")))


def gt_dir(cityscapes):
    return os.path.join(cityscapes, "gtFine", "val")


def written_pngs(save_dir):
    """{file name: pixels} of every PNG in a --save directory."""
    pngs = {}
    for path in sorted(glob.glob(os.path.join(save_dir, "*.png"))):
        with Image.open(path) as image:
            pngs[os.path.basename(path)] = np.asarray(image.convert("RGB") if image.mode == "P" else image)
    return pngs


def assert_same_predictions(save_dir, other_save_dir):
    ours, theirs = written_pngs(save_dir), written_pngs(other_save_dir)
    assert sorted(ours) == sorted(theirs)
    for name, pixels in ours.items():
        np.testing.assert_array_equal(pixels, theirs[name], err_msg=name)


def iou_table(stdout):
    """The per-class lines of the original's report, {class: percent}, and the mIoU line's value."""
    lines = [line for line in stdout.splitlines() if line.startswith("===>")]
    classes = [re.match(r"===>(\w+):\t(nan|[0-9.]+)$", line) for line in lines[:-1]]
    assert all(classes), lines
    miou = re.match(r"===> mIoU: ([0-9.]+)$", lines[-1])
    assert miou, lines[-1]
    return [(m.group(1), float(m.group(2))) for m in classes], float(miou.group(1))


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    _, root = make_synthetic(str(tmp_path_factory.mktemp("data")), num_source=1, num_target_train=1,
                             num_target_val=NUM_VAL_IMAGES, target_size=IMAGE_SIZE)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded DeeplabMulti weights saved as training saves them, plus a discriminator's."""
    folder = tmp_path_factory.mktemp("weights")
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    files = {}
    for seed in (0, 1):
        torch_state = seeded_torch_state(model, seed)
        model.set_state_dict({paddle_name(k): v for k, v in torch_state.items()})
        files[seed] = str(folder / "seed{}.pdparams".format(seed))
        paddle.save(model.state_dict(), files[seed])
        if seed == 0:
            files["pth"] = str(folder / "seed0.pth")
            save_legacy(torch_state, files["pth"])
    files["discriminator"] = str(folder / "D1.pdparams")
    paddle.save(build_model("FCDiscriminator", num_classes=CITYSCAPES.num_classes).state_dict(), files["discriminator"])
    return files


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, cityscapes, weights):
    """Seed-0 weights evaluated as a user would, default (inference) backend: (save dir, stdout)."""
    save = str(tmp_path_factory.mktemp("result") / "cityscapes")
    return save, run_evaluation("--restore-from", weights[0], "--data-dir", cityscapes, "--save", save)


@pytest.fixture(scope="module")
def dygraph_run(tmp_path_factory, cityscapes, weights):
    save = str(tmp_path_factory.mktemp("result_dygraph") / "cityscapes")
    return save, run_evaluation("--restore-from", weights[0], "--data-dir", cityscapes, "--save", save,
                                "--backend", "dygraph")


# ----------------------------------------------------------------- one model file


def test_writes_a_label_png_and_a_colour_png_for_every_val_image(file_run, cityscapes):
    save, _ = file_run
    images = val_images(cityscapes)
    assert len(images) == NUM_VAL_IMAGES

    for image_path in images:
        name = os.path.basename(image_path)[:-len(".png")]
        city = name.split("_")[0]
        with Image.open(os.path.join(gt_dir(cityscapes), city, name.replace("leftImg8bit", "gtFine_labelIds")
                                     + ".png")) as gt:
            gt_size = gt.size
        with Image.open(os.path.join(save, name + ".png")) as label:
            assert label.mode == "L" and label.size == gt_size == IMAGE_SIZE
            train_ids = np.asarray(label)
        assert train_ids.max() < CITYSCAPES.num_classes
        with Image.open(os.path.join(save, name + "_color.png")) as colour:
            np.testing.assert_array_equal(np.asarray(colour.convert("RGB")), CITYSCAPES.colours[train_ids])


def test_prints_the_per_class_table_and_saves_the_miou_of_the_written_files(file_run, cityscapes):
    save, stdout = file_run

    per_class, printed_miou = iou_table(stdout)
    from_files = compute_mIoU(gt_dir(cityscapes), save)

    assert [name for name, _ in per_class] == list(CITYSCAPES.names)
    for (name, printed), iou in zip(per_class, from_files.ious):
        assert (math.isnan(printed) and math.isnan(iou)) or printed == round(iou * 100, 2), name
    assert printed_miou == round(from_files.miou * 100, 2)
    with open(os.path.join(save, "mIoU.json")) as f:
        saved = json.load(f)
    assert abs(saved["mIoU"] - from_files.miou) <= 1e-12
    assert saved["num_images"] == NUM_VAL_IMAGES


def test_dygraph_and_inference_backends_write_identical_predictions(file_run, dygraph_run):
    assert_same_predictions(dygraph_run[0], file_run[0])


def test_pth_weights_with_worker_processes_give_the_same_predictions(dygraph_run, cityscapes, weights,
                                                                     tmp_path):
    save = str(tmp_path / "from_pth")

    stdout = run_evaluation("--restore-from", weights["pth"], "--data-dir", cityscapes, "--save", save,
                            "--backend", "dygraph", num_workers=2)

    assert "(PyTorch state dict)" in stdout
    assert_same_predictions(save, dygraph_run[0])


def test_fast_path_agrees_with_the_plain_model(weights):
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    load_weights(model, weights[0])
    model.eval()
    parameters_before = {name: value.numpy().copy() for name, value in model.state_dict().items()}
    batchnorms = [layer for layer in model.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    blocks = sum(deeplab_multi.resnet_blocks())  # the backbone this module builds
    assert len(batchnorms) == 1 + 3 * blocks + 4  # stem + 3 per bottleneck + 4 projection shortcuts
    x = seeded_input((1, 3, 128, 256), seed=1)
    with paddle.no_grad():
        plain = model(paddle.to_tensor(x))[1].numpy()
    plain_labels = upsample_argmax(plain, (256, 512))

    for backend in ("inference", "dygraph"):
        logits = SegmentationPredictor(model, backend)(x)

        assert logits.shape == plain.shape == (1, CITYSCAPES.num_classes, 17, 33)  # output stride 8, rounded up
        assert np.abs(logits - plain).max() / np.abs(plain).max() < RELATIVE_TOLERANCE, backend
        labels = upsample_argmax(logits, (256, 512))
        assert labels.shape == (1, 256, 512)
        np.testing.assert_array_equal(labels, plain_labels, err_msg=backend)

    folded = fold_batchnorm(model)
    assert not [layer for layer in folded.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    assert [layer for layer in model.sublayers() if isinstance(layer, nn.BatchNorm2D)] == batchnorms
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), parameters_before[name], err_msg=name)
    with paddle.no_grad():
        np.testing.assert_allclose(folded(paddle.to_tensor(x))[1].numpy(), plain, rtol=0,
                                   atol=RELATIVE_TOLERANCE * np.abs(plain).max())


# ----------------------------------------------------------------- a directory of snapshots


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory, weights):
    """A run's snapshot folder: two segmentation snapshots, a discriminator's and a log."""
    folder = str(tmp_path_factory.mktemp("snapshots") / "GTA2Cityscapes_multi")
    os.makedirs(folder)
    shutil.copyfile(weights[0], os.path.join(folder, "GTA5_5.pdparams"))
    shutil.copyfile(weights[1], os.path.join(folder, "GTA5_10.pdparams"))
    shutil.copyfile(weights["discriminator"], os.path.join(folder, "GTA5_10_D1.pdparams"))
    with open(os.path.join(folder, "train.log"), "w") as f:
        f.write("iter = 10 loss_seg1 = 2.9\n")
    return folder


@pytest.fixture(scope="module")
def snapshot_run(snapshot_dir, cityscapes):
    return run_evaluation("--restore-from", snapshot_dir, "--data-dir", cityscapes, "--backend", "dygraph")


@pytest.fixture(scope="module")
def file_mode_miou(file_run, cityscapes, weights, tmp_path_factory):
    """mIoU of each seed's weights, computed from the PNGs of a one-file evaluation."""
    seed1_save = str(tmp_path_factory.mktemp("result_seed1") / "cityscapes")
    run_evaluation("--restore-from", weights[1], "--data-dir", cityscapes, "--save", seed1_save,
                   "--backend", "dygraph")
    return {0: compute_mIoU(gt_dir(cityscapes), file_run[0]).miou,
            1: compute_mIoU(gt_dir(cityscapes), seed1_save).miou}


def test_snapshot_directory_picks_the_best_snapshot(snapshot_dir, snapshot_run, file_mode_miou):
    expected = {5: file_mode_miou[0], 10: file_mode_miou[1]}
    assert expected[5] != expected[10]
    best = max(expected, key=expected.get)

    assert "iteration\tmIoU" in snapshot_run
    for iteration, miou in expected.items():
        line = "{}\t{:.2f}".format(iteration, miou * 100) + ("\t<- best" if iteration == best else "")
        assert line in snapshot_run.splitlines()
    assert "best: GTA5_{}.pdparams".format(best) in snapshot_run
    assert filecmp.cmp(os.path.join(snapshot_dir, "GTA5_best.pdparams"),
                       os.path.join(snapshot_dir, "GTA5_{}.pdparams".format(best)), shallow=False)
    for iteration, miou in expected.items():
        with open(os.path.join(snapshot_dir, "GTA5_{}.eval.json".format(iteration))) as f:
            cached = json.load(f)
        assert abs(cached["mIoU"] - miou) <= 1e-12
        assert cached["environment"]["paddle"]["version"] == paddle.__version__  # what it was scored with
    environment_line = next(line for line in snapshot_run.splitlines() if line.startswith("environment: "))
    assert environment_line.endswith("; the self-test network (ADAPTSEGNET_SELF_TEST_NETWORK=1), not the real one")
    assert cached["environment"]["self_test_network"] is True
    assert not os.path.exists(os.path.join(snapshot_dir, "GTA5_10_D1.eval.json"))
    with open(os.path.join(snapshot_dir, "snapshots_mIoU.json")) as f:
        table = json.load(f)
    assert sorted(table["mIoU"]) == ["10", "5"] and table["best_iteration"] == best


def test_rerun_evaluates_only_the_new_snapshot(snapshot_dir, snapshot_run, cityscapes, weights, tmp_path,
                                               monkeypatch):
    run_dir = str(tmp_path / "GTA2Cityscapes_multi")
    shutil.copytree(snapshot_dir, run_dir)  # keeps the files' times, so the cached results still apply
    cache_files = [os.path.join(run_dir, "GTA5_{}.eval.json".format(it)) for it in (5, 10)]
    caches_before = [(open(path).read(), os.stat(path).st_mtime_ns) for path in cache_files]
    shutil.copyfile(weights[0], os.path.join(run_dir, "GTA5_15.pdparams"))
    evaluations = []

    def counting_evaluate(*args, **kwargs):
        evaluations.append(args)
        return real_evaluate(*args, **kwargs)

    real_evaluate = utils.evaluation.cityscapes.evaluate
    monkeypatch.setattr(utils.evaluation.cityscapes, "evaluate", counting_evaluate)

    stdout = run_evaluation("--restore-from", run_dir, "--data-dir", cityscapes, "--backend", "dygraph")

    assert len(evaluations) == 1
    assert "GTA5_5.pdparams: mIoU" in stdout and "GTA5_10.pdparams: mIoU" in stdout
    assert stdout.count("cached") == 2
    assert [(open(path).read(), os.stat(path).st_mtime_ns) for path in cache_files] == caches_before
    with open(os.path.join(run_dir, "snapshots_mIoU.json")) as f:
        table = json.load(f)["mIoU"]
    assert sorted(table, key=int) == ["5", "10", "15"]
    assert table["15"] == table["5"]  # the same weights


# ----------------------------------------------------------------- errors


def test_missing_ground_truth_file_is_named(cityscapes, weights, tmp_path):
    copy = str(tmp_path / "Cityscapes")
    shutil.copytree(cityscapes, copy)
    missing = sorted(glob.glob(os.path.join(gt_dir(copy), "*", "*_gtFine_labelIds.png")))[2]
    os.remove(missing)

    with pytest.raises(FileNotFoundError) as error:
        run_evaluation("--restore-from", weights[0], "--data-dir", copy, "--save", str(tmp_path / "out"))

    assert missing in str(error.value)


def test_discriminator_weights_are_refused_naming_the_keys(cityscapes, weights, tmp_path):
    with pytest.raises(WeightsError) as error:
        run_evaluation("--restore-from", weights["discriminator"], "--data-dir", cityscapes,
                       "--save", str(tmp_path / "out"))

    message = str(error.value)
    assert weights["discriminator"] in message
    assert "conv1.weight (file (64, 19, 4, 4), model (64, 3, 7, 7))" in message
    assert "not in the model: classifier.bias" in message
    assert not os.path.exists(str(tmp_path / "out"))


def test_directory_without_snapshots_lists_what_it_holds(cityscapes, weights, tmp_path):
    folder = str(tmp_path / "snapshots")
    os.makedirs(folder)
    shutil.copyfile(weights["discriminator"], os.path.join(folder, "GTA5_10_D1.pdparams"))
    open(os.path.join(folder, "train.log"), "w").close()

    with pytest.raises(FileNotFoundError) as error:
        run_evaluation("--restore-from", folder, "--data-dir", cityscapes)

    message = str(error.value)
    assert folder in message and "GTA5_<iteration>.pdparams" in message
    assert "GTA5_10_D1.pdparams" in message and "train.log" in message


def test_num_classes_other_than_the_class_sets_is_refused_naming_both(cityscapes, weights):
    with pytest.raises(ValueError, match="--num-classes 5: the class set cityscapes has 19 classes"):
        run_evaluation("--restore-from", weights[0], "--data-dir", cityscapes, "--num-classes", "5")


def test_without_ground_truth_only_predictions_are_written(cityscapes, weights, dygraph_run, tmp_path):
    images_only = str(tmp_path / "Cityscapes")
    shutil.copytree(os.path.join(cityscapes, "leftImg8bit"), os.path.join(images_only, "leftImg8bit"))
    save = str(tmp_path / "out")

    stdout = run_evaluation("--restore-from", weights[0], "--data-dir", images_only, "--save", save,
                            "--backend", "dygraph")

    assert "no ground truth" in stdout
    assert "===>" not in stdout
    assert not os.path.exists(os.path.join(save, "mIoU.json"))
    assert_same_predictions(save, dygraph_run[0])


def test_an_ensemble_predicts_the_argmax_of_the_weighted_sum_of_its_models_logits(cityscapes, weights, tmp_path):
    """ADVENT's AdvEnt + MinEnt: two models' conv5 logits weighted 0.3 / 0.7 (summed in numpy here),
    upsampled to the label's size as evaluation does, argmax."""
    save = str(tmp_path / "ensemble")
    out = run_evaluation("--restore-from", weights[0], weights[1], "--model-weights", "0.3", "0.7",
                         "--data-dir", cityscapes, "--save", save, "--backend", "dygraph")
    assert "ensemble of 2 models, weights 0.3 0.7" in out
    networks = []
    for seed in (0, 1):
        net = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
        net.set_state_dict(paddle.load(weights[seed]))
        networks.append(SegmentationPredictor(net, backend="dygraph"))
    written = written_pngs(save)
    differ_from_each_model = 0
    for path in val_images(cityscapes):
        batch = image_to_input(Image.open(path).convert("RGB"), (128, 64), IMG_MEAN_BGR)[None]
        logits = [predictor(batch) for predictor in networks]
        label_size = Image.open(path).size[::-1]
        expected = upsample_argmax(np.float32(0.3) * logits[0] + np.float32(0.7) * logits[1], label_size)[0]
        name = os.path.basename(path)
        ids = written[name]
        assert np.mean(ids == expected) >= 0.9999, name
        differ_from_each_model += int(any(not np.array_equal(upsample_argmax(l, label_size)[0], expected)
                                          for l in logits))
    assert differ_from_each_model  # the ensemble is neither model alone

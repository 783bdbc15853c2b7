"""``predict.py`` on your own images: every output at each image's own size, the same train ids as an
independent computation and as ``evaluate_cityscapes.py``, unreadable images named and skipped, and
a run stopped midway continued without writing anything twice.

The network is DeeplabMulti with seeded weights (poor but deterministic predictions) at a small
input size; the images are made here with sizes and modes a user's folder may hold.
"""
from PIL import Image

import contextlib
import glob
import io
import json
import math
import os
import shutil

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import evaluate_cityscapes
import predict
from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, class_set_from_dict
from dataset.synthetic import make_synthetic
from model.deeplab_multi import DeeplabMulti
from model.restore import resolve_restore
from tests.helpers import seeded_torch_state
from utils.files.weights import load_weights
from utils.files import atomic
from utils.prediction import PredictionError
from utils.prediction.inputs import InputImage, find_images
from utils.prediction.outputs import ADDED, CONFIDENCE, ENTROPY, LABEL_IDS, PSEUDO_COLOR, TRAIN_IDS, Outputs, \
    label_values_table
from utils.prediction.pipeline import predict_images
from utils.prediction.predictor import choose_classes, load_segmenter

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

INPUT_SIZE = (128, 64)  # (W, H) the network sees; the images are predicted at their own sizes
SMALL = ["--input-size", "128,64", "--device", "cpu", "--no-progress"]
# name in the folder -> (width, height, PIL mode)
PHOTOS = {"street.png": (100, 75, "RGB"), "portrait/tall.jpg": (48, 64, "RGB"), "grey.png": (40, 30, "L"),
          "rgba.png": (33, 21, "RGBA"), "palette.png": (20, 10, "P"), "dot.png": (1, 1, "RGB"),
          "CAPS.JPEG": (37, 50, "RGB")}
EVERY_OUTPUT = ("train ids", "pseudo colour", "added", "label ids", "confidence", "entropy")


def stem(name):
    return os.path.splitext(name)[0]


def make_photo(path, width, height, mode, seed):
    """A smooth picture (random blobs) rather than noise: JPEG keeps it close to what was drawn."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    if mode == "RGBA":
        picture = picture.convert("RGBA")
        picture.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
    elif mode == "P":
        picture = picture.quantize(16)
    else:
        picture = picture.convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture.save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("photos"))
    for seed, (name, (width, height, mode)) in enumerate(sorted(PHOTOS.items())):
        make_photo(os.path.join(folder, name), width, height, mode, seed)
    with open(os.path.join(folder, "notes.md"), "w") as f:
        f.write("not an image: ignored\n")
    return folder


@pytest.fixture(scope="module")
def broken_folder(photos, tmp_path_factory):
    """The photos and a PNG cut short, as a copy interrupted mid-file leaves it."""
    folder = str(tmp_path_factory.mktemp("with_broken") / "photos")
    shutil.copytree(photos, folder)
    with open(os.path.join(photos, "street.png"), "rb") as f:
        data = f.read()
    with open(os.path.join(folder, "broken.png"), "wb") as f:
        f.write(data[:len(data) // 2])
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    state = seeded_torch_state(model, 0)
    model.set_state_dict({k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
                          for k, v in state.items()})
    path = str(tmp_path_factory.mktemp("weights") / "seeded.pdparams")
    paddle.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def segmenter(weights):
    """The dygraph segmenter, made once: what a notebook holds between cells."""
    return load_segmenter(resolve_restore(weights), CITYSCAPES, input_size=INPUT_SIZE, backend="dygraph",
                          log=lambda line: None)


def run_predict(*args):
    """``python predict.py ARGS``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = predict.main(list(args) + SMALL)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_run(broken_folder, weights, tmp_path_factory):
    """Every output, Paddle Inference backend, on the folder holding a broken image."""
    save = str(tmp_path_factory.mktemp("cli") / "predict")
    status, out, err = run_predict("--restore-from", weights, "--images", broken_folder, "--save", save,
                                   "--label-ids", "--confidence", "--entropy")
    return save, status, out, err


def read(path):
    with Image.open(path) as picture:
        picture.load()
        return picture


def pixels(path):
    return np.asarray(read(path))


def every_file(folder):
    return sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if os.path.isfile(p))


def upsample_bilinear(logits, height, width):
    """numpy float64 bilinear resize of CxHxW with align_corners=True: the corners of both grids meet."""
    def axis_weights(n_in, n_out):
        where = np.linspace(0.0, n_in - 1, n_out) if n_out > 1 else np.zeros(1)
        low = np.floor(where).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, where - low

    logits = logits.astype(np.float64)
    low, high, frac = axis_weights(logits.shape[1], height)
    rows = logits[:, low] * (1 - frac)[:, None] + logits[:, high] * frac[:, None]
    low, high, frac = axis_weights(logits.shape[2], width)
    return rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac


def independent_prediction(network, path):
    """(train ids, confidence, entropy) of one image, computed here: the image resized as evaluation
    resizes it, the dygraph network, upsampling and softmax in numpy; and the train ids of Paddle's
    own bilinear upsampling, which evaluation uses."""
    with Image.open(path) as picture:
        rgb = picture.convert("RGB")
    resized = np.asarray(rgb.resize(INPUT_SIZE, Image.BICUBIC), dtype=np.float32)
    network_input = (resized[:, :, ::-1] - IMG_MEAN_BGR).transpose(2, 0, 1)[None]
    logits = network(np.ascontiguousarray(network_input))
    paddle_ids = paddle.argmax(F.interpolate(paddle.to_tensor(logits), size=[rgb.height, rgb.width],
                                             mode="bilinear", align_corners=True), axis=1)[0].numpy()
    up = upsample_bilinear(logits[0], rgb.height, rgb.width)
    probabilities = np.exp(up - up.max(axis=0))
    probabilities /= probabilities.sum(axis=0)
    entropy = -(probabilities * np.log(probabilities)).sum(axis=0) / math.log(up.shape[0])
    return paddle_ids, up.argmax(axis=0), probabilities.max(axis=0), entropy


# ----------------------------------------------------------------------------- the command line


def test_writes_every_output_at_each_images_own_size(cli_run, photos):
    save, status, out, err = cli_run
    assert status == 1  # because of broken.png: see the next test
    outputs = Outputs(save, CITYSCAPES, label_ids=True, confidence=True, entropy=True)
    for name, (width, height, _) in PHOTOS.items():
        assert outputs.missing(stem(name)) == []
        modes = {kind: read(outputs.path(kind, stem(name))).mode for kind in EVERY_OUTPUT}
        assert modes == {TRAIN_IDS: "L", PSEUDO_COLOR: "P", ADDED: "RGB", LABEL_IDS: "L", CONFIDENCE: "L",
                         ENTROPY: "L"}, name
        for kind in EVERY_OUTPUT:
            assert read(outputs.path(kind, stem(name))).size == (width, height), (name, kind)
    # Each output kind in its folder, named after the input's path below the folder.
    assert os.path.isfile(os.path.join(save, "portrait", "tall.png"))
    assert os.path.isfile(os.path.join(save, "added_prediction", "CAPS.jpg"))
    assert not glob.glob(os.path.join(save, "**", "notes*"), recursive=True)
    assert "{} images: {} predicted".format(len(PHOTOS) + 1, len(PHOTOS)) in out


def test_an_unreadable_image_is_named_skipped_and_listed_at_the_end(cli_run, broken_folder):
    save, status, out, err = cli_run
    broken = os.path.join(broken_folder, "broken.png")
    assert status == 1
    assert "skipped: cannot read image {}: image file is truncated".format(broken) in out.splitlines()
    assert out.splitlines()[-2:] == ["unreadable images (skipped; no outputs):", "  " + broken]
    assert not glob.glob(os.path.join(save, "**", "broken*"), recursive=True)


def test_the_palette_png_holds_the_class_colours(cli_run):
    save = cli_run[0]
    picture = read(os.path.join(save, "pseudo_color_prediction", "street.png"))
    palette = np.asarray(picture.getpalette()[:3 * CITYSCAPES.num_classes]).reshape(-1, 3)
    np.testing.assert_array_equal(palette, CITYSCAPES.colours)
    np.testing.assert_array_equal(np.asarray(picture.convert("RGB")),
                                  CITYSCAPES.colorize(pixels(os.path.join(save, "street.png"))))


def test_label_ids_are_the_cityscapes_label_ids_of_the_train_ids(cli_run):
    save = cli_run[0]
    label_id_of = {train_id: label_id for label_id, train_id in CITYSCAPES.label_values.items()}
    assert label_id_of[0] == 7 and label_id_of[18] == 33  # road, bicycle
    for name in PHOTOS:
        train_ids = pixels(os.path.join(save, stem(name) + ".png"))
        expected = np.vectorize(label_id_of.get)(train_ids)
        np.testing.assert_array_equal(pixels(os.path.join(save, "label_ids", stem(name) + ".png")), expected)


def test_added_prediction_blends_the_image_and_the_colours(cli_run, photos):
    save = cli_run[0]
    rgb = np.asarray(Image.open(os.path.join(photos, "street.png")).convert("RGB"), dtype=np.float64)
    colours = CITYSCAPES.colorize(pixels(os.path.join(save, "street.png")))
    blended = pixels(os.path.join(save, "added_prediction", "street.jpg")).astype(np.float64)

    def error(alpha):
        return np.abs(blended - (alpha * rgb + (1 - alpha) * colours)).mean()
    # --alpha 0.6 is the image's weight; JPEG's loss (at the many class borders of a random model) is a few levels.
    assert error(0.6) < 4 and error(0.6) < error(0.4) / 2


@pytest.mark.parametrize("backend", ["inference", "dygraph"])
def test_train_ids_confidence_and_entropy_equal_an_independent_computation(backend, cli_run, segmenter, photos,
                                                                        tmp_path):
    if backend == "inference":
        save = cli_run[0]
    else:
        save = str(tmp_path / "dygraph")
        outputs = Outputs(save, CITYSCAPES, confidence=True, entropy=True)
        assert predict_images(segmenter, find_images([photos]), outputs, progress=False).ok
    for name in PHOTOS:
        paddle_ids, numpy_ids, confidence, entropy = independent_prediction(segmenter.network,
                                                                            os.path.join(photos, name))
        written = pixels(os.path.join(save, stem(name) + ".png"))
        np.testing.assert_array_equal(written, paddle_ids, err_msg=name)
        np.testing.assert_array_equal(written, numpy_ids, err_msg=name)
        for kind, expected in (("confidence", confidence), ("entropy", entropy)):
            stored = pixels(os.path.join(save, kind, stem(name) + ".png")).astype(np.float64)
            # rounded to 0..255; a value near a rounding boundary may go either way in float32
            assert np.abs(stored - expected * 255).max() <= 0.51, (name, kind)


def test_a_cityscapes_image_gets_the_train_ids_evaluation_writes(weights, segmenter, tmp_path):
    _, cityscapes = make_synthetic(str(tmp_path / "data"), num_source=1, num_target_train=1, num_target_val=2,
                                   target_size=(256, 128))
    evaluated = str(tmp_path / "evaluated")
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate_cityscapes.main(["--restore-from", weights, "--data-dir", cityscapes, "--save", evaluated,
                                         "--input-size", "128,64", "--device", "cpu", "--num-workers", "0",
                                         "--backend", "dygraph"]) == 0
    val = os.path.join(cityscapes, "leftImg8bit", "val")
    images = find_images([val])
    assert len(images) == 2 and all(image.name.count("/") == 1 for image in images)  # <city>/<file name>
    predicted = str(tmp_path / "predicted")
    predict_images(segmenter, images, Outputs(predicted, CITYSCAPES), progress=False)
    for image in images:
        file_name = image.name.split("/")[-1] + ".png"
        np.testing.assert_array_equal(pixels(os.path.join(predicted, image.name + ".png")),
                                      pixels(os.path.join(evaluated, file_name)), err_msg=file_name)


def error_lines(*args):
    status, out, err = run_predict(*args)
    assert status == 2 and "images/s" not in out
    return err.splitlines()


def test_missing_paths_an_empty_folder_and_a_save_inside_an_input_are_one_line_each(photos, weights, tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(os.path.join(empty, "nothing_here"))
    missing = str(tmp_path / "no_such_folder")
    lines = error_lines("--restore-from", weights, "--images", empty, missing, photos, "--save",
                        os.path.join(photos, "predictions"))
    assert lines == [
        "error: --images {}: no images (*.png, *.jpg, *.jpeg, *.bmp, *.webp, *.tif, *.tiff) in this folder or below "
        "it".format(empty),
        "error: --images {}: no such file or folder".format(missing),
        "error: --save {}: inside the input folder {}; the next run would take the outputs for images to predict: "
        "choose a --save outside it".format(os.path.join(photos, "predictions"), photos)]
    assert not os.path.exists(os.path.join(photos, "predictions"))
    assert error_lines("--restore-from", weights, "--images", photos, "--save", photos)[0].startswith(
        "error: --save {}: inside the input folder".format(photos))


def test_flags_at_odds_with_the_model_are_refused_before_the_network(photos, weights, tmp_path):
    save = str(tmp_path / "out")
    assert error_lines("--restore-from", weights, "--images", photos, "--save", save, "--num-classes", "16") == [
        "error: --num-classes 16: the class set cityscapes has 19 classes (drop --num-classes: it follows the "
        "class set)"]
    assert error_lines("--restore-from", weights, "--images", photos, "--save", save, "--backend", "onnx") == [
        "error: --backend onnx runs an exported model: export {} first (README: Export for deployment), or use "
        "--backend inference".format(weights)]
    assert error_lines("--restore-from", str(tmp_path / "gone.pdparams"), "--images", photos, "--save", save) == [
        "error: --restore-from {}: no such file or directory".format(tmp_path / "gone.pdparams")]
    assert not os.path.exists(save)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A second model (other seeded weights) for an ensemble."""
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    model.set_state_dict({k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
                          for k, v in seeded_torch_state(model, 1).items()})
    path = str(tmp_path_factory.mktemp("other_weights") / "other.pdparams")
    paddle.save(model.state_dict(), path)
    return path


def test_an_ensemble_predicts_the_argmax_of_the_weighted_sum_of_its_models_logits(photos, weights, other_weights,
                                                                                   tmp_path):
    """ADVENT's AdvEnt + MinEnt at test time: each model's logits (its own dygraph network here),
    weighted 0.3 / 0.7 and summed in numpy, upsampled in numpy; the confidence from the same sum."""
    save = str(tmp_path / "ensemble")
    status, out, err = run_predict("--restore-from", weights, other_weights, "--model-weights", "0.3", "0.7",
                                   "--images", photos, "--save", save, "--backend", "dygraph", "--confidence")
    assert status == 0, err
    assert "ensemble of 2 models, weights 0.3 0.7" in out
    networks = []
    for path in (weights, other_weights):
        net = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
        load_weights(net, path)
        net.eval()
        networks.append(net)

    def weighted_sum(network_input):
        with paddle.no_grad():
            logits = [net(paddle.to_tensor(network_input))[-1].numpy() for net in networks]
        return np.float32(0.3) * logits[0] + np.float32(0.7) * logits[1]

    unlike_a_member = 0
    for name in sorted(PHOTOS):
        _, ids, most, _ = independent_prediction(weighted_sum, os.path.join(photos, name))
        written = pixels(os.path.join(save, stem(name) + ".png"))
        assert np.mean(written == ids) >= 0.999, name
        stored = pixels(os.path.join(save, "confidence", stem(name) + ".png")).astype(np.float64)
        assert np.abs(stored - most * 255).max() <= 0.51, name
        _, first, _, _ = independent_prediction(lambda x: networks[0](paddle.to_tensor(x))[-1].numpy(),
                                                 os.path.join(photos, name))
        unlike_a_member += int(not np.array_equal(first, ids))
    assert unlike_a_member  # the ensemble is not its first model alone


def test_an_ensemble_of_an_export_or_with_weights_miscounted_is_refused(photos, weights, other_weights, tmp_path):
    save = str(tmp_path / "out")
    assert error_lines("--restore-from", weights, other_weights, "--model-weights", "1", "--images", photos,
                       "--save", save) == [
        "error: --model-weights: 1 weights for 2 models; give one per --restore-from"]
    assert error_lines("--restore-from", weights, "--model-weights", "1", "--images", photos, "--save", save) == [
        "error: --model-weights weighs the models of an ensemble: give several --restore-from"]
    assert not os.path.exists(save)


def test_a_save_folder_of_other_settings_is_refused(cli_run, broken_folder, weights):
    save = cli_run[0]
    [line] = error_lines("--restore-from", weights, "--images", broken_folder, "--save", save, "--alpha", "0.5")
    assert line == ("error: --save {}: holds the outputs of other settings (alpha differ: see {}); give --overwrite "
                    "to replace them, or another --save".format(save, os.path.join(save, "prediction_settings.json")))


# ----------------------------------------------------------------------------- stopping and starting again


class CountingWrites(object):
    """atomic_write that records the paths written, and dies like a killed process on write number ``die_at``."""

    def __init__(self, die_at=None):
        self.paths, self.die_at = [], die_at

    def __call__(self, path, write):
        if self.die_at is not None and len(self.paths) + 1 == self.die_at:
            raise KeyboardInterrupt
        atomic.atomic_write(path, write)
        self.paths.append(path)


@pytest.fixture
def counting(monkeypatch):
    def install(die_at=None):
        writes = CountingWrites(die_at)
        monkeypatch.setattr("utils.prediction.outputs.atomic_write", writes)
        return writes
    return install


def test_a_run_stopped_midway_continues_with_only_the_missing_files(segmenter, photos, weights, tmp_path, counting):
    save = str(tmp_path / "predict")
    images = find_images([photos])
    outputs = Outputs(save, CITYSCAPES, confidence=True)
    settings = outputs.settings(resolve_restore(weights), "DeeplabMulti", INPUT_SIZE)
    outputs.begin(settings)
    every = sorted(outputs.path(kind, image.name) for image in images for kind in outputs.kinds)

    dying = counting(die_at=10)  # the process dies while writing the third image's files
    with pytest.raises(KeyboardInterrupt):
        predict_images(segmenter, images, outputs, progress=False)
    assert 0 < len(dying.paths) < len(every)
    before = {path: os.stat(path).st_mtime_ns for path in every if os.path.isfile(path)}
    assert sorted(before) == sorted(dying.paths)
    # What a killed writer leaves: a temporary file beside the one it was writing.
    leftover = os.path.join(save, ".street.png.x1y2z3.tmp")
    with open(leftover, "wb") as f:
        f.write(b"half a png")
    os.utime(leftover, (1, 1))

    outputs.check_settings(settings)
    outputs.begin(settings)
    again = counting()
    summary = predict_images(segmenter, images, outputs, progress=False, num_workers=0)
    assert sorted(again.paths) == sorted(set(every) - set(before))  # nothing written twice
    assert all(os.path.isfile(path) for path in every) and not os.path.exists(leftover)
    assert {path: os.stat(path).st_mtime_ns for path in before} == before
    complete_before = sum(1 for image in images if all(outputs.path(k, image.name) in before for k in outputs.kinds))
    assert (summary.predicted, summary.already_done) == (len(images) - complete_before, complete_before)

    # A third run finds everything written; --overwrite writes every file again.
    assert predict_images(segmenter, images, outputs, progress=False).predicted == 0
    overwrite = counting()
    redone = predict_images(segmenter, images, outputs, overwrite=True, progress=False)
    assert redone.predicted == len(images)
    assert sorted(overwrite.paths) == every


def test_an_output_asked_for_later_is_added_without_rewriting_the_others(segmenter, photos, tmp_path, counting):
    images = find_images([os.path.join(photos, "street.png")])
    save = str(tmp_path / "predict")
    predict_images(segmenter, images, Outputs(save, CITYSCAPES), progress=False)
    writes = counting()
    summary = predict_images(segmenter, images, Outputs(save, CITYSCAPES, entropy=True), progress=False)
    assert summary.predicted == 1 and writes.paths == [os.path.join(save, "entropy", "street.png")]


def test_strict_stops_at_the_first_unreadable_image(segmenter, broken_folder, tmp_path):
    images = find_images([broken_folder])
    assert [image.name for image in images][:2] == ["CAPS", "broken"]  # sorted: the broken one comes second
    with contextlib.redirect_stdout(io.StringIO()):
        summary = predict_images(segmenter, images, Outputs(str(tmp_path), CITYSCAPES), strict=True,
                                 progress=False)
    assert summary.stopped and summary.predicted == 1 and len(summary.unreadable) == 1


# ----------------------------------------------------------------------------- inputs and class sets


def test_a_list_file_names_images_relative_to_its_folder(photos, tmp_path):
    listed = tmp_path / "lists" / "test.txt"
    listed.parent.mkdir()
    outside = os.path.join(photos, "street.png")
    shutil.copy(os.path.join(photos, "grey.png"), str(tmp_path / "lists" / "grey.png"))
    listed.write_text("grey.png\n\n{} labels/street.png\n".format(outside))  # PaddleSeg's "image label" lines too
    assert find_images([str(listed)]) == [
        InputImage(os.path.join(str(tmp_path / "lists"), "grey.png"), "grey"), InputImage(outside, "street")]
    listed.write_text("grey.png\nmissing.png\n")
    with pytest.raises(PredictionError, match=r"test.txt line 2: no such image .*missing.png"):
        find_images([str(listed)])


def test_two_images_written_to_the_same_name_are_refused(photos, tmp_path):
    shutil.copy(os.path.join(photos, "street.png"), str(tmp_path / "street.jpg"))
    images = find_images([photos, str(tmp_path / "street.jpg")])
    with pytest.raises(PredictionError, match="street.png and .*street.jpg would both be written as"):
        Outputs(str(tmp_path / "out"), CITYSCAPES).check_names(images)


def test_label_ids_of_a_class_with_several_values_are_its_smallest(tmp_path):
    classes = class_set_from_dict({"classes": [{"name": "road", "values": [9, 3]}, {"name": "grass", "values": [300]}]},
                                  "classes.json")
    table, note = label_values_table(classes)
    assert table.dtype == np.uint16 and list(table[:2]) == [3, 300]  # 16-bit PNGs when a value exceeds 255
    assert note == "--label-ids: 1 classes have several label values; each is written as its smallest: road (3, 9)"
    no_value = class_set_from_dict({"classes": [{"name": "road"}, {"name": "sky", "values": []}]}, "classes.json")
    with pytest.raises(PredictionError, match="classes sky have no label value"):
        label_values_table(no_value)


def test_the_record_beside_a_model_decides_the_classes(tmp_path):
    mine = class_set_from_dict({"name": "roads", "classes": ["road", "background"]}, "classes.json")
    assert choose_classes(None) is CITYSCAPES
    assert choose_classes(CITYSCAPES.derive("synthia").record()) is CITYSCAPES
    assert choose_classes(mine.record()).names == ("road", "background")
    class_file = tmp_path / "classes.json"
    class_file.write_text(json.dumps({"name": "roads", "classes": ["road", "sky"]}))
    with pytest.raises(ValueError, match="was trained on the class set roads"):
        choose_classes(mine.record(), str(class_file), what="model.pdparams")


def onnx_available():
    from model.export import ExportError, onnx_converter
    try:
        import onnxruntime  # noqa: F401
        onnx_converter()
    except (ImportError, ExportError):
        return False
    return True


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """The seeded weights exported with their probabilities, for the network's input size (and as ONNX
    when paddle2onnx and onnxruntime are installed)."""
    from model.export import export_model
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    load_weights(model, weights)
    directory = str(tmp_path_factory.mktemp("export") / "seeded")
    with contextlib.redirect_stdout(io.StringIO()):
        export_model(model, directory, CITYSCAPES, output_op="softmax",
                     input_shape=[1, 3, INPUT_SIZE[1], INPUT_SIZE[0]], onnx=onnx_available())
    return directory


@pytest.mark.parametrize("backend", ["inference", "onnx"])
def test_an_exported_model_predicts_what_its_weights_predict(backend, exported, cli_run, photos, tmp_path):
    if backend == "onnx" and not os.path.isfile(os.path.join(exported, "model.onnx")):
        pytest.skip("ONNX Runtime and paddle2onnx (for this Paddle) are not installed")
    save = str(tmp_path / "out")
    status, out, err = run_predict("--restore-from", exported, "--images", photos, "--save", save, "--backend", backend,
                                   "--confidence")
    assert status == 0, err
    assert "exported model: {}".format(exported) in out.splitlines()
    differ = pixels_seen = 0
    for name in PHOTOS:
        ours = pixels(os.path.join(save, stem(name) + ".png"))
        from_weights = pixels(os.path.join(cli_run[0], stem(name) + ".png"))
        assert ours.shape == from_weights.shape, name
        differ += int((ours != from_weights).sum())
        pixels_seen += ours.size
        confidence = pixels(os.path.join(save, "confidence", stem(name) + ".png")).astype(int)
        assert np.abs(confidence - pixels(os.path.join(cli_run[0], "confidence", stem(name) + ".png"))).mean() < 3
    # Close, not equal: an export of a fixed input size upsamples twice (its graph the logits to the input
    # size, then ExportedModel the probabilities to the image's), evaluation once (the logits to the image's).
    assert differ <= 0.01 * pixels_seen


def test_what_an_exported_model_cannot_give_is_refused(exported, weights, photos, tmp_path):
    save = str(tmp_path / "out")
    assert error_lines("--restore-from", exported, "--images", photos, "--save", save, "--entropy") == [
        "error: --entropy: {} is an exported model, which gives train ids and the confidence only; predict with its "
        "weights for the entropy".format(exported)]
    assert error_lines("--restore-from", exported, "--images", photos, "--save", save, "--backend", "dygraph") == [
        "error: --backend dygraph: {} is an exported model (a static graph); use --backend inference or onnx, or "
        "give the weights".format(exported)]
    with pytest.raises(PredictionError, match="was exported for 128x64; drop --input-size"):
        load_segmenter(resolve_restore(exported), CITYSCAPES, input_size=(64, 32))
    assert error_lines("--restore-from", weights, exported, "--images", photos, "--save", save) == [
        "error: --restore-from: an ensemble takes weights; {} is an exported model (give the weights it was "
        "exported from)".format(exported)]

"""``export.py``: a trained network written as PaddleSeg's deployment folder, and
``model.export.ExportedModel`` running it on images of any size.

The network is DeeplabMulti with seeded weights (poor but deterministic predictions) of a class set
of its own, exported for a small input; what is checked is what a deployment relies on: the files
and deploy.yaml, that deploy.yaml's preprocessing is this project's, that Paddle Inference (and ONNX
Runtime) on the export predict what the dynamic graph predicts for the same network, and that the
default export, read as PaddleSeg's deploy tools read deploy.yaml, predicts what evaluation scored
on images of any size and mode.
"""
from PIL import Image

import argparse
import contextlib
import io
import os
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

import export
import model.export as exporting
from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, ClassSet
from dataset.files import image_to_input
from model.deeplab_multi import DeeplabMulti, DeeplabMulti4
from model.export import ExportError, ExportedModel
from model.inference import SegmentationPredictor, upsample_argmax
from model.restore import resolve_restore
from tests.helpers import seeded_torch_state
from utils.files.snapshots import write_class_record

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

CLASSES = ClassSet("roads", ("road", "car", "sky", "person"))
INPUT_SIZE = (64, 48)  # (W, H) of the fixed-size exports
# name -> (width, height): odd sizes, and a portrait one
IMAGES = {"landscape": (100, 75), "portrait": (48, 64)}
AGREEMENT = 0.999  # share of pixels on which the export and the dynamic graph must agree
DEPLOY_KEYS = {"model", "params", "transforms", "input_shape", "output_op", "output_dtype"}
EVALUATION_SIZE = (96, 48)  # (W, H) the default exports resize to, as evaluation's 1024,512 (kept small here)
# name -> (width, height, how it is saved): what users feed a deployed model
ODD_IMAGES = {"photo.jpg": (1000, 750, "RGB"), "grey.png": (480, 640, "L"), "cutout.png": (800, 400, "RGBA"),
              "frame.png": (2048, 1024, "RGB"), "dot.png": (1, 1, "RGB")}
SMALL = ["--device", "cpu"]


def onnx_missing():
    """Why model.onnx cannot be written and run here, or None when it can."""
    try:
        exporting.onnx_converter()
        import onnxruntime  # noqa: F401
    except (ExportError, ImportError) as error:
        return str(error)
    return None


ONNX_MISSING = onnx_missing()


def run_export(*args):
    """``python export.py ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = export.main(list(args) + SMALL)
    return status, out.getvalue(), err.getvalue()


def picture(width, height, seed):
    """A smooth RGB picture (random blobs), closer to a photo than noise."""
    rng = np.random.default_rng(seed)
    blobs = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(blobs).resize((width, height), Image.BILINEAR))


@pytest.fixture(scope="module")
def images():
    return {name: picture(width, height, seed) for seed, (name, (width, height)) in enumerate(sorted(IMAGES.items()))}


@pytest.fixture(scope="module")
def network():
    model = DeeplabMulti(num_classes=CLASSES.num_classes)
    state = seeded_torch_state(model, 0)
    model.set_state_dict({k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
                          for k, v in state.items()})
    model.eval()
    return model


@pytest.fixture(scope="module")
def weights(network, tmp_path_factory):
    """A run's best snapshot with the run's class record beside it."""
    run = tmp_path_factory.mktemp("run")
    paddle.save(network.state_dict(), str(run / "GTA5_best.pdparams"))
    write_class_record(str(run), CLASSES)
    return str(run / "GTA5_best.pdparams")


@pytest.fixture(scope="module")
def exports(weights, tmp_path_factory):
    """{(output op, fixed size?): export folder}: every output op at INPUT_SIZE (with model.onnx
    when paddle2onnx is installed), and argmax at any size."""
    root = tmp_path_factory.mktemp("exports")
    folders = {}
    for output_op, fixed in [(op, True) for op in exporting.OUTPUT_OPS] + [("argmax", False)]:
        folder = str(root / "{}_{}".format(output_op, "fixed" if fixed else "any"))
        args = ["--restore-from", os.path.dirname(weights), "--save-dir", folder, "--output-op", output_op]
        if fixed:
            args += ["--input-shape", "{},{}".format(*INPUT_SIZE)]
            args += [] if ONNX_MISSING else ["--onnx"]
        else:
            args += ["--any-size"]
        status, out, err = run_export(*args)
        assert status == 0, err
        assert "exported to {}".format(os.path.abspath(folder)) in out
        folders[output_op, fixed] = folder
    return folders


def dygraph_prediction(network, rgb, output_op, input_size):
    """(train ids, confidence or None) the export should give for ``rgb``, computed independently
    with the dynamic graph: evaluation's preprocessing and network (BN folded), then what the
    graph's output op and ExportedModel's way back to the image's size do."""
    height, width = rgb.shape[:2]
    size = input_size or (width, height)
    logits = SegmentationPredictor(network, backend="dygraph")(
        image_to_input(Image.fromarray(rgb), size, IMG_MEAN_BGR)[None])
    if output_op == "argmax":
        train_ids = upsample_argmax(logits, (size[1], size[0]))[0]
        return np.asarray(Image.fromarray(train_ids).resize((width, height), Image.NEAREST)), None
    with paddle.no_grad():
        scores = paddle.to_tensor(logits)
        if output_op == "softmax":
            up = F.interpolate(scores, size=[size[1], size[0]], mode="bilinear", align_corners=True)
            scores = F.interpolate(F.softmax(up, axis=1), size=[height, width], mode="bilinear", align_corners=True)
            probabilities = scores
        else:
            scores = F.interpolate(scores, size=[height, width], mode="bilinear", align_corners=True)
            probabilities = F.softmax(scores, axis=1)
        return paddle.argmax(scores, axis=1)[0].numpy().astype(np.uint8), paddle.max(probabilities, axis=1)[0].numpy()


def agreement(train_ids, reference):
    assert train_ids.shape == reference.shape and train_ids.dtype == np.uint8
    return float(np.mean(train_ids == reference))


def test_export_writes_paddlesegs_deployment_folder(exports):
    program = "model.pdmodel" if paddle.__version__.startswith("2.") else "model.json"
    for (output_op, fixed), folder in exports.items():
        files = set(os.listdir(folder))
        assert {program, "model.pdiparams", "deploy.yaml", "class_set.json"} <= files
        assert ("model.onnx" in files) == (fixed and not ONNX_MISSING)
        with open(os.path.join(folder, "deploy.yaml")) as handle:
            deploy = yaml.safe_load(handle)["Deploy"]
        assert set(deploy) == DEPLOY_KEYS
        assert (deploy["model"], deploy["params"], deploy["output_op"]) == (program, "model.pdiparams", output_op)
        assert deploy["output_dtype"] == ("int32" if output_op == "argmax" else "float32")
        assert deploy["input_shape"] == ([-1, 3, INPUT_SIZE[1], INPUT_SIZE[0]] if fixed else [-1, 3, -1, -1])
        assert [t["type"] for t in deploy["transforms"]] == (["Resize", "Normalize"] if fixed else ["Normalize"])
        restored = resolve_restore(folder)
        assert restored.kind == "export" and restored.classes == CLASSES.record()
        exported = ExportedModel(folder)
        assert exported.classes.names == CLASSES.names and exported.output_op == output_op
        assert exported.input_size == (INPUT_SIZE if fixed else None)
    assert not [name for name in os.listdir(os.path.dirname(folder)) if name.startswith(".")]  # no work folders


def test_deploy_yaml_states_this_projects_preprocessing(exports, images):
    """Resize (Pillow's BICUBIC) and PaddleSeg's Normalize with deploy.yaml's numbers, then the
    channel swap the graph does, are exactly evaluation's preprocessing."""
    with open(os.path.join(exports["argmax", True], "deploy.yaml")) as handle:
        resize, normalize = yaml.safe_load(handle)["Deploy"]["transforms"]
    assert (resize["target_size"], resize["interp"]) == (list(INPUT_SIZE), "CUBIC")
    for rgb in images.values():
        resized = np.asarray(Image.fromarray(rgb).resize(tuple(resize["target_size"]), Image.BICUBIC), np.float64)
        normalized = (resized / 255.0 - np.array(normalize["mean"])) / np.array(normalize["std"])
        as_graph_input = normalized.transpose(2, 0, 1)[::-1]
        expected = image_to_input(Image.fromarray(rgb), INPUT_SIZE, IMG_MEAN_BGR)
        np.testing.assert_allclose(as_graph_input, expected, atol=1e-3)
        np.testing.assert_allclose(ExportedModel(exports["argmax", True]).preprocess(rgb)[::-1], expected, atol=1e-3)


BACKENDS = [pytest.param("inference"), pytest.param("onnx", marks=pytest.mark.skipif(
    ONNX_MISSING is not None, reason="ONNX export or runtime not installed: {}".format(ONNX_MISSING)))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output_op", exporting.OUTPUT_OPS)
def test_the_export_predicts_what_the_dynamic_graph_does(exports, network, images, output_op, backend):
    """Paddle Inference and ONNX Runtime on the exported graph, against the same network in the dynamic graph."""
    exported = ExportedModel(exports[output_op, True], backend=backend)
    for name, rgb in images.items():
        train_ids, confidence = exported.predict(rgb)
        expected_ids, expected_confidence = dygraph_prediction(network, rgb, output_op, INPUT_SIZE)
        share = agreement(train_ids, expected_ids)
        print("{} {} {}: {:.5f} of the pixels agree".format(backend, output_op, name, share))
        assert share >= AGREEMENT, name
        if output_op == "argmax":
            assert confidence is None
        else:
            assert confidence.shape == rgb.shape[:2] and confidence.dtype == np.float32
            np.testing.assert_allclose(confidence, expected_confidence, atol=1e-4)
        assert len(np.unique(expected_ids)) > 1  # the comparison is not of one class everywhere


def test_an_export_of_any_size_predicts_at_the_images_size_as_evaluation(exports, network, images):
    exported = ExportedModel(exports["argmax", False])
    for name, rgb in images.items():
        train_ids, _ = exported.predict(rgb)
        height, width = rgb.shape[:2]
        logits = SegmentationPredictor(network, backend="dygraph")(
            image_to_input(Image.fromarray(rgb), (width, height), IMG_MEAN_BGR)[None])
        share = agreement(train_ids, upsample_argmax(logits, (height, width))[0])
        print("argmax at any size, {}: {:.5f} of the pixels agree".format(name, share))
        assert share >= AGREEMENT, name


def test_onnx_without_paddle2onnx_is_one_line_and_writes_nothing(weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # import paddle2onnx -> ImportError
    save_dir = tmp_path / "exported"
    status, out, err = run_export("--restore-from", weights, "--save-dir", str(save_dir), "--onnx")
    assert status == 2 and out == ""
    pip_line = ('pip install "paddle2onnx==1.3.1" onnxruntime (paddle2onnx 2.x needs Paddle 3)'
                if paddle.__version__.startswith("2.") else "pip install paddle2onnx onnxruntime")
    assert err.splitlines() == ["error: --onnx needs paddle2onnx: " + pip_line]
    assert os.listdir(str(tmp_path)) == []


def test_the_onnx_backend_without_onnxruntime_names_the_pip_command(exports, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match="^--backend onnx needs onnxruntime: pip install onnxruntime$"):
        ExportedModel(exports["argmax", True], backend="onnx")


def test_an_interrupted_export_leaves_no_folder_that_looks_complete(network, tmp_path, monkeypatch):
    save_dir = str(tmp_path / "inference_model")
    dead_work = tmp_path / ".inference_model.export-killed"  # what a killed export left an hour ago
    dead_work.mkdir()
    (dead_work / "model.pdiparams").write_bytes(b"half")
    os.utime(str(dead_work), (0, 0))

    def fails_after_the_model_is_saved(directory, classes):
        assert any(name.endswith(".pdiparams") for name in os.listdir(directory))
        raise OSError("No space left on device")

    monkeypatch.setattr(exporting, "write_class_record", fails_after_the_model_is_saved)
    with pytest.raises(OSError, match="No space left"):
        exporting.export_model(network, save_dir, CLASSES, input_shape=[1, 3, 48, 64])
    assert os.listdir(str(tmp_path)) == []  # neither the folder nor a work folder, and the dead one is gone

    monkeypatch.undo()
    exporting.export_model(network, save_dir, CLASSES, input_shape=[1, 3, 48, 64])
    before = {name: os.path.getsize(os.path.join(save_dir, name)) for name in os.listdir(save_dir)}
    monkeypatch.setattr(exporting, "write_class_record", fails_after_the_model_is_saved)
    with pytest.raises(OSError):
        exporting.export_model(network, save_dir, CLASSES, output_op="softmax")
    after = {name: os.path.getsize(os.path.join(save_dir, name)) for name in os.listdir(save_dir)}
    assert after == before and ExportedModel(save_dir).output_op == "argmax"  # the earlier export, whole
    assert os.listdir(str(tmp_path)) == ["inference_model"]


def test_export_refuses_what_it_cannot_export_in_one_line(weights, exports, tmp_path):
    cases = [
        (["--restore-from", exports["argmax", True]], "already an exported model"),
        (["--restore-from", weights, "--num-classes", "19"], "--num-classes 19: the class set roads has 4 classes"),
        (["--restore-from", str(tmp_path / "missing.pdparams")], "no such file or directory"),
    ]
    for args, message in cases:
        status, _, err = run_export(*args, "--save-dir", str(tmp_path / "out"))
        assert status == 2 and len(err.splitlines()) == 1 and message in err, err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    status, _, err = run_export("--restore-from", weights, "--save-dir", str(busy))
    assert status == 2 and "holds other files and no deploy.yaml" in err
    assert os.listdir(str(busy)) == ["notes.txt"] and not os.path.exists(str(tmp_path / "out"))


def test_input_shape_is_width_height_or_nchw():
    assert export.input_shape_argument("64,48") == export.input_shape_argument("-1,3,48,64") == [-1, 3, 48, 64]
    assert export.input_shape_argument("1,3,512,1024") == [1, 3, 512, 1024]
    for wrong in ("1,1,48,64", "64", "0,48", "a,b", "0,3,48,64"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected WIDTH,HEIGHT"):
            export.input_shape_argument(wrong)


def test_weights_without_a_class_record_are_the_cityscapes_classes(tmp_path):
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    paddle.save(model.state_dict(), str(tmp_path / "model.pdparams"))
    save_dir = str(tmp_path / "exported")
    status, out, err = run_export("--restore-from", str(tmp_path / "model.pdparams"), "--save-dir", save_dir,
                                  "--output-op", "none")
    assert status == 0, err
    assert "class set cityscapes (19 classes); input any size, resized to 1024x512 inside the graph as " \
           "evaluation does; output none" in out
    assert ExportedModel(save_dir).classes is CITYSCAPES


# -- the default export: evaluation's predictions, on any image, through every runtime ----------

@pytest.fixture(scope="module")
def default_export(weights, tmp_path_factory):
    """export.py's default kind (argmax, with model.onnx when paddle2onnx is installed), resizing to
    EVALUATION_SIZE; the other output ops share its graph up to the last operation."""
    folder = str(tmp_path_factory.mktemp("default_export") / "argmax")
    status, out, err = run_export("--restore-from", weights, "--save-dir", folder,
                                  "--input-size", "{},{}".format(*EVALUATION_SIZE), *([] if ONNX_MISSING else ["--onnx"]))
    assert status == 0, err
    assert "resized to {}x{} inside the graph as evaluation does".format(*EVALUATION_SIZE) in out
    return folder


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """{name: (path, RGB as evaluation and predict.py read it)} of ODD_IMAGES, saved as named."""
    folder = tmp_path_factory.mktemp("odd_images")
    read = {}
    for seed, (name, (width, height, mode)) in enumerate(sorted(ODD_IMAGES.items())):
        rgb = picture(width, height, seed)
        image = Image.fromarray(rgb)
        if mode == "RGBA":
            alpha = Image.fromarray((np.arange(width)[None, :].repeat(height, 0) % 256).astype(np.uint8))
            image = Image.merge("RGBA", image.split() + (alpha,))
        path = str(folder / name)
        image.convert(mode).save(path, quality=90) if name.endswith(".jpg") else image.convert(mode).save(path)
        with Image.open(path) as saved:
            read[name] = (path, np.asarray(saved.convert("RGB")))
    return read


def evaluation_ids(network, rgb):
    """Train ids as evaluation predicts them (dataset.files.image_to_input, the network, logits
    upsampled to the image's size with align_corners=True, argmax), in the dynamic graph."""
    height, width = rgb.shape[:2]
    logits = SegmentationPredictor(network, backend="dygraph")(
        image_to_input(Image.fromarray(rgb), EVALUATION_SIZE, IMG_MEAN_BGR)[None])
    return upsample_argmax(logits, (height, width))[0]


class DeployYamlReader(object):
    """A deployment that knows deploy.yaml and nothing of this project, as PaddleSeg's deploy/python
    reads it: the listed transforms (Pillow's filters for OpenCV's names), the graph through Paddle
    Inference or ONNX Runtime, argmax ids brought to the image's size by nearest resizing."""

    FILTERS = {"NEAREST": Image.NEAREST, "LINEAR": Image.BILINEAR, "CUBIC": Image.BICUBIC}

    def __init__(self, folder, runtime):
        with open(os.path.join(folder, "deploy.yaml")) as handle:
            self.deploy = yaml.safe_load(handle)["Deploy"]
        if runtime == "onnx":
            import onnxruntime
            session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"),
                                                   providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self.run = lambda batch: session.run(None, {name: batch})[0]
        else:
            from paddle import inference
            config = inference.Config(os.path.join(folder, self.deploy["model"]),
                                      os.path.join(folder, self.deploy["params"]))
            config.disable_gpu()
            predictor = inference.create_predictor(config)

            def run(batch):
                handle = predictor.get_input_handle(predictor.get_input_names()[0])
                handle.reshape(list(batch.shape))
                handle.copy_from_cpu(batch)
                predictor.run()
                return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
            self.run = run

    def train_ids(self, rgb):
        picture, values = Image.fromarray(rgb), None
        for transform in self.deploy["transforms"]:
            if transform["type"] == "Resize":
                picture = picture.resize(tuple(transform["target_size"]), self.FILTERS[transform.get("interp", "LINEAR")])
            else:
                values = (np.asarray(picture, np.float32) / 255.0 - np.asarray(transform["mean"], np.float32)) / \
                    np.asarray(transform["std"], np.float32)
        values = np.asarray(picture, np.float32) if values is None else values
        output = self.run(np.ascontiguousarray(values.transpose(2, 0, 1)[None], dtype=np.float32))[0]
        ids = (output if self.deploy["output_op"] == "argmax" else output.argmax(axis=0)).astype(np.uint8)
        height, width = rgb.shape[:2]
        return ids if ids.shape == (height, width) else np.asarray(Image.fromarray(ids).resize((width, height),
                                                                                                 Image.NEAREST))


RUNTIMES = [pytest.param("inference"), pytest.param("onnx", marks=pytest.mark.skipif(
    ONNX_MISSING is not None, reason="ONNX export or runtime not installed: {}".format(ONNX_MISSING)))]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_default_export_read_from_deploy_yaml_alone_predicts_what_evaluation_scored(
        default_export, network, odd_images, runtime):
    folder = default_export
    with open(os.path.join(folder, "deploy.yaml")) as handle:
        deploy = yaml.safe_load(handle)["Deploy"]
    assert deploy["transforms"] == [] and deploy["resize_in_graph"] == list(EVALUATION_SIZE)
    assert deploy["input_shape"] == [-1, 3, -1, -1]
    reader = DeployYamlReader(folder, runtime)
    for name, (path, rgb) in sorted(odd_images.items()):
        expected = evaluation_ids(network, rgb)
        share = agreement(reader.train_ids(rgb), expected)
        print("{} {}: {:.5f} of the pixels equal evaluation's".format(runtime, name, share))
        assert share >= AGREEMENT, name
        if rgb.size > 3:
            assert len(np.unique(expected)) > 1, name  # not one class everywhere


def test_predict_py_on_the_default_export_writes_evaluations_train_ids(default_export, network, odd_images,
                                                                       tmp_path):
    import predict
    save = tmp_path / "predictions"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = predict.main(["--restore-from", default_export, "--images"] +
                              [path for path, _ in odd_images.values()] +
                              ["--save", str(save), "--device", "cpu", "--no-progress"])
    assert status == 0
    assert "resizes each image to {}x{} inside the graph".format(*EVALUATION_SIZE) in out.getvalue()
    for name, (path, rgb) in odd_images.items():
        written = np.asarray(Image.open(str(save / (os.path.splitext(name)[0] + ".png"))))  # the train ids
        assert agreement(written, evaluation_ids(network, rgb)) >= AGREEMENT, name


def test_the_other_kinds_say_what_they_do_and_agree_less(exports, default_export, network, images):
    """An export of a fixed size or of any size (and one written before the default changed: the
    same files) still predicts, and says how it differs from evaluation."""
    lines = {kind: ExportedModel(folder).describe() for kind, folder in (
        ("default", default_export), ("fixed", exports["argmax", True]), ("any", exports["argmax", False]))}
    assert "inside the graph" in lines["default"] and "as evaluation does" in lines["default"]
    assert "fixed {}x{} input".format(*INPUT_SIZE) in lines["fixed"] and "nearest" in lines["fixed"]
    assert "own resolution" in lines["any"] and "without --any-size" in lines["any"]
    rgb = images["portrait"]
    own_size = agreement(ExportedModel(exports["argmax", False]).predict(rgb)[0], evaluation_ids(network, rgb))
    assert own_size < AGREEMENT  # the network at the picture's own 48x64 is not the network at 96x48


def test_the_four_branch_classifier_exports_as_evaluation_runs_it(odd_images, tmp_path):
    """ADVENT's DeeplabMulti4 (the same keys; all four branches summed) through --model."""
    four = DeeplabMulti4(num_classes=CLASSES.num_classes)
    four.set_state_dict({k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
                         for k, v in seeded_torch_state(four, 0).items()})
    four.eval()
    paddle.save(four.state_dict(), str(tmp_path / "advent.pdparams"))
    write_class_record(str(tmp_path), CLASSES)
    folder = str(tmp_path / "exported")
    status, _, err = run_export("--restore-from", str(tmp_path / "advent.pdparams"), "--model", "DeeplabMulti4",
                                "--save-dir", folder, "--input-size", "{},{}".format(*EVALUATION_SIZE))
    assert status == 0, err
    two = DeeplabMulti(num_classes=CLASSES.num_classes)
    two.set_state_dict(four.state_dict())
    two.eval()
    reader = DeployYamlReader(folder, "inference")
    for name in ("grey.png", "photo.jpg"):
        rgb = odd_images[name][1]
        expected = evaluation_ids(four, rgb)
        assert agreement(reader.train_ids(rgb), expected) >= AGREEMENT, name
        assert agreement(evaluation_ids(two, rgb), expected) < AGREEMENT, name  # the branches 2 and 3 count

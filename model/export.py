"""A trained network exported for deployment, and an exported network run on one image.

An export folder is what Paddle Inference (Python, C++, Serving) and PaddleSeg's deployment tools
load, in PaddleSeg's layout:

    model.json or model.pdmodel   the static graph (Paddle 3 writes PIR JSON, Paddle 2.6 .pdmodel)
    model.pdiparams               its weights, each BatchNorm folded into the conv before it
    deploy.yaml                   PaddleSeg's ``Deploy`` section: the files, the preprocessing
                                  (transforms), the input shape and what the graph outputs
    class_set.json                the class set the train ids stand for (names, colours)
    model.onnx                    (asked for) the same graph for ONNX Runtime, by paddle2onnx

By default the graph predicts what evaluation scored, for an image of any size: it takes the RGB
image itself, resizes it to evaluation's input size as Pillow's BICUBIC does (``resize_like_pillow``),
subtracts the mean pixel, flips to the BGR order of the Caffe-trained weights, runs the network and
brings the logits back to the image's size (bilinear, align_corners=True, as evaluation). Two other
kinds: a fixed input size (deploy.yaml's Resize transform; argmax ids can then only be resized
nearest to the image), and any size without a resize (the network sees the image at its own
resolution). The output op: ``argmax`` (int32 train ids), ``softmax`` (probabilities) or ``none``
(the network's low-resolution logits).

The folder is written under a hidden name beside it and renamed when complete (deploy.yaml, which
marks an export, is written last), so a killed export never leaves a folder that looks complete.
"""
import os
import shutil
import time
import uuid
import warnings

from PIL import Image

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, class_set_from_record
from model.inference import create_inference_predictor, frozen_network, held_output, params_file, run_predictor, \
    save_static_model
from model.restore import EXPORT_MARKER
from utils.files.atomic import atomic_write_text, fsync_path
from utils.files.snapshots import read_class_record, write_class_record
from utils.runtime import cpu_threads

OUTPUT_OPS = ("argmax", "softmax", "none")
OUTPUT_DTYPES = {"argmax": "int32", "softmax": "float32", "none": "float32"}
BACKENDS = ("inference", "onnx")
DEPLOY_FILE = EXPORT_MARKER
ONNX_FILE = "model.onnx"
INPUT_NAME = "x"  # PaddleSeg's, which its deployment guides (TensorRT shapes) refer to
ONNX_OPSET = 11
# paddle2onnx 2.x reads Paddle 3's programs and refuses Paddle 2; 1.3.1 is the last to read Paddle 2.6's.
PADDLE2ONNX_FOR_PADDLE2 = "1.3.1"
# Paddle 2.6 logs this (glog) when it saves a program's weights.
_STATIC_SAVE_NOISE = "New Executor is Running"
# A hidden work folder older than this was left by an export that was killed.
STALE_WORK_SECONDS = 3600.0
# PaddleSeg's Resize names OpenCV's interpolations; these are Pillow's, which this project resizes with.
_PIL_FILTERS = {"NEAREST": Image.NEAREST, "LINEAR": Image.BILINEAR, "CUBIC": Image.BICUBIC, "AREA": Image.BOX,
                "LANCZOS4": Image.LANCZOS}


class ExportError(ValueError):
    """An export that cannot be written or read; the message names the flag or file and what to do."""


# ----------------------------------------------------------------------------- the graph


def _linear_weights(in_size, out_size):
    """(out_size, in_size) matrix of 1-D linear interpolation with align_corners=True: output i
    samples position i * (in - 1) / (out - 1), where input j weighs max(0, 1 - |position - j|)."""
    in_size = in_size.astype("float32")
    out_size = out_size.astype("float32")
    step = (in_size - 1.0) / paddle.clip(out_size - 1.0, min=1.0)
    positions = paddle.arange(out_size, dtype="float32") * step
    inputs = paddle.arange(in_size, dtype="float32")
    return F.relu(1.0 - paddle.abs(positions.unsqueeze(1) - inputs.unsqueeze(0)))


def upsample_bilinear(logits, size):
    """``F.interpolate(logits, size, mode="bilinear", align_corners=True)`` for NCHW ``logits`` and
    ``size`` an (H, W) integer tensor, as two products with interpolation matrices.

    Why not interpolate: Paddle 3.3's oneDNN executor cannot run an interpolate op read from a saved
    program (ConvertPirAttribute2RuntimeAttribute). Why only 2-D products: Paddle Inference (2.6 and
    3.3) gave wrong values for the broadcast product of a matrix with the 4-D logits.
    """
    shape = paddle.shape(logits)
    batch, channels, height, width = shape[0], shape[1], shape[2], shape[3]
    across = paddle.matmul(paddle.flatten(logits, 0, 2), _linear_weights(width, size[1]), transpose_y=True)
    across = paddle.reshape(across, [batch, channels, height, -1]).transpose([0, 1, 3, 2])  # N, C, W, h
    down = paddle.matmul(paddle.flatten(across, 0, 2), _linear_weights(height, size[0]), transpose_y=True)
    return paddle.reshape(down, [batch, channels, paddle.shape(across)[2], -1]).transpose([0, 1, 3, 2])


# Pillow's resampling arithmetic: weights in fixed point with this many fractional bits, each pass
# rounded to 8 bits (libImaging/Resample.c, PRECISION_BITS).
PILLOW_PRECISION = float(2 ** 22)


def _bicubic(distance):
    """Pillow's BICUBIC kernel (a = -0.5), zero beyond 2."""
    d = paddle.abs(distance)
    near = (1.5 * d - 2.5) * d * d + 1.0
    far = (((d - 5.0) * d + 8.0) * d - 4.0) * -0.5
    return paddle.where(d < 1.0, near, paddle.where(d < 2.0, far, paddle.zeros_like(d)))


def _pillow_weights(in_size, out_size):
    """(out_size, in_size) matrix of Pillow's BICUBIC resize along one axis of ``in_size`` (a
    tensor) pixels: the kernel widened by the scale when shrinking (Pillow's antialiasing), each
    row normalised, then rounded to Pillow's fixed point."""
    scale = in_size.astype("float32") / float(out_size)
    widen = paddle.maximum(scale, paddle.ones_like(scale))
    centers = (paddle.arange(out_size, dtype="float32") + 0.5) * scale
    inputs = paddle.arange(in_size, dtype="float32")
    weights = _bicubic((inputs.unsqueeze(0) - centers.unsqueeze(1) + 0.5) / widen)
    weights = weights / paddle.sum(weights, axis=1, keepdim=True)
    return paddle.sign(weights) * paddle.floor(paddle.abs(weights) * PILLOW_PRECISION + 0.5) / PILLOW_PRECISION


def _to_8_bits(values):
    return paddle.clip(paddle.floor(values + 0.5), 0.0, 255.0)


def resize_like_pillow(images, size):
    """NCHW float32 images of 0..255 values resized to ``size`` = (W, H) as Pillow's
    ``Image.resize(size, BICUBIC)`` resizes 8-bit RGB: the horizontal pass, rounded to 8 bits,
    then the vertical one (2-D products, as upsample_bilinear says why)."""
    shape = paddle.shape(images)
    batch, channels, height, width = shape[0], shape[1], shape[2], shape[3]
    across = _to_8_bits(paddle.matmul(paddle.flatten(images, 0, 2), _pillow_weights(width, size[0]), transpose_y=True))
    across = paddle.reshape(across, [batch, channels, height, size[0]]).transpose([0, 1, 3, 2])  # N, C, W', H
    down = _to_8_bits(paddle.matmul(paddle.flatten(across, 0, 2), _pillow_weights(height, size[1]), transpose_y=True))
    return paddle.reshape(down, [batch, channels, size[0], size[1]]).transpose([0, 1, 3, 2])


class DeployedNetwork(nn.Layer):
    """The network as exported, ``output_op``'s output out (see the module's notes). In: NCHW
    float32 RGB, either the image itself (0..255, any size) when ``input_size`` = (W, H) says what
    the graph resizes it to, or what deploy.yaml's transforms make of it (minus the mean pixel)."""

    def __init__(self, model, output_op="argmax", input_size=None):
        super().__init__()
        if output_op not in OUTPUT_OPS:
            raise ValueError("unknown output op {!r}: choose one of {}".format(output_op, ", ".join(OUTPUT_OPS)))
        self.net = frozen_network(model)
        self.output_op = output_op
        self.input_size = None if input_size is None else tuple(int(side) for side in input_size)

    def forward(self, x):
        if self.input_size is not None:  # as evaluation prepares an image (dataset.files.image_to_input)
            mean = paddle.to_tensor(np.asarray(IMG_MEAN_BGR[::-1], np.float32).reshape(1, 3, 1, 1))
            inputs = resize_like_pillow(x, self.input_size) - mean
        else:
            inputs = x
        # PaddleSeg feeds RGB and its transforms cannot reorder channels; the weights expect BGR.
        bgr = paddle.concat([inputs[:, 2:3], inputs[:, 1:2], inputs[:, 0:1]], axis=1)
        logits = self.net(bgr)
        if self.output_op == "none":
            return logits
        scores = upsample_bilinear(logits, paddle.shape(x)[2:4])
        if self.output_op == "argmax":
            return paddle.argmax(scores, axis=1, dtype="int32")
        return F.softmax(scores, axis=1)


# ----------------------------------------------------------------------------- deploy.yaml


def normalize_parameters():
    """(mean, std) per RGB channel for PaddleSeg's Normalize, ``(x / 255 - mean) / std``, such that
    it gives ``x - mean pixel``: this project's (Caffe's) normalisation, which has no std."""
    mean = [float(value) / 255.0 for value in IMG_MEAN_BGR[::-1]]
    return mean, [1.0 / 255.0] * 3


def _numbers(values):
    return "[{}]".format(", ".join(repr(value) for value in values))


def deploy_yaml(program_name, input_shape, output_op, resize_to=None):
    """The text of deploy.yaml for a graph saved as ``program_name``, of ``input_shape`` [N, 3, H, W]
    (-1: any), with ``output_op``'s output; ``resize_to`` (W, H): the graph resizes the image itself."""
    mean, std = normalize_parameters()
    height, width = input_shape[2], input_shape[3]
    fixed = height > 0 and width > 0
    red, green, blue = (float(value) for value in IMG_MEAN_BGR[::-1])
    lines = ["# AdaptSegNet (DeepLab-v2) exported by export.py in PaddleSeg's deployment format: Paddle Inference",
             "# (Python, C++, Serving) and PaddleSeg's deploy tools read it.",
             "#"]
    if resize_to is not None:
        lines += [
            "# Input: the image itself, RGB values 0..255 as float32, N x 3 x H x W at any size; no transforms.",
            "# The graph does what evaluation does: resizes it to {}x{} (WxH) as Pillow's BICUBIC does (8-bit".format(
                *resize_to),
            "# passes, antialiased when shrinking), subtracts the mean pixel (R {:.2f}, G {:.2f}, B {:.2f}),".format(
                red, green, blue),
            "# swaps to the BGR order of the Caffe-trained weights, runs the network and brings the logits back",
            "# to the image's own size."]
    else:
        if fixed:
            lines += ["# Preprocessing (this project's): the image resized to {}x{} (WxH), then its RGB values".format(
                width, height)]
        else:
            lines += ["# Preprocessing (this project's): no resize (the graph takes any size and predicts at it;",
                      "# export without --any-size to resize as evaluation does); the image's RGB values"]
        lines += [
            "# minus the mean pixel (R {:.2f}, G {:.2f}, B {:.2f}), not divided by a std. PaddleSeg's Normalize".format(
                red, green, blue),
            "# computes (x / 255 - mean) / std, so mean = mean pixel / 255 and std = 1 / 255 give exactly",
            "# x - mean pixel. The weights expect BGR (Caffe) order, which the transforms cannot say: the graph's",
            "# first operation swaps the channels, so its input is RGB as PaddleSeg feeds it.",
        ]
    if fixed:
        lines += ["# Resize: this project resizes with Pillow's BICUBIC, which also smooths when shrinking;",
                  "# PaddleSeg's Resize is OpenCV's CUBIC, whose pixels differ slightly. model.export.ExportedModel",
                  "# (predict.py) resizes with Pillow."]
    lines += {
        "argmax": ["# Output: int32 train ids, N x H x W at the input's size (logits upsampled bilinearly with",
                   "# align_corners=True, then argmax); class_set.json names them."],
        "softmax": ["# Output: float32 class probabilities, N x C x H x W at the input's size (logits upsampled",
                    "# bilinearly with align_corners=True, then softmax); class_set.json names the classes."],
        "none": ["# Output: float32 logits, N x C x h x w at 1/8 of the network's input size; upsample them bilinearly",
                 "# with align_corners=True to the image's size, then argmax, as evaluation does. class_set.json names",
                 "# them."],
    }[output_op]
    lines += ["Deploy:", "  model: {}".format(program_name), "  params: {}".format(params_file(program_name))]
    if resize_to is not None:
        lines += ["  transforms: []", "  resize_in_graph: [{}, {}]".format(*resize_to)]
    else:
        lines += ["  transforms:"]
        if fixed:
            lines += ["  - type: Resize", "    target_size: [{}, {}]".format(width, height), "    interp: CUBIC"]
        lines += ["  - type: Normalize", "    mean: {}".format(_numbers(mean)), "    std: {}".format(_numbers(std))]
    lines += ["  input_shape: [{}]".format(", ".join(str(int(value)) for value in input_shape)),
              "  output_op: {}".format(output_op), "  output_dtype: {}".format(OUTPUT_DTYPES[output_op])]
    return "\n".join(lines) + "\n"


def read_deploy(directory):
    """The ``Deploy`` mapping of ``directory``'s deploy.yaml; an ExportError names what is wrong."""
    path = os.path.join(directory, DEPLOY_FILE)
    try:
        import yaml
    except ImportError:
        raise ExportError("reading {} needs PyYAML: pip install pyyaml".format(path))
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ExportError("{}: cannot read it ({}); export the model again".format(path, exc))
    except yaml.YAMLError as exc:
        raise ExportError("{}: not valid YAML ({}); export the model again".format(path, str(exc).replace("\n", " ")))
    deploy = data.get("Deploy") if isinstance(data, dict) else None
    if not isinstance(deploy, dict):
        raise ExportError("{}: no 'Deploy' section; not an exported model".format(path))
    missing = [key for key in ("model", "params", "transforms") if key not in deploy]
    if missing:
        raise ExportError("{}: Deploy lacks {}; export the model again".format(path, ", ".join(missing)))
    return deploy


# ----------------------------------------------------------------------------- exporting


def _paddle2onnx_pip_line():
    if paddle.__version__.startswith("2."):
        return 'pip install "paddle2onnx=={}" onnxruntime (paddle2onnx 2.x needs Paddle 3)'.format(
            PADDLE2ONNX_FOR_PADDLE2)
    return "pip install paddle2onnx onnxruntime"


def onnx_converter():
    """A function ``convert(program, params, onnx_path)`` writing a saved program as ONNX; an
    ExportError naming the pip command when paddle2onnx is missing or does not fit this Paddle."""
    try:
        import paddle2onnx
    except ImportError:
        raise ExportError("--onnx needs paddle2onnx: {}".format(_paddle2onnx_pip_line()))
    except ValueError:  # paddle2onnx 2.x refuses to be imported with Paddle 2
        raise ExportError("--onnx: the installed paddle2onnx needs Paddle 3; with Paddle {}: {}".format(
            paddle.__version__, _paddle2onnx_pip_line()))
    version = str(getattr(paddle2onnx, "__version__", "0"))
    if not paddle.__version__.startswith("2.") and version.split(".")[0] in ("0", "1"):
        raise ExportError('--onnx: paddle2onnx {} cannot read Paddle 3 programs (model.json): pip install '
                          '"paddle2onnx>=2" onnxruntime'.format(version))

    def convert(program, params, onnx_path):
        failure = None
        with held_output(stdout=True) as held:  # paddle2onnx prints pages of progress
            try:
                paddle2onnx.export(program, params, onnx_path, opset_version=ONNX_OPSET, verbose=False,
                                   enable_onnx_checker=True)
            except Exception as exc:  # paddle2onnx 2.x logs its own failures and then raises something else
                failure = exc
        if failure is not None or not os.path.isfile(onnx_path) or os.path.getsize(onnx_path) == 0:
            said = [line.strip() for line in held[0].splitlines() if "error" in line.lower()]
            raise ExportError("--onnx: paddle2onnx {} could not convert the model: {}".format(
                version, "; ".join(said[-3:]) or failure or "it wrote no {}".format(os.path.basename(onnx_path))))

    return convert


def _work_prefix(save_dir):
    return ".{}.export-".format(os.path.basename(os.path.abspath(save_dir)))


def _remove_stale_work(save_dir):
    parent = os.path.dirname(os.path.abspath(save_dir))
    now = time.time()
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        try:
            if name.startswith(_work_prefix(save_dir)) and now - os.path.getmtime(path) > STALE_WORK_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def check_save_dir(save_dir):
    """Refuse a --save-dir that is a file, or a folder holding anything but an earlier export."""
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise ExportError("--save-dir {}: a file is there; give a folder".format(save_dir))
    if os.path.isdir(save_dir) and os.listdir(save_dir) and not os.path.isfile(os.path.join(save_dir, DEPLOY_FILE)):
        raise ExportError("--save-dir {}: holds other files and no {}; give a new or empty folder (an earlier "
                          "export there is replaced)".format(save_dir, DEPLOY_FILE))


def export_model(model, save_dir, classes, output_op="argmax", input_shape=None, onnx=False, resize_to=None):
    """Write ``model`` (a built network with its weights) into ``save_dir`` as the module's notes say;
    returns the names of the files written. ``classes``: the ClassSet it predicts. ``input_shape``:
    None (any batch size, height and width) or [N, 3, H, W], N -1 for any batch size. ``resize_to``
    (W, H), with any input shape: the graph resizes each image to it as evaluation does and predicts
    at the image's size. ``onnx``: also model.onnx. An earlier export in ``save_dir`` is replaced
    once the new one is complete."""
    if output_op not in OUTPUT_OPS:
        raise ExportError("--output-op {}: choose one of {}".format(output_op, ", ".join(OUTPUT_OPS)))
    if resize_to is not None and input_shape is not None:
        raise ExportError("--input-shape fixes the size the image is resized to before the graph; the graph that "
                          "resizes by itself takes any size: give one of them")
    shape = [-1, 3, -1, -1] if input_shape is None else [int(value) for value in input_shape]
    convert = onnx_converter() if onnx else None  # before anything is written
    check_save_dir(save_dir)
    parent = os.path.dirname(os.path.abspath(save_dir))
    os.makedirs(parent, exist_ok=True)
    _remove_stale_work(save_dir)
    work = os.path.join(parent, _work_prefix(save_dir) + uuid.uuid4().hex[:12])
    os.mkdir(work)
    try:
        network = DeployedNetwork(model, output_op, resize_to)
        network.eval()
        spec = [paddle.static.InputSpec([value if value > 0 else None for value in shape], "float32", INPUT_NAME)]
        with warnings.catch_warnings(), held_output(noise=_STATIC_SAVE_NOISE):
            warnings.simplefilter("ignore")  # Paddle's deprecation notes about its own ops, once per op
            program = save_static_model(network, os.path.join(work, "model"), spec)
        write_class_record(work, classes)
        if convert is not None:
            convert(program, params_file(program), os.path.join(work, ONNX_FILE))
        for name in os.listdir(work):
            fsync_path(os.path.join(work, name))
        atomic_write_text(os.path.join(work, DEPLOY_FILE),
                          deploy_yaml(os.path.basename(program), shape, output_op, resize_to))
        _swap_in(work, save_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return sorted(os.listdir(save_dir))


def _swap_in(work, save_dir):
    """Rename the complete ``work`` folder to ``save_dir``, replacing an earlier export there."""
    earlier = None
    if os.path.isdir(save_dir):
        earlier = work + "-replaced"
        os.replace(save_dir, earlier)
    os.replace(work, save_dir)
    fsync_path(os.path.dirname(os.path.abspath(save_dir)))
    if earlier is not None:
        shutil.rmtree(earlier, ignore_errors=True)


# ----------------------------------------------------------------------------- running an export


def export_classes(directory):
    """The ClassSet recorded in an export folder (class_set.json), else the 19 Cityscapes classes."""
    record = read_class_record(directory)
    return CITYSCAPES if record is None else class_set_from_record(record)


class ExportedModel(object):
    """An export folder run on one RGB image at a time: deploy.yaml's transforms, the graph (Paddle
    Inference, or ONNX Runtime with ``backend="onnx"``), and the result brought to the image's own
    size as evaluation does.

    ``input_size``: (W, H) the image is resized to (by deploy.yaml's Resize, or inside the graph),
    None when the network sees the image at its own size. ``output_op``: what the graph outputs. ``classes``: the ClassSet of class_set.json.
    """

    def __init__(self, directory, use_gpu=False, gpu_id=0, backend="inference"):
        if backend not in BACKENDS:
            raise ExportError("--backend {}: an exported model runs with {}".format(backend, " or ".join(BACKENDS)))
        self.directory = directory
        self.backend = backend
        deploy = read_deploy(directory)
        where = os.path.join(directory, DEPLOY_FILE)
        self.output_op = deploy.get("output_op", "argmax")  # PaddleSeg's exports before output_op were argmax
        if self.output_op not in OUTPUT_OPS:
            raise ExportError("{}: output_op {!r} is none of {}".format(where, self.output_op, ", ".join(OUTPUT_OPS)))
        self._steps = _transforms(deploy["transforms"], where)
        resizes = [step for step in self._steps if step[0] == "Resize"]
        in_graph = deploy.get("resize_in_graph")
        self._resized_in_graph = bool(in_graph) and not resizes
        self.input_size = resizes[-1][1] if resizes else tuple(in_graph) if in_graph else None
        batch = (deploy.get("input_shape") or [-1])[0]
        if batch not in (-1, 1, None):
            raise ExportError("{}: exported for batches of {} images; export again with --input-shape 1,3,H,W or "
                              "W,H to predict one image at a time".format(where, batch))
        self.classes = export_classes(directory)
        if backend == "onnx":
            self._run = self._onnx_runner(use_gpu)
        else:
            self._run = self._paddle_runner(deploy, use_gpu, gpu_id)

    def describe(self):
        """One line: what kind of export this is, against evaluation's predictions."""
        if self._resized_in_graph:
            return "{}: an export that resizes each image to {}x{} inside the graph and predicts at the image's " \
                   "size, as evaluation does".format(self.directory, *self.input_size)
        if self.input_size is not None:
            back = "its train ids are brought to the image's size by nearest resizing" if self.output_op == "argmax" \
                else "its output is upsampled to the image's size"
            return "{}: an export of a fixed {}x{} input (the image resized before the graph); {}".format(
                self.directory, self.input_size[0], self.input_size[1], back)
        return "{}: an export without a resize: the network sees each image at its own resolution, which evaluation " \
               "does not (export again without --any-size for evaluation's predictions)".format(self.directory)

    def _paddle_runner(self, deploy, use_gpu, gpu_id):
        program, params = (os.path.join(self.directory, deploy[key]) for key in ("model", "params"))
        for path in (program, params):
            if not os.path.isfile(path):
                raise ExportError("{}: missing (named in {}); export the model again".format(path, DEPLOY_FILE))
        predictor = create_inference_predictor(program, params, use_gpu, gpu_id)
        inputs = predictor.get_input_handle(predictor.get_input_names()[0])
        outputs = predictor.get_output_handle(predictor.get_output_names()[0])

        def run(batch):
            inputs.reshape(list(batch.shape))
            inputs.copy_from_cpu(batch)
            run_predictor(predictor)
            return outputs.copy_to_cpu()
        return run

    def _onnx_runner(self, use_gpu):
        path = os.path.join(self.directory, ONNX_FILE)
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("--backend onnx needs onnxruntime: pip install onnxruntime")
        if not os.path.isfile(path):
            raise ExportError("--backend onnx: {} has no {}; export it with --onnx".format(self.directory, ONNX_FILE))
        available = onnxruntime.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if use_gpu:
            if "CUDAExecutionProvider" not in available:
                warnings.warn("this onnxruntime has no CUDA (pip install onnxruntime-gpu): running on the CPU")
            else:
                providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        session = onnxruntime.InferenceSession(path, options, providers=providers)
        name = session.get_inputs()[0].name

        def run(batch):
            return session.run(None, {name: batch})[0]
        return run

    def preprocess(self, rgb):
        """HxWx3 uint8 RGB -> 3xhxw float32 graph input, by deploy.yaml's transforms."""
        picture = Image.fromarray(rgb)
        values = None
        for kind, *settings in self._steps:
            if kind == "Resize":
                size, resample = settings
                picture = picture.resize(size, resample)
            else:
                mean, std = settings
                values = np.asarray(picture, dtype=np.float32) if values is None else values
                values = (values / np.float32(255.0) - mean) / std
        values = np.asarray(picture, dtype=np.float32) if values is None else values
        return np.ascontiguousarray(values.transpose(2, 0, 1), dtype=np.float32)

    def predict(self, rgb):
        """(train ids HxW uint8, confidence HxW float32 or None) of an HxWx3 uint8 RGB image, at its
        size. The confidence is the largest softmax probability; an argmax export has none."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("expected an HxWx3 uint8 RGB image, got {} {}".format(rgb.dtype, rgb.shape))
        height, width = rgb.shape[:2]
        output = self._run(self.preprocess(rgb)[None])
        if self.output_op == "argmax":
            train_ids = np.asarray(output).reshape(output.shape[-2:]).astype(np.uint8)
            if train_ids.shape != (height, width):  # a fixed input size: ids cannot be interpolated
                train_ids = np.asarray(Image.fromarray(train_ids).resize((width, height), Image.NEAREST))
            return train_ids, None
        with paddle.no_grad():
            scores = paddle.to_tensor(output)
            if tuple(scores.shape[2:]) != (height, width):
                scores = F.interpolate(scores, size=[height, width], mode="bilinear", align_corners=True)
            train_ids = paddle.argmax(scores, axis=1)[0].astype("uint8").numpy()
            probabilities = scores if self.output_op == "softmax" else F.softmax(scores, axis=1)
            confidence = paddle.max(probabilities, axis=1)[0].numpy().astype(np.float32)
        return train_ids, confidence


def _transforms(listed, where):
    """[("Resize", (W, H), PIL filter) | ("Normalize", mean, std)] of deploy.yaml's transforms."""
    steps = []
    for number, transform in enumerate(listed or []):
        kind = transform.get("type") if isinstance(transform, dict) else None
        at = "{}: transforms[{}]".format(where, number)
        if kind == "Resize":
            if any(step[0] == "Normalize" for step in steps):
                raise ExportError("{}: Resize after Normalize is not supported".format(at))
            interp = transform.get("interp", "LINEAR")
            if interp not in _PIL_FILTERS:
                raise ExportError("{}: interp {!r} is none of {}".format(at, interp, ", ".join(_PIL_FILTERS)))
            width, height = (int(value) for value in transform["target_size"])
            steps.append(("Resize", (width, height), _PIL_FILTERS[interp]))
        elif kind == "Normalize":
            mean, std = (np.asarray(transform.get(key, (0.5, 0.5, 0.5)), dtype=np.float32) for key in ("mean", "std"))
            steps.append(("Normalize", mean, std))
        else:
            raise ExportError("{}: transform {!r} is not supported here (Resize and Normalize are)".format(at, kind))
    return steps

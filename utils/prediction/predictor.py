"""The model run on one image, in the steps of PaddleSeg's deploy predictor: ``prepare`` is its
preprocess (any thread), ``predict`` its run and postprocess (the thread that made the segmenter).

Weights are run as evaluate_cityscapes.py runs them: BICUBIC resize to the input size, BGR minus
the ImageNet mean, the BN-folded network (Paddle Inference or the dynamic graph), the logits
upsampled bilinearly (align_corners=True) to the image's own size, argmax; so a Cityscapes image
gets the train ids evaluation writes for it. An exported model (model.export) does all of that
itself.
"""
from PIL import Image

import math
import time
from typing import NamedTuple, Optional

import numpy as np
import paddle
import paddle.nn.functional as F

from dataset.classes import CITYSCAPES, IMG_MEAN_BGR, model_classes
from dataset.files import image_to_input
from model import build_model
from model.export import ExportedModel
from model.inference import (BACKENDS as WEIGHTS_BACKENDS, SegmentationPredictor, WeightedSum, ensemble_weights,
                             upsample_argmax)
from utils.files.weights import load_weights
from utils.prediction import PredictionError

DEFAULT_INPUT_SIZE = (1024, 512)  # (W, H): what evaluation resizes Cityscapes images to
# model.inference's backends run weights; "onnx" runs an exported model with ONNX Runtime (model.export).
BACKENDS = WEIGHTS_BACKENDS + ("onnx",)


class Prediction(NamedTuple):
    train_ids: np.ndarray             # HxW uint8 at the image's size
    confidence: Optional[np.ndarray]  # HxW float32 in 0..1, or None
    entropy: Optional[np.ndarray]     # HxW float32 in 0..1, or None


def upsample_prediction(logits, size, confidence=False, entropy=False):
    """Prediction of 1xCxhxw ``logits`` at ``size`` (H, W): train ids as model.inference.upsample_argmax
    makes them; with ``confidence``/``entropy``, the softmax of the same upsampled logits."""
    if not (confidence or entropy):
        return Prediction(upsample_argmax(logits, size)[0], None, None)
    with paddle.no_grad():
        up = F.interpolate(paddle.to_tensor(logits), size=list(size), mode="bilinear", align_corners=True)
        train_ids = paddle.argmax(up, axis=1).astype("uint8")[0].numpy()
        log_probs = F.log_softmax(up, axis=1)
        up = None  # freed before the entropy's temporaries, each as large (classes x H x W floats)
        most = paddle.exp(paddle.max(log_probs, axis=1))[0].numpy() if confidence else None
        spread = None
        if entropy:
            nats = -paddle.sum(paddle.exp(log_probs) * log_probs, axis=1)[0]
            spread = (nats / math.log(log_probs.shape[1])).clip(0.0, 1.0).numpy()
    return Prediction(train_ids, most, spread)


class WeightsSegmenter(object):
    """A network with its weights, run as evaluation runs it. ``prepare`` (any thread) turns an RGB
    image into the network's input; ``predict`` (the thread that made the segmenter) runs it.
    ``model`` may be a list of networks with their ``weights``: their ensemble, as evaluation's."""

    def __init__(self, model, classes, input_size=DEFAULT_INPUT_SIZE, backend="inference", use_gpu=False, gpu_id=0,
                 weights=None):
        self.classes = classes
        self.input_size = tuple(input_size)
        networks = [SegmentationPredictor(net, backend=backend, use_gpu=use_gpu, gpu_id=gpu_id)
                    for net in (model if isinstance(model, (list, tuple)) else [model])]
        self.network = networks[0] if len(networks) == 1 else WeightedSum(networks, weights)
        self.network_seconds = 0.0  # spent in the network alone: what a benchmark compares the rest with

    def prepare(self, rgb):
        return image_to_input(Image.fromarray(rgb), self.input_size, IMG_MEAN_BGR)

    def predict(self, prepared, size, confidence=False, entropy=False):
        start = time.perf_counter()
        logits = self.network(prepared[None])
        self.network_seconds += time.perf_counter() - start
        return upsample_prediction(logits, size, confidence, entropy)


class ExportSegmenter(object):
    """An exported model (model.export.ExportedModel): it resizes, runs and upsamples by itself and
    gives train ids and the confidence, not the entropy."""

    def __init__(self, exported, classes):
        self.exported = exported
        self.classes = classes
        self.input_size = exported.input_size  # (W, H), or None: the graph takes each image at its size
        self.network_seconds = 0.0  # here the resize and upsampling too: they happen inside the export

    def prepare(self, rgb):
        return rgb

    def predict(self, prepared, size, confidence=False, entropy=False):
        start = time.perf_counter()
        train_ids, most = self.exported.predict(prepared)
        self.network_seconds += time.perf_counter() - start
        return Prediction(np.asarray(train_ids, dtype=np.uint8), most if confidence else None, None)


def choose_classes(record, classes_file=None, num_classes=None, what="the model"):
    """The ClassSet a model's predictions are drawn and labelled with (dataset.classes.model_classes).
    A model of the 19 Cityscapes classes in their colours (a GTA5, SYNTHIA or Cityscapes run) writes
    Cityscapes label ids, the format of the benchmark's server, whatever its source's labels were."""
    classes = model_classes(record, classes_file, num_classes, what)
    if list(classes.names) == list(CITYSCAPES.names) and np.array_equal(classes.colours, CITYSCAPES.colours):
        return CITYSCAPES
    return classes


def describe_size(size):
    return "{}x{}".format(*size) if size else "the image's own size"


def load_segmenter(restored, classes, model_name="DeeplabMulti", input_size=None, backend="inference",
                   use_gpu=False, gpu_id=0, check_hash=True, confidence=False, entropy=False, log=print,
                   ensemble=(), model_weights=None):
    """The segmenter of a model.restore.Restored: a WeightsSegmenter of its weights, or an
    ExportSegmenter of its exported model (``backend`` "inference" or "onnx"; its class_set.json is
    the record ``classes`` was chosen by). ``confidence``/``entropy``: the outputs asked for, which
    an export may not give. ``ensemble``: more Restored weights, predicting with ``restored`` as the
    weighted sum of their logits (``model_weights``, default equal)."""
    members = [restored] + list(ensemble)
    exports = [member.path for member in members if member.kind == "export"]
    if ensemble and exports:
        raise PredictionError("--restore-from: an ensemble takes weights; {} is an exported model (give the weights "
                              "it was exported from)".format(exports[0]))
    if ensemble:
        for member in ensemble:
            classes.check_model_classes(member.classes, member.path)
        weights = ensemble_weights(len(members), model_weights)
        if backend == "onnx":
            raise PredictionError("--backend onnx runs an exported model; an ensemble runs weights: use --backend "
                                  "inference or dygraph")
        networks = []
        for member in members:
            networks.append(build_model(model_name, num_classes=classes.num_classes))
            log(load_weights(networks[-1], member.path, check_hash=check_hash).summary())
        log("ensemble of {} models, weights {}".format(len(members), " ".join(str(w) for w in weights)))
        return WeightsSegmenter(networks, classes, input_size or DEFAULT_INPUT_SIZE, backend, use_gpu, gpu_id,
                                weights)
    if model_weights is not None:
        raise PredictionError("--model-weights weighs the models of an ensemble: give several --restore-from")
    if restored.kind == "export":
        if entropy:
            raise PredictionError("--entropy: {} is an exported model, which gives train ids and the confidence "
                                  "only; predict with its weights for the entropy".format(restored.path))
        if backend == "dygraph":
            raise PredictionError("--backend dygraph: {} is an exported model (a static graph); use --backend "
                                  "inference or onnx, or give the weights".format(restored.path))
        exported = ExportedModel(restored.path, use_gpu, gpu_id, backend)
        log(exported.describe())
        if confidence and exported.output_op == "argmax":
            raise PredictionError("--confidence: {} was exported with --output-op argmax, which gives train ids "
                                  "only; export it with --output-op softmax".format(restored.path))
        if input_size is not None and tuple(input_size) != tuple(exported.input_size or ()):
            raise PredictionError("--input-size {}: {} was exported for {}; drop --input-size or export it "
                                  "again".format(describe_size(input_size), restored.path,
                                                 describe_size(exported.input_size)))
        return ExportSegmenter(exported, classes)
    if backend == "onnx":
        raise PredictionError("--backend onnx runs an exported model: export {} first (README: Export for "
                              "deployment), or use --backend inference".format(restored.path))
    model = build_model(model_name, num_classes=classes.num_classes)
    log(load_weights(model, restored.path, check_hash=check_hash).summary())
    return WeightsSegmenter(model, classes, input_size or DEFAULT_INPUT_SIZE, backend, use_gpu, gpu_id)

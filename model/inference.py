"""Running a trained segmentation network fast: BN folded into convs, Paddle Inference + oneDNN.

Evaluation needs no gradients and the network is frozen, so each BatchNorm becomes a scale and
shift inside the conv before it. On CPU the exported static model run by Paddle Inference with
oneDNN is several times faster than the dynamic graph, whose convolutions do not use oneDNN.
"""
import contextlib
import copy
import os
import sys
import tempfile

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from utils import runtime


BACKENDS = ("inference", "dygraph")
# Paddle 3.3 warns once per binary operator while converting a forward to a static graph; the
# export works, so the warning only alarms users.
_EXPORT_NOISE = "not support input out tensor"


@contextlib.contextmanager
def held_output(stdout=False, noise=None):
    """Hold back what is written to stderr inside (C++ code's too; with ``stdout``, stdout's as well)
    and yield a list that receives it as one text on the way out. With ``noise``, the held lines
    without it are then passed on to stderr: Paddle's C++ warnings cannot be silenced otherwise."""
    fds = (1, 2) if stdout else (2,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    held = []
    with tempfile.TemporaryFile() as captured:
        for fd in fds:
            os.dup2(captured.fileno(), fd)
        try:
            yield held
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, original in zip(fds, saved):
                os.dup2(original, fd)
                os.close(original)
            captured.seek(0)
            held.append(captured.read().decode(errors="replace"))
            if noise is not None:
                sys.stderr.write("".join(line for line in held[0].splitlines(True) if noise not in line))


def _folded_conv(conv, bn):
    """A conv with bias equal to ``bn(conv(x))`` for frozen BN statistics."""
    scale = bn.weight.numpy() / np.sqrt(bn._variance.numpy() + bn._epsilon)
    shift = bn.bias.numpy() - bn._mean.numpy() * scale
    bias = shift if conv.bias is None else conv.bias.numpy() * scale + shift
    fused = nn.Conv2D(conv._in_channels, conv._out_channels, conv._kernel_size, stride=conv._stride,
                      padding=conv._padding, dilation=conv._dilation, groups=conv._groups)
    fused.weight.set_value((conv.weight.numpy() * scale[:, None, None, None]).astype(np.float32))
    fused.bias.set_value(bias.astype(np.float32))
    return fused


def fold_batchnorm(model):
    """A copy of ``model`` in which every conv followed by a BN is one conv with bias.

    Recognises the pairs of our networks: ``convN``/``bnN`` attributes of one layer (stem,
    bottlenecks) and ``Sequential(conv, bn)`` projection shortcuts.
    """
    model = copy.deepcopy(model)
    model.eval()
    for layer in model.sublayers(include_self=True):
        children = dict(layer.named_children())
        for name, child in children.items():
            if isinstance(child, nn.BatchNorm2D) and name.startswith("bn"):
                conv = children.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2D):
                    setattr(layer, "conv" + name[2:], _folded_conv(conv, child))
                    setattr(layer, name, nn.Identity())
        if isinstance(layer, nn.Sequential) and len(children) == 2:
            conv, bn = children["0"], children["1"]
            if isinstance(conv, nn.Conv2D) and isinstance(bn, nn.BatchNorm2D):
                layer._sub_layers["0"] = _folded_conv(conv, bn)
                layer._sub_layers["1"] = nn.Identity()
    return model


class _FinalLogits(nn.Layer):
    """The network's evaluation output: layer6 for the multi-level net, the only head otherwise."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        out = self.model(image)
        return out[-1] if isinstance(out, (tuple, list)) else out


def frozen_network(model):
    """``model`` as evaluation and export run it: a copy in eval mode, each BatchNorm folded into its
    conv, giving the final head's logits only."""
    net = _FinalLogits(fold_batchnorm(model))
    net.eval()
    return net


def save_static_model(net, prefix, input_spec):
    """Save ``net``'s forward as a static graph at ``prefix``; returns the program file: Paddle 3
    writes it as JSON (PIR, ``prefix.json``), Paddle 2.6 as ``prefix.pdmodel``. The weights go
    to ``prefix.pdiparams``."""
    # full_graph: Paddle 3 converts the whole forward (export needs it); 2.6 ignores it.
    with held_output(noise=_EXPORT_NOISE):
        paddle.jit.save(paddle.jit.to_static(net, input_spec=input_spec, full_graph=True), prefix)
    return prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"


def params_file(program):
    """The weights file saved with a program file."""
    return os.path.splitext(program)[0] + ".pdiparams"


def create_inference_predictor(program, params, use_gpu=False, gpu_id=0, cpu_threads=None):
    """A Paddle Inference predictor of a saved static model: oneDNN on CPU, CUDA on GPU."""
    from paddle import inference
    config = inference.Config(program, params)
    if use_gpu:
        config.enable_use_gpu(256, gpu_id)
    else:
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(cpu_threads or runtime.cpu_threads())
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_predictor(predictor, cpu_threads=None):
    """``predictor.run()``, then the process's CPU thread count put back to ``cpu_threads`` (default
    ``runtime.cpu_threads()``, what the predictor was created with): a run with oneDNN leaves it at
    1 (Paddle 2.6 and 3.3), which would slow the training steps after a validation inside training
    and change their arithmetic (a resumed run would not equal one that never stopped)."""
    predictor.run()
    paddle.base.core.set_num_threads(cpu_threads or runtime.cpu_threads())


def ensemble_weights(count, weights=None):
    """Each model's weight in an ensemble of ``count`` (evaluation's and prediction's): ``weights``
    (--model-weights), or equal ones summing to 1."""
    if weights is not None and len(weights) != count:
        raise ValueError("--model-weights: {} weights for {} models; give one per --restore-from".format(
            len(weights), count))
    return list(weights) if weights is not None else [1.0 / count] * count


class WeightedSum(object):
    """Several predictors (each images -> logits) as one: the weighted sum of their logits, ADVENT's
    test-time ensemble of models. Its reference sums the logits upsampled to the image; bilinear
    upsampling is linear, so summing before it gives the same up to float rounding, at a fraction of
    the work."""

    def __init__(self, predictors, weights):
        if len(predictors) != len(weights):
            raise ValueError("--model-weights: {} weights for {} models; give one per model".format(
                len(weights), len(predictors)))
        self.predictors, self.weights = list(predictors), [np.float32(weight) for weight in weights]

    def __call__(self, images):
        total = None
        for predictor, weight in zip(self.predictors, self.weights):
            logits = weight * predictor(images)
            total = logits if total is None else total + logits
        return total


def upsample_argmax(logits, size):
    """Bilinear (align_corners=True, as the reference evaluation) to ``size`` (H, W), then argmax."""
    logits = paddle.to_tensor(logits) if isinstance(logits, np.ndarray) else logits
    with paddle.no_grad():
        up = F.interpolate(logits, size=list(size), mode="bilinear", align_corners=True)
        return paddle.argmax(up, axis=1).astype("uint8").numpy()


class SegmentationPredictor(object):
    """Low-resolution logits of a frozen network for a batch of preprocessed images (NCHW float32).

    ``backend="inference"`` exports the BN-folded network once and runs it with Paddle Inference
    (oneDNN on CPU, CUDA on GPU); ``"dygraph"`` runs the BN-folded network in the dynamic graph.
    """

    def __init__(self, model, backend="inference", use_gpu=False, gpu_id=0, cpu_threads=None):
        if backend not in BACKENDS:
            raise ValueError("unknown backend {!r}: choose one of {}".format(backend, ", ".join(BACKENDS)))
        self.backend = backend
        self.net = frozen_network(model)
        if backend == "inference":
            self._threads = cpu_threads or runtime.cpu_threads()
            self._predictor = self._create_predictor(use_gpu, gpu_id, self._threads)

    def _create_predictor(self, use_gpu, gpu_id, cpu_threads):
        with tempfile.TemporaryDirectory(prefix="adaptseg_export_") as export_dir:
            spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "image")]
            program = save_static_model(self.net, os.path.join(export_dir, "model"), spec)
            # reads the files; they may go now
            predictor = create_inference_predictor(program, params_file(program), use_gpu, gpu_id, cpu_threads)
        self._input = predictor.get_input_handle(predictor.get_input_names()[0])
        self._output = predictor.get_output_handle(predictor.get_output_names()[0])
        return predictor

    def __call__(self, images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.backend == "dygraph":
            with paddle.no_grad():
                return self.net(paddle.to_tensor(images)).numpy()
        self._input.copy_from_cpu(images)
        run_predictor(self._predictor, self._threads)
        return self._output.copy_to_cpu()

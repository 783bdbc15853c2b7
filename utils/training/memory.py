"""How much memory a training iteration needs, and a check before iteration 1 that the card has
it (project issue 20: batch 2 at 1280x720 does not fit a 16 GB V100). A method adds up its passes
from these parts (AdaptSegNet's: utils/methods/adaptsegnet.py ``estimate_memory``).

The estimate is read off the networks themselves: one forward pass under ``paddle.no_grad`` on a
small probe image, with forward hooks recording every tensor that the backward pass will keep
(each distinct tensor once; a ReLU's output is also the next conv's input):

- the input of every Conv2D, BatchNorm (frozen or not: its backward reads x) and Linear;
- the output of every ReLU (its backward reads the output), the input of every LeakyReLU;
- the input and the output of every max pooling.

Each kept tensor is then scaled to the real image size with the networks' own arithmetic: the
probe's heights and widths are followed through every strided conv and pooling layer (kernel,
stride, padding, dilation, ceil mode), so 720 -> 360 -> 181 -> 91, as the network rounds.

Counted besides those activations (float32, ``FLOAT_BYTES``):

- weights and buffers of G and both discriminators; gradients of the trainable ones; SGD momentum
  (one copy of G's trainable parameters), Adam's two moments (each discriminator);
- the upsampled logits, 19 x H x W per head and image: the logits themselves, the softmax the
  loss keeps, their gradients (``LOGIT_COPIES``);
- the gradients in flight during a backward pass: about two of the largest kept tensors;
- the convolution workspace: two column buffers (in_channels x kernel area x output pixels) of
  the largest convolution, for one image (``WORKSPACE_COPIES``); that is what Paddle's CPU
  convolution allocates (2.2 GB at 1280x720), and the CPU check needs it; on a GPU, cuDNN's
  workspace instead, which Paddle caps at 512 MB (``CUDNN_WORKSPACE_BYTES``);
- what stays alive across steps (AdaptSegNet.step): the source outputs are kept for step 3, so
  they are held during the target pass; the passes themselves do not overlap (the source
  backward frees its activations before the target forward), so the peak is what persists
  plus the largest of the source pass, the target pass and the discriminators' pass.

Not counted: the allocator's fragmentation and cache, the CUDA context
(~0.3-0.5 GB per process), the data loader's batches, --amp (half precision roughly halves the
activations; the estimate stays the float32 one, an upper bound). Checked against the peak RSS of
a real iteration on the CPU (tests/utils/training/test_memory.py): within 15% at two sizes.
"""
import math
import os
import shlex
import subprocess
import sys

import paddle
import paddle.nn as nn

FLOAT_BYTES = 4
# The probe's (width, height): small, odd, and with a different size at every stride of the
# networks (129 -> 65 -> 33 -> 17 ...), so each probe size names one stage.
PROBE_SIZE = (129, 97)
# Per head and image, in units of num_classes x H x W at the image size: the upsampled logits,
# the softmax kept by the loss (or fed to the discriminator) and the gradient of the logits.
LOGIT_COPIES = 3
# Gradients alive at once during a backward pass, in units of the largest kept tensor.
GRADIENT_COPIES = 2
# Column buffers alive at once in a CPU convolution's backward (one for the input's gradient, one
# for the weights'); one image at a time, whatever the batch.
WORKSPACE_COPIES = 2
# cuDNN's workspace is capped by Paddle's FLAGS_conv_workspace_size_limit (default 512 MB) instead.
CUDNN_WORKSPACE_BYTES = 512 * 2 ** 20

KEEPS_INPUT = (nn.Conv2D, nn.Linear, nn.LeakyReLU, nn.MaxPool2D, nn.layer.norm._BatchNormBase)
KEEPS_OUTPUT = (nn.ReLU, nn.MaxPool2D)


class NotEnoughGPUMemory(ValueError):
    """The asked batch does not fit the card; the message says what to run instead."""


def gib(num_bytes):
    return "{:.1f} GiB".format(num_bytes / 2.0 ** 30)


def _pair(value):
    return list(value) if isinstance(value, (list, tuple)) else [value, value]


def _output_length(layer, length, axis):
    """A strided layer's output length along ``axis`` (0 height, 1 width), as Paddle computes it."""
    if isinstance(layer, nn.Conv2D):
        kernel, stride = _pair(layer._kernel_size)[axis], _pair(layer._stride)[axis]
        dilation, padding = _pair(layer._dilation)[axis], layer._padding
        ceil_mode = False
    else:
        kernel, stride = _pair(layer.ksize)[axis], _pair(layer.stride or layer.ksize)[axis]
        dilation, padding, ceil_mode = 1, layer.padding, layer.ceil_mode
    if not isinstance(padding, int):
        padding = _pair(padding)[axis] if len(_pair(padding)) == 2 else _pair(padding)[2 * axis]
    span = length + 2 * padding - dilation * (kernel - 1) - 1
    return (-(-span // stride) if ceil_mode else span // stride) + 1


class SavedTensors(object):
    """What a network's backward pass keeps, probed once at ``PROBE_SIZE``: the (channels, probe
    height, probe width) of each kept tensor, and how the probe's lengths become real ones."""

    def __init__(self, net, in_channels):
        self.shapes, self._strided, self.columns = [], [], []
        seen = {}  # id -> tensor, holding each tensor so that no id is reused during the probe

        def keep(tensor):
            if id(tensor) not in seen:
                seen[id(tensor)] = tensor
                self.shapes.append(tuple(tensor.shape[1:]))

        def hook(layer, inputs, output):
            if isinstance(layer, KEEPS_INPUT):
                keep(inputs[0])
            if isinstance(layer, KEEPS_OUTPUT):
                keep(output)
            if isinstance(layer, (nn.Conv2D, nn.MaxPool2D)):
                self._strided.append((layer, tuple(inputs[0].shape[2:]), tuple(output.shape[2:])))
            if isinstance(layer, nn.Conv2D):
                kernel = _pair(layer._kernel_size)
                self.columns.append((inputs[0].shape[1] * kernel[0] * kernel[1],) + tuple(output.shape[2:]))

        modes = [(layer, layer.training) for layer in net.sublayers(include_self=True)]
        handles = [layer.register_forward_post_hook(hook) for layer in net.sublayers()
                   if isinstance(layer, KEEPS_INPUT + KEEPS_OUTPUT)]
        net.eval()  # batch statistics would move the running ones; what is kept is the same
        try:
            with paddle.no_grad():
                net(paddle.zeros([1, in_channels, PROBE_SIZE[1], PROBE_SIZE[0]]))
        finally:
            for handle in handles:
                handle.remove()
            for layer, training in modes:
                layer.training = training

    def real_lengths(self, size):
        """{probe length: real length}, per axis (heights, widths), for an input of ``size`` =
        (width, height)."""
        lengths = ({PROBE_SIZE[1]: size[1]}, {PROBE_SIZE[0]: size[0]})
        for layer, probe_in, probe_out in self._strided:
            for axis, known in enumerate(lengths):
                if probe_in[axis] in known and probe_out[axis] not in known:
                    known[probe_out[axis]] = _output_length(layer, known[probe_in[axis]], axis)
        return lengths

    def _bytes(self, shapes, size):
        heights, widths = self.real_lengths(size)

        def real(probe, known, full, probe_full):
            # a length no strided layer explains (none in these networks): scale it, rounding up
            return known.get(probe, -(-full * probe // probe_full))

        sizes = []
        for shape in shapes:
            channels, height, width = shape if len(shape) == 3 else (int(math.prod(shape)), 1, 1)
            if len(shape) == 3:
                height = real(height, heights, size[1], PROBE_SIZE[1])
                width = real(width, widths, size[0], PROBE_SIZE[0])
            sizes.append(channels * height * width * FLOAT_BYTES)
        return sizes

    def tensor_bytes(self, size):
        """The bytes of each kept tensor for one image of ``size`` = (width, height)."""
        return self._bytes(self.shapes, size)

    def workspace_bytes(self, size):
        """The largest convolution workspace for one image of ``size``: the column buffer
        (in_channels x kernel area x output pixels) that im2col convolution fills; here the
        ASPP's 3x3 convs on layer4's 2048 channels."""
        return max(self._bytes(self.columns, size) or [0])


def tensors_bytes(tensors):
    return sum(int(math.prod(t.shape)) * FLOAT_BYTES for t in tensors)


class MemoryEstimate(object):
    """Peak bytes of one iteration on one device, by part (``parts``, in bytes) and in total."""

    def __init__(self, batch_size, persistent, passes):
        self.batch_size = batch_size
        self.parts = dict(persistent)
        self.passes = passes
        self.peak_pass = max(passes, key=passes.get)
        self.iteration_bytes = passes[self.peak_pass]
        self.total_bytes = sum(persistent.values()) + self.iteration_bytes

    def __str__(self):
        persistent = ", ".join("{} {}".format(name, gib(value)) for name, value in self.parts.items())
        return "{} at batch {} ({}; {} at its peak, the {})".format(
            gib(self.total_bytes), self.batch_size, persistent, gib(self.iteration_bytes), self.peak_pass)


def pass_bytes(saved, size, batch_size, on_gpu):
    """Bytes of one forward and backward pass of a network (``saved``: its SavedTensors) over a batch."""
    kept = saved.tensor_bytes(size)
    workspace = CUDNN_WORKSPACE_BYTES if on_gpu else WORKSPACE_COPIES * saved.workspace_bytes(size)
    return batch_size * (sum(kept) + GRADIENT_COPIES * max(kept)) + workspace




def free_gpu_memory(gpu_id):
    """Bytes this process could still use on card ``gpu_id``: the card's free memory plus what
    Paddle already holds in its pool; None when neither Paddle nor nvidia-smi tells."""
    held = int(paddle.device.cuda.memory_reserved(gpu_id))
    mem_get_info = getattr(getattr(paddle, "cuda", None), "mem_get_info", None)  # Paddle >= 3.2
    if mem_get_info is not None:
        try:
            return int(mem_get_info("gpu:{}".format(gpu_id))[0]) + held
        except Exception:  # an older signature or a build without it: ask nvidia-smi
            pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    index = visible[gpu_id].strip() if gpu_id < len(visible) and visible[gpu_id].strip() else str(gpu_id)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits",
                              "-i", index], capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.split()[0]) * 2 ** 20 + held
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _replace_flag(argv, flag, value):
    """``argv`` with ``flag VALUE`` (or ``flag=VALUE``) set to ``value``, appended if absent."""
    out, skip, found = [], False, False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == flag:
            skip, found = True, True
            out += [flag, str(value)]
        elif word.startswith(flag + "="):
            found = True
            out += [flag, str(value)]
        else:
            out.append(word)
    return out if found else out + [flag, str(value)]


def fitting_command(argv, batch_size, iter_size, world_size, available, estimate_for):
    """The command line with the largest --batch-size (per rank, a divisor of the asked one) whose
    estimate fits in ``available``, --iter-size raised to keep the effective batch; None if even
    one image per rank does not fit."""
    for per_rank in range(batch_size - 1, 0, -1):
        if batch_size % per_rank or estimate_for(per_rank).total_bytes > available:
            continue
        command = _replace_flag(_replace_flag(argv, "--batch-size", per_rank * world_size),
                                "--iter-size", iter_size * batch_size // per_rank)
        return per_rank, " ".join(shlex.quote(word) for word in command)
    return None


def check_gpu_memory(args, estimate_for, free_bytes=None, world_size=1, argv=None, gpu_id=None):
    """Before iteration 1 on a GPU: raise NotEnoughGPUMemory, naming the estimate, the free memory
    and the command that fits, when the estimate for this rank's batch (--batch-size over
    ``world_size`` processes; ``estimate_for(batch_size)``: the method's MemoryEstimate on a GPU)
    exceeds ``free_bytes`` (default: ``free_gpu_memory``). Never changes the run. Returns the
    MemoryEstimate, or None when the free memory cannot be read."""
    gpu_id = args.gpu if gpu_id is None else gpu_id
    if free_bytes is None:
        free_bytes = free_gpu_memory(gpu_id)
        if free_bytes is None:
            return None
    per_rank = args.batch_size // world_size
    estimate = estimate_for(per_rank)
    if estimate.total_bytes <= free_bytes:
        return estimate
    argv = list(sys.argv if argv is None else argv)
    argv[0] = os.path.basename(argv[0]) if argv and argv[0].endswith(".py") else argv[0]
    command = "python " + " ".join(shlex.quote(word) for word in argv) if argv else ""
    fits = fitting_command(argv, per_rank, args.iter_size, world_size, free_bytes, estimate_for)
    if fits is None:
        advice = "even one image per GPU does not fit: use smaller --input-size / --input-size-target or a larger card"
    else:
        advice = "{} image(s) per GPU and --iter-size {} keep the effective batch of {}: python {}".format(
            fits[0], args.iter_size * per_rank // fits[0], args.batch_size * args.iter_size, fits[1])
    raise NotEnoughGPUMemory(
        "--batch-size {} needs about {} on GPU {} (estimate: {}) but {} is free; {}. Not started{}".format(
            args.batch_size, gib(estimate.total_bytes), gpu_id, estimate, gib(free_bytes), advice,
            " (was: {})".format(command) if command else ""))

"""DeepLab-v2 ResNet-101 with two output heads (conv4 and conv5 features), as in AdaptSegNet.

Parameter names equal the PyTorch state-dict names of the reference (BN running statistics are
Paddle's ``_mean`` / ``_variance``), so converted weights load one to one.
"""
import functools

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from model.common import ASPP_DILATIONS, Classifier_Module, parameters_per_enclosing_layer, sublayer_parameters
from utils.runtime import self_test_network

BN_EPSILON = 1e-5
BN_MODES = ("frozen", "train")


class FrozenAffineBatchNorm2D(nn.BatchNorm2D):
    """BatchNorm whose affine parameters are never trained (the reference sets requires_grad False),
    with its statistics handled one of two ways (``statistics``):

    - ``"frozen"``: the running statistics normalise in every mode and never change (Paddle's
      use_global_stats): the published Paddle reproduction.
    - ``"train"``: as the reference's ``model.train()`` in PyTorch: a training-mode forward
      normalises with the batch's statistics and moves the running ones (momentum 0.1 in PyTorch's
      sense, the variance unbiased); evaluation mode uses the running statistics.
    """

    def __init__(self, num_channels, statistics="frozen"):
        if statistics not in BN_MODES:
            raise ValueError("--bn {!r}: choose one of {}".format(statistics, ", ".join(BN_MODES)))
        super().__init__(num_channels, momentum=0.9, epsilon=BN_EPSILON,
                         weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)),
                         bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))
        self.statistics = statistics
        # Asked here, on the device the network is built on, not inside a training iteration.
        self._biased_kernel = statistics == "train" and moves_biased_variance()
        self.weight.stop_gradient = True
        self.bias.stop_gradient = True

    def forward(self, x):
        if self.statistics == "frozen" or not self.training:
            return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias, training=False,
                                epsilon=self._epsilon)
        values = x.shape[0] * x.shape[2] * x.shape[3]
        if values < 2:
            raise ValueError("BatchNorm with batch statistics needs more than one value per channel, got input "
                             "shape {}; use --bn frozen or a larger input".format(list(x.shape)))
        # Copies go in: the backward pass keeps them, so the buffers can be updated here.
        mean, variance = self._mean.clone(), self._variance.clone()
        out = F.batch_norm(x, mean, variance, self.weight, self.bias, training=True, momentum=self._momentum,
                           epsilon=self._epsilon)
        with paddle.no_grad():
            if self._biased_kernel:
                # r' = m r + (1 - m) v with the biased v; PyTorch's unbiased n / (n - 1) v gives
                # r' + (1 - m) v / (n - 1) = r' + (r' - m r) / (n - 1).
                variance = variance + (variance - self._variance * self._momentum) / (values - 1)
            paddle.assign(variance, output=self._variance)
            paddle.assign(mean, output=self._mean)
        return out


_BIASED = {}


def moves_biased_variance():
    """Whether Paddle's training-mode batch_norm on the current device moves the running variance
    by the biased batch variance (its CPU kernel does; cuDNN's uses the unbiased one, as PyTorch).
    Asked once per device, of four values whose variances are 1.25 (biased) and 5/3 (unbiased)."""
    key = paddle.get_device()
    if key not in _BIASED:
        with paddle.no_grad():
            x = paddle.to_tensor(np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape([2, 1, 1, 2]))
            running = paddle.zeros([1], "float32")
            F.batch_norm(x, paddle.zeros([1], "float32"), running, training=True, momentum=0.0)
        _BIASED[key] = bool(abs(float(running.numpy()[0]) - 1.25) < 1e-3)
    return _BIASED[key]


def conv_no_bias(in_channels, out_channels, kernel_size, **kwargs):
    return nn.Conv2D(in_channels, out_channels, kernel_size, bias_attr=False,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.01)),
                     **kwargs)


class Bottleneck(nn.Layer):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, dilation=1, downsample=None, bn="frozen"):
        super().__init__()
        norm = functools.partial(FrozenAffineBatchNorm2D, statistics=bn)
        # DeepLab-v2 (Caffe heritage) strides on the first 1x1 conv, not on the 3x3.
        self.conv1 = conv_no_bias(in_channels, planes, 1, stride=stride)
        self.bn1 = norm(planes)
        self.conv2 = conv_no_bias(planes, planes, 3, padding=dilation, dilation=dilation)
        self.bn2 = norm(planes)
        self.conv3 = conv_no_bias(planes, planes * self.expansion, 1)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNetMulti(nn.Layer):
    """ResNet backbone at output stride 8 with a classifier on layer3 (layer5) and layer4 (layer6).

    ``forward`` returns ``(out_conv4, out_conv5)`` at 1/8 of the input size (rounded up), logits;
    with ``return_features`` also layer4's output, which the weak-label method pools per class.
    """

    def __init__(self, layers, num_classes, use_all_aspp_branches=False, bn="frozen"):
        super().__init__()
        self._bn = bn
        norm = functools.partial(FrozenAffineBatchNorm2D, statistics=bn)
        self._in_channels = 64
        self.conv1 = conv_no_bias(3, 64, 7, stride=2, padding=3)
        self.bn1 = norm(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4)
        self.layer5 = Classifier_Module(1024, ASPP_DILATIONS, num_classes, use_all_aspp_branches)
        self.layer6 = Classifier_Module(2048, ASPP_DILATIONS, num_classes, use_all_aspp_branches)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        out_channels = planes * Bottleneck.expansion
        downsample = None
        # The reference also projects whenever the layer is dilated, even with matching shapes.
        if stride != 1 or self._in_channels != out_channels or dilation in (2, 4):
            downsample = nn.Sequential(
                conv_no_bias(self._in_channels, out_channels, 1, stride=stride),
                FrozenAffineBatchNorm2D(out_channels, statistics=self._bn))
        layers = [Bottleneck(self._in_channels, planes, stride, dilation, downsample, bn=self._bn)]
        self._in_channels = out_channels
        layers += [Bottleneck(out_channels, planes, dilation=dilation, bn=self._bn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x, return_features=False):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        out_conv4 = self.layer5(x)
        features = self.layer4(x)
        out_conv5 = self.layer6(features)
        if return_features:
            return out_conv4, out_conv5, features
        return out_conv4, out_conv5

    def optim_parameters(self):
        """The reference's SGD parameter groups, as ``[(parameters, learning-rate multiplier)]``:
        the backbone at the base rate, listed the way its code lists it (most parameters 3 or 4
        times; see utils/training/optimizer.py), and the classifiers at 10x, each once."""
        backbone = [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]
        return [(parameters_per_enclosing_layer(backbone), 1.0),
                (sublayer_parameters([self.layer5, self.layer6]), 10.0)]


# ResNet-101's bottlenecks per stage (layer1..layer4), and the self-test network's (utils/runtime.py).
RESNET101_BLOCKS, SELF_TEST_BLOCKS = (3, 4, 23, 3), (1, 1, 1, 1)


def resnet_blocks():
    return list(SELF_TEST_BLOCKS if self_test_network() else RESNET101_BLOCKS)


def DeeplabMulti(num_classes=19, use_all_aspp_branches=False, bn="frozen"):
    return ResNetMulti(resnet_blocks(), num_classes, use_all_aspp_branches, bn)


def DeeplabMulti4(num_classes=19, bn="frozen"):
    """ADVENT's network (valeoai/ADVENT, ``get_deeplab_v2``): DeeplabMulti whose classifiers sum all four
    dilated branches, as DeepLab-v2 intended; AdaptSegNet's forward stops after two. The parameter names
    are the same, so ADVENT's ``.pth`` files load key by key."""
    return ResNetMulti(resnet_blocks(), num_classes, use_all_aspp_branches=True, bn=bn)


# A classifier branch that no forward used keeps its initialisation N(0, 0.01) (no gradient, so no
# weight decay either); a trained one has moved off it: 120,000 iterations of weight decay alone
# shrink it about 3x. Over a branch's 175,000+ weights the sample RMS of N(0, 0.01) is within
# 0.4% of 0.01, so 2% separates the two without false alarms.
INITIAL_BRANCH_STD = 0.01
UNTRAINED_RMS_TOLERANCE = 0.02


def trained_with_two_branches(params):
    """Whether weights ({name: array}, Paddle names) come from AdaptSegNet's two-branch classifier:
    branches 2 and 3 of both classifiers still at their initialisation while branches 0 and 1 moved.
    The files cannot say it (the keys are the same); the weights can, except right after a fresh start."""
    def untrained(head, branch):
        weight = params.get("{}.conv2d_list.{}.weight".format(head, branch))
        if weight is None:
            return None
        rms = float(np.sqrt(np.mean(np.square(np.asarray(weight, dtype=np.float64)))))
        return abs(rms / INITIAL_BRANCH_STD - 1) < UNTRAINED_RMS_TOLERANCE

    heads = [[untrained(head, branch) for branch in range(4)] for head in ("layer5", "layer6")]
    return all(h[0] is False and h[1] is False and h[2] and h[3] for h in heads)

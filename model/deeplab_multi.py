"""DeepLab-v2 ResNet-101 with two output heads (conv4 and conv5 features), as in AdaptSegNet.

Parameter names equal the PyTorch state-dict names of the reference (BN running statistics are
Paddle's ``_mean`` / ``_variance``), so converted weights load one to one.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from model.common import ASPP_DILATIONS, Classifier_Module, parameters_per_enclosing_layer, sublayer_parameters

BN_EPSILON = 1e-5


class FrozenBatchNorm2D(nn.BatchNorm2D):
    """BatchNorm whose affine parameters and running statistics never change, in any mode.

    The reference never trains BN's affine parameters. It did use batch statistics in training
    (it called model.train()), but with a batch of 1-2 images those are noisy; the published
    Paddle reproduction froze them and matched the paper, so frozen statistics are the default.
    """

    def __init__(self, num_channels):
        super().__init__(num_channels, epsilon=BN_EPSILON,
                         weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)),
                         bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))
        self.weight.stop_gradient = True
        self.bias.stop_gradient = True

    def forward(self, x):
        return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias, training=False,
                            epsilon=self._epsilon)


def conv_no_bias(in_channels, out_channels, kernel_size, **kwargs):
    return nn.Conv2D(in_channels, out_channels, kernel_size, bias_attr=False,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.01)),
                     **kwargs)


class Bottleneck(nn.Layer):
    expansion = 4

    def __init__(self, in_channels, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        # DeepLab-v2 (Caffe heritage) strides on the first 1x1 conv, not on the 3x3.
        self.conv1 = conv_no_bias(in_channels, planes, 1, stride=stride)
        self.bn1 = FrozenBatchNorm2D(planes)
        self.conv2 = conv_no_bias(planes, planes, 3, padding=dilation, dilation=dilation)
        self.bn2 = FrozenBatchNorm2D(planes)
        self.conv3 = conv_no_bias(planes, planes * self.expansion, 1)
        self.bn3 = FrozenBatchNorm2D(planes * self.expansion)
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

    def __init__(self, layers, num_classes, use_all_aspp_branches=False):
        super().__init__()
        self._in_channels = 64
        self.conv1 = conv_no_bias(3, 64, 7, stride=2, padding=3)
        self.bn1 = FrozenBatchNorm2D(64)
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
                FrozenBatchNorm2D(out_channels))
        layers = [Bottleneck(self._in_channels, planes, stride, dilation, downsample)]
        self._in_channels = out_channels
        layers += [Bottleneck(out_channels, planes, dilation=dilation) for _ in range(1, blocks)]
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


def DeeplabMulti(num_classes=19, use_all_aspp_branches=False):
    return ResNetMulti([3, 4, 23, 3], num_classes, use_all_aspp_branches)

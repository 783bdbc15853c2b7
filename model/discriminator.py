"""The discriminators: AdaptSegNet's fully convolutional one on the segmentation softmax output,
and the weak-label method's category-wise one on class-pooled features."""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from model.common import torch_default_conv
from utils.runtime import self_test_network


class FCDiscriminator(nn.Layer):
    """Five 4x4 stride-2 convs (ndf, 2ndf, 4ndf, 8ndf, 1), LeakyReLU 0.2, no BN.

    Returns logits (no sigmoid): the losses apply BCE-with-logits or least squares.
    """

    def __init__(self, num_classes, ndf=64):
        super().__init__()
        self.conv1 = torch_default_conv(num_classes, ndf, 4, stride=2, padding=1)
        self.conv2 = torch_default_conv(ndf, ndf * 2, 4, stride=2, padding=1)
        self.conv3 = torch_default_conv(ndf * 2, ndf * 4, 4, stride=2, padding=1)
        self.conv4 = torch_default_conv(ndf * 4, ndf * 8, 4, stride=2, padding=1)
        self.classifier = torch_default_conv(ndf * 8, 1, 4, stride=2, padding=1)
        self.leaky_relu = nn.LeakyReLU(0.2)

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = self.leaky_relu(conv(x))
        return self.classifier(x)


def torch_default_linear(in_features, out_features):
    """Linear initialised like PyTorch's nn.Linear: weight and bias from U(+-1/sqrt(in_features))."""
    bound = 1.0 / math.sqrt(in_features)
    uniform = nn.initializer.Uniform(-bound, bound)
    return nn.Linear(in_features, out_features, weight_attr=paddle.ParamAttr(initializer=uniform),
                     bias_attr=paddle.ParamAttr(initializer=uniform))


SELF_TEST_HIDDEN = 32


class CWDiscriminator(nn.Layer):
    """Category-wise discriminator of the weak-label method: for each class its own MLP
    (features -> features -> ReLU -> features -> ReLU -> 1) on that class's pooled feature.

    Input (B, features, classes) from ``pooled_features``; output (B, classes) logits. Parameter
    names are the reference's, ``models.<class>.<0|2|4>.weight|bias`` (Linear weights stored
    transposed, as Paddle does). With 2048 features and 19 classes it has 159.5M parameters; the
    self-test network's (utils/runtime.py) has a hidden width of 32.
    """

    def __init__(self, num_classes=19, num_features=2048):
        super().__init__()
        hidden = SELF_TEST_HIDDEN if self_test_network() else num_features
        self.models = nn.LayerList([
            nn.Sequential(torch_default_linear(num_features, hidden), nn.ReLU(),
                          torch_default_linear(hidden, hidden), nn.ReLU(),
                          torch_default_linear(hidden, 1))
            for _ in range(num_classes)])

    def forward(self, pooled):
        return paddle.concat([mlp(pooled[:, :, c]) for c, mlp in enumerate(self.models)], axis=1)


def pooled_features(logits, features):
    """Class-attention pooling: (B, C, h, w) logits and (B, F, h, w) features -> (B, F, C).

    Each class attends over the positions with the softmax of its logits taken over the h*w
    positions (its weights sum to 1), so the pooled feature is the feature where that class
    scores highest, softly.
    """
    batch, classes = logits.shape[:2]
    attention = F.softmax(logits.reshape([batch, classes, -1]), axis=2)  # (B, C, hw)
    return paddle.matmul(features.reshape([batch, features.shape[1], -1]), attention, transpose_y=True)

"""The fully convolutional discriminator that looks at the segmentation softmax output."""
import paddle.nn as nn

from model.common import torch_default_conv


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

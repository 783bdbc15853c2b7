"""DeepLab-v2 on VGG-16 (the paper's 35.0 mIoU variant): one output head.

``features`` keeps the indices of torchvision's VGG-16 with pool4 and pool5 removed, so the
reference's parameter names (``features.<i>.weight``, ``classifier.conv2d_list.<j>.bias``) load
unchanged.
"""
import paddle
import paddle.nn as nn

from model.common import ASPP_DILATIONS, Classifier_Module, sublayer_parameters, torch_default_conv

# VGG-16 conv blocks up to conv5; "M" is a 2x2 max-pool. pool4 is gone and conv5 is dilated,
# which keeps the output stride at 8.
_VGG16_CONV = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, 512, 512, 512)
_DILATED_FROM = 10  # the three conv5 layers: the 11th conv onwards


def _vgg_conv(in_channels, out_channels, dilation):
    # torchvision's VGG init: Kaiming normal over fan-out, zero bias.
    fan_out = out_channels * 9
    return nn.Conv2D(in_channels, out_channels, 3, padding=dilation, dilation=dilation,
                     weight_attr=paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(fan_in=fan_out)),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


class DeeplabVGG(nn.Layer):
    def __init__(self, num_classes=19, use_all_aspp_branches=False):
        super().__init__()
        layers, in_channels, conv_index = [], 3, 0
        for item in _VGG16_CONV:
            if item == "M":
                layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
                continue
            dilation = 2 if conv_index >= _DILATED_FROM else 1
            layers += [_vgg_conv(in_channels, item, dilation), nn.ReLU()]
            in_channels, conv_index = item, conv_index + 1
        layers += [torch_default_conv(512, 1024, 3, padding=4, dilation=4), nn.ReLU(),   # fc6
                   torch_default_conv(1024, 1024, 3, padding=4, dilation=4), nn.ReLU()]  # fc7
        self.features = nn.Sequential(*layers)
        self.classifier = Classifier_Module(1024, ASPP_DILATIONS, num_classes, use_all_aspp_branches)

    def forward(self, x):
        return self.classifier(self.features(x))

    def optim_parameters(self):
        """The reference's SGD group of the VGG variant: ``parameters()``, each once, one rate."""
        return [(sublayer_parameters([self]), 1.0)]

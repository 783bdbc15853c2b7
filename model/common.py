"""Pieces shared by the segmentation networks and the discriminator."""
import math

import paddle
import paddle.nn as nn


def torch_default_conv(in_channels, out_channels, kernel_size, bias=True, weight_std=None, **kwargs):
    """Conv2D initialised like PyTorch's nn.Conv2d, so a fresh model starts where the original's did.

    PyTorch draws weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) unless the model
    overrides it; the reference overrides conv weights with N(0, weight_std) in some places.
    """
    fan_in = in_channels * kernel_size * kernel_size
    bound = 1.0 / math.sqrt(fan_in)
    if weight_std is None:
        weight_init = nn.initializer.Uniform(-bound, bound)
    else:
        weight_init = nn.initializer.Normal(0.0, weight_std)
    bias_attr = paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound)) if bias else False
    return nn.Conv2D(in_channels, out_channels, kernel_size,
                     weight_attr=paddle.ParamAttr(initializer=weight_init), bias_attr=bias_attr, **kwargs)


class Classifier_Module(nn.Layer):
    """DeepLab-v2 "ASPP" classifier: parallel dilated 3x3 convs whose outputs are summed.

    The reference forward returns inside its summing loop, so only the first two branches
    (dilations 6 and 12) contribute; the released models were trained that way, so that is the
    default. All four branches keep their parameters so released weights load either way;
    ``use_all_branches=True`` sums all four, as the DeepLab-v2 paper intended.
    """

    def __init__(self, in_channels, dilations, num_classes, use_all_branches=False):
        super().__init__()
        self.use_all_branches = use_all_branches
        self.conv2d_list = nn.LayerList([
            torch_default_conv(in_channels, num_classes, 3, padding=d, dilation=d, weight_std=0.01)
            for d in dilations
        ])

    def forward(self, x):
        used = len(self.conv2d_list) if self.use_all_branches else 2
        out = self.conv2d_list[0](x)
        for i in range(1, used):
            out = out + self.conv2d_list[i](x)
        return out


ASPP_DILATIONS = (6, 12, 18, 24)


def sublayer_parameters(layers):
    """Trainable parameters of the given sublayers, in a stable order."""
    return [p for layer in layers for p in layer.parameters() if not p.stop_gradient]


def parameters_per_enclosing_layer(layers):
    """The trainable parameters the reference's ``get_1x_lr_params_NOscale`` yields for ``layers``.

    It loops ``for j in layer.modules(): for k in j.parameters()``: ``modules()`` is the layer and
    all its descendants and ``parameters()`` is recursive, so a parameter comes once for every
    layer of the walk that encloses it (a bottleneck conv 3 times: layerN, the block, the conv).
    """
    return [p for layer in layers for sub in layer.sublayers(include_self=True)
            for p in sub.parameters() if not p.stop_gradient]

"""The training log's picture (utils/training/log.py): a target image, its prediction and its
entropy, each panel checked against numpy."""
import numpy as np
import paddle
import pytest

from dataset.classes import CITYSCAPES, IMG_MEAN_BGR
from utils.training.log import prediction_picture

pytestmark = pytest.mark.paddle_api


class FixedLogits(paddle.nn.Layer):
    """A 'network' whose conv5 head gives ``logits`` at the image's size (so no upsampling moves them)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        return None, paddle.to_tensor(self.logits)


def test_the_picture_is_the_image_its_prediction_and_its_entropy():
    rng = np.random.default_rng(0)
    height, width, classes = 6, 8, CITYSCAPES.num_classes
    logits = (rng.standard_normal((1, classes, height, width)) * 3).astype(np.float32)
    logits[0, 5, 0, 0] = 60.0     # one certain pixel: entropy 0
    logits[0, :, 0, 1] = 0.0      # one uniform pixel: entropy 1
    rgb = rng.integers(0, 256, (height, width, 3)).astype(np.float32)
    images = paddle.to_tensor(((rgb[:, :, ::-1] - IMG_MEAN_BGR).transpose(2, 0, 1)[None]).astype(np.float32))
    picture = prediction_picture(FixedLogits(logits), images, CITYSCAPES)

    assert picture.shape == (height, 3 * width, 3) and picture.dtype == np.uint8
    np.testing.assert_array_equal(picture[:, :width], rgb.astype(np.uint8))
    np.testing.assert_array_equal(picture[:, width:2 * width], CITYSCAPES.colorize(logits[0].argmax(axis=0)))
    p = np.exp(logits[0].astype(np.float64) - logits[0].max(axis=0))
    p /= p.sum(axis=0)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=0) / np.log(classes)
    grey = picture[:, 2 * width:]
    assert (grey[:, :, 0] == grey[:, :, 1]).all() and (grey[:, :, 0] == grey[:, :, 2]).all()
    assert np.abs(grey[:, :, 0] - entropy * 255).max() <= 0.51
    assert (grey[0, 0, 0], grey[0, 1, 0]) == (0, 255)

"""How often one training iteration makes the host wait for the device.

Every read-back (``Tensor.numpy``, ``float()``, ``item()``, ``tolist()``, ``bool()``) and every
``paddle.to_tensor`` copy inside an iteration stalls a GPU's queue; on a CPU they cost nothing,
so only a count shows them. The budget: one read-back per iteration (the logged losses), no
copy from the host; with fp16, one more read-back for the overflow check.
"""
import collections

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import train_gta2cityscapes_multi as train
import train_weak_labels as weak
from tests.helpers import named_batches
from dataset.weak_labels import Thresholds, present_classes
from model import CWDiscriminator, FCDiscriminator
from model.deeplab_multi import ResNetMulti
from utils.methods import adaptsegnet
from utils.methods.adaptsegnet import AdaptSegNet
from utils.methods.weak_labels import WeakLabels
from utils.training.optimizer import build_sgd

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

NUM_CLASSES = 19  # the weak-label thresholds are per Cityscapes class
WIDTH, HEIGHT = 32, 24
READ_BACKS = ("numpy", "item", "tolist", "__float__", "__bool__")


def counting(monkeypatch):
    """Counter of read-backs and host-to-device copies from now on (a read-back that Paddle makes
    through another, bool() through numpy(), counts once)."""
    counts, inside = collections.Counter(), []

    def counted(real, kind):
        def call(*args, **kwargs):
            if inside:
                return real(*args, **kwargs)
            counts[kind] += 1
            inside.append(kind)
            try:
                return real(*args, **kwargs)
            finally:
                inside.pop()
        return call

    for name in READ_BACKS:
        monkeypatch.setattr(paddle.Tensor, name, counted(getattr(paddle.Tensor, name), "read-back"))
    monkeypatch.setattr(paddle, "to_tensor", counted(paddle.to_tensor, "to_tensor"))
    return counts


def arguments(parse, *flags):
    return parse(["--from-scratch", "--num-classes", str(NUM_CLASSES), "--input-size", "{},{}".format(WIDTH, HEIGHT),
                  "--input-size-target", "{},{}".format(WIDTH, HEIGHT), "--num-steps", "10", "--num-steps-stop", "5"] + list(flags))


def source_batch(rng, present=None):
    images = rng.normal(size=(2, 3, HEIGHT, WIDTH)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, (2, HEIGHT, WIDTH)).astype("uint8")
    batch = [paddle.to_tensor(images), paddle.to_tensor(labels)]
    if present is not None:  # the per-image fact the loader's workers add for the category-wise loss
        batch.append(paddle.to_tensor(np.stack([present_classes(label, present) for label in labels])))
    return tuple(batch)


def adaptsegnet_read_backs(monkeypatch, args):
    """What one AdaptSegNet iteration (a one-block-per-layer DeepLab) counts."""
    monkeypatch.setattr(adaptsegnet, "build_model",
                        lambda name, num_classes, bn: ResNetMulti([1, 1, 1, 1], num_classes, bn=bn))
    model, sgd, discriminators = adaptsegnet.build_networks(args)
    method = AdaptSegNet.on_networks(args, {"model": model}, [sgd])
    method.add_discriminators(discriminators)
    rng = np.random.default_rng(0)
    batches = [(source_batch(rng), (paddle.to_tensor(rng.normal(size=(2, 3, HEIGHT, WIDTH)).astype("float32")),))]
    counts = counting(monkeypatch)
    method.run_step(named_batches(batches), 0)
    return counts


@pytest.mark.parametrize("recipe", ["authors", "paddle-port"])
def test_an_adaptsegnet_iteration_reads_back_once(recipe, monkeypatch):
    args = arguments(train.get_arguments, "--recipe", recipe, "--batch-size", "2")
    assert adaptsegnet_read_backs(monkeypatch, args) == {"read-back": 1}


def test_with_fp16_the_overflow_check_is_the_one_more_read_back(monkeypatch):
    args = arguments(train.get_arguments, "--batch-size", "2", "--amp", "fp16")
    assert adaptsegnet_read_backs(monkeypatch, args) == {"read-back": 2}


class FeatureNet(nn.Layer):
    """Two heads over 8 features at 1/4 resolution, the features returned on request, as the
    weak-label method asks of DeepLab."""

    def __init__(self):
        super().__init__()
        self.layer4 = nn.Conv2D(3, 8, 3, stride=4, padding=1)
        self.layer5 = nn.Conv2D(8, NUM_CLASSES, 1)
        self.layer6 = nn.Conv2D(8, NUM_CLASSES, 1)

    def forward(self, x, return_features=False):
        features = F.relu(self.layer4(x))
        heads = (self.layer5(features), self.layer6(features))
        return heads + (features,) if return_features else heads

    def optim_parameters(self):
        return [(list(self.layer4.parameters()), 1.0),
                (list(self.layer5.parameters()) + list(self.layer6.parameters()), 10.0)]


@pytest.mark.parametrize("mode", [["--use-pseudo"], ["--use-pointloss"]])
def test_a_weak_label_iteration_with_category_wise_alignment_reads_back_once(mode, monkeypatch):
    """Pseudo-weak labels (unsupervised), or image labels and one point per class from the target's
    ground truth, as the target loader's workers give them."""
    args = arguments(weak.get_arguments, "--use-weak", "--use-weak-cw", "--batch-size", "2", *mode)
    thresholds = Thresholds(np.full(NUM_CLASSES, 10.0), HEIGHT * WIDTH)
    model, D2, cwD = FeatureNet(), FCDiscriminator(NUM_CLASSES, ndf=4), CWDiscriminator(NUM_CLASSES, num_features=8)
    method = WeakLabels.on_networks(args, {"model": model}, [build_sgd(model, args)])
    method.add_discriminators({"D2": D2, "cwD": cwD})
    rng = np.random.default_rng(2)
    target = [paddle.to_tensor(rng.normal(size=(2, 3, HEIGHT, WIDTH)).astype("float32"))]
    if args.use_pointloss:
        points = np.full((2, NUM_CLASSES, 2), -1, np.int64)
        points[:, :3] = rng.integers(0, HEIGHT, (2, 3, 2))
        target += [paddle.to_tensor((rng.random((2, NUM_CLASSES)) > 0.5).astype("float32")), paddle.to_tensor(points)]
    batches = [(source_batch(rng, thresholds), tuple(target))]
    counts = counting(monkeypatch)
    method.run_step(named_batches(batches, ("images", "labels", "present"),
                                  ("images", "weak", "points") if args.use_pointloss else ("images",)), 0)
    assert counts == {"read-back": 1}

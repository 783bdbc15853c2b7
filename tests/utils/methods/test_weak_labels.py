"""The weak-label method (ECCV 2020): each piece against an independent numpy computation, one
iteration per mode against a re-computation in the order of the reference's loop (sujoyp/weak-da-seg,
daweak/engine/trainer_weakda.py, TrainerWeakda.training), resume exactness and failures.

The re-computation builds one objective per network (paddle.grad gives its gradients), clips
G's gradients to norm 1 and applies PyTorch 0.4's SGD and Adam rules in numpy.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import train_weak_labels as weak
from dataset.classes import CITYSCAPES
from dataset.loader import Batches
from dataset.weak_labels import (SourceWithPresentClasses, Thresholds, class_pixel_counts, present_classes,
                                 read_label_file, sample_points, thresholds_from_counts)
from model.common import parameters_per_enclosing_layer
from model.discriminator import CWDiscriminator, FCDiscriminator, pooled_features
from tests.helpers import ROOT, assert_same_snapshot, one_iteration, signal_during_run, training_args
from utils.files.snapshots import SnapshotDir
from utils.stopping import STOPPED_ON_REQUEST
from utils.loss import (category_adversarial_loss, domain_loss, dropout, image_level_prediction, point_loss,
                        seg_loss, weak_loss)
from utils.training.optimizer import build_sgd, clip_grad_norm

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

rng = np.random.default_rng(0)

NUM_CLASSES = CITYSCAPES.num_classes  # the weak-label thresholds' tables are per Cityscapes class


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_image_level(logits):
    b, c = logits.shape[:2]
    flat = logits.reshape(b, c, -1).astype(np.float64)
    top = flat.max(axis=2, keepdims=True)
    smooth_max = np.log(np.exp(flat - top).mean(axis=2)) + top[..., 0]
    return np.clip(sigmoid(smooth_max), 1e-7, 1 - 1e-7)


def np_bce_logits(x, y):
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))


# -- the pieces ---------------------------------------------------------------------------------

def test_image_level_prediction_is_a_smooth_max_pooling():
    logits = rng.normal(size=(2, 5, 3, 4)).astype(np.float32) * 4
    ours = image_level_prediction(paddle.to_tensor(logits)).numpy()
    np.testing.assert_allclose(ours, np_image_level(logits), rtol=1e-6)


def test_weak_loss_is_the_mean_binary_cross_entropy_of_the_image_level_prediction():
    logits = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    labels = (rng.random((2, 5)) < 0.5).astype(np.float32)
    p = np_image_level(logits)
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert float(weak_loss(paddle.to_tensor(logits), paddle.to_tensor(labels))) == pytest.approx(expected, rel=1e-6)


def test_pooled_features_weight_each_position_by_the_class_softmax_over_positions():
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    features = rng.normal(size=(2, 6, 4, 5)).astype(np.float32)
    flat = logits.reshape(2, 3, -1).astype(np.float64)
    attention = np.exp(flat - flat.max(axis=2, keepdims=True))
    attention /= attention.sum(axis=2, keepdims=True)
    expected = np.einsum("bfp,bcp->bfc", features.reshape(2, 6, -1), attention)
    ours = pooled_features(paddle.to_tensor(logits), paddle.to_tensor(features)).numpy()
    assert ours.shape == (2, 6, 3)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ls_gan", [False, True])
def test_category_wise_loss_averages_present_classes_then_images_that_have_one(ls_gan):
    out = rng.normal(size=(3, 5)).astype(np.float32)
    present = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0]], np.float32)
    for domain in (0.0, 1.0):
        per_image = []
        for b in range(3):
            chosen = out[b][present[b] > 0]
            if chosen.size:
                if ls_gan:
                    p = np.clip(sigmoid(chosen), 1e-7, 1 - 1e-7)
                    per_image.append(np.mean(0.5 * (p - (1 - domain)) ** 2))
                else:
                    per_image.append(np.mean(np_bce_logits(chosen, domain)))
        ours = category_adversarial_loss(paddle.to_tensor(out), paddle.to_tensor(present), domain, ls_gan)
        assert float(ours) == pytest.approx(np.mean(per_image), rel=1e-6)


def test_category_wise_loss_of_a_batch_without_present_classes_is_zero_not_nan():
    out = paddle.to_tensor(rng.normal(size=(2, 4)).astype(np.float32), stop_gradient=False)
    loss = category_adversarial_loss(out, paddle.zeros([2, 4]), 0.0)
    loss.backward()
    assert float(loss) == 0.0 and np.all(out.grad.numpy() == 0.0)


@pytest.mark.parametrize("ls_gan", [False, True])
def test_domain_loss(ls_gan):
    out = rng.normal(size=(2, 1, 3, 3)).astype(np.float32)
    for domain in (0.0, 1.0):
        if ls_gan:  # the reference's variant: source is 1, target 0, after a clamped sigmoid
            expected = 0.5 * np.mean((np.clip(sigmoid(out), 1e-7, 1 - 1e-7) - (1 - domain)) ** 2)
        else:
            expected = np.mean(np_bce_logits(out, domain))
        assert float(domain_loss(paddle.to_tensor(out), domain, ls_gan)) == pytest.approx(expected, rel=1e-6)


def test_point_loss_takes_the_points_whose_class_is_labelled_on_the_first_image_or_all():
    logits = rng.normal(size=(2, 4, 6, 7)).astype(np.float32)
    points = np.full((2, 4, 2), -1, np.int64)
    points[0, 1], points[0, 3], points[1, 2], points[0, 0] = (2, 5), (0, 0), (4, 1), (1, 1)
    labels = np.array([[0, 1, 0, 1], [0, 0, 1, 0]], np.float32)  # image 0's class 0 point is not labelled

    def expected(images):
        terms = []
        for b in range(images):
            for c in range(4):
                if points[b, c, 0] >= 0 and labels[b, c]:
                    column = logits[b, :, points[b, c, 0], points[b, c, 1]].astype(np.float64)
                    terms.append(-(column[c] - np.log(np.exp(column).sum())))
        return np.mean(terms)

    t = paddle.to_tensor(logits)
    assert float(point_loss(t, points, labels)) == pytest.approx(expected(1), rel=1e-6)
    assert float(point_loss(t, points, labels, images=2)) == pytest.approx(expected(2), rel=1e-6)
    assert float(point_loss(t, points, np.zeros_like(labels))) == 0.0


def test_thresholds_follow_the_reference_rule_on_a_count_table():
    counts = rng.integers(0, 5000, size=(40, NUM_CLASSES)) * (rng.random((40, NUM_CLASSES)) < 0.6)
    expected = []
    for c in range(NUM_CLASSES):
        mean = 0.0
        for _ in range(10):  # the mean of the counts above a tenth of the previous mean, ten times
            kept = [n for n in counts[:, c] if n > 0.1 * mean]
            mean = sum(kept) / len(kept)
        expected.append(0.1 * mean)
    np.testing.assert_allclose(thresholds_from_counts(counts), expected, rtol=1e-12)


def test_present_classes_compare_counts_with_thresholds_scaled_to_the_label_size():
    labels = np.full((10, 20), 255)
    labels[:, :8] = 0      # 80 pixels of class 0
    labels[:2, 8:12] = 3   # 8 pixels of class 3
    tau = np.full(NUM_CLASSES, 1e9)
    tau[0], tau[3] = 300.0, 40.0  # for labels of 1000 pixels: 60 and 8 at this label's 200
    present = present_classes(labels, Thresholds(tau, 1000))
    assert present.dtype == np.float32 and np.flatnonzero(present).tolist() == [0]  # 8 is not more than 8
    assert class_pixel_counts(labels, NUM_CLASSES)[[0, 3]].tolist() == [80, 8]


class LabelledImages(object):
    """A source dataset of random uint8 labels (ignored pixels included), as GTA5DataSet yields them."""

    def __init__(self, count, size=(16, 12), seed=0):
        r = np.random.default_rng(seed)
        self.labels = r.choice(np.array(list(range(NUM_CLASSES)) + [255], np.uint8), size=(count, size[1], size[0]),
                               p=np.r_[np.full(NUM_CLASSES, 0.9 / NUM_CLASSES), 0.1])
        self.labels[0, :, : size[0] // 2] = 3  # one class over its threshold for certain
        self.img_ids = ["{:05d}.png".format(i) for i in range(count)]

    def __len__(self):
        return len(self.labels)

    def files(self, index):
        return ["images/" + self.img_ids[index], "labels/" + self.img_ids[index]]

    def __getitem__(self, index):
        return np.zeros((3,) + self.labels.shape[1:], np.float32), self.labels[index], np.array([12, 16, 3]), \
            self.img_ids[index]


def test_source_samples_carry_the_classes_present_in_their_label():
    images = LabelledImages(6)
    thresholds = Thresholds(np.linspace(5.0, 60.0, NUM_CLASSES), 16 * 12)
    source = SourceWithPresentClasses(images, thresholds)
    assert len(source) == 6 and source.img_ids == images.img_ids and source.files(2) == images.files(2)
    for index in range(len(source)):
        image, label, present, size, entry = source[index]
        # what the iteration computed from the labels it copied back from the device (int64 then)
        np.testing.assert_array_equal(present, present_classes(images.labels[index].astype(np.int64), thresholds))
        assert present.dtype == np.float32 and present.shape == (NUM_CLASSES,)
        np.testing.assert_array_equal(label, images.labels[index])
        assert label.dtype == np.uint8 and entry == images.img_ids[index]
    assert source[0][2][3] == 1.0
    batch = next(iter(Batches(source, paddle.io.BatchSampler(range(6), batch_size=3))))
    assert batch[1].dtype == paddle.uint8 and batch[2].dtype == paddle.float32 and batch[2].shape == [3, NUM_CLASSES]
    np.testing.assert_array_equal(batch[2].numpy(), np.stack([source[i][2] for i in range(3)]))


def test_points_lie_on_their_class_and_repeat_with_the_seed():
    labels = rng.integers(0, 5, size=(9, 11))
    labels[0, 0] = 255
    points = sample_points(labels, np.random.default_rng(3), NUM_CLASSES)
    for c in range(NUM_CLASSES):
        if c < 5:
            assert labels[tuple(points[c])] == c
        else:
            assert points[c].tolist() == [-1, -1]
    np.testing.assert_array_equal(points, sample_points(labels, np.random.default_rng(3), NUM_CLASSES))


def test_category_wise_discriminator_is_one_mlp_per_class():
    paddle.seed(0)
    cw = CWDiscriminator(num_classes=3, num_features=5)
    pooled = rng.normal(size=(2, 5, 3)).astype(np.float32)
    expected = np.zeros((2, 3))
    for c in range(3):
        h = pooled[:, :, c]
        for index in (0, 2, 4):
            linear = cw.models[c][index]
            h = h @ linear.weight.numpy() + linear.bias.numpy()
            h = np.maximum(h, 0) if index < 4 else h
        expected[:, c] = h[:, 0]
    np.testing.assert_allclose(cw(paddle.to_tensor(pooled)).numpy(), expected, rtol=1e-5, atol=1e-6)
    names = {name for name, _ in cw.named_parameters()}
    assert "models.2.4.bias" in names and len(names) == 3 * 6
    per_class = 2 * 2048 * 2048 + 2 * 2048 + 2048 + 1  # the real one: 2048 features, 19 classes
    assert 19 * per_class == 159500307


def test_dropout_masks_repeat_with_the_seed():
    x = paddle.ones([2, 3, 40, 50])
    a, b = dropout(x, 0.1, (7, 3, 0, 0)).numpy(), dropout(x, 0.1, (7, 3, 0, 0)).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.unique(a), [0.0, 1 / 0.9], rtol=1e-6)
    assert abs((a == 0).mean() - 0.1) < 0.01
    assert not np.array_equal(a, dropout(x, 0.1, (7, 4, 0, 0)).numpy())
    assert dropout(x, 0.0, (7, 3, 0, 0)) is x
    paddle.seed(5)
    expected = paddle.rand([3]).numpy()
    paddle.seed(5)
    dropout(x, 0.1, (7, 3, 0, 0))
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected)  # Paddle's generator left as it was


def test_gradient_clipping_as_pytorch():
    net = nn.Linear(4, 3)
    (net(paddle.to_tensor(rng.normal(size=(5, 4)).astype(np.float32) * 10)) ** 2).sum().backward()
    grads = [p.grad.numpy().copy() for p in net.parameters()]
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    assert float(clip_grad_norm(net.parameters(), 1.0)) == pytest.approx(norm, rel=1e-5)
    for p, g in zip(net.parameters(), grads):
        np.testing.assert_allclose(p.grad.numpy(), g / (norm + 1e-6), rtol=1e-5)


def test_label_file_lists_classes_by_name_or_id(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("a.png road car\n\nb.png 0 18\n")
    labels = read_label_file(str(path), ["a.png", "b.png"])
    assert np.flatnonzero(labels["a.png"]).tolist() == [0, 13] and np.flatnonzero(labels["b.png"]).tolist() == [0, 18]
    with pytest.raises(ValueError, match="no line for 1 image"):
        read_label_file(str(path), ["a.png", "c.png"])
    path.write_text("a.png road cars\n")
    with pytest.raises(ValueError, match="line 1: 'cars' is neither a class name"):
        read_label_file(str(path), ["a.png"])


# -- one iteration against a re-computation -------------------------------------------------------

SIZE = (32, 24)  # (width, height) of source and target images


class TinyWeakNet(nn.Layer):
    """Stands in for DeeplabMulti: two heads and layer4-like features at 1/4 resolution; its
    backbone walk lists each backbone parameter twice (the Sequential and the conv)."""

    def __init__(self, features=6):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2D(3, features, 3, stride=4, padding=1))
        self.layer5 = nn.Conv2D(features, NUM_CLASSES, 1)
        self.layer6 = nn.Conv2D(features, NUM_CLASSES, 3, padding=1)

    def forward(self, x, return_features=False):
        features = F.relu(self.backbone(x))
        out = (self.layer5(features), self.layer6(features))
        return out + (features,) if return_features else out

    def optim_parameters(self):
        return [(parameters_per_enclosing_layer([self.backbone]), 1.0),
                (list(self.layer5.parameters()) + list(self.layer6.parameters()), 10.0)]


MODES = {
    "pseudo": ["--use-weak", "--use-pseudo", "--use-weak-cw"],
    "pseudo-no-cw": ["--use-weak", "--use-pseudo"],
    "image": ["--use-weak", "--use-weak-cw"],
    "points": ["--use-weak", "--use-pointloss", "--use-weak-cw"],
    "points-ls": ["--use-weak", "--use-pointloss", "--use-weak-cw", "--ls-gan"],
    "source-only": ["--source-only"],
}


def mode_args(mode):
    args = weak.get_arguments(["--from-scratch", "--input-size", "{},{}".format(*SIZE), "--input-size-target",
                               "{},{}".format(*SIZE), "--num-steps", "10", "--num-steps-stop", "5",
                               "--lambda-weak-target2", "0.3", "--lambda-weak-cwadv2", "0.2",
                               "--lambda-adv-target2", "0.1", "--learning-rate", "0.01", "--learning-rate-D", "0.02",
                               "--weight-decay", "0.01"] + MODES[mode])
    return args


def tiny_networks(args):
    model = TinyWeakNet()
    D2 = None if args.source_only else FCDiscriminator(NUM_CLASSES, ndf=4)
    cwD = CWDiscriminator(NUM_CLASSES, num_features=6) if args.use_weak_cw else None
    return model, D2, cwD


def batches_for(mode, seed=1, thresholds=None):
    """One (source, target) pair as the loaders give it: uint8 source labels and, with
    ``thresholds``, the classes present in each (SourceWithPresentClasses' field)."""
    r = np.random.default_rng(seed)
    labels = r.integers(0, 6, size=(2, SIZE[1], SIZE[0]))
    labels[0, :3] = 255
    source = [paddle.to_tensor(r.normal(size=(2, 3, SIZE[1], SIZE[0])).astype(np.float32)),
              paddle.to_tensor(labels.astype(np.uint8))]
    if thresholds is not None:
        source.append(paddle.to_tensor(np.stack([present_classes(label, thresholds) for label in labels])))
    source += [paddle.zeros([2, 3]), ["a", "b"]]
    target = [paddle.to_tensor(r.normal(size=(2, 3, SIZE[1], SIZE[0])).astype(np.float32))]
    if mode in ("image", "points", "points-ls"):
        target.append(paddle.to_tensor((r.random((2, NUM_CLASSES)) < 0.4).astype(np.float32)))
    if mode in ("points", "points-ls"):
        points = np.full((2, NUM_CLASSES, 2), -1, np.int64)
        points[:, :8] = np.stack([r.integers(0, SIZE[1], (2, 8)), r.integers(0, SIZE[0], (2, 8))], axis=2)
        target.append(paddle.to_tensor(points))
    target += [paddle.zeros([2, 3]), ["a", "b"]]  # the dataset's size and name fields
    return [(source, target)]


def batch_fields(mode, thresholds=None):
    """The names of batches_for's source and target fields."""
    source = ("images", "labels") + (("present",) if thresholds is not None else ()) + ("sizes", "names")
    target = ("images",) + (("weak",) if mode in ("image", "points", "points-ls") else ()) + \
        (("points",) if mode in ("points", "points-ls") else ()) + ("sizes", "names")
    return dict(source_fields=source, target_fields=target)


def up(x):
    return F.interpolate(x, size=[SIZE[1], SIZE[0]], mode="bilinear", align_corners=True)


def reference_gradients(nets, batch, args, thresholds, iteration):
    """Each network's whole objective as one expression, differentiated with paddle.grad."""
    model, D2, cwD = nets
    (source_images, labels), target = batch[0][:2], batch[1]
    _, s, s_feat = model(source_images, return_features=True)
    objectives = {"G": seg_loss(up(s), labels.astype("int64"))}  # the step takes the loaders' uint8
    if not args.source_only:
        _, t, t_feat = model(target[0], return_features=True)
        present = (paddle.to_tensor((np_image_level(t.numpy()) > args.pweak_th).astype(np.float32))
                   if args.use_pseudo else target[1])
        adv = lambda d_out, domain: domain_loss(d_out, domain, args.ls_gan)  # noqa: E731
        g = objectives["G"] + args.lambda_adv_target2 * adv(D2(F.softmax(up(t), axis=1)), 0.0)
        if args.use_weak:
            g = g + args.lambda_weak_target2 * weak_loss(dropout(t, args.weak_dropout, (args.random_seed, iteration,
                                                                                        0, 0)), present)
        if args.use_pointloss:
            g = g + point_loss(up(t), target[2], present)
        objectives["D2"] = 0.5 * (adv(D2(F.softmax(up(s).detach(), axis=1)), 0.0) +
                                  adv(D2(F.softmax(up(t).detach(), axis=1)), 1.0))
        if cwD is not None:
            g = g + args.lambda_weak_cwadv2 * category_adversarial_loss(cwD(pooled_features(t.detach(), t_feat)),
                                                                        present, 0.0, args.ls_gan)
            source_present = paddle.to_tensor(np.stack([present_classes(l, thresholds)
                                                        for l in labels.numpy().astype(np.int64)]))
            objectives["cwD"] = 0.5 * (
                category_adversarial_loss(cwD(pooled_features(s.detach(), s_feat.detach())), source_present, 0.0,
                                          args.ls_gan) +
                category_adversarial_loss(cwD(pooled_features(t.detach(), t_feat.detach())), present, 1.0, args.ls_gan))
        objectives["G"] = g
    grads = {}
    for name, net in (("G", model), ("D2", D2), ("cwD", cwD)):
        if name in objectives:
            names, params = zip(*net.named_parameters())
            values = paddle.grad(objectives[name], list(params), retain_graph=True, allow_unused=True)
            grads[name] = {n: (v.numpy() if v is not None else None) for n, v in zip(names, values)}
    return grads


def sgd_reference(w, g, lr, args, entries):
    buf = np.zeros_like(w)
    g = g.copy()
    for _ in range(entries):
        g += args.weight_decay * w
        buf = args.momentum * buf + g
        w = w - lr * buf
    return w


def adam_first_step(w, g, lr, beta1=0.9, beta2=0.99, eps=1e-8):
    m, v = (1 - beta1) * g, (1 - beta2) * g * g
    return w - lr * (m / (1 - beta1)) / (np.sqrt(v / (1 - beta2)) + eps)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_one_iteration_matches_a_recomputation_of_the_reference_order(mode):
    args = mode_args(mode)
    iteration, thresholds = 2, Thresholds(np.full(NUM_CLASSES, 20.0), SIZE[0] * SIZE[1])
    paddle.seed(4)
    nets = tiny_networks(args)
    optimizers = [build_sgd(nets[0], args)] + [
        paddle.optimizer.Adam(learning_rate=args.learning_rate_D, beta1=0.9, beta2=0.99, parameters=net.parameters())
        for net in nets[1:] if net is not None]
    before = [None if net is None else {n: p.numpy().copy() for n, p in net.named_parameters()} for net in nets]
    batches = batches_for(mode, thresholds=thresholds)
    expected = reference_gradients(nets, batches[0], args, thresholds, iteration)
    for net in nets:
        if net is not None:
            net.clear_gradients()

    losses, scalars = one_iteration(weak.WeakLabels, args, nets, optimizers, batches, iteration,
                                    **batch_fields(mode, thresholds))

    lr, lr_D = scalars["lr/G"], scalars["lr/D"]
    g = expected["G"]
    present = [n for n in g if g[n] is not None]
    norm = np.sqrt(sum((g[n].astype(np.float64) ** 2).sum() for n in present))
    factor = 1.0 if args.source_only else min(1.0, 1.0 / (norm + 1e-6))
    worst = 0.0
    for name, p in nets[0].named_parameters():
        if g[name] is None:  # no gradient: untouched, not even decayed (as PyTorch)
            np.testing.assert_array_equal(p.numpy(), before[0][name])
            continue
        classifier = name.startswith(("layer5", "layer6"))
        want = sgd_reference(before[0][name], g[name] * factor, lr * (10 if classifier else 1), args,
                             1 if classifier else 2)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-7, err_msg=name)
        worst = max(worst, np.abs(p.numpy() - want).max() / np.abs(want).max())
    for index, key in ((1, "D2"), (2, "cwD")):
        if nets[index] is not None:
            for name, p in nets[index].named_parameters():
                want = adam_first_step(before[index][name], expected[key][name], lr_D)
                np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-7, err_msg=key + " " + name)
    assert all(np.isfinite(v) for v in losses.values())
    print("{}: G after one iteration, largest relative difference {:.2e} (clip factor {:.3f})".format(
        mode, worst, factor))


# -- runs on synthetic data ---------------------------------------------------------------------

class TinyWeakLabels(weak.WeakLabels):
    """The real method with tiny networks, so that snapshots with a category-wise D stay small."""
    build_networks = staticmethod(tiny_networks)


SYNTHETIC_DATA = dict(num_source=5, num_target_train=4, num_target_val=2)


def run_args(data, snapshot_dir, stop, mode="points", *extra):
    """The shared tiny-run command line with the flags of one of MODES."""
    return training_args(data, snapshot_dir, stop, *MODES[mode], *extra, size="{},{}".format(*SIZE), batch_size=2,
                         mirror=True, workers=2, continue_train=True)


def train(argv):
    return weak.run_training(weak.get_arguments(argv), TinyWeakLabels)


def logged_scalars(snapshot_dir):
    """Every logged scalar but the timings, record by record."""
    with open(os.path.join(snapshot_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line)["scalars"].items() if not k.startswith("speed/")} for line in f]


def assert_same_run(dir_a, dir_b, iteration, parts=("D2", "cwD")):
    """The same snapshot, holding the states of G and `parts` only, and the same logged scalars."""
    assert_same_snapshot(dir_a, dir_b, iteration, discriminators=parts)
    state = paddle.load(os.path.join(dir_a, "GTA5_{}_state.pdopt".format(iteration)), return_numpy=True)["state"]
    assert sorted(state) == sorted(("model",) + tuple(parts))
    assert logged_scalars(dir_a) == logged_scalars(dir_b)


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    snapshot_dir = tmp_path_factory.mktemp("weak_straight")
    assert train(run_args(data, snapshot_dir, 4)) == 0
    return str(snapshot_dir)


def test_resumed_run_equals_the_uninterrupted_one(data, straight_run, tmp_path):
    train(run_args(data, tmp_path, 2))
    train(run_args(data, tmp_path, 4))
    assert_same_run(straight_run, str(tmp_path), 4)
    with open(os.path.join(straight_run, "train.log")) as f:
        log = f.read()
    assert "weak-label method: ground-truth weak labels, weak loss, points, category-wise alignment" in log
    assert " point=" in log and " cw_D=" in log and " present=" in log


def test_killed_run_continues_from_its_last_complete_snapshot(data, straight_run, tmp_path):
    prelude = ("import sys, train_weak_labels as w, tests.utils.methods.test_weak_labels as t\n"
               "w.WeakLabels.build_networks = staticmethod(t.tiny_networks)\n")
    command = [sys.executable, "-c", prelude + "sys.exit(w.main(sys.argv[1:]))"] + run_args(
        data, tmp_path, 15, "points", "--save-pred-every", "1")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not os.path.exists(str(tmp_path / "GTA5_3_state.pdopt")):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    with pytest.warns(UserWarning, match="taking over the lock"):
        train(run_args(data, tmp_path, 4))
    assert_same_run(straight_run, str(tmp_path), 4)


def test_a_stop_signal_writes_a_snapshot_and_the_run_continues_exactly(data, straight_run, tmp_path):
    # Tiny networks train in a blink: each iteration is given 0.5 s more, so that the signal lands mid-run.
    prelude = ("import sys, time, train_weak_labels as w, tests.utils.methods.test_weak_labels as t\n"
               "w.WeakLabels.build_networks = staticmethod(t.tiny_networks)\n"
               "step = w.WeakLabels.run_step\n"
               "w.WeakLabels.run_step = lambda self, *a: (time.sleep(0.5), step(self, *a))[1]\n")
    run_dir = str(tmp_path / "run")
    command = [sys.executable, "-c", prelude + "sys.exit(w.main(sys.argv[1:]))"] + run_args(data, run_dir, 4, "points")
    code, out, err = signal_during_run(command, run_dir, 1, signal.SIGTERM)
    assert code == STOPPED_ON_REQUEST, err[-3000:]
    stopped = int(re.search(r"stopped on SIGTERM at iteration (\d+): snapshot GTA5_\1 is complete", out).group(1))
    assert 1 <= stopped < 4 and SnapshotDir(run_dir, "GTA5", ("D2", "cwD")).latest() == stopped
    train(run_args(data, run_dir, 4))
    assert_same_run(straight_run, run_dir, 4)


@pytest.mark.parametrize("mode", ["pseudo", "image", "source-only"])
def test_every_mode_trains_and_writes_the_snapshot_of_its_networks(data, tmp_path, mode):
    train(run_args(data, tmp_path, 2, mode))
    parts = {"source-only": (), "pseudo": ("D2", "cwD"), "image": ("D2", "cwD")}[mode]
    snapshots = SnapshotDir(str(tmp_path), "GTA5", parts)
    assert snapshots.complete() == [2]
    assert sorted(SnapshotDir.detect(str(tmp_path)).parts) == sorted(parts)


def test_weak_supervision_without_target_labels_fails_before_iteration_1(data, tmp_path):
    images_only = str(tmp_path / "Cityscapes")
    shutil.copytree(os.path.join(data[1], "leftImg8bit"), os.path.join(images_only, "leftImg8bit"))
    with pytest.raises(FileNotFoundError, match=r"needs the target images' labels; 4 of them are missing: .*"
                                                r"gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"):
        train(run_args((data[0], images_only), tmp_path / "run", 2, "image"))
    assert not os.path.exists(str(tmp_path / "run" / "GTA5_2.pdparams"))
    train(run_args((data[0], images_only), tmp_path / "pseudo", 2, "pseudo"))  # pseudo labels need no labels


def test_pixel_adaptation_reads_each_translated_image_and_names_missing_ones(data, tmp_path):
    translated = str(tmp_path / "translated")
    shutil.copytree(os.path.join(data[0], "images"), os.path.join(translated, "images"))
    os.remove(os.path.join(translated, "images", "00002.png"))
    with pytest.raises(FileNotFoundError, match="1 of the translated source images are missing.*00002.png"):
        train(run_args(data, tmp_path / "a", 2, "pseudo", "--use-pixeladapt", "--pixeladapt-dir", translated))
    shutil.copy(os.path.join(data[0], "images", "00002.png"), os.path.join(translated, "images"))
    args = weak.get_arguments(run_args(data, tmp_path / "b", 2, "pseudo", "--use-pixeladapt", "--pixeladapt-dir",
                                       translated))
    source = weak.WeakLabels(args).source
    assert len(source) == 10
    assert source.files((3, False))[0] == os.path.join(translated, "images", "00002.png")
    np.testing.assert_array_equal(source[(2, False)][1], source[(3, False)][1])  # the same label


def test_a_released_reference_style_category_wise_discriminator_converts(tmp_path):
    """The reference saves its discriminators from nn.DataParallel ('module.' keys), Linear
    weights as (out, in): read without PyTorch, they load transposed."""
    from utils.demo.torch_writer import save_legacy
    from utils.files.weights import load_weights
    cw = CWDiscriminator(num_classes=NUM_CLASSES, num_features=8)
    state = {}
    for name, value in cw.state_dict().items():
        value = rng.normal(size=value.shape).astype(np.float32)
        state["module." + name] = value.T.copy() if value.ndim == 2 else value  # as PyTorch stores it
    path = str(tmp_path / "wD-gta5-cityscapes.pth")
    save_legacy(state, path)
    load_weights(cw, path)
    for name, value in cw.state_dict().items():
        stored = state["module." + name]
        np.testing.assert_array_equal(value.numpy(), stored.T if stored.ndim == 2 else stored)


def test_thresholds_command_writes_what_training_reads(data, tmp_path, capsys):
    from dataset.weak_labels import count_table, main as weak_labels_main
    from dataset import cityscapesDataSet
    out = str(tmp_path / "tau.json")
    assert weak_labels_main(["thresholds", data[1], "--set", "train", "--out", out]) == 0
    assert "counted on 4 labels at 128x64" in capsys.readouterr().out
    thresholds = Thresholds.from_file(out)
    counts, _ = count_table(cityscapesDataSet(data[1], set="train", return_label=True))
    np.testing.assert_allclose(thresholds.tau, thresholds_from_counts(counts), rtol=1e-12)
    assert thresholds.pixels == 128 * 64
    with pytest.raises(ValueError, match="not a thresholds file"):
        Thresholds.from_file(str(tmp_path / "missing.json"))


def test_image_labels_from_a_file_need_no_ground_truth(data, tmp_path):
    from dataset import cityscapesDataSet
    from dataset.weak_labels import WeakTargetDataSet
    images_only = str(tmp_path / "Cityscapes")
    shutil.copytree(os.path.join(data[1], "leftImg8bit"), os.path.join(images_only, "leftImg8bit"))
    images = cityscapesDataSet(images_only, set="train", crop_size=SIZE)
    label_file = tmp_path / "labels.txt"
    label_file.write_text("".join("{} road sky\n".format(entry) for entry in images.img_ids))
    target = WeakTargetDataSet(images, Thresholds.reference("cityscapes"), label_file=str(label_file))
    image, weak, _, name = target[(1, True)]
    assert image.shape == (3, SIZE[1], SIZE[0]) and name == images.img_ids[1]
    assert np.flatnonzero(weak).tolist() == [0, 10]
    with pytest.raises(FileNotFoundError, match="needs the target images' labels"):  # points need them
        WeakTargetDataSet(images, Thresholds.reference("cityscapes"), with_points=True, label_file=str(label_file))


def test_weak_labels_and_points_do_not_depend_on_the_ignore_label(data):
    """--ignore-label -1 changes the training labels' ignore value only, not what is present where."""
    from dataset import cityscapesDataSet
    from dataset.weak_labels import WeakTargetDataSet
    samples = []
    for ignore_label in (255, -1):
        images = cityscapesDataSet(data[1], set="train", crop_size=SIZE, ignore_label=ignore_label)
        target = WeakTargetDataSet(images, Thresholds.reference("cityscapes"), with_points=True)
        samples.append(target[(1, True)])
    for a, b in zip(samples[0][1:3], samples[1][1:3]):
        np.testing.assert_array_equal(a, b)
    assert samples[0][1].sum() > 0 and (samples[0][2] >= 0).any()

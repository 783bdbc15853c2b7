"""One training iteration against an independent re-computation of the four steps of the
reference's loop (wasidennis/AdaptSegNet, train_gta2cityscapes_multi.py, the body of main's
`for i_iter` loop): G on source, G on target against frozen discriminators, the discriminators on
both detached outputs, then one step of each optimizer.

The reference here builds ONE objective per network (no step-by-step backward passes), takes its
gradients with paddle.grad, and applies PyTorch's SGD-momentum and Adam update rules in numpy.
"""
import argparse

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from model import FCDiscriminator
from model.common import parameters_per_enclosing_layer
from tests.helpers import one_iteration
from utils.loss import adv_loss, seg_loss
from utils.methods.adaptsegnet import AdaptSegNet
from utils.training.method import TrainingDiverged
from utils.training.optimizer import build_sgd, lr_poly

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

NUM_CLASSES = 4
SOURCE_SIZE = (40, 32)  # (width, height)
TARGET_SIZE = (32, 32)


class TinyMultiNet(nn.Layer):
    """Stands in for DeeplabMulti: two heads at 1/4 resolution, a backbone group whose walk lists
    its parameters twice (the Sequential and the conv) and a 10x group."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2D(3, 8, 3, stride=4, padding=1))
        self.layer5 = nn.Conv2D(8, NUM_CLASSES, 1)
        self.layer6 = nn.Conv2D(8, NUM_CLASSES, 3, padding=1)

    def forward(self, x):
        features = F.relu(self.backbone(x))
        return self.layer5(features), self.layer6(features)

    def optim_parameters(self):
        return [(parameters_per_enclosing_layer([self.backbone]), 1.0),
                (list(self.layer5.parameters()) + list(self.layer6.parameters()), 10.0)]


def make_args(gan, iter_size=1, sgd_groups="paper"):
    return argparse.Namespace(input_size=SOURCE_SIZE, input_size_target=TARGET_SIZE, ignore_label=255,
                              lambda_seg=0.1, lambda_adv_target1=0.3, lambda_adv_target2=0.7, gan=gan,
                              learning_rate=0.05, learning_rate_D=0.01, end_learning_rate=0.0, num_steps=10, power=0.9,
                              iter_size=iter_size, momentum=0.9, weight_decay=0.01, sgd_groups=sgd_groups,
                              amp="off", random_seed=0)


def make_batches(seed, iter_size):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(iter_size):
        labels = rng.integers(0, NUM_CLASSES, (2, SOURCE_SIZE[1], SOURCE_SIZE[0]))
        labels[0, :5] = 255
        source = (paddle.to_tensor(rng.normal(size=(2, 3, SOURCE_SIZE[1], SOURCE_SIZE[0])).astype("float32")),
                  paddle.to_tensor(labels.astype("int64")))
        target = (paddle.to_tensor(rng.normal(size=(2, 3, TARGET_SIZE[1], TARGET_SIZE[0])).astype("float32")),)
        batches.append((source, target))
    return batches


def build(seed, args):
    paddle.seed(seed)
    nets = (TinyMultiNet(), FCDiscriminator(NUM_CLASSES, ndf=4), FCDiscriminator(NUM_CLASSES, ndf=4))
    optimizers = (
        build_sgd(nets[0], args),
        paddle.optimizer.Adam(learning_rate=args.learning_rate_D, beta1=0.9, beta2=0.99, parameters=nets[1].parameters()),
        paddle.optimizer.Adam(learning_rate=args.learning_rate_D, beta1=0.9, beta2=0.99, parameters=nets[2].parameters()),
    )
    return nets, optimizers


def train_iteration(nets, optimizers, batches, iteration, args):
    return one_iteration(AdaptSegNet, args, nets, optimizers, batches, iteration)


def weights(net):
    return {name: p.numpy().copy() for name, p in net.named_parameters()}


def up(logits, size):
    return F.interpolate(logits, size=[size[1], size[0]], mode="bilinear", align_corners=True)


def reference_gradients(nets, batches, args):
    """Gradients of each network's whole objective, written as one expression per network."""
    model, D1, D2 = nets
    g_objective = d1_objective = d2_objective = 0.0
    for (source_images, labels), (target_images,) in batches:
        s1, s2 = (up(o, args.input_size) for o in model(source_images))
        t1, t2 = (up(o, args.input_size_target) for o in model(target_images))
        g_objective = g_objective + (seg_loss(s2, labels) + args.lambda_seg * seg_loss(s1, labels)
                                     + args.lambda_adv_target1 * adv_loss(D1(F.softmax(t1, axis=1)), 0.0, args.gan)
                                     + args.lambda_adv_target2 * adv_loss(D2(F.softmax(t2, axis=1)), 0.0, args.gan))
        d1_objective = d1_objective + 0.5 * (adv_loss(D1(F.softmax(s1.detach(), axis=1)), 0.0, args.gan)
                                             + adv_loss(D1(F.softmax(t1.detach(), axis=1)), 1.0, args.gan))
        d2_objective = d2_objective + 0.5 * (adv_loss(D2(F.softmax(s2.detach(), axis=1)), 0.0, args.gan)
                                             + adv_loss(D2(F.softmax(t2.detach(), axis=1)), 1.0, args.gan))
    grads = []
    for net, objective in zip(nets, (g_objective, d1_objective, d2_objective)):
        names, params = zip(*net.named_parameters())
        values = paddle.grad(objective / args.iter_size, list(params), retain_graph=True)
        grads.append({n: g.numpy() for n, g in zip(names, values)})
    return grads


def sgd_momentum_first_step(w, g, lr, weight_decay, momentum, entries=1):
    """PyTorch 0.4 SGD(momentum) on a fresh buffer, for a parameter listed ``entries`` times:
    per entry, g += wd * w (in place), buf = momentum * buf + g (buf starts at 0), w -= lr * buf."""
    buf = np.zeros_like(w)
    g = g.copy()
    for _ in range(entries):
        g += weight_decay * w
        buf = momentum * buf + g
        w = w - lr * buf
    return w


def adam_first_step(w, g, lr, beta1=0.9, beta2=0.99, eps=1e-8):
    m = (1 - beta1) * g
    v = (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1), v / (1 - beta2)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.parametrize("gan,iter_size,sgd_groups", [("Vanilla", 1, "paper"), ("LS", 1, "paper"),
                                                      ("Vanilla", 2, "paper"), ("Vanilla", 1, "original"),
                                                      ("LS", 2, "original")])
def test_one_iteration_matches_independent_recomputation(gan, iter_size, sgd_groups):
    args = make_args(gan, iter_size, sgd_groups)
    iteration = 3
    batches = make_batches(0, iter_size)

    nets, optimizers = build(7, args)
    before = [weights(net) for net in nets]
    expected_grads = reference_gradients(nets, batches, args)
    for net in nets:
        net.clear_gradients()
    losses, rates = train_iteration(nets, optimizers, batches, iteration, args)
    lr, lr_D = rates["lr/G"], rates["lr/D"]

    assert lr == pytest.approx(0.05 * (1 - 3 / 10) ** 0.9)
    assert lr_D == pytest.approx(0.01 * (1 - 3 / 10) ** 0.9)
    model, D1, D2 = nets
    worst = 0.0
    for name, w in before[0].items():
        classifier = name.startswith(("layer5", "layer6"))
        entries = 2 if sgd_groups == "original" and not classifier else 1  # the Sequential and the conv
        expected = sgd_momentum_first_step(w, expected_grads[0][name], lr * (10.0 if classifier else 1.0),
                                           args.weight_decay, args.momentum, entries)
        np.testing.assert_allclose(weights(model)[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
        worst = max(worst, np.abs(weights(model)[name] - expected).max() / np.abs(expected).max())
    print("G after one iteration ({}, {}, iter-size {}): largest relative difference {:.2e}".format(
        sgd_groups, gan, iter_size, worst))
    for index, D in ((1, D1), (2, D2)):
        for name, w in before[index].items():
            expected = adam_first_step(w, expected_grads[index][name], lr_D)
            np.testing.assert_allclose(weights(D)[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    # The classifier group really moved 10x as far as a plain step would have.
    plain = sgd_momentum_first_step(before[0]["layer6.weight"], expected_grads[0]["layer6.weight"], lr,
                                    args.weight_decay, args.momentum)
    assert not np.allclose(weights(model)["layer6.weight"], plain)
    assert set(losses) == {"seg1", "seg2", "adv_target1", "adv_target2", "D1", "D2"}
    assert all(np.isfinite(v) for v in losses.values())


def test_logged_losses_are_the_terms_of_the_objective():
    args = make_args("LS")
    batches = make_batches(1, 1)
    nets, optimizers = build(3, args)
    model, D1, D2 = nets
    (source_images, labels), (target_images,) = batches[0]
    with paddle.no_grad():
        s1, s2 = (up(o, SOURCE_SIZE) for o in model(source_images))
        t1, t2 = (up(o, TARGET_SIZE) for o in model(target_images))
        d1 = D1(F.softmax(t1, axis=1)).numpy()
        expected = {"seg1": float(seg_loss(s1, labels)), "seg2": float(seg_loss(s2, labels)),
                    "adv_target1": float(np.mean(d1 ** 2))}
        d2_source = D2(F.softmax(s2, axis=1)).numpy()
        d2_target = D2(F.softmax(t2, axis=1)).numpy()
        expected["D2"] = 0.5 * float(np.mean(d2_source ** 2)) + 0.5 * float(np.mean((d2_target - 1) ** 2))
    losses, _ = train_iteration(nets, optimizers, batches, 0, args)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(value, rel=1e-5), name


def test_poly_schedule_reaches_zero_at_num_steps():
    assert lr_poly(2.5e-4, 0, 250000, 0.9) == 2.5e-4
    assert lr_poly(2.5e-4, 150000, 250000, 0.9) == pytest.approx(2.5e-4 * 0.4 ** 0.9)
    assert lr_poly(1e-4, 250000, 250000, 0.9) == 0.0


def test_a_non_finite_loss_stops_the_run_naming_the_iteration():
    args = make_args("Vanilla")
    nets, optimizers = build(0, args)
    classifier = nets[0].layer6.weight
    poisoned = classifier.numpy()
    poisoned[0, 0, 0, 0] = np.nan
    classifier.set_value(poisoned)
    with pytest.raises(TrainingDiverged, match="iteration 6: loss .*seg2=nan"):
        train_iteration(nets, optimizers, make_batches(2, 1), 5, args)

"""The segmentation network's SGD against PyTorch 0.4's SGD step written out in numpy, as the
authors' code ran it: the groups of wasidennis/AdaptSegNet's model/deeplab_multi.py
(optim_parameters, whose 1x group get_1x_lr_params_NOscale lists a parameter once per enclosing
module), stepped by PyTorch 0.4's torch/optim/sgd.py (SGD.step): every entry of the group list
applied in order, duplicates included, with weight decay added to the gradient in place."""
import argparse

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from model.common import parameters_per_enclosing_layer, sublayer_parameters
from utils.training.optimizer import build_sgd, describe, parameter_entries

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

MOMENTUM, WEIGHT_DECAY = 0.9, 0.05
RATES = (0.1, 0.07)  # the base learning rate of two iterations


class Block(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(2, 2, 1, bias_attr=False)
        self.downsample = nn.Sequential(nn.Conv2D(2, 2, 1, bias_attr=False))


class SmallNet(nn.Layer):
    """A stem conv (listed once), a block conv (3 times: layer, block, conv), a shortcut conv (4
    times: layer, block, downsample, conv), a classifier at 10x, and a parameter that never gets
    a gradient (as the unused classifier branches)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2D(2, 2, 1, bias_attr=False)
        self.layer = nn.Sequential(Block())
        self.classifier = nn.Conv2D(2, 3, 1)
        self.unused = nn.Conv2D(2, 3, 1, bias_attr=False)

    def optim_parameters(self):
        return [(parameters_per_enclosing_layer([self.stem, self.layer]), 1.0),
                (sublayer_parameters([self.classifier, self.unused]), 10.0)]


def reference_group_list(net):
    """[(name, lr multiplier)] in the order the reference's generators yield them."""
    names = {id(p): n for n, p in net.named_parameters()}
    return [(names[id(p)], rate) for params, rate in net.optim_parameters() for p in params]


def pytorch04_sgd_step(weights, grads, buffers, entries, lr):
    """PyTorch 0.4 SGD.step over a parameter list with duplicates, in numpy float32."""
    grads = {k: v.copy() for k, v in grads.items()}  # p.grad, changed in place by weight decay
    for name, rate in entries:
        if name not in grads:
            continue  # p.grad is None
        p, d_p = weights[name], grads[name]
        d_p += np.float32(WEIGHT_DECAY) * p
        if name not in buffers:
            buffers[name] = np.zeros_like(p)
        buffers[name] = np.float32(MOMENTUM) * buffers[name] + d_p
        weights[name] = p - np.float32(lr * rate) * buffers[name]


def constant_gradients(net, seed):
    """Gradients that do not depend on the weights: d(sum(p * c))/dp = c."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=p.shape).astype(np.float32) for name, p in net.named_parameters()
            if not name.startswith("unused")}


def apply_gradients(net, grads):
    loss = 0.0
    for name, p in net.named_parameters():
        if name in grads:
            loss = loss + (p * paddle.to_tensor(grads[name])).sum()
    loss.backward()


@pytest.mark.parametrize("sgd_groups", ["original", "paper"])
def test_two_iterations_match_pytorch04_sgd_on_the_reference_list(sgd_groups):
    paddle.seed(0)
    net = SmallNet()
    entries = reference_group_list(net)
    if sgd_groups == "paper":
        entries = list(dict.fromkeys(entries))
    assert [m for _, m in entries].count(10.0) == 3
    counts = {name: [n for n, _ in entries].count(name) for name, _ in entries}
    assert counts == ({"stem.weight": 1, "layer.0.conv.weight": 3, "layer.0.downsample.0.weight": 4,
                       "classifier.weight": 1, "classifier.bias": 1, "unused.weight": 1}
                      if sgd_groups == "original" else dict.fromkeys(counts, 1))

    weights = {n: p.numpy().copy() for n, p in net.named_parameters()}
    buffers = {}
    args = argparse.Namespace(sgd_groups=sgd_groups, learning_rate=RATES[0], momentum=MOMENTUM,
                              weight_decay=WEIGHT_DECAY)
    optimizer = build_sgd(net, args)
    for iteration, lr in enumerate(RATES):
        grads = constant_gradients(net, iteration)
        pytorch04_sgd_step(weights, grads, buffers, entries, lr)
        apply_gradients(net, grads)
        optimizer.set_lr(lr)
        optimizer.step()
        optimizer.clear_grad()

    worst = 0.0
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), weights[name], rtol=1e-6, atol=1e-7, err_msg=name)
        worst = max(worst, np.abs(p.numpy() - weights[name]).max() / np.abs(weights[name]).max())
    state = optimizer.state_dict()
    assert set(state) == {name + "_velocity_0" for name in buffers}  # none for the unused parameter
    for name, buf in buffers.items():
        np.testing.assert_allclose(state[name + "_velocity_0"], buf, rtol=1e-6, atol=1e-7, err_msg=name)
    print("{}: largest relative difference after 2 iterations {:.2e}".format(sgd_groups, worst))


def test_duplicates_move_a_parameter_much_further_than_once():
    """The size of the quirk for a conv listed 3 times, with a steady gradient: the first step is
    1 + 1.9 + 2.71 = 5.61 times a plain one, later steps tend to 3 times."""
    steps = {}
    for sgd_groups in ("original", "paper"):
        paddle.seed(0)
        net = SmallNet()
        optimizer = build_sgd(net, argparse.Namespace(sgd_groups=sgd_groups, learning_rate=0.001, momentum=MOMENTUM,
                                                       weight_decay=0.0))
        weight = net.layer[0].conv.weight
        moved = []
        for _ in range(200):
            before = weight.numpy().copy()
            apply_gradients(net, {"layer.0.conv.weight": np.ones(before.shape, np.float32)})
            optimizer.step()
            optimizer.clear_grad()
            moved.append(np.abs(weight.numpy() - before).mean())
        steps[sgd_groups] = moved
    assert steps["original"][0] / steps["paper"][0] == pytest.approx(5.61, rel=1e-3)
    assert steps["original"][-1] / steps["paper"][-1] == pytest.approx(3.0, rel=1e-3)


def test_the_log_line_names_the_semantics_and_the_counts():
    net = SmallNet()
    line = describe(build_sgd(net, argparse.Namespace(sgd_groups="original", learning_rate=0.1, momentum=0.9,
                                                       weight_decay=0.0)), "original")
    assert line.startswith("--sgd-groups original") and "1x group: 8 entries for 3 parameters" in line
    assert "1 listed 1x, 1 listed 3x, 1 listed 4x" in line


def test_a_parameter_listed_at_two_rates_is_refused():
    net = SmallNet()
    net.optim_parameters = lambda: [([net.stem.weight], 1.0), ([net.stem.weight], 10.0)]
    with pytest.raises(ValueError, match="two learning rates"):
        parameter_entries(net, "original")

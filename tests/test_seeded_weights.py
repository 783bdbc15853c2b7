"""Self-checks for the numpy-only seeded parameter generator (no torch)."""
import random

import numpy as np
import pytest

from tests.fixtures.seeded_weights import (
    param_kind,
    seeded_input,
    seeded_state_dict,
)


def _shapes():
    # A small mix that looks like a ResNet bottleneck plus a conv head.
    return {
        "conv1.weight": (8, 3, 7, 7),
        "bn1.weight": (8,),
        "bn1.bias": (8,),
        "bn1.running_mean": (8,),
        "bn1.running_var": (8,),
        "layer1.0.conv1.weight": (4, 8, 1, 1),
        "layer1.0.bn3.weight": (16,),
        "layer1.0.bn3.bias": (16,),
        "layer1.0.bn3.running_mean": (16,),
        "layer1.0.bn3.running_var": (16,),
        "layer1.0.downsample.0.weight": (16, 8, 1, 1),
        "layer1.0.downsample.1.weight": (16,),
        "layer1.0.downsample.1.bias": (16,),
        "layer1.0.downsample.1.running_mean": (16,),
        "layer1.0.downsample.1.running_var": (16,),
        "layer5.conv2d_list.0.weight": (19, 16, 3, 3),
        "layer5.conv2d_list.0.bias": (19,),
    }


def test_order_independent():
    shapes = _shapes()
    items = list(shapes.items())
    random.Random(123).shuffle(items)
    shuffled = dict(items)
    assert list(shuffled) != list(shapes)
    a = seeded_state_dict(shapes, 0)
    b = seeded_state_dict(shuffled, 0)
    assert set(a) == set(b) == set(shapes)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_value_does_not_depend_on_other_entries():
    shapes = _shapes()
    full = seeded_state_dict(shapes, 0)
    alone = seeded_state_dict({"conv1.weight": shapes["conv1.weight"]}, 0)
    np.testing.assert_array_equal(full["conv1.weight"], alone["conv1.weight"])


def test_deterministic_and_seed_dependent():
    shapes = _shapes()
    a = seeded_state_dict(shapes, 0)
    b = seeded_state_dict(shapes, 0)
    c = seeded_state_dict(shapes, 1)
    for k in shapes:
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k]), k


def test_depends_on_name():
    shape = (6, 5, 3, 3)
    out = seeded_state_dict({"a.weight": shape, "b.weight": shape}, 0)
    assert not np.array_equal(out["a.weight"], out["b.weight"])


def test_dtype_and_shape():
    shapes = _shapes()
    out = seeded_state_dict(shapes, 0)
    for k, shape in shapes.items():
        assert out[k].dtype == np.float32, k
        assert out[k].shape == tuple(shape), k
        assert np.all(np.isfinite(out[k])), k


def test_kinds_detected():
    shapes = _shapes()
    assert param_kind("bn1.running_mean", shapes) == "running_mean"
    assert param_kind("bn1.running_var", shapes) == "running_var"
    assert param_kind("bn1.weight", shapes) == "bn_weight"
    assert param_kind("bn1.bias", shapes) == "bn_bias"
    assert param_kind("layer1.0.bn3.weight", shapes) == "bn_weight_residual"
    assert param_kind("layer1.0.downsample.1.weight", shapes) == "bn_weight"
    assert param_kind("layer1.0.downsample.1.bias", shapes) == "bn_bias"
    assert param_kind("layer1.0.downsample.0.weight", shapes) == "conv_weight"
    assert param_kind("conv1.weight", shapes) == "conv_weight"
    assert param_kind("layer5.conv2d_list.0.bias", shapes) == "conv_bias"


def test_running_var_positive():
    out = seeded_state_dict({"bn.running_mean": (4096,),
                             "bn.running_var": (4096,)}, 0)
    var = out["bn.running_var"]
    assert var.min() >= 0.5 and var.max() <= 1.5
    mean = out["bn.running_mean"]
    assert mean.min() < 0 < mean.max()


def test_conv_bias_and_bn_bias_differ():
    n = 4096
    shapes = {
        "head.bias": (n,),  # conv bias: no running_mean sibling
        "norm.bias": (n,),  # BN beta
        "norm.weight": (n,),
        "norm.running_mean": (n,),
        "norm.running_var": (n,),
    }
    out = seeded_state_dict(shapes, 0)
    conv_b = out["head.bias"]
    bn_b = out["norm.bias"]
    # conv bias ~ U(-0.1, 0.1); BN beta ~ U(-0.5, 0.5)
    assert np.abs(conv_b).max() <= 0.1
    assert np.abs(bn_b).max() > 0.3
    assert np.abs(bn_b).max() <= 0.5
    # BN gamma ~ U(0.8, 1.2)
    gamma = out["norm.weight"]
    assert gamma.min() >= 0.8 and gamma.max() <= 1.2


def test_residual_closing_bn_gamma_is_small():
    n = 4096
    shapes = {
        "layer3.5.bn3.weight": (n,),
        "layer3.5.bn3.running_mean": (n,),
        "layer3.5.bn2.weight": (n,),
        "layer3.5.bn2.running_mean": (n,),
    }
    out = seeded_state_dict(shapes, 0)
    small = out["layer3.5.bn3.weight"]
    normal = out["layer3.5.bn2.weight"]
    assert small.min() >= 0.2 and small.max() <= 0.5
    assert normal.min() >= 0.8


def test_conv_weight_scale_follows_fan_in():
    shape = (64, 256, 3, 3)
    w = seeded_state_dict({"c.weight": shape}, 0)["c.weight"]
    fan_in = 256 * 3 * 3
    assert abs(w.std() * np.sqrt(fan_in) - 1.0) < 0.02
    assert abs(w.mean()) < 0.01 / np.sqrt(fan_in) * 10


def test_unknown_name_rejected():
    with pytest.raises(ValueError):
        seeded_state_dict({"bn.num_batches_tracked": ()}, 0)


def test_seeded_input():
    a = seeded_input((1, 3, 97, 131), 1)
    b = seeded_input((1, 3, 97, 131), 1)
    c = seeded_input((1, 3, 97, 131), 2)
    assert a.dtype == np.float32 and a.shape == (1, 3, 97, 131)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= -120.0 and a.max() <= 135.0
    assert a.min() < -100 and a.max() > 100

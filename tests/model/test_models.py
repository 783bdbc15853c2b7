"""The Paddle networks against an independent PyTorch implementation (tests/fixtures/parity.npz).

The fixture was computed in float64 by tests/fixtures/make_parity_fixtures.py from the same
seeded weights; here the weights go through our PyTorch->Paddle renaming, so a wrong name,
padding, dilation, pooling mode or classifier quirk shows up as a mismatch.
"""
import collections
import re

import numpy as np
import paddle
import pytest

from tests.helpers import seeded_torch_state
from model import CWDiscriminator, build_model
from model.deeplab_multi import DeeplabMulti
from model.deeplab_vgg import DeeplabVGG
from tests.fixtures.seeded_weights import seeded_input
from utils.files.weights import WeightsError, check_against_model, torch_to_paddle
from utils.runtime import SELF_TEST_VARIABLE

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

# float32 against a float64 reference, relative to the output's scale.
RELATIVE_TOLERANCE = 1e-5
NUM_CLASSES = 19


def load_seeded(model, seed):
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    params, skipped, kind = torch_to_paddle(seeded_torch_state(model, seed), "seeded", expected)
    assert kind == "pytorch" and skipped == []
    assert check_against_model(params, expected, "seeded") == []
    model.set_state_dict(params)
    model.eval()
    return model


def relative_error(actual, reference):
    return float(np.abs(actual.astype(np.float64) - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def deeplab_multi(parity):
    return load_seeded(DeeplabMulti(num_classes=int(parity["num_classes"])), int(parity["seed"]))


def seg_input(parity):
    return paddle.to_tensor(seeded_input(parity["seg_input_shape"], int(parity["input_seed"])))


def test_deeplab_multi_matches_reference_both_heads(deeplab_multi, parity):
    with paddle.no_grad():
        out_conv4, out_conv5 = deeplab_multi(seg_input(parity))
    errors = (relative_error(out_conv4.numpy(), parity["deeplab_multi_out1"]),
              relative_error(out_conv5.numpy(), parity["deeplab_multi_out2"]))
    print("DeeplabMulti relative max error (conv4 head, conv5 head): %.2e %.2e" % errors)
    assert max(errors) < RELATIVE_TOLERANCE


def test_deeplab_multi_all_four_aspp_branches_option(deeplab_multi, parity):
    for classifier in (deeplab_multi.layer5, deeplab_multi.layer6):
        classifier.use_all_branches = True
    try:
        with paddle.no_grad():
            out_conv4, out_conv5 = deeplab_multi(seg_input(parity))
    finally:
        for classifier in (deeplab_multi.layer5, deeplab_multi.layer6):
            classifier.use_all_branches = False
    assert relative_error(out_conv4.numpy(), parity["deeplab_multi_all4_out1"]) < RELATIVE_TOLERANCE
    assert relative_error(out_conv5.numpy(), parity["deeplab_multi_all4_out2"]) < RELATIVE_TOLERANCE
    # The quirk matters: the two-branch default is a different function.
    assert relative_error(out_conv5.numpy(), parity["deeplab_multi_out2"]) > 1e-2


def test_deeplab_vgg_matches_reference(parity):
    model = load_seeded(build_model("DeeplabVGG", num_classes=int(parity["num_classes"])), int(parity["seed"]))
    with paddle.no_grad():
        out = model(seg_input(parity)).numpy()
    error = relative_error(out, parity["deeplab_vgg_out"])
    print("DeeplabVGG relative max error: %.2e" % error)
    assert error < RELATIVE_TOLERANCE


def test_discriminator_matches_reference(parity):
    model = load_seeded(build_model("FCDiscriminator", num_classes=int(parity["num_classes"])),
                        int(parity["seed"]))
    x = paddle.to_tensor(seeded_input(parity["disc_input_shape"], int(parity["input_seed"])))
    with paddle.no_grad():
        out = model(x).numpy()
    error = relative_error(out, parity["discriminator_out"])
    print("FCDiscriminator relative max error: %.2e" % error)
    assert error < RELATIVE_TOLERANCE


def test_batchnorm_is_frozen_in_training_mode(deeplab_multi, parity):
    bn = deeplab_multi.layer3[5].bn2
    mean_before = bn._mean.numpy().copy()
    x = seg_input(parity)
    deeplab_multi.train()
    try:
        with paddle.no_grad():
            train_out = deeplab_multi(x)[1].numpy()
    finally:
        deeplab_multi.eval()
    with paddle.no_grad():
        eval_out = deeplab_multi(x)[1].numpy()
    np.testing.assert_array_equal(bn._mean.numpy(), mean_before)
    np.testing.assert_allclose(train_out, eval_out, rtol=0, atol=1e-6 * np.abs(eval_out).max())
    assert bn.weight.stop_gradient and bn.bias.stop_gradient


def test_learning_rate_groups_cover_every_trainable_parameter(deeplab_multi):
    (backbone, backbone_rate), (classifier, classifier_rate) = deeplab_multi.optim_parameters()
    assert (backbone_rate, classifier_rate) == (1.0, 10.0)
    names = {id(p): n for n, p in deeplab_multi.named_parameters()}
    backbone_names = {names[id(p)] for p in backbone}
    classifier_names = {names[id(p)] for p in classifier}
    trainable = {n for n, p in deeplab_multi.named_parameters() if not p.stop_gradient}
    assert backbone_names | classifier_names == trainable
    assert not backbone_names & classifier_names
    assert classifier_names == {n for n in trainable if n.startswith(("layer5.", "layer6."))}
    assert not any(".bn" in n or "downsample.1" in n for n in trainable)


def test_backbone_group_lists_parameters_as_the_reference_walk_does(deeplab_multi):
    """As get_1x_lr_params_NOscale walks the authors' model (wasidennis/AdaptSegNet,
    model/deeplab_multi.py): 314 entries for 104 parameters: conv1 once, the 99 bottleneck convs 3
    times (layerN, block, conv), the 4 shortcut convs 4 times (layerN, block, downsample, conv);
    classifiers once."""
    (backbone, _), (classifier, _) = deeplab_multi.optim_parameters()
    names = {id(p): n for n, p in deeplab_multi.named_parameters()}
    counts = collections.Counter(names[id(p)] for p in backbone)
    assert len(backbone) == 314 and len(counts) == 104
    expected = {}
    for name in counts:
        if name == "conv1.weight":
            expected[name] = 1
        elif ".downsample.0." in name:
            expected[name] = 4
        else:
            assert re.match(r"^layer[1-4]\.\d+\.conv[123]\.weight$", name), name
            expected[name] = 3
    assert counts == expected
    assert sum(1 for m in expected.values() if m == 3) == 99 and sum(1 for m in expected.values() if m == 4) == 4
    assert len(classifier) == len(set(map(id, classifier))) == 16


def test_vgg_group_lists_every_parameter_once():
    vgg = DeeplabVGG(num_classes=NUM_CLASSES)
    ((params, rate),) = vgg.optim_parameters()
    trainable = [p for p in vgg.parameters() if not p.stop_gradient]
    assert rate == 1.0 and len(params) == len(set(map(id, params))) == len(trainable) == 38


def test_fresh_model_initialisation_follows_reference():
    paddle.seed(3)
    model = DeeplabMulti(num_classes=19)
    conv = model.layer3[0].conv2.weight.numpy()
    assert abs(conv.std() - 0.01) < 5e-4 and abs(conv.mean()) < 5e-4
    bn = model.layer1[0].bn1
    np.testing.assert_array_equal(bn.weight.numpy(), 1.0)
    np.testing.assert_array_equal(bn.bias.numpy(), 0.0)
    # Classifier biases keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bias = model.layer6.conv2d_list[0].bias.numpy()
    bound = 1 / np.sqrt(2048 * 9)
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > bound / 2


def test_output_stride_is_eight_rounded_up():
    model = build_model("DeepLab", num_classes=5)
    model.eval()
    with paddle.no_grad():
        out_conv4, out_conv5 = model(paddle.zeros([2, 3, 65, 90]))
    assert out_conv4.shape == [2, 5, 9, 12] and out_conv5.shape == [2, 5, 9, 12]


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="DeeplabMulti"):
        build_model("ResNet50")


def test_the_self_test_network_is_the_real_one_with_a_bottleneck_per_stage_and_a_narrow_cw_discriminator(
        deeplab_multi, monkeypatch):
    real = {name: tuple(value.shape) for name, value in deeplab_multi.state_dict().items()}
    monkeypatch.setenv(SELF_TEST_VARIABLE, "1")
    small = {name: tuple(value.shape) for name, value in DeeplabMulti(num_classes=NUM_CLASSES).state_dict().items()}
    # Every layer it has is the real network's, same name, same shape; what it lacks is the blocks
    # after each stage's first.
    assert all(real[name] == shape for name, shape in small.items())
    blocks = collections.Counter(re.match(r"layer(\d)\.(\d+)\.", name).groups() for name in set(real) - set(small))
    assert sorted({stage for stage, _ in blocks}) == ["1", "2", "3", "4"] and ("3", "22") in blocks
    assert all(block != "0" for _, block in blocks)
    cw = CWDiscriminator(num_classes=2)
    assert [tuple(p.shape) for p in cw.models[1].parameters()] == [(2048, 32), (32,), (32, 32), (32,), (32, 1), (1,)]
    # Its weights and the real network's do not load into each other, and the error says why.
    real_file = {name: np.empty(shape, np.float32) for name, shape in real.items()}
    with pytest.raises(WeightsError, match=r"not in the model: layer1\.\* .*\n{}=1 \(utils/runtime.py\) is set, so the "
                       r"model is the self-test network; unset it".format(SELF_TEST_VARIABLE)):
        check_against_model(real_file, small, "real.pdparams")
    monkeypatch.setenv(SELF_TEST_VARIABLE, "0")  # only 1 turns it on
    assert len(DeeplabMulti(num_classes=NUM_CLASSES).layer3) == 23
    small_file = {name: np.empty(shape, np.float32) for name, shape in small.items()}
    with pytest.raises(WeightsError, match=r"The file holds the self-test network \(one bottleneck per ResNet stage\); "
                       r"load it with {}=1".format(SELF_TEST_VARIABLE)):
        check_against_model(small_file, real, "small.pdparams")
    del small_file["layer5.conv2d_list.0.weight"]  # missing more than the blocks: the usual advice
    torn = {name: value for name, value in real_file.items() if not name.startswith("layer3.5.")}  # fewer
    for file in (small_file, torn):
        with pytest.raises(WeightsError, match="Check --model and --num-classes"):
            check_against_model(file, real, "other.pdparams")

"""Converting the authors' PyTorch weights: ``python -m utils.convert_weights`` and ``load_weights``.

The .pth files are written without PyTorch by utils/demo/torch_writer.py (real ``torch.load`` reads
them) and hold the seeded weights of tests/fixtures/parity.npz, so a converted network must
reproduce the outputs an independent PyTorch implementation computed for those weights.
"""
import os
import pickle
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import paddle
import pytest

from model import build_model
from model.deeplab_multi import DeeplabMulti
from tests.fixtures.seeded_weights import seeded_input, seeded_state_dict
from tests.helpers import ROOT, seeded_torch_state
from utils.demo.torch_writer import save_legacy, save_zip
from utils import convert_weights
from utils.files.weights import CLASSIFIER_PREFIXES, WeightsError, load_weights

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

# float32 against the float64 reference, relative to the output's scale (as in test_models.py).
RELATIVE_TOLERANCE = 1e-5
STEP_COUNTER_REASON = "PyTorch's BN step counter has no Paddle counterpart"


def paddle_name(torch_key):
    """The Paddle parameter a PyTorch state-dict key becomes: the same module path, with
    BatchNorm2d's running_mean and running_var named as Paddle's BatchNorm2D names them."""
    module, _, leaf = torch_key.rpartition(".")
    return module + "." + {"running_mean": "_mean", "running_var": "_variance"}.get(leaf, leaf)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "utils.convert_weights"] + [str(a) for a in args],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)


def relative_error(actual, reference):
    return float(np.abs(actual.astype(np.float64) - reference).max() / np.abs(reference).max())


def run_on_parity_input(model, parity, shape_key="seg_input_shape"):
    model.eval()
    x = paddle.to_tensor(seeded_input(parity[shape_key], int(parity["input_seed"])))
    with paddle.no_grad():
        out = model(x)
    return [o.numpy() for o in out] if isinstance(out, (tuple, list)) else out.numpy()


def assert_reproduces_pytorch_heads(model, parity):
    out_conv4, out_conv5 = run_on_parity_input(model, parity)
    assert relative_error(out_conv4, parity["deeplab_multi_out1"]) < RELATIVE_TOLERANCE
    assert relative_error(out_conv5, parity["deeplab_multi_out2"]) < RELATIVE_TOLERANCE


def parameters_of(model):
    return {name: value.numpy() for name, value in model.state_dict().items()}


def with_step_counters(torch_state):
    """The state dict as PyTorch >= 0.4.1 writes it: an int64 num_batches_tracked after each BN."""
    state = {}
    for key, value in torch_state.items():
        state[key] = value
        if key.endswith(".running_var"):
            state[key[:-len("running_var")] + "num_batches_tracked"] = np.array(150000, dtype=np.int64)
    return state


@pytest.fixture(scope="module")
def num_classes(parity):
    return int(parity["num_classes"])


@pytest.fixture(scope="module")
def model(num_classes):
    """One DeeplabMulti for the loads (building the 101-layer network takes about a second).

    Sharing it is safe: a load either replaces every parameter or is refused before touching any.
    """
    return DeeplabMulti(num_classes=num_classes)


@pytest.fixture(scope="module")
def torch_state(parity, model):
    """DeeplabMulti's seeded weights under the reference's PyTorch names."""
    return seeded_torch_state(model, int(parity["seed"]))


@pytest.fixture(scope="module")
def released_pth(tmp_path_factory, torch_state):
    """Like GTA2Cityscapes_multi-ed35151c.pth: saved from the GPU by PyTorch 0.x (legacy format)."""
    path = str(tmp_path_factory.mktemp("released") / "GTA2Cityscapes_multi.pth")
    save_legacy(torch_state, path, device="cuda:0", old_tensors=True)
    return path


@pytest.fixture(scope="module")
def released_pth_with_counters(tmp_path_factory, torch_state):
    """The same weights saved by a newer PyTorch with _use_new_zipfile_serialization=False."""
    path = str(tmp_path_factory.mktemp("released_new_torch") / "GTA2Cityscapes_multi.pth")
    save_legacy(with_step_counters(torch_state), path)
    return path


@pytest.fixture(scope="module")
def released_pdparams(tmp_path_factory, released_pth):
    """released_pth converted by the command line; (completed process, .pdparams path)."""
    dst = str(tmp_path_factory.mktemp("converted") / "GTA2Cityscapes_multi.pdparams")
    return run_cli(released_pth, dst, "--model", "DeeplabMulti"), dst


@pytest.fixture(scope="module")
def init_pth(tmp_path_factory, torch_state, parity):
    """Like DeepLab_resnet_pretrained_init-f81d91e8.pth: 'Scale.' keys, a 21-class layer5, no layer6.

    Returns (path, {torch key: array} of its backbone).
    """
    backbone = {k: v for k, v in torch_state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    coco_classifier = seeded_state_dict(
        {k: (21,) + v.shape[1:] for k, v in torch_state.items() if k.startswith("layer5.")},
        int(parity["seed"]))
    state = {"Scale." + k: v for k, v in list(backbone.items()) + list(coco_classifier.items())}
    path = str(tmp_path_factory.mktemp("init") / "DeepLab_resnet_pretrained_init.pth")
    save_legacy(state, path, device="cuda:0", old_tensors=True)
    return path, backbone


@pytest.fixture(scope="module")
def init_pdparams(tmp_path_factory, init_pth):
    dst = str(tmp_path_factory.mktemp("init_converted") / "init.pdparams")
    return run_cli(init_pth[0], dst, "--model", "DeeplabMulti"), dst


# ----------------------------------------------------------------- the released trained model


def test_cli_converts_the_released_model_and_it_reproduces_pytorch(released_pdparams, model, parity):
    completed, dst = released_pdparams
    assert completed.returncode == 0, completed.stderr
    assert "{} tensors loaded".format(len(model.state_dict())) in completed.stdout
    assert "skipped" not in completed.stdout
    assert "wrote {}".format(dst) in completed.stdout

    report = load_weights(model, dst)

    assert report.kind == "paddle" and report.fresh == [] and report.skipped == []
    assert_reproduces_pytorch_heads(model, parity)


def test_cli_drops_the_step_counters_newer_pytorch_writes(released_pth_with_counters, tmp_path, model,
                                                          parity, capsys):
    dst = str(tmp_path / "converted.pdparams")

    exit_code = convert_weights.main([released_pth_with_counters, dst, "--model", "DeeplabMulti"])

    stdout = capsys.readouterr().out
    assert exit_code == 0
    num_bn = sum(1 for name in model.state_dict() if name.endswith("._variance"))
    assert "{} tensors loaded".format(len(model.state_dict())) in stdout
    skipped = [line for line in stdout.splitlines() if line.strip().startswith("skipped ")]
    assert skipped == ["  skipped {} keys (e.g. bn1.num_batches_tracked): {}".format(num_bn, STEP_COUNTER_REASON)]
    load_weights(model, dst)
    assert_reproduces_pytorch_heads(model, parity)


def test_pth_loaded_directly_equals_the_converted_file_bit_for_bit(released_pth, released_pdparams, model):
    load_weights(model, released_pdparams[1])
    converted = parameters_of(model)

    report = load_weights(model, released_pth)

    assert report.kind == "pytorch" and report.skipped == []
    direct = parameters_of(model)
    assert sorted(converted) == sorted(direct)
    for name, value in direct.items():
        assert value.dtype == converted[name].dtype == np.float32, name
        np.testing.assert_array_equal(value, converted[name], err_msg=name)


def test_zip_format_converts_the_same_way_and_every_tensor_arrives_as_float32(
        tmp_path, torch_state, model, parity, capsys):
    state = dict(torch_state)
    for key in state:
        if key.startswith("layer1.") and key.endswith(".weight"):
            state[key] = state[key].astype(np.float64)  # float32 values, so exact after the round trip
        # Branches 2 and 3 (dilations 18, 24) are never summed (the reference's quirk), so rounding
        # them to float16 cannot move the outputs compared with the PyTorch reference.
        if ".conv2d_list.2." in key or ".conv2d_list.3." in key:
            state[key] = state[key].astype(np.float16)
    src, dst = str(tmp_path / "GTA2Cityscapes_multi_zip.pth"), str(tmp_path / "converted.pdparams")
    save_zip(state, src)

    assert convert_weights.main([src, dst, "--model", "DeeplabMulti"]) == 0

    assert "wrote {}".format(dst) in capsys.readouterr().out
    converted = paddle.load(dst, return_numpy=True)
    assert {str(v.dtype) for v in state.values()} == {"float16", "float32", "float64"}
    for key, value in state.items():
        assert converted[paddle_name(key)].dtype == np.float32, key
        np.testing.assert_array_equal(converted[paddle_name(key)], value.astype(np.float32), err_msg=key)
    load_weights(model, dst)
    assert_reproduces_pytorch_heads(model, parity)


# ----------------------------------------------------------------- the ImageNet/COCO init file


def test_cli_converts_the_init_file_backbone_and_says_what_it_left_out(init_pdparams, init_pth):
    completed, dst = init_pdparams
    init_path, backbone = init_pth

    assert completed.returncode == 0, completed.stderr
    assert "{}: {} tensors loaded".format(init_path, len(backbone)) in completed.stdout
    assert "'Scale.' prefix removed" in completed.stdout
    assert ("skipped 8 keys (e.g. Scale.layer5.conv2d_list.0.weight): classifier of the init file for another "
            "class count (21)") in completed.stdout
    assert "left at fresh initialisation: layer5.*" in completed.stdout
    assert "left at fresh initialisation: layer6.*" in completed.stdout
    converted = paddle.load(dst, return_numpy=True)
    assert sorted(converted) == sorted(paddle_name(k) for k in backbone)
    for key, value in backbone.items():
        np.testing.assert_array_equal(converted[paddle_name(key)], value, err_msg=key)


def test_converted_init_file_is_refused_for_a_full_load(init_pdparams, model):
    dst = init_pdparams[1]

    with pytest.raises(WeightsError) as refused:
        load_weights(model, dst)

    message = str(refused.value)
    assert dst in message and "missing from the file" in message
    # both classifiers, 4 branches x (weight, bias) each
    assert "layer5.* (8 keys" in message and "layer6.* (8 keys" in message


def test_asked_for_partial_load_raises_no_paddle_warnings(init_pdparams, num_classes):
    model = DeeplabMulti(num_classes=num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(model, init_pdparams[1], allow_fresh=CLASSIFIER_PREFIXES)


def test_converted_init_file_loads_with_the_classifiers_left_fresh(init_pdparams, init_pth, num_classes):
    model = DeeplabMulti(num_classes=num_classes)  # as training starts: a fresh network, then the init file
    fresh_classifiers = {k: v for k, v in parameters_of(model).items() if k.startswith(CLASSIFIER_PREFIXES)}

    report = load_weights(model, init_pdparams[1], allow_fresh=CLASSIFIER_PREFIXES)

    assert report.fresh == ["layer5.", "layer6."]
    loaded = parameters_of(model)
    for key, value in init_pth[1].items():
        np.testing.assert_array_equal(loaded[paddle_name(key)], value, err_msg=key)
    for name, value in fresh_classifiers.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


# ----------------------------------------------------------------- the other networks


@pytest.mark.parametrize("model_name, reference, shape_key", [
    ("FCDiscriminator", "discriminator_out", "disc_input_shape"),
    ("DeeplabVGG", "deeplab_vgg_out", "seg_input_shape"),
])
def test_other_networks_convert_and_reproduce_pytorch(model_name, reference, shape_key, tmp_path,
                                                      num_classes, parity, capsys):
    src, dst = str(tmp_path / "model.pth"), str(tmp_path / "model.pdparams")
    save_legacy(seeded_torch_state(build_model(model_name, num_classes=num_classes), int(parity["seed"])), src)

    assert convert_weights.main([src, dst, "--model", model_name]) == 0

    assert "wrote {}".format(dst) in capsys.readouterr().out
    model = build_model(model_name, num_classes=num_classes)
    load_weights(model, dst)
    assert relative_error(run_on_parity_input(model, parity, shape_key), parity[reference]) < RELATIVE_TOLERANCE


# ----------------------------------------------------------------- refusals


def discriminator_weights(torch_state, parity):
    return seeded_torch_state(build_model("FCDiscriminator", num_classes=19), int(parity["seed"]))


def without_running_var(torch_state, parity):
    return {k: v for k, v in torch_state.items() if k != "layer3.7.bn2.running_var"}


def with_an_extra_key(torch_state, parity):
    return dict(torch_state, **{"fc.weight": np.zeros((1000, 2048), dtype=np.float32)})


def without_layer6(torch_state, parity):
    return {k: v for k, v in torch_state.items() if not k.startswith("layer6.")}


@pytest.mark.parametrize("make_state, options, named", [
    (discriminator_weights, [], ["conv1.weight (file (64, 19, 4, 4), model (64, 3, 7, 7))",
                                 "not in the model: classifier.bias", "missing from the file"]),
    (lambda torch_state, parity: torch_state, ["--num-classes", "5"],
     ["wrong shape: ", "layer5.conv2d_list.0.bias (file (19,), model (5,))",
      "layer6.conv2d_list.0.bias (file (19,), model (5,))"]),
    (without_running_var, [], ["missing from the file: layer3.7.bn2._variance\n"]),
    (with_an_extra_key, [], ["not in the model: fc.weight\n"]),
    (without_layer6, [], ["has no classifier weights (layer6.)", "only the ImageNet/COCO init file"]),
], ids=["discriminator-for-DeeplabMulti", "num-classes-5", "key-removed", "extra-key", "no-layer6"])
def test_cli_refuses_weights_that_do_not_fit(make_state, options, named, tmp_path, torch_state, parity,
                                             capsys):
    src, dst = str(tmp_path / "weights.pth"), str(tmp_path / "weights.pdparams")
    save_legacy(make_state(torch_state, parity), src)

    exit_code = convert_weights.main([src, dst, "--model", "DeeplabMulti"] + options)

    captured = capsys.readouterr()
    assert exit_code != 0
    assert captured.err.startswith("error: {}".format(src))
    for text in named:
        assert text in captured.err
    assert not os.path.exists(dst)
    assert os.listdir(str(tmp_path)) == ["weights.pth"]  # no temporary file left behind either


def test_convert_raises_weights_error_for_the_caller_to_catch(tmp_path, torch_state, parity):
    src, dst = str(tmp_path / "D1.pth"), str(tmp_path / "D1.pdparams")
    save_legacy(discriminator_weights(torch_state, parity), src)

    with pytest.raises(WeightsError, match="D1.pth does not fit the model"):
        convert_weights.convert(src, dst, "DeeplabMulti")

    assert not os.path.exists(dst)


@pytest.mark.parametrize("damage", ["truncated", "not-a-paddle-file"])
def test_load_weights_refuses_a_damaged_pdparams_naming_it(damage, tmp_path, released_pdparams, model):
    with open(released_pdparams[1], "rb") as f:
        data = f.read()
    path = str(tmp_path / "GTA5_5000.pdparams")
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2] if damage == "truncated" else b"<html>404 Not Found</html>\n")

    with pytest.raises(WeightsError, match="GTA5_5000.pdparams") as refused:
        load_weights(model, path)

    assert path in str(refused.value)


class RunsAShellCommand(object):
    """What a malicious checkpoint pickles: unpickling it calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def write_malicious_pth(path, layout, marker):
    payload = pickle.dumps({"conv1.weight": RunsAShellCommand("touch {}".format(marker))}, protocol=2)
    if layout == "legacy":
        header = (0x1950A86A20F9469CFC6C, 1001,
                  {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}})
        with open(path, "wb") as f:
            for item in header:
                f.write(pickle.dumps(item, protocol=2))
            f.write(payload)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
            archive.writestr("archive/byteorder", "little")
            archive.writestr("archive/version", "3\n")


def test_cli_refuses_a_malicious_pth_without_running_it(tmp_path):
    src, dst = str(tmp_path / "GTA2Cityscapes_multi.pth"), str(tmp_path / "converted.pdparams")
    marker = tmp_path / "pwned"
    write_malicious_pth(src, "legacy", marker)

    completed = run_cli(src, dst, "--model", "DeeplabMulti")

    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith("error: {}: refusing to load".format(src))
    assert "system" in errors[0]
    assert not marker.exists()
    assert not os.path.exists(dst)


def test_malicious_zip_format_pth_is_refused_too(tmp_path, model):
    path = str(tmp_path / "GTA2Cityscapes_multi.pth")
    marker = tmp_path / "pwned"
    write_malicious_pth(path, "zip", marker)

    with pytest.raises(WeightsError, match="refusing to load"):
        load_weights(model, path)

    assert not marker.exists()


def test_load_weights_refuses_a_malicious_pdparams_without_running_it(tmp_path):
    path = str(tmp_path / "GTA5_best.pdparams")
    marker = tmp_path / "pwned"
    with open(path, "wb") as f:
        f.write(pickle.dumps({"conv1.weight": RunsAShellCommand("touch {}".format(marker))}, protocol=2))

    with pytest.raises(WeightsError, match="GTA5_best.pdparams"):
        load_weights(build_model("FCDiscriminator", num_classes=19), path)

    assert not marker.exists()


# ----------------------------------------------------------------- wrappers


@pytest.mark.parametrize("wrap", [
    lambda state: {"state_dict": state, "iteration": 5000},
    lambda state: {"module." + k: v for k, v in state.items()},
], ids=["checkpoint-dict", "DataParallel-prefix"])
def test_load_weights_unwraps_checkpoints_and_dataparallel_names(wrap, tmp_path, torch_state, model):
    path = str(tmp_path / "checkpoint.pth")
    save_zip(wrap(torch_state), path)
    model.set_state_dict({name: paddle.zeros_like(value) for name, value in model.state_dict().items()})

    report = load_weights(model, path)

    assert report.skipped == [] and report.fresh == []
    loaded = parameters_of(model)
    for key, value in torch_state.items():
        np.testing.assert_array_equal(loaded[paddle_name(key)], value, err_msg=key)

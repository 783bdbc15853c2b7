"""A weights file named as torch.hub names a download (GTA2Cityscapes_multi-ed35151c.pth: the
start of its SHA-256 after the last dash) is checked against that start by the converter and by
every script that reads weights, so a damaged or incomplete download is refused by name.
``--no-hash-check`` is for a file renamed on purpose.

The expected digests are computed here with hashlib, independently of the code under test.
"""
import contextlib
import hashlib
import io
import os
import shutil

import numpy as np
import pytest

import evaluate_cityscapes
import train_gta2cityscapes_multi as train
from dataset.classes import CITYSCAPES
from dataset.synthetic import make_synthetic
from model import build_model
from model.deeplab_multi import DeeplabMulti
from tests.helpers import seeded_torch_state, training_args
from utils import convert_weights
from utils.demo.torch_writer import save_legacy
from utils.files import weights
from utils.files.snapshots import SEGMENTATION
from utils.files.weights import WeightsError, load_weights
from utils.training.method import Method

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

# A small discriminator: its file is 11 MB; the check does not depend on the network.
NUM_CLASSES = 2
DISCRIMINATOR = ["--model", "FCDiscriminator", "--num-classes", str(NUM_CLASSES)]


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read())
    return digest.hexdigest()


def wrong(prefix):
    """Another prefix of the same length: every hex digit changed."""
    return "".join("{:x}".format(15 - int(digit, 16)) for digit in prefix)


def renamed(path, name):
    """A copy of ``path`` called ``name``, beside it."""
    copy = os.path.join(os.path.dirname(path), name)
    shutil.copyfile(path, copy)
    return copy


@pytest.fixture
def discriminator():
    return build_model("FCDiscriminator", num_classes=NUM_CLASSES)


@pytest.fixture
def pth(tmp_path, discriminator):
    """Seeded discriminator weights as PyTorch 0.x saved them; (path, SHA-256, state dict)."""
    state = seeded_torch_state(discriminator, 0)
    path = str(tmp_path / "D.pth")
    save_legacy(state, path)
    return path, sha256_of(path), state


@pytest.mark.parametrize("length", [8, 12, 64])
def test_a_name_with_the_start_of_the_files_sha256_loads(pth, discriminator, length):
    path, sha256, state = pth
    named = renamed(path, "GTA5_100000_D1-{}.pth".format(sha256[:length]))

    report = load_weights(discriminator, named)

    assert report.hash_prefix == sha256[:length]
    assert report.summary().splitlines()[0].endswith("(PyTorch state dict; sha256 prefix checked)")
    np.testing.assert_array_equal(discriminator.state_dict()["conv1.weight"].numpy(), state["conv1.weight"])


def test_a_wrong_prefix_is_refused_naming_the_file_and_both_prefixes(pth, discriminator):
    path, sha256, _ = pth
    named = renamed(path, "GTA2Cityscapes_multi-{}.pth".format(wrong(sha256[:8])))
    before = discriminator.state_dict()["conv1.weight"].numpy()

    with pytest.raises(WeightsError) as error:
        load_weights(discriminator, named)

    message = str(error.value)
    assert "\n" not in message
    assert named in message and wrong(sha256[:8]) in message and sha256[:8] in message
    assert "damaged or incomplete" in message and "--no-hash-check" in message
    np.testing.assert_array_equal(discriminator.state_dict()["conv1.weight"].numpy(), before)


def test_a_truncated_download_under_the_right_name_is_refused(pth, discriminator):
    path, sha256, _ = pth
    named = os.path.join(os.path.dirname(path), "GTA2Cityscapes_multi-{}.pth".format(sha256[:8]))
    with open(path, "rb") as f:
        head = f.read(os.path.getsize(path) // 2)
    with open(named, "wb") as f:
        f.write(head)

    with pytest.raises(WeightsError) as error:
        load_weights(discriminator, named)

    message = str(error.value)
    assert named in message and sha256[:8] in message and hashlib.sha256(head).hexdigest()[:8] in message
    assert "damaged or incomplete" in message


def test_check_hash_false_loads_a_file_renamed_on_purpose(pth, discriminator):
    path, sha256, state = pth
    named = renamed(path, "GTA2Cityscapes_multi-{}.pth".format(wrong(sha256[:8])))

    report = load_weights(discriminator, named, check_hash=False)

    assert report.hash_prefix is None and "sha256" not in report.summary()
    np.testing.assert_array_equal(discriminator.state_dict()["conv1.weight"].numpy(), state["conv1.weight"])


@pytest.mark.parametrize("name", [
    "GTA5_best.pth", "GTA5_5000.pth", "run-2024.pth", "model-final.pth", "model-1234567.pth",  # short tail
    "model-deadbeefx.pth", "model-DEADBEEF.pth", "deadbeef.pth", "model-deadbeef", "model-deadbeef-v2.pth",
    "model-20240101.pth",  # all digits: a date, not a hash
])
def test_names_without_a_hash_suffix_are_not_checked(pth, discriminator, name):
    assert weights.hash_suffix(name) is None
    report = load_weights(discriminator, renamed(pth[0], name))
    assert report.hash_prefix is None


@pytest.mark.parametrize("name", ["GTA5_best.pdparams", "run-2024.pdparams", "GTA5_5000.pdparams",
                                  "GTA2Cityscapes_multi-ed35151c.pdparams"])
def test_pdparams_are_not_checked(tmp_path, pth, discriminator, name):
    """A converted file may keep its source's name, hash suffix and all (the notebooks do)."""
    path = str(tmp_path / name)
    assert convert_weights.main([pth[0], path] + DISCRIMINATOR) == 0

    assert load_weights(discriminator, path).hash_prefix is None


def test_a_file_is_hashed_once_per_process_until_it_changes(pth, discriminator, monkeypatch):
    path, sha256, _ = pth
    named = renamed(path, "GTA5_100000_D2-{}.pth".format(sha256[:8]))
    hashed, sha256_function = [], hashlib.sha256

    def counting_sha256(*args):
        hashed.append(named)
        return sha256_function(*args)

    monkeypatch.setattr(weights.hashlib, "sha256", counting_sha256)
    for _ in range(3):
        load_weights(discriminator, named)
    assert len(hashed) == 1

    with open(named, "ab") as f:  # the file changes (size and mtime): it is hashed again, and refused
        f.write(b"\0")
    with pytest.raises(WeightsError, match="damaged or incomplete"):
        load_weights(discriminator, named)
    assert len(hashed) == 2


# -- the command lines -------------------------------------------------------------------------


def test_convert_weights_checks_the_name_and_no_hash_check_skips_it(pth, tmp_path, capsys):
    path, sha256, _ = pth
    dst = str(tmp_path / "D.pdparams")

    right = renamed(path, "GTA5_100000_D2-{}.pth".format(sha256[:8]))
    assert convert_weights.main([right, dst] + DISCRIMINATOR) == 0
    assert "sha256 prefix checked" in capsys.readouterr().out
    os.remove(dst)

    misnamed = renamed(path, "GTA5_100000_D2-{}.pth".format(wrong(sha256[:8])))
    assert convert_weights.main([misnamed, dst] + DISCRIMINATOR) == 1
    error = capsys.readouterr().err
    assert misnamed in error and wrong(sha256[:8]) in error and sha256[:8] in error
    assert not os.path.exists(dst)

    assert convert_weights.main([misnamed, dst, "--no-hash-check"] + DISCRIMINATOR) == 0
    assert "sha256" not in capsys.readouterr().out
    assert os.path.isfile(dst)


def test_evaluate_cityscapes_checks_the_name_and_no_hash_check_skips_it(tmp_path):
    _, cityscapes = make_synthetic(str(tmp_path / "data"), num_source=1, num_target_train=1, num_target_val=2,
                                   target_size=(64, 32))
    path, state = str(tmp_path / "model.pth"), seeded_torch_state(DeeplabMulti(num_classes=CITYSCAPES.num_classes), 0)
    save_legacy(state, path)
    misnamed = renamed(path, "GTA2Cityscapes_multi-{}.pth".format(wrong(sha256_of(path)[:8])))
    argv = ["--restore-from", misnamed, "--data-dir", cityscapes, "--save", str(tmp_path / "result"),
            "--input-size", "64,32", "--num-workers", "0", "--backend", "dygraph", "--device", "cpu"]

    with pytest.raises(WeightsError, match="damaged or incomplete"):
        evaluate_cityscapes.main(argv)

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert evaluate_cityscapes.main(argv + ["--no-hash-check"]) == 0
    assert "{}: {} tensors loaded (PyTorch state dict)\n".format(misnamed, len(state)) in printed.getvalue()
    assert os.path.isfile(str(tmp_path / "result" / "mIoU.json"))


def test_training_passes_no_hash_check_to_every_file_it_loads(pth, discriminator, tmp_path):
    """--restore-from and a discriminator's file, as the training scripts' Method loads them."""
    path, sha256, state = pth
    misnamed = renamed(path, "GTA5_100000_D1-{}.pth".format(wrong(sha256[:8])))
    data = (str(tmp_path / "GTA5"), str(tmp_path / "Cityscapes"))  # only parsed here, never read

    def method(*flags):
        args = train.get_arguments(training_args(data, tmp_path / "snapshots", 1, "--restore-from", misnamed,
                                                 "--restore-from-D1", misnamed, *flags))
        method = Method(args)
        method.nets = {SEGMENTATION: discriminator, "D1": build_model("FCDiscriminator", num_classes=NUM_CLASSES)}
        method.part_weights = {"D1": "a discriminator"}  # what --restore-from-D1 loads into
        return method

    checked = method()
    with pytest.raises(WeightsError, match="damaged or incomplete"):
        checked.load_segmentation_weights(print)
    with pytest.raises(WeightsError, match="damaged or incomplete"):
        checked.load_part_weights(print)

    unchecked, log = method("--no-hash-check"), []
    unchecked.load_segmentation_weights(log.append)
    unchecked.load_part_weights(log.append)
    assert [line.splitlines()[0] for line in log] == [
        "{}: {} tensors loaded (PyTorch state dict)".format(misnamed, len(state))] * 2
    np.testing.assert_array_equal(unchecked.nets["D1"].state_dict()["conv1.weight"].numpy(), state["conv1.weight"])

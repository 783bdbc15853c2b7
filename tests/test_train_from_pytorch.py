"""Finishing a PyTorch AdaptSegNet run: three .pth snapshots and --start-iter N, no --continue-train."""
import contextlib
import json
import os

import numpy as np
import paddle
import pytest

import train_gta2cityscapes_multi as train
from model import DeeplabMulti, FCDiscriminator
from tests.helpers import seeded_torch_state, training_args
from utils.demo.torch_writer import save_legacy
from utils.files.weights import WeightsError, load_weights
from utils.training.session import TrainingSession

START = 40
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=2)


@pytest.fixture(scope="module")
def pytorch_run(tmp_path_factory):
    """GTA5_40.pth, GTA5_40_D1.pth, GTA5_40_D2.pth as the original writes them (legacy format)."""
    directory = tmp_path_factory.mktemp("pytorch_run")
    files = {}
    for name, net, seed in (("", DeeplabMulti(), 1), ("_D1", FCDiscriminator(19), 2), ("_D2", FCDiscriminator(19), 3)):
        path = str(directory / "GTA5_{}{}.pth".format(START, name))
        save_legacy(seeded_torch_state(net, seed), path)
        files[name] = path
    return files


def run_args(data, snapshot_dir, pytorch_run, stop=START + 1):
    """The original's command line for going on from its files: the three of them, --start-iter, and
    the recipe that continues it as the authors' code trained it."""
    return training_args(data, snapshot_dir, stop, "--recipe", "authors", "--restore-from", pytorch_run[""],
                         "--restore-from-D1", pytorch_run["_D1"], "--restore-from-D2", pytorch_run["_D2"],
                         "--start-iter", str(START), steps=100, save_every=5)


def expected_params(net, seed):
    renamed = {}
    for key, value in seeded_torch_state(net, seed).items():
        renamed[key.replace("running_mean", "_mean").replace("running_var", "_variance")] = value
    return renamed


@contextlib.contextmanager
def started(argv):
    """The run as it stands before its first iteration."""
    args = train.get_arguments(argv)
    with TrainingSession(args, train.AdaptSegNet) as session:
        args.freeze()
        method = train.AdaptSegNet(args)
        session.start(method)
        yield session, method


def test_run_starts_from_all_three_files_at_iteration_n(data, pytorch_run, tmp_path, capsys):
    with started(run_args(data, tmp_path, pytorch_run)) as (session, method):
        assert session.start_iter == START
        for net, seed in zip(method.nets.values(), (1, 2, 3)):
            expected = expected_params(net, seed)
            for key, value in net.state_dict().items():
                np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)
        # Optimizers start fresh: no momentum or Adam moments yet.
        assert all(not state.state_dict() for state in method.state.values())
    printed = capsys.readouterr().out
    assert "PyTorch state dict" in printed and "fresh optimizers" in printed


def test_first_iteration_uses_the_learning_rates_of_iteration_n_and_snapshots_count_on(data, pytorch_run, tmp_path):
    assert train.main(run_args(data, tmp_path, pytorch_run, stop=START + 1)) == 0
    with open(os.path.join(str(tmp_path), "metrics.jsonl")) as f:
        first = json.loads(f.readline())
    assert first["step"] == START + 1
    assert first["scalars"]["lr/G"] == pytest.approx(2.5e-4 * (1 - START / 100) ** 0.9)
    assert first["scalars"]["lr/D"] == pytest.approx(1e-4 * (1 - START / 100) ** 0.9)
    names = sorted(n for n in os.listdir(str(tmp_path)) if n.startswith("GTA5_"))
    assert names == ["GTA5_41.pdparams", "GTA5_41_D1.pdparams", "GTA5_41_D2.pdparams", "GTA5_41_state.pdopt"]


def test_discriminator_file_of_the_wrong_model_fails_before_training(data, pytorch_run, tmp_path):
    args = run_args(data, tmp_path, pytorch_run)
    args[args.index("--restore-from-D1") + 1] = pytorch_run[""]  # the segmentation network's file
    with pytest.raises(WeightsError, match="GTA5_40.pth does not fit the model(.|\\n)*not in the model: bn1"):
        train.main(args)
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("GTA5_")]


def test_wrong_shape_segmentation_file_fails_naming_key_and_shapes(data, tmp_path):
    bad = str(tmp_path / "five_classes.pth")
    save_legacy(seeded_torch_state(DeeplabMulti(num_classes=5), 0), bad)
    args = ["--data-dir", data[0], "--data-dir-target", data[1], "--snapshot-dir", str(tmp_path / "run"),
            "--restore-from", bad, "--device", "cpu", "--num-workers", "0"]
    with pytest.raises(WeightsError, match=r"wrong shape: layer5\.\* \(8 keys, e\.g\. layer5\.conv2d_list\.0\.bias "
                                           r"\(file \(5,\), model \(19,\)\)\)"):
        train.main(args)


def test_paddle_files_work_the_same_way(data, pytorch_run, tmp_path):
    converted = {}
    for name, path in pytorch_run.items():
        net = DeeplabMulti() if name == "" else FCDiscriminator(19)
        load_weights(net, path)
        converted[name] = str(tmp_path / "GTA5_{}{}.pdparams".format(START, name))
        paddle.save(net.state_dict(), converted[name])
    with started(run_args(data, tmp_path / "run", converted)) as (_, method):
        D2 = method.nets["D2"]
        expected = expected_params(D2, 3)
        for key, value in D2.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), expected[key], err_msg=key)

"""The source-only baseline (--source-only): a method of its own file on the unchanged session.

It must train what AdaptSegNet trains with its adversarial weights at 0, without reading a target
image, and resume and validate like any run.
"""
import json
import os

import numpy as np
import paddle
import pytest

import train_gta2cityscapes_multi as train
from tests.helpers import assert_same_snapshot, logged_losses, training_args
from utils.files.checkpoint import CheckpointError

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

SYNTHETIC_DATA = dict(num_source=4, num_target_train=3, num_target_val=2)


def load(path):
    return paddle.load(str(path), return_numpy=True)


def test_the_baseline_trains_what_adaptsegnet_trains_with_no_adversarial_loss(data, tmp_path):
    """With frozen BN the target images change nothing in G when the adversarial weights are 0."""
    assert train.main(training_args(data, tmp_path / "baseline", 2, "--source-only")) == 0
    assert train.main(training_args(data, tmp_path / "zero", 2, "--lambda-adv-target1", "0",
                                    "--lambda-adv-target2", "0")) == 0
    baseline, adapted = load(tmp_path / "baseline" / "GTA5_2.pdparams"), load(tmp_path / "zero" / "GTA5_2.pdparams")
    assert baseline.keys() == adapted.keys()
    for key in baseline:
        np.testing.assert_allclose(baseline[key], adapted[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert sorted(os.listdir(str(tmp_path / "baseline"))) == sorted(
        name for name in os.listdir(str(tmp_path / "zero")) if "_D1" not in name and "_D2" not in name)
    np.testing.assert_allclose(segmentation_losses(tmp_path / "baseline"), segmentation_losses(tmp_path / "zero"),
                               rtol=1e-6)


def segmentation_losses(snapshot_dir):
    return [[scalars["loss/seg1"], scalars["loss/seg2"]] for _, scalars in logged_losses(snapshot_dir)]


def test_the_baseline_reads_no_target_image(data, tmp_path):
    source, _ = data
    assert train.main(training_args((source, str(tmp_path / "no_such_dir")), tmp_path / "run", 1, "--source-only")) == 0


def test_the_baseline_resumes_exactly_and_validates(data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train.main(training_args(data, straight, 4, "--source-only", "--recipe", "authors", mirror=True)) == 0
    assert train.main(training_args(data, resumed, 2, "--source-only", "--recipe", "authors", "--val",
                                    mirror=True)) == 0
    assert train.main(training_args(data, resumed, 4, "--source-only", "--val", mirror=True,
                                    continue_train=True)) == 0
    assert_same_snapshot(straight, resumed, 4, discriminators=())
    with open(str(resumed / "GTA5_4.eval.json")) as f:
        assert 0.0 <= json.load(f)["mIoU"] <= 1.0
    assert os.path.exists(str(resumed / "GTA5_best.pdparams"))


def test_an_adversarial_run_does_not_continue_as_the_baseline(data, tmp_path):
    assert train.main(training_args(data, tmp_path, 1)) == 0
    with pytest.raises(CheckpointError, match="--source-only True \\(snapshot: False\\)"):
        train.main(training_args(data, tmp_path, 2, "--source-only", continue_train=True))


def test_the_adversarial_command_in_a_baseline_directory_does_not_start_over(data, tmp_path):
    assert train.main(training_args(data, tmp_path, 2, "--source-only")) == 0
    with pytest.raises(CheckpointError, match="holds snapshot GTA5_2, whose state file is there but not its D1 or D2"):
        train.main(training_args(data, tmp_path, 4, continue_train=True))

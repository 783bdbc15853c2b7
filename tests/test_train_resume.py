"""A training run on synthetic data: continuing, crashing, and refusing bad starts.

DeeplabMulti with one bottleneck per ResNet stage (utils/runtime.py) at a tiny input size; batch 2,
mirroring on, two loader workers.
"""
import functools
import os
import random
import shutil
import signal
import subprocess
import time

import paddle
import pytest

import train_gta2cityscapes_multi as train
from dataset.synthetic import make_synthetic
from tests.helpers import ROOT, assert_same_snapshot, logged_losses, script_command, training_args
from utils.files.checkpoint import CheckpointError
from utils.files.snapshots import SnapshotDir
from utils.files.weights import WeightsError

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
STOP = 4
SYNTHETIC_DATA = dict(num_source=6, num_target_train=5, num_target_val=2)
# Batch 2, mirroring and two loader workers: the sampler and worker state a resume must restore.
run_args = functools.partial(training_args, batch_size=2, mirror=True, workers=2, picture_every=2)


def load(path):
    return paddle.load(str(path), return_numpy=True)


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    snapshot_dir = tmp_path_factory.mktemp("straight")
    assert train.main(run_args(data, snapshot_dir, STOP)) == 0
    return str(snapshot_dir)


def test_resumed_run_equals_uninterrupted_run(data, straight_run, tmp_path):
    train.main(run_args(data, tmp_path, STOP // 2))
    train.main(run_args(data, tmp_path, STOP, "--continue-train", "--start-iter", "latest"))
    assert_same_snapshot(straight_run, str(tmp_path), STOP)
    assert logged_losses(str(tmp_path)) == logged_losses(straight_run)
    with open(os.path.join(str(tmp_path), "train.log")) as f:
        steps = [line.split()[1] for line in f if line.startswith("iter ")]
    assert steps == [str(i) for i in range(1, STOP + 1)]


def test_stop_after_minutes_writes_a_snapshot_and_the_run_continues_exactly(data, straight_run, tmp_path, capsys):
    train.main(run_args(data, tmp_path, STOP, "--stop-after-minutes", "0.0001"))
    out = capsys.readouterr().out
    assert "stopped on --stop-after-minutes 0.0001 at iteration 1: snapshot GTA5_1 is complete" in out
    assert SnapshotDir(str(tmp_path)).latest() == 1
    train.main(run_args(data, tmp_path, STOP, "--continue-train"))
    assert_same_snapshot(straight_run, str(tmp_path), STOP)


def test_visualdl_log_has_each_step_once_after_a_resume(data, tmp_path):
    from visualdl import LogReader
    train.main(run_args(data, tmp_path, 3))
    # Pretend the run went on to iteration 3 and died before its snapshot: resume from 2.
    train.main(run_args(data, tmp_path, STOP, "--continue-train", "--start-iter", "2"))
    logdir = os.path.join(str(tmp_path), "visualdl")
    files = os.listdir(logdir)
    assert len(files) == 1
    reader = LogReader(file_path=os.path.join(logdir, files[0]))
    steps = [record.id for record in reader.get_data("scalar", "loss/seg2")]
    assert steps == [1, 2, 3, 4]
    assert len(reader.get_data("image", "target prediction")) == 2  # iterations 2 and 4


def test_killed_run_continues_from_its_last_complete_snapshot(data, straight_run, tmp_path):
    seed = random.randrange(10 ** 6)
    delay = random.Random(seed).uniform(0.0, 2.0)
    print("kill delay {:.2f}s (seed {})".format(delay, seed))
    command = script_command("train_gta2cityscapes_multi.py", *run_args(data, tmp_path, 15, "--save-pred-every", "1"))
    stderr_path = str(tmp_path / "stderr.txt")
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 240
        while not os.path.exists(os.path.join(str(tmp_path), "GTA5_1_state.pdopt")):
            assert process.poll() is None, open(stderr_path).read()[-2000:]
            assert time.time() < deadline, "no snapshot within 240 s"
            time.sleep(0.05)
        time.sleep(delay)
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    print("files when killed:", sorted(os.listdir(str(tmp_path))))
    with pytest.warns(UserWarning, match="taking over the lock of pid {}".format(process.pid)):
        train.main(run_args(data, tmp_path, STOP, "--continue-train"))
    assert_same_snapshot(straight_run, str(tmp_path), STOP)
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".tmp")]


def test_damaged_latest_snapshot_is_skipped_with_a_warning(data, straight_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    with open(os.path.join(run_dir, "GTA5_4_state.pdopt"), "r+b") as f:
        f.truncate(100)
    with pytest.warns(UserWarning, match="skipping damaged snapshot GTA5_4"):
        train.main(run_args(data, run_dir, STOP, "--continue-train"))
    # Iterations 3 and 4 were redone from snapshot 2 and equal the uninterrupted run again.
    assert_same_snapshot(straight_run, run_dir, STOP)


def test_continuing_from_an_older_snapshot_sets_the_newer_ones_aside(data, straight_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    train.main(run_args(data, run_dir, STOP, "--continue-train", "--start-iter", "2"))
    aside = [n for n in os.listdir(run_dir) if n.startswith("superseded_after_GTA5_2_")]
    assert len(aside) == 1
    assert sorted(os.listdir(os.path.join(run_dir, aside[0]))) == [
        "GTA5_4.pdparams", "GTA5_4_D1.pdparams", "GTA5_4_D2.pdparams", "GTA5_4_state.pdopt"]
    assert_same_snapshot(straight_run, run_dir, STOP)  # written again by the continued run


def test_a_new_run_may_start_where_only_an_incomplete_snapshot_was_left(data, tmp_path):
    (tmp_path / "GTA5_2.pdparams").write_bytes(b"cut short")
    train.main(run_args(data, tmp_path, 1))
    assert os.path.exists(str(tmp_path / "GTA5_1_state.pdopt"))


def test_a_torn_last_log_line_does_not_block_a_resume(data, tmp_path):
    train.main(run_args(data, tmp_path, 2))
    with open(str(tmp_path / "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "scal')
    with pytest.warns(UserWarning, match="metrics.jsonl: dropping an unreadable line"):
        train.main(run_args(data, tmp_path, 3, "--continue-train"))
    assert [step for step, _ in logged_losses(str(tmp_path))] == [1, 2, 3]


def test_a_malicious_state_file_is_refused_without_running_it(data, straight_run, tmp_path):
    import pickle
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    marker = tmp_path / "pwned"

    class RunsACommand(object):
        def __reduce__(self):
            return (os.system, ("touch {}".format(marker),))

    for iteration in (2, 4):
        with open(os.path.join(run_dir, "GTA5_{}_state.pdopt".format(iteration)), "wb") as f:
            pickle.dump({"iteration": iteration, "payload": RunsACommand()}, f)
    with pytest.raises(CheckpointError), pytest.warns(UserWarning, match="posix.system|os.system"):
        train.main(run_args(data, run_dir, STOP + 2, "--continue-train"))
    assert not marker.exists()


def test_keep_last_prunes_old_snapshots_but_keeps_the_newest(data, tmp_path):
    train.main(run_args(data, tmp_path, 3, "--keep-last", "1", "--save-pred-every", "1"))
    names = sorted(n for n in os.listdir(str(tmp_path)) if n.startswith("GTA5_"))
    assert names == ["GTA5_3.pdparams", "GTA5_3_D1.pdparams", "GTA5_3_D2.pdparams", "GTA5_3_state.pdopt"]
    assert SnapshotDir(str(tmp_path)).latest() == 3


# Fail fast: every one of these stops before iteration 1 with a message naming what is wrong.

def test_starting_without_weights_needs_from_scratch(data, tmp_path):
    args = [a for a in run_args(data, tmp_path, 1) if a != "--from-scratch"]
    with pytest.raises(SystemExit):
        train.main(args)


def test_from_scratch_and_restore_from_contradict_each_other(data, tmp_path):
    with pytest.raises(SystemExit):
        train.main(run_args(data, tmp_path, 1, "--restore-from", "x.pdparams", "--from-scratch"))


def test_continuing_on_a_dataset_of_another_size_is_refused(data, straight_run, tmp_path):
    smaller = make_synthetic(str(tmp_path / "smaller"), num_source=5, num_target_train=5, num_target_val=2)
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    with pytest.raises(CheckpointError, match="source images 5 \\(snapshot: 6\\)"):
        train.main(run_args(smaller, run_dir, STOP + 1, "--continue-train"))


def test_missing_dataset_names_the_expected_layout(data, tmp_path):
    args = run_args(data, tmp_path, 1)
    args[args.index("--data-dir") + 1] = str(tmp_path / "no_gta5")
    with pytest.raises(FileNotFoundError, match="no_gta5.*images/00001.png"):
        train.main(args)


def test_existing_run_needs_continue_train(data, straight_run):
    with pytest.raises(CheckpointError, match="--continue-train"):
        train.main(run_args(data, straight_run, STOP))


def test_a_snapshot_of_the_first_release_continues_with_the_sgd_it_was_trained_with(data, straight_run, tmp_path):
    """Round-1 state files keep the optimizers under "optimizers" and lack the flags added since:
    such a run trained with each parameter listed once, so it continues with --sgd-groups paper
    (and frozen BN), without being told."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    for iteration in (2, STOP):
        path = os.path.join(run_dir, "GTA5_{}_state.pdopt".format(iteration))
        state = load(path)
        state["optimizers"] = state.pop("state")
        for flag in ("source", "sgd_groups", "amp", "target", "city", "recipe", "bn", "end_learning_rate"):
            del state["extra"]["args"][flag]
        paddle.save(state, path)
    with pytest.raises(CheckpointError, match="--sgd-groups original \\(snapshot: paper\\)"):
        train.main(run_args(data, run_dir, STOP + 1, "--continue-train", "--sgd-groups", "original"))
    train.main(run_args(data, run_dir, STOP + 1, "--continue-train"))
    assert SnapshotDir(run_dir).latest() == STOP + 1
    with open(os.path.join(run_dir, "train.log")) as f:
        adopted = [line for line in f if line.startswith("the snapshot predates recipes")]
    assert "--sgd-groups paper" in adopted[-1] and "--bn frozen" in adopted[-1]


def test_the_same_command_starts_the_run_then_resumes_it(data, straight_run, tmp_path, capsys):
    """A notebook's one training cell, run in two sessions: the first starts (nothing to resume),
    the second resumes; together they are the uninterrupted run."""
    train.main(run_args(data, tmp_path, STOP // 2, "--continue-train"))
    assert "no snapshot in {} yet: starting the run".format(tmp_path) in capsys.readouterr().out
    train.main(run_args(data, tmp_path, STOP, "--continue-train"))
    assert "resumed from GTA5_2 at iteration 2" in capsys.readouterr().out
    assert_same_snapshot(straight_run, str(tmp_path), STOP)
    assert logged_losses(str(tmp_path)) == logged_losses(straight_run)


def test_resuming_ignores_the_initial_weights_and_says_so(data, straight_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    train.main(run_args(data, run_dir, STOP + 1, "--continue-train", "--restore-from", "does_not_exist.pth"))
    assert "--restore-from not used: the run continues from its snapshot" in capsys.readouterr().out


def test_continue_without_snapshots_or_weights_says_what_to_give(data, tmp_path):
    args = [a for a in run_args(data, tmp_path, 1, "--continue-train") if a != "--from-scratch"]
    with pytest.raises(CheckpointError, match="has no snapshot yet, and nothing to start a new run from: give "
                                              "--restore-from"):
        train.main(args)


def test_start_iter_that_does_not_exist_lists_the_snapshots(data, straight_run):
    with pytest.raises(CheckpointError, match="--start-iter 7.*GTA5_2: complete"):
        train.main(run_args(data, straight_run, STOP, "--continue-train", "--start-iter", "7"))


def test_changed_batch_size_cannot_continue_exactly(data, straight_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run, run_dir)
    args = run_args(data, run_dir, STOP + 1, "--continue-train")
    args[args.index("--batch-size") + 1] = "1"
    with pytest.raises(CheckpointError, match="--batch-size 1 \\(snapshot: 2\\)"):
        train.main(args)


def test_wrong_initial_weights_are_refused_naming_keys(data, tmp_path):
    from model import FCDiscriminator
    weights = str(tmp_path / "d.pdparams")
    paddle.save(FCDiscriminator(19).state_dict(), weights)
    with pytest.raises(WeightsError, match="d.pdparams does not fit the model(.|\n)*wrong shape: conv1.weight"):
        train.main(run_args(data, tmp_path / "run", 1, "--restore-from", weights))


def test_unwritable_checkpoint_dir_is_refused(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="not writable"):
        train.main(run_args(data, blocker / "run", 1))


def test_too_little_disk_for_two_snapshots_is_refused(data, tmp_path, monkeypatch):
    import collections
    import utils.files.checkpoint
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(utils.files.checkpoint.shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9, 10 ** 6))
    with pytest.raises(CheckpointError, match="1 MB free; 2 snapshots need about"):
        train.main(run_args(data, tmp_path, 1))

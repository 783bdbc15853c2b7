"""Stopping a run on request: a real training process, real signals (SIGINT to its process group as
Ctrl-C sends it, SIGTERM and SIGUSR1 to the trainer), at a random iteration. The run finishes its
iteration, writes a complete snapshot, says how to continue and exits with STOPPED_ON_REQUEST;
continuing it is the run that was never stopped, bit for bit. A second signal stops it at once,
keeping the previous snapshot. (The weak-label script and two ranks: test_weak_labels.py,
test_distributed.py.)"""
import functools
import os
import random
import re
import signal
import sys
import time

import numpy as np
import paddle
import pytest
from PIL import Image

import train_gta2cityscapes_multi as train
from model import DeeplabMulti
from tests.helpers import (ROOT, assert_same_snapshot, leftover_processes, logged_losses,
                           script_command, signal_during_run, training_args)
from utils.files.snapshots import SnapshotDir
from utils.stopping import Interrupted, STOPPED_ON_REQUEST, StopRequests, StoppedAtOnce, run_interruptible

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
STOP = 7
SYNTHETIC_DATA = dict(num_source=6, num_target_train=5, num_target_val=2)
# Batch 2, mirroring, two loader workers (they get Ctrl-C too) and a snapshot every 3 iterations.
run_args = functools.partial(training_args, batch_size=2, mirror=True, workers=2, save_every=3, continue_train=True)
SCRIPT = os.path.join(ROOT, "train_gta2cityscapes_multi.py")


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    snapshot_dir = tmp_path_factory.mktemp("straight")
    assert train.main(run_args(data, snapshot_dir, STOP)) == 0
    return str(snapshot_dir)


def loss_records(snapshot_dir):
    """The logged losses and learning rates, step by step (a validation's record has none)."""
    return [(step, scalars) for step, scalars in logged_losses(snapshot_dir) if scalars]


def assert_continues_exactly(data, straight_run, run_dir, *extra):
    assert train.main(run_args(data, run_dir, STOP, *extra)) == 0
    assert_same_snapshot(straight_run, run_dir, STOP)
    assert loss_records(run_dir) == loss_records(straight_run)
    with open(os.path.join(run_dir, "train.log")) as f:
        steps = [int(line.split()[1]) for line in f if line.startswith("iter ") and line.split()[2] != "val"]
    assert steps == list(range(1, STOP + 1))  # each step once: none repeated, none missing


@pytest.mark.parametrize("signum, extra", [
    (signal.SIGINT, ()),
    (signal.SIGTERM, ("--val", "--val-backend", "dygraph", "--fast-stop")),
    (signal.SIGUSR1, ("--val", "--val-backend", "dygraph", "--keep-last", "1")),
], ids=["SIGINT-to-the-group", "SIGTERM-val-fast-stop", "SIGUSR1-val-keep-last"])
def test_a_signal_stops_the_run_with_a_snapshot_and_continuing_is_the_straight_run(data, straight_run, tmp_path,
                                                                                  signum, extra):
    after = random.Random(int(signum)).randint(1, 3)  # an iteration of its own for each signal, reproducible
    run_dir = str(tmp_path / "run")
    code, out, err = signal_during_run(script_command(SCRIPT, *run_args(data, run_dir, STOP, *extra)), run_dir,
                                       after, signum, to_group=signum == signal.SIGINT)
    assert code == STOPPED_ON_REQUEST, (after, out[-2000:], err[-3000:])
    assert "Traceback" not in err
    stopped = re.search(r"stopped on {} at iteration (\d+): snapshot GTA5_(\d+) is complete\. Continue with: "
                        r"python (.*)\n".format(signal.Signals(signum).name), out)
    assert stopped and "--continue-train" in stopped.group(3).split(), out[-2000:]
    iteration = int(stopped.group(1))
    assert after <= iteration < STOP and int(stopped.group(2)) == iteration  # a signal during snapshot 3 stops at 3
    assert SnapshotDir(run_dir).latest() == iteration
    if "--keep-last" in extra:
        assert SnapshotDir(run_dir).complete() == [iteration]
    if "--val" in extra:  # validated like a periodic snapshot, unless --fast-stop
        with open(os.path.join(run_dir, "train.log")) as f:
            validated = re.search(r"^iter {} val mIoU ".format(iteration), f.read(), re.M)
        assert bool(validated) == ("--fast-stop" not in extra or iteration % 3 == 0)
    assert not leftover_processes(run_dir)
    assert_continues_exactly(data, straight_run, run_dir, *extra)


# The training script with slow snapshot files once {trigger} exists (the first signal makes
# "signalled"), each announced by a file "writing".
SLOW_SNAPSHOTS = """
import os, time, utils.files.checkpoint as checkpoint, utils.stopping as stopping
run_dir = {run_dir!r}
note = stopping.StopRequests._handle
def handle(self, signum, frame):
    open(os.path.join(run_dir, "..", "signalled"), "w").close()
    note(self, signum, frame)
stopping.StopRequests._handle = handle
save = checkpoint.atomic_save
def slow_save(obj, path):
    if os.path.exists(os.path.join(run_dir, "..", {trigger!r})):
        open(os.path.join(run_dir, "..", "writing"), "w").close()
        time.sleep(3)
    save(obj, path)
checkpoint.atomic_save = slow_save
import sys
sys.argv = [{script!r}] + {argv!r}
exec(compile(open({script!r}).read(), {script!r}, "exec"), {{"__name__": "__main__"}})
"""


def test_a_second_signal_stops_at_once_keeping_the_previous_snapshot(data, straight_run, tmp_path):
    run_dir = str(tmp_path / "run")
    argv = run_args(data, run_dir, STOP)
    code = SLOW_SNAPSHOTS.format(run_dir=run_dir, script=SCRIPT, argv=argv, trigger="signalled")

    def second_signal(process):
        while not os.path.exists(str(tmp_path / "writing")):
            assert process.poll() is None
            time.sleep(0.05)
        time.sleep(StopRequests.repeat_window + 0.2)  # sooner, it would count as a repeat of the first
        os.kill(process.pid, signal.SIGTERM)

    status, out, err = signal_during_run([sys.executable, "-c", code], run_dir, 4, signal.SIGTERM, then=second_signal)
    assert status == 128 + signal.SIGTERM, err[-3000:]
    line = [line for line in err.splitlines() if line.strip()][-1]
    kept = re.match(r"stopped at once on a second SIGTERM: the newest complete snapshot is GTA5_(\d+)\. "
                    r"Continue with: python ", line)
    assert kept, line
    snapshots = SnapshotDir(run_dir)
    assert snapshots.latest() == int(kept.group(1)) == 3
    names = os.listdir(run_dir)
    assert not [name for name in names if name.startswith(("GTA5_4", "GTA5_5", "."))], names  # nothing half-written
    assert not leftover_processes(run_dir)
    assert_continues_exactly(data, straight_run, run_dir)


def test_a_signal_during_a_periodic_snapshot_makes_it_the_stops_snapshot(data, tmp_path):
    """Its validation can take many minutes: the run stops there rather than train on and write another."""
    run_dir = str(tmp_path / "run")
    (tmp_path / "always").write_text("")
    code = SLOW_SNAPSHOTS.format(run_dir=run_dir, script=SCRIPT, argv=run_args(data, run_dir, STOP), trigger="always")
    status, out, err = signal_during_run([sys.executable, "-c", code], run_dir, 0, signal.SIGTERM,
                                         wait_for=str(tmp_path / "writing"))
    assert status == STOPPED_ON_REQUEST, err[-3000:]
    assert "stopped on SIGTERM at iteration 3: snapshot GTA5_3 is complete" in out
    assert SnapshotDir(run_dir).complete() == [3]


def test_stop_requests_note_the_first_signal_and_raise_on_the_second(capfd, monkeypatch):
    monkeypatch.setattr(StopRequests, "repeat_window", 0.5)
    with StopRequests() as requests:
        with pytest.raises(Interrupted):  # before the loop: nothing trained to keep, stop at once
            os.kill(os.getpid(), signal.SIGINT)
        requests.armed = True
        os.kill(os.getpid(), signal.SIGUSR1)
        assert requests.requested and requests.signum == signal.SIGUSR1
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher's repeat of the first: ignored
        time.sleep(0.6)
        with pytest.raises(StoppedAtOnce):
            os.kill(os.getpid(), signal.SIGTERM)
        requests.armed = False
        os.kill(os.getpid(), signal.SIGTERM)  # after the loop: the last snapshot is written, nothing to do
    assert "SIGUSR1 received" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, 0)  # put back as it was


def test_other_scripts_end_an_interrupt_with_one_line(capsys):
    def main():
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    assert run_interruptible(main, lambda: "nothing was written") == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "interrupted: nothing was written"


def test_prediction_interrupted_says_what_is_complete_without_a_traceback(tmp_path):
    weights = str(tmp_path / "model.pdparams")
    paddle.seed(0)
    paddle.save(DeeplabMulti(num_classes=19).state_dict(), weights)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.fromarray(np.full((64, 128, 3), 6 * i, np.uint8)).save(str(images / "{:02d}.png".format(i)))
    save = str(tmp_path / "out")
    command = script_command(os.path.join(ROOT, "predict.py"), "--restore-from", weights, "--images", str(images),
                             "--save", save, "--device", "cpu", "--no-progress", "--backend", "dygraph", "--input-size",
                             "256,128")
    marker = os.path.join(save, "00.png")  # signalled on the first output, with 39 images to go
    code, out, err = signal_during_run(command, None, 0, signal.SIGINT, to_group=True,
                                       then=None, wait_for=marker)
    assert code == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("interrupted: the outputs written so far are complete; the same command "
                                            "skips them and goes on with the rest")

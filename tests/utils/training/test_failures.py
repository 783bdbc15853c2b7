"""Faults of a long run, each ending in one clear line with the last snapshot intact and resumable:
a truncated image (every loader mode, training and evaluation), a hung read, a full disk during a
snapshot, a second process on the same directory, a stale lock, and orphaned loader workers (of a
killed trainer, or stuck before they start)."""
import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import train_gta2cityscapes_multi as train
import utils.files.checkpoint
from dataset.check import main as check_main
from tests.helpers import ROOT, script_command, training_args
from utils.files.checkpoint import SnapshotWriteError
from utils.files.lock import LOCK_NAME, DirectoryLock, DirectoryLocked
from utils.files.snapshots import SnapshotDir

TIMEOUT = 240  # seconds: a hang fails the test instead of the suite
SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=2)
run_args = functools.partial(training_args, batch_size=2, continue_train=True)


def run_script(arguments, timeout=TIMEOUT, prelude=None):
    """The training script in its own process; (exit code, stdout, stderr)."""
    if prelude is None:
        command = script_command("train_gta2cityscapes_multi.py", *arguments)
    else:  # patch something first, then run the script's main as python would
        code = prelude + "\nimport sys, train_gta2cityscapes_multi as t\n" \
            "sys.argv = ['train_gta2cityscapes_multi.py'] + {!r}\n" \
            "exec(compile(open(t.__file__).read(), t.__file__, 'exec'), {{'__name__': '__main__'}})".format(arguments)
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def truncated_copy(data, tmp_path):
    """The data with one GTA5 image cut to half its bytes, as an interrupted extraction leaves it."""
    copy = str(tmp_path / "data")
    shutil.copytree(os.path.dirname(data[0]), copy)
    victim = os.path.join(copy, "GTA5", "images", "00003.png")
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    return (os.path.join(copy, "GTA5"), os.path.join(copy, "Cityscapes")), victim


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_image_ends_training_with_one_line_naming_it(data, tmp_path, workers):
    broken, victim = truncated_copy(data, tmp_path)
    started = time.time()
    code, _, stderr = run_script(run_args(broken, tmp_path / "run", 6, workers=workers))
    assert code != 0
    line = last_line(stderr)
    assert line.startswith("error: the source dataset") and victim in line and "python -m dataset.check" in line
    assert time.time() - started < TIMEOUT


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_val_image_ends_evaluation_with_one_line(data, tmp_path, workers):
    copy = str(tmp_path / "Cityscapes")
    shutil.copytree(data[1], copy)
    victim = sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(copy, "leftImg8bit", "val"))
                    for name in names)[0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    weights = str(tmp_path / "model.pdparams")
    import paddle
    from model import DeeplabMulti
    paddle.save(DeeplabMulti().state_dict(), weights)
    result = subprocess.run(script_command("evaluate_cityscapes.py", "--restore-from", weights, "--data-dir", copy,
                                           "--input-size", "48,32", "--num-workers", workers, "--backend", "dygraph",
                                           "--device", "cpu", "--save", tmp_path / "out"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    line = last_line(result.stderr.decode())
    assert result.returncode != 0 and line.startswith("error: the evaluation set") and victim in line


def test_a_hung_read_stops_the_run_naming_the_loader_and_its_files(data, tmp_path):
    hang = ("import time, dataset.gta5_dataset as g\n"
            "_read = g.GTA5DataSet.__getitem__\n"
            "def _hang(self, index):\n"
            "    if self.img_ids[index[0]] == '00002.png':\n"
            "        time.sleep(3600)\n"
            "    return _read(self, index)\n"
            "g.GTA5DataSet.__getitem__ = _hang")
    started = time.time()
    code, _, stderr = run_script(run_args(data, tmp_path / "run", 20, "--data-timeout", "5"), prelude=hang)
    line = last_line(stderr)
    assert code == 3 and time.time() - started < 120
    assert line.startswith("error: no data for 5 s from the source dataset") and "00002.png" in line
    assert not os.path.exists(str(tmp_path / "run" / LOCK_NAME))  # released on the way out


def test_a_full_disk_during_a_snapshot_ends_with_what_remains_and_how_to_continue(data, tmp_path, monkeypatch):
    real_save = utils.files.checkpoint.atomic_save

    def disk_fills_at_snapshot_4(obj, path):
        if os.path.basename(path) == "GTA5_4_D1.pdparams":
            # what writing into a full disk does: the temporary file is removed, the error raised
            real_save(obj, path + ".would_be")
            os.remove(path + ".would_be")
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_save(obj, path)

    monkeypatch.setattr(utils.files.checkpoint, "atomic_save", disk_fills_at_snapshot_4)
    monkeypatch.setattr(sys, "argv", ["train_gta2cityscapes_multi.py"] + run_args(data, tmp_path, 6))
    with pytest.raises(SnapshotWriteError) as error:
        train.main(run_args(data, tmp_path, 6))
    message = str(error.value)
    assert "writing snapshot GTA5_4" in message and "the disk is full" in message
    assert "the newest complete snapshot is GTA5_2" in message
    assert "then continue with: python " in message and message.endswith("--continue-train")
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(("GTA5_4", ".GTA5_4"))]
    assert not os.path.exists(str(tmp_path / LOCK_NAME))

    monkeypatch.undo()
    train.main(run_args(data, tmp_path, 6))  # space freed: the same command goes on
    assert SnapshotDir(str(tmp_path)).complete() == [2, 4, 6]


def test_a_full_disk_reaches_the_user_as_one_line(data, tmp_path):
    full = ("import errno, utils.files.checkpoint as c\n"
            "def _full(obj, path):\n"
            "    raise OSError(errno.ENOSPC, 'No space left on device', path)\n"
            "c.atomic_save = _full")
    code, _, stderr = run_script(run_args(data, tmp_path / "run", 2), prelude=full)
    assert code == 1
    line = last_line(stderr)
    assert line.startswith("error: writing snapshot GTA5_2") and "the disk is full" in line
    assert "no complete snapshot remains" in line and line.endswith("--continue-train")


def test_a_second_process_on_a_locked_directory_is_refused_naming_the_holder(data, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from utils.files.lock import DirectoryLock; "
                               "lock = DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(DirectoryLocked, match="in use by another training run: pid {} on host {}".format(
                holder.pid, socket.gethostname())):
            train.main(run_args(data, tmp_path, 2))
        assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("GTA5_")]
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the next run takes the lock over, with a warning.
    with pytest.warns(UserWarning, match="taking over the lock of pid {}".format(holder.pid)):
        train.main(run_args(data, tmp_path, 2))
    assert SnapshotDir(str(tmp_path)).latest() == 2


def test_a_lock_held_from_another_host_says_how_to_override(data, tmp_path):
    with open(str(tmp_path / LOCK_NAME), "w") as f:
        json.dump({"host": "other-machine", "pid": 4242, "started": "2026-11-29 08:00:00"}, f)
    with pytest.raises(DirectoryLocked, match="locked by pid 4242 on host other-machine .*delete .*{}".format(
            LOCK_NAME)):
        train.main(run_args(data, tmp_path, 2))


def test_evaluation_does_not_take_the_lock(tmp_path):
    with DirectoryLock(str(tmp_path)):
        assert os.path.exists(str(tmp_path / LOCK_NAME))
        with pytest.raises(DirectoryLocked):
            DirectoryLock(str(tmp_path)).acquire()
    assert not os.path.exists(str(tmp_path / LOCK_NAME))


def test_loader_workers_end_with_a_killed_trainer(data, tmp_path):
    process = subprocess.Popen(script_command("train_gta2cityscapes_multi.py",
                                              *run_args(data, tmp_path, 20, "--save-pred-every", "100", workers=2)),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + TIMEOUT
        while not os.path.exists(str(tmp_path / "metrics.jsonl")) or not os.path.getsize(str(tmp_path / "metrics.jsonl")):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.2)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert len(workers) >= 4  # two loaders of two workers each
        process.send_signal(signal.SIGKILL)
        process.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "workers outlived their trainer: {}".format([p.pid for p in alive])
    finally:
        process.kill()
        process.wait()


# A trainer whose loader worker hangs before its initialisation (in multiprocessing's after-fork
# callbacks, where a destructor once waited forever); the watchdog ends the trainer after 3 s.
STUCK_WORKER = """
import multiprocessing.util, time
import numpy as np, paddle
from dataset.loader import Batches, Watchdog

class Samples(paddle.io.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return np.zeros(1, np.float32),

class Stuck(object):
    pass

stuck = Stuck()
multiprocessing.util.register_after_fork(stuck, lambda _: time.sleep(600))
batches = Batches(Samples(), paddle.io.BatchSampler(range(1), batch_size=1), num_workers=1, watchdog=Watchdog(3))
next(iter(batches))
"""


def forks_of(process):
    """The children of ``process`` that are forks of it (its own command line), not programs it runs."""
    forks = []
    for child in process.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.cmdline() == process.cmdline():
                forks.append(child)
    return forks


def test_a_loader_worker_stuck_before_it_starts_ends_with_its_trainer(tmp_path):
    """Such a worker outlived its trainer, holding the trainer's output open: whatever waited for
    that output (pytest's runner, a notebook cell) waited forever."""
    workers = []
    with open(str(tmp_path / "stderr"), "w+") as stderr:
        process = subprocess.Popen([sys.executable, "-c", STUCK_WORKER], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=stderr)
        try:
            deadline = time.time() + TIMEOUT
            while not workers:
                assert process.poll() is None and time.time() < deadline
                time.sleep(0.05)
                workers = forks_of(psutil.Process(process.pid))
            assert process.wait(timeout=TIMEOUT) == 3  # the watchdog's
            gone, alive = psutil.wait_procs(workers, timeout=10)
            assert not alive, "a worker outlived its trainer"
        finally:
            process.kill()
            process.wait()
            for worker in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    worker.kill()
        stderr.seek(0)
        assert "error: no data for 3 s" in stderr.read()


def test_dataset_check_reports_each_kind_of_bad_file(data, tmp_path, capsys):
    from PIL import Image
    broken, victim = truncated_copy(data, tmp_path)
    label = os.path.join(broken[0], "labels", "00001.png")
    ids = np.array(Image.open(label))
    ids[0, 0] = 200  # no Cityscapes label id
    Image.fromarray(ids).save(label)
    with pytest.raises(SystemExit) as exit_info:
        check_main([os.path.dirname(broken[0]), "--num-workers", "2"])
    message = str(exit_info.value)
    assert victim in message and "cannot be decoded" in message
    assert "{}: label ids 200 are outside the dataset's table (0..33)".format(label) in message

    assert check_main([data[0], data[1]]) == 0
    printed = capsys.readouterr().out
    assert "GTA5DataSet: 4 samples" in printed and "all files decode" in printed


def test_check_data_refuses_to_start_on_a_damaged_file(data, tmp_path):
    broken, victim = truncated_copy(data, tmp_path)
    with pytest.raises(ValueError, match="1 problem\\(s\\) in the data: {}: cannot be decoded".format(victim)):
        train.main(run_args(broken, tmp_path / "run", 2, "--check-data", workers=2))
    assert not [n for n in os.listdir(str(tmp_path / "run")) if n.startswith("GTA5_")]

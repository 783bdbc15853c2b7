"""Data-parallel training with paddle.distributed.launch: two gloo processes on this CPU."""
import collections
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import paddle
import psutil
import pytest
from PIL import Image

import train_gta2cityscapes_multi as train
from dataset import GTA5DataSet
from dataset.classes import CITYSCAPES
from dataset.sampler import SOURCE_STREAM, ResumableBatchSampler
from tests.helpers import ROOT, assert_same_snapshot, logged_losses, signal_during_run, training_args
from utils.files.snapshots import SnapshotDir
from utils.stopping import STOP_SIGNALS, STOPPED_ON_REQUEST
from utils.methods.advent import Advent
from utils.training.distributed import Parallel
from utils.training.options import parse_settings
from utils.training.session import TrainingSession, run_training

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
STEPS = 2
# Two ranks sum the same per-image gradients in another order than one process does.
RELATIVE_TOLERANCE = 1e-4
SYNTHETIC_DATA = dict(num_source=4, num_target_train=4, num_target_val=1)
# Batch 2: one image per rank under the launcher, against both images in one process.
run_args = functools.partial(training_args, batch_size=2, mirror=True, workers=1)


@pytest.fixture(scope="module")
def data(data):
    """The shared synthetic data (conftest.py) with every ignored label pixel made road: then a
    batch's mean loss is the mean of its images' mean losses, and 2 x 1 image is the same
    objective as 1 x 2 images."""
    gta5, cityscapes = data
    valid = np.zeros(256, bool)
    valid[list(CITYSCAPES.label_values)] = True
    for name in os.listdir(os.path.join(gta5, "labels")):
        path = os.path.join(gta5, "labels", name)
        label = Image.open(path)
        ids = np.array(label)
        ids[~valid[ids]] = 7  # road
        relabelled = Image.fromarray(ids, mode="P")
        relabelled.putpalette(label.getpalette())
        relabelled.save(path)
    return gta5, cityscapes


def launch(args, log_dir, timeout=300, script=("train_gta2cityscapes_multi.py",)):
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
               str(log_dir)] + list(script) + args
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return result.returncode, result.stdout.decode(errors="replace"), time.time() - started


def worker_logs(log_dir):
    texts = []
    for name in sorted(os.listdir(str(log_dir))):
        with open(os.path.join(str(log_dir), name), errors="replace") as f:
            texts.append(f.read())
    return "\n".join(texts)


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("two_ranks")
    code, output, _ = launch(run_args(data, run_dir / "run", STEPS * 2), run_dir / "log")
    assert code == 0, output[-3000:] + worker_logs(run_dir / "log")[-3000:]
    return str(run_dir / "run")


@pytest.mark.slow
def test_two_ranks_of_one_image_equal_one_process_of_two(data, two_ranks, tmp_path):
    train.main(run_args(data, tmp_path, STEPS))
    worst = 0.0
    for suffix in ("", "_D1", "_D2"):
        single = paddle.load(os.path.join(str(tmp_path), "GTA5_{}{}.pdparams".format(STEPS, suffix)), return_numpy=True)
        parallel = paddle.load(os.path.join(two_ranks, "GTA5_{}{}.pdparams".format(STEPS, suffix)),
                               return_numpy=True)
        for key in single:
            scale = max(float(np.abs(single[key]).max()), 1e-12)
            worst = max(worst, float(np.abs(single[key] - parallel[key]).max()) / scale)
    print("largest difference after {} iterations, relative to each tensor's scale: {:.2e}".format(STEPS, worst))
    assert worst < RELATIVE_TOLERANCE
    single_losses = dict(logged_losses(str(tmp_path)))
    for step, values in logged_losses(two_ranks)[:STEPS]:
        for name, value in values.items():
            assert value == pytest.approx(single_losses[step][name], rel=RELATIVE_TOLERANCE), (step, name)


@pytest.mark.slow
def test_a_method_of_its_own_file_runs_on_two_ranks_as_in_one_process(data, tmp_path):
    """ADVENT's AdvEnt (utils/methods/__main__.py advent, as README launches it) at batch 2 with
    frozen BN: two ranks of one image each end where one process of two does, its discriminators
    included."""
    flags = ("--recipe", "paddle-port", "--da-method", "AdvEnt")
    code, output, _ = launch(run_args(data, tmp_path / "ranks", STEPS, *flags), tmp_path / "log",
                             script=("utils/methods/__main__.py", "advent"))
    assert code == 0, output[-3000:] + worker_logs(tmp_path / "log")[-3000:]
    assert run_training(parse_settings(Advent, run_args(data, tmp_path / "single", STEPS, *flags)), Advent) == 0
    for suffix in ("", "_D1", "_D2"):
        name = "GTA5_{}{}.pdparams".format(STEPS, suffix)
        single = paddle.load(str(tmp_path / "single" / name), return_numpy=True)
        ranks = paddle.load(str(tmp_path / "ranks" / name), return_numpy=True)
        for key in single:
            scale = max(float(np.abs(single[key]).max()), 1e-12)
            assert float(np.abs(single[key] - ranks[key]).max()) / scale < RELATIVE_TOLERANCE, (name, key)


@pytest.mark.slow
def test_resumed_distributed_run_equals_uninterrupted_one(data, two_ranks, tmp_path):
    code, output, _ = launch(run_args(data, tmp_path / "run", STEPS), tmp_path / "log1")
    assert code == 0, output[-3000:]
    code, output, _ = launch(run_args(data, tmp_path / "run", STEPS * 2, "--continue-train"), tmp_path / "log2")
    assert code == 0, output[-3000:]
    assert_same_snapshot(two_ranks, str(tmp_path / "run"), STEPS * 2)
    assert logged_losses(str(tmp_path / "run")) == logged_losses(two_ranks)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_at_one_iteration_with_one_snapshot(data, two_ranks, tmp_path):
    run_dir = str(tmp_path / "run")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
               str(tmp_path / "log1"), "train_gta2cityscapes_multi.py"] + run_args(
                   data, run_dir, STEPS * 2)

    def rank_1(launcher):
        for child in psutil.Process(launcher.pid).children():
            if child.environ().get("PADDLE_TRAINER_ID") == "1":
                return child.pid
        raise AssertionError("no rank 1 under the launcher")

    code, _, _ = signal_during_run(command, run_dir, 1, signal.SIGTERM, pid_of=rank_1)
    logs = worker_logs(tmp_path / "log1")
    assert code == STOPPED_ON_REQUEST, logs[-3000:]  # the launcher passes the ranks' status on
    stopped = int(re.search(r"stopped on a stop signal to another rank at iteration (\d+)", logs).group(1))
    assert 1 < stopped < STEPS * 2 and SnapshotDir(run_dir).complete() == [2] + ([stopped] if stopped != 2 else [])
    assert "SIGTERM received" in logs
    code, output, _ = launch(run_args(data, run_dir, STEPS * 2, "--continue-train"), tmp_path / "log2")
    assert code == 0, output[-3000:]
    assert_same_snapshot(two_ranks, run_dir, STEPS * 2)
    assert logged_losses(run_dir) == logged_losses(two_ranks)


@pytest.mark.slow
def test_a_signal_to_the_launcher_stops_the_ranks_with_a_snapshot(data, tmp_path):
    """The launcher passes a signal on as SIGTERM, three times 0.2 s apart: one stop, not a stop at once."""
    run_dir = str(tmp_path / "run")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
               str(tmp_path / "log"), "train_gta2cityscapes_multi.py"] + run_args(
                   data, run_dir, 1000, "--num-steps", "1000", "--save-pred-every", "1000")  # ends by the signal
    code, _, _ = signal_during_run(command, run_dir, 1, signal.SIGTERM)
    logs = worker_logs(tmp_path / "log")
    assert code == signal.SIGTERM, logs[-3000:]  # the launcher's own status: the signal it got
    # Each rank gets the SIGTERM; rank 0 names its own even when rank 1's reached the iteration's
    # exchange of stop requests first (the launcher signals one after the other).
    found = re.search(r"stopped on SIGTERM at iteration (\d+): snapshot GTA5_\1 is complete", logs)
    assert found, logs[-6000:]
    stopped = int(found.group(1))
    assert "stopped at once" not in logs
    assert SnapshotDir(run_dir).complete() == [stopped]


@pytest.mark.parametrize("own_signal", [False, True])
def test_a_rank_stopped_by_another_names_its_own_signal_when_one_came_meanwhile(data, tmp_path, monkeypatch, capfd,
                                                                                 own_signal):
    """A launcher signals its ranks one after the other: rank 1's request can reach an iteration's
    exchange of stop requests before rank 0's own signal, which then comes while rank 0 writes the
    stop's snapshot. Rank 0's line names its own signal then, the other rank's otherwise."""
    exchanges = []

    def another_rank_asks_at_the_second_iteration(self, wanted):
        exchanges.append(wanted)
        return len(exchanges) == 2, False

    monkeypatch.setattr(Parallel, "agree_to_stop", another_rank_asks_at_the_second_iteration)
    if own_signal:
        write = TrainingSession._write_snapshot

        def signalled_while_writing(self, done, stopping):
            os.kill(os.getpid(), signal.SIGTERM)
            return write(self, done, stopping)

        monkeypatch.setattr(TrainingSession, "_write_snapshot", signalled_while_writing)
    assert train.main(run_args(data, tmp_path, 10, "--save-pred-every", "100")) == STOPPED_ON_REQUEST
    captured = capfd.readouterr()
    reason = "SIGTERM" if own_signal else "a stop signal to another rank"
    assert "stopped on {} at iteration 2: snapshot GTA5_2 is complete".format(reason) in captured.out + captured.err
    assert SnapshotDir(str(tmp_path)).complete() == [2]


@pytest.mark.slow
def test_with_batch_statistics_each_rank_normalises_its_own_images_and_the_ranks_share_running_statistics(
        data, tmp_path):
    """--bn train: after one iteration the stem's running mean (moved by the source and the target
    forward, whose stem sees the same pixels either way) is the batch's, as in one process, because
    the ranks' statistics are averaged; deeper layers and the weights are not, because each rank
    normalised its own image."""
    flags = ("--recipe", "authors", "--save-pred-every", "1")
    code, output, _ = launch(run_args(data, tmp_path / "ranks", 1, *flags), tmp_path / "log")
    assert code == 0, output[-3000:] + worker_logs(tmp_path / "log")[-3000:]
    assert train.main(run_args(data, tmp_path / "single", 1, *flags)) == 0
    ranks = paddle.load(str(tmp_path / "ranks" / "GTA5_1.pdparams"), return_numpy=True)
    single = paddle.load(str(tmp_path / "single" / "GTA5_1.pdparams"), return_numpy=True)
    np.testing.assert_allclose(ranks["bn1._mean"], single["bn1._mean"], rtol=1e-5, atol=1e-7)
    assert not np.allclose(ranks["layer4.0.bn3._mean"], single["layer4.0.bn3._mean"], rtol=1e-6)
    assert not np.allclose(ranks["layer6.conv2d_list.0.weight"], single["layer6.conv2d_list.0.weight"], rtol=1e-6)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_promptly_with_its_message(data, tmp_path):
    gta5 = data[0]
    # The image rank 1 reads first, made unreadable: only that rank fails.
    sampler = ResumableBatchSampler(4, 2, seed=1234, stream=SOURCE_STREAM, mirror=True, rank=1, num_replicas=2)
    index = sampler.batch(0)[0][0]
    entry = GTA5DataSet(gta5).img_ids[index]
    broken_root = str(tmp_path / "GTA5")
    os.makedirs(os.path.join(broken_root, "images"))
    os.symlink(os.path.join(gta5, "labels"), os.path.join(broken_root, "labels"))
    for name in os.listdir(os.path.join(gta5, "images")):
        target = os.path.join(broken_root, "images", name)
        if name == entry:
            with open(target, "wb") as f:
                f.write(b"not a png")
        else:
            os.symlink(os.path.join(gta5, "images", name), target)
    args = run_args((broken_root, data[1]), tmp_path / "run", STEPS)
    code, output, seconds = launch(args, tmp_path / "log", timeout=240)
    assert code != 0
    assert seconds < 180
    assert "cannot read image" in worker_logs(tmp_path / "log") and entry in worker_logs(tmp_path / "log")


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_ranks_is_refused(data, tmp_path):
    args = run_args(data, tmp_path / "run", STEPS)
    args[args.index("--batch-size") + 1] = "3"
    code, output, _ = launch(args, tmp_path / "log", timeout=240)
    assert code != 0
    assert "--batch-size 3 does not split evenly over 2 processes" in worker_logs(tmp_path / "log")


# Gloo, the CPU backend, gives up on a collective after 30 seconds (Paddle 2.6 and 3.x; not
# configurable); NCCL after PADDLE_PG_TIMEOUT, 30 minutes by default.
GLOO_TIMEOUT_SECONDS = 30
RANK_0_ALONE = r"""
import json, sys, time
from utils.training.distributed import Parallel  # first: utils.runtime comes before paddle
import paddle

parallel = Parallel()
paddle.seed(100 + parallel.rank)  # each rank initialises its own network
net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4), paddle.nn.Conv2D(4, 2, 1))
net[1]._mean.set_value(paddle.full([4], float(parallel.rank)))
before = {k: v.numpy().tolist() for k, v in net.state_dict().items()}
parallel.broadcast_networks([net])
after = {k: v.numpy().tolist() for k, v in net.state_dict().items()}
started = time.time()
parallel.run_on_main(lambda: time.sleep(float(sys.argv[2])), poll_seconds=0.2)
waited = time.time() - started
mean = parallel.average_values({"rank": float(parallel.rank)})["rank"]
with open("{}/rank{}.json".format(sys.argv[1], parallel.rank), "w") as f:
    json.dump(dict(before=before, after=after, waited=waited, mean=mean), f)
"""


@pytest.mark.slow
def test_the_ranks_start_from_rank_0s_networks_and_wait_for_rank_0_longer_than_a_collective_may(tmp_path):
    """broadcast_networks gives every rank rank 0's weights and BN statistics; while rank 0 works
    alone (validating, writing a snapshot) for longer than gloo's timeout, rank 1 waits in
    run_on_main and the next collective still succeeds."""
    import json
    script = tmp_path / "rank_0_alone.py"
    script.write_text(RANK_0_ALONE)
    alone = GLOO_TIMEOUT_SECONDS + 5
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
               str(tmp_path / "log"), str(script), str(tmp_path), str(alone)]
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
    assert result.returncode == 0, result.stdout.decode(errors="replace")[-3000:] + worker_logs(tmp_path / "log")[-3000:]
    ranks = [json.loads((tmp_path / "rank{}.json".format(rank)).read_text()) for rank in (0, 1)]
    assert ranks[0]["before"] != ranks[1]["before"]
    assert ranks[0]["after"] == ranks[1]["after"] == ranks[0]["before"]
    assert ranks[1]["waited"] >= alone
    assert ranks[0]["mean"] == ranks[1]["mean"] == 0.5


def test_one_process_runs_rank_0s_work_itself_and_keeps_its_networks():
    parallel = Parallel()
    net = paddle.nn.Linear(2, 2)
    weight = net.weight.numpy().copy()
    parallel.broadcast_networks([net])
    assert parallel.run_on_main(lambda: 7) == 7
    np.testing.assert_array_equal(net.weight.numpy(), weight)


class Store(object):
    """A job's TCP store that notes, for each request, whether the stop signals could have
    interrupted it: Paddle's store gives up on a read that a signal cut short."""

    def __init__(self, counts=()):
        self.counts = collections.Counter(dict(counts))
        self.interruptible = []

    def add(self, key, amount):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.interruptible.append(threading.current_thread() is threading.main_thread()
                                  or not set(STOP_SIGNALS) <= blocked)
        self.counts[key] += amount
        return self.counts[key]


@pytest.mark.parametrize("rank", [0, 1])
def test_no_stop_signal_can_interrupt_a_request_to_the_store(rank, monkeypatch):
    """Ctrl-C or SIGTERM reaches every rank while rank 0 writes (or validates) a snapshot and the
    others poll the store: an interrupted request left its reply for the next one to read (rank 1
    then took the counter for rank 0's failure). Requests are made where those signals are blocked;
    rank 0 counts once per snapshot; a failed request fails the wait."""
    from paddle.base import core
    key = "adaptseg/main_work_done"
    store = Store({key: 2} if rank else {})
    monkeypatch.setattr(core, "create_or_get_global_tcp_store", lambda: store)
    monkeypatch.setattr(paddle.distributed, "barrier", lambda: None)
    parallel = Parallel()
    parallel.world_size, parallel.rank = 2, rank
    results = [parallel.run_on_main(lambda: "written", poll_seconds=0.01) for _ in range(2)]
    assert results == (["written", "written"] if rank == 0 else [None, None])
    assert store.counts[key] == 2  # rank 0: one increment per snapshot
    assert store.interruptible and not any(store.interruptible)
    store.add = lambda key, amount: (_ for _ in ()).throw(RuntimeError("connection refused"))
    with pytest.raises(RuntimeError, match="connection refused"):
        parallel.run_on_main(lambda: "written", poll_seconds=0.01)

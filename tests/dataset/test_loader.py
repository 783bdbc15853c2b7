"""The shared-memory check the training runs before iteration 1: the loaders' batches in flight
against the free /dev/shm, with shutil.disk_usage replaced to play a small or a large one; what
the loader's worker processes inherit."""
import gc
import inspect
import os
from collections import namedtuple

import numpy as np
import paddle
import pytest

from dataset import loader
from dataset.loader import (PREFETCH_FACTOR, Batches, DataError, SharedMemoryError, batch_bytes, check_shared_memory,
                            shared_memory_needed)

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

Usage = namedtuple("Usage", "total used free")
MB = 2 ** 20


def shm_with_free(monkeypatch, free):
    monkeypatch.setattr(loader.shutil, "disk_usage", lambda path: Usage(free, 0, free))


def test_prefetch_factor_is_paddles_default():
    default = inspect.signature(paddle.io.DataLoader.__init__).parameters["prefetch_factor"].default
    assert PREFETCH_FACTOR == default


def test_a_gta5_batch_carries_uint8_labels():
    images = 2 * 3 * 720 * 1280 * 4
    assert batch_bytes(2, (1280, 720)) == images + 2 * 720 * 1280  # 23.0 MB, was 35.2 MB with int64 labels
    assert batch_bytes(2, (1280, 720), ignore_label=-1) == images + 2 * 720 * 1280 * 8
    assert batch_bytes(2, (1024, 512), labels=False) == 2 * 3 * 512 * 1024 * 4


def test_needed_is_the_batches_in_flight_and_in_use_of_every_loader():
    assert shared_memory_needed(4, [10, 3], held=1) == (2 * 4 + 1) * 13
    assert shared_memory_needed(4, [10, 3], held=2) == (2 * 4 + 2) * 13
    assert shared_memory_needed(0, [10, 3]) == 0


def test_loaders_that_fit_pass_and_say_what_they_use(monkeypatch, tmp_path):
    shm_with_free(monkeypatch, 8 * 2 ** 30)
    needed, free = check_shared_memory(4, 2, (1280, 720), (1024, 512), path=str(tmp_path))
    assert needed == 9 * (batch_bytes(2, (1280, 720)) + batch_bytes(2, (1024, 512), labels=False))
    assert free == 8 * 2 ** 30


def test_a_small_shm_fails_naming_the_numbers_and_the_fix(monkeypatch, tmp_path):
    shm_with_free(monkeypatch, 200 * MB)  # 4 workers need about 314 MB; 2 need about 174 MB
    with pytest.raises(SharedMemoryError) as failure:
        check_shared_memory(4, 2, (1280, 720), (1024, 512), path=str(tmp_path))
    message = str(failure.value)
    assert "314 MB" in message and "200 MB free" in message and str(tmp_path) in message
    assert "--num-workers 2 or fewer" in message and "--shm-size" in message and "bus error" in message
    assert isinstance(failure.value, DataError)  # the training scripts end with this one line
    needed, _ = check_shared_memory(2, 2, (1280, 720), (1024, 512), path=str(tmp_path))
    assert needed <= 200 * MB


def test_docker_default_shm_leaves_only_reading_in_the_process(monkeypatch, tmp_path):
    shm_with_free(monkeypatch, 64 * MB)
    with pytest.raises(SharedMemoryError, match=r"--num-workers 0 \(batches read in the training process"):
        check_shared_memory(1, 2, (1280, 720), (1024, 512), path=str(tmp_path))
    assert check_shared_memory(0, 2, (1280, 720), (1024, 512), path=str(tmp_path)) is None


def test_processes_of_one_machine_share_its_shm(monkeypatch, tmp_path):
    shm_with_free(monkeypatch, 8 * 2 ** 30)
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "4")
    needed, _ = check_shared_memory(2, 1, (1280, 720), path=str(tmp_path))
    assert needed == 4 * 5 * batch_bytes(1, (1280, 720))


def test_no_shm_folder_is_not_checked(tmp_path):
    assert check_shared_memory(4, 2, (1280, 720), path=str(tmp_path / "absent")) is None


class _Finalized(object):
    """Records in ``path`` which process ran its finalizer."""

    def __init__(self, path):
        self.path = path
        self.cycle = self  # unreachable only to the garbage collector, not by reference count

    def __del__(self):
        with open(self.path, "a") as f:
            f.write("{}\n".format(os.getpid()))


class _CollectingDataset(paddle.io.Dataset):
    """Each sample runs a full collection in the worker that reads it."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        gc.collect()
        return np.full(2, os.getpid(), np.int64),


def test_a_worker_leaves_the_garbage_it_inherits_to_the_trainer(tmp_path):
    """A fork copies the trainer's unreachable objects; a worker that finalized one ran its
    destructor without the trainer's threads (a Paddle one waited forever in
    pthread_cond_destroy). Only the trainer finalizes them."""
    path = str(tmp_path / "finalized")
    enabled = gc.isenabled()
    gc.disable()  # the garbage must still exist when the workers start
    try:
        _Finalized(path)
        batches = Batches(_CollectingDataset(), paddle.io.BatchSampler(range(2), batch_size=1), num_workers=1)
        workers = {int(batch[0].numpy()[0, 0]) for batch in batches}
        batches.close()
        assert workers and os.getpid() not in workers  # read in a worker, which collected
        assert not os.path.exists(path), "a worker finalized the trainer's object"
        gc.collect()
    finally:
        if enabled:
            gc.enable()
    with open(path) as f:
        assert f.read().split() == [str(os.getpid())]

"""Files a run writes: atomic writes, snapshot pruning, optimizer state across processes, start-up settings."""
import os

import numpy as np
import paddle
import pytest

from model import FCDiscriminator
from utils.files.atomic import atomic_write_text
from utils.files.checkpoint import Checkpointer, PaddleOptimizerState
from utils.files.snapshots import SnapshotDir, evaluation_cache


def test_atomic_file_has_the_usual_permissions(tmp_path):
    path = str(tmp_path / "mIoU.json")
    atomic_write_text(path, "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = str(tmp_path / "latest")
    atomic_write_text(path, "5\n")

    def crash(tmp_path_):
        with open(tmp_path_, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    from utils.files.atomic import atomic_write
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert os.listdir(str(tmp_path)) == ["latest"]
    with open(path) as f:
        assert f.read() == "5\n"


def small_run(seed):
    """A discriminator and its Adam, after one step: the optimizer has accumulators."""
    paddle.seed(seed)
    net = FCDiscriminator(3, ndf=2)
    optimizer = paddle.optimizer.Adam(learning_rate=0.01, parameters=net.parameters())
    net(paddle.randn([1, 3, 32, 32])).mean().backward()
    optimizer.step()
    optimizer.clear_grad()
    return net, optimizer


def checkpointer_of(directory, net, optimizer, keep_last=None):
    return Checkpointer(SnapshotDir(directory), {"model": net, "D1": net, "D2": net},
                        {"model": PaddleOptimizerState(optimizer, net)}, keep_last=keep_last)


def test_keep_last_removes_old_snapshots_with_their_evaluation_caches(tmp_path):
    net, optimizer = small_run(0)
    checkpointer = checkpointer_of(str(tmp_path), net, optimizer, keep_last=1)
    for iteration in (1, 2, 3):
        checkpointer.save(iteration)
        with open(evaluation_cache(checkpointer.snapshots.files(iteration)["model"]), "w") as f:
            f.write("{}")
    assert checkpointer.snapshots.complete() == [3]
    assert sorted(n for n in os.listdir(str(tmp_path)) if n.endswith(".eval.json")) == ["GTA5_3.eval.json"]


def test_optimizer_state_reaches_parameters_of_other_auto_generated_names(tmp_path):
    net, optimizer = small_run(0)
    checkpointer_of(str(tmp_path), net, optimizer).save(1)

    other_net, other_optimizer = small_run(1)  # built later: different auto-generated parameter names
    assert [p.name for p in other_net.parameters()] != [p.name for p in net.parameters()]
    checkpointer_of(str(tmp_path), other_net, other_optimizer).resume()

    saved = {k.replace(p.name, n): v.numpy() for n, p in net.named_parameters()
             for k, v in optimizer.state_dict().items() if k.startswith(p.name + "_")}
    restored = {k.replace(p.name, n): v.numpy() for n, p in other_net.named_parameters()
                for k, v in other_optimizer.state_dict().items() if k.startswith(p.name + "_")}
    assert saved.keys() == restored.keys() and saved
    for key in saved:
        np.testing.assert_array_equal(saved[key], restored[key], err_msg=key)


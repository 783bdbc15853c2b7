import os
import time

# PIL before paddle: Paddle 2.6 on Python 3.11 crashes when zlib is first loaded after it.
import PIL.Image  # noqa: F401
import numpy as np
import paddle
import psutil
import pytest

from dataset.synthetic import make_synthetic
from tests.helpers import FIXTURES, ROOT


paddle.set_device("cpu")

# The longest files first (measured: wall time in the suite on 2 cores): `--dist loadfile` gives
# each file to the next free worker in collection order (--no-loadscope-reorder in pytest.ini:
# pytest-xdist's own order is by test count), and a long file started last would keep one worker
# busy long after the others are done.
LONGEST_FIRST = ("tests/utils/training/test_distributed.py", "tests/test_readme.py", "tests/notebooks/test_notebooks.py",
                 "tests/utils/training/test_memory.py", "tests/bench/test_gpu_check.py", "tests/bench/test_bench.py",
                 "tests/test_train_resume.py", "tests/utils/training/test_stopping.py", "tests/test_report.py")


def pytest_collection_modifyitems(items):
    first = {path: rank for rank, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(os.path.relpath(str(item.fspath), ROOT), len(first)))


@pytest.fixture(scope="session")
def parity():
    return dict(np.load(os.path.join(FIXTURES, "parity.npz")))


@pytest.fixture(scope="module", autouse=True)
def self_test_network(request):
    """A module that says SELF_TEST_NETWORK = True builds the self-test network (utils/runtime.py),
    in this process and in every process it starts; any other module, the real one."""
    from utils.runtime import SELF_TEST_VARIABLE
    with pytest.MonkeyPatch.context() as patch:
        if getattr(request.module, "SELF_TEST_NETWORK", False):
            patch.setenv(SELF_TEST_VARIABLE, "1")
        else:  # the real network, whatever the shell that started the tests says
            patch.delenv(SELF_TEST_VARIABLE, raising=False)
        yield


@pytest.fixture(scope="module")
def data(request, tmp_path_factory):
    """(GTA5 dir, Cityscapes dir) of synthetic images, made once per module with the image counts
    of the module's SYNTHETIC_DATA, e.g. dict(num_source=4, num_target_train=4, num_target_val=2)."""
    counts = getattr(request.module, "SYNTHETIC_DATA", None)
    if counts is None:
        pytest.fail("{} uses the data fixture: give it SYNTHETIC_DATA = dict(num_source=..., num_target_train=..., "
                    "num_target_val=...)".format(request.module.__name__), pytrace=False)
    return make_synthetic(str(tmp_path_factory.mktemp("data")), **counts)


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """The suite starts trainers, loader workers and kernels; none may outlive it. A worker of a
    killed trainer is re-parented to init, so look for this project's processes that are this
    session's descendants or orphans (not those of another pytest worker running beside it)."""
    started = time.time()
    yield
    me = psutil.Process()

    def ours(process):
        try:
            return process.create_time() >= started - 1 and ROOT in " ".join(process.cmdline()) and (
                process.ppid() == 1 or me in process.parents())
        except psutil.Error:
            return False

    _, alive = psutil.wait_procs([p for p in psutil.process_iter() if p.pid != me.pid and ours(p)], timeout=15)
    assert not alive, "processes outlived the tests: {}".format(
        ["{} {}".format(p.pid, " ".join(p.cmdline())[:120]) for p in alive])

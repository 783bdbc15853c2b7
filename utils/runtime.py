"""Process set-up for Paddle, without touching how Paddle is imported.

Importing this module (the packages ``model``, ``dataset`` and ``utils`` import it first, and so
do the entry points) does three things, which is why it has to come before ``import paddle``:

- imports Pillow: Paddle 2.6 on Python 3.11 segfaults when zlib (Pillow's PNG codec) is first
  loaded after ``import paddle``;
- sets ``MKL_DEBUG_CPU_TYPE=5`` unless it is set: the MKL bundled with Paddle takes a slow code
  path on AMD CPUs, and this makes it use its AVX2 kernels (measured: GEMM 80 -> 203 GFLOP/s, and
  no 5x slow-down after the first Adam step); Intel CPUs ignore it. MKL reads it when it first
  runs. It is the only environment variable this module sets;
- ignores Paddle's import-time warning that ccache is missing (for C++ extensions, which this
  project never builds).

Threads: when ``OMP_NUM_THREADS`` is unset, ``import paddle`` sets it to 1, which leaves every CPU
operation of the dynamic graph on one core (measured on 2 cores: matmul 96 -> 181 GFLOP/s); when
it is above 1, ``import paddle`` prints a warning. So it is left unset here; after the import,
:func:`use_cpu_cores` gives Paddle's CPU math (MKL, OpenMP) one thread per core this process may
use, through Paddle's own setter. ``select_device`` calls it, hence the training and evaluation
scripts; a notebook may too. A user's own ``OMP_NUM_THREADS``, set before this module is
imported, wins (and brings Paddle's warning about it), as does their ``MKL_DEBUG_CPU_TYPE``; except
``OMP_NUM_THREADS=1`` under ``paddle.distributed.launch``, which every rank inherits from the
launcher's own ``import paddle``: there the cores are shared among the processes the launcher
started on this machine.
"""
import math
import os
import warnings

os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
warnings.filterwarnings("ignore", message="No ccache found")

import PIL.Image  # noqa: E402,F401


def _threads_given(environ):
    """Whether ``OMP_NUM_THREADS`` is the user's (or set by Paddle imported before this module: not
    ours either way). Under paddle.distributed.launch (``PADDLE_LOCAL_SIZE``: Paddle 2.6 and 3.x)
    every rank finds the 1 that the launcher's own ``import paddle`` put in its environment, which
    a user's 1 cannot be told from."""
    if "OMP_NUM_THREADS" not in environ:
        return False
    return not (environ["OMP_NUM_THREADS"].strip() == "1" and "PADDLE_LOCAL_SIZE" in environ)


_THREADS_GIVEN = _threads_given(os.environ)

# With this set to 1 in the environment, model/ builds the self-test network: ResNet with one
# bottleneck per stage and a category-wise discriminator 32 wide, the same layers, parameter names
# and code paths at a fraction of the work. The test suite and `bench.gpu_check --quick` set it,
# for runs whose point is the program rather than the network; being in the environment, it
# reaches every process a run starts (loader workers, launched ranks, notebook kernels). What such
# a network saves loads into no real one; a run's environment line says when it is on.
SELF_TEST_VARIABLE = "ADAPTSEGNET_SELF_TEST_NETWORK"


def self_test_network():
    return os.environ.get(SELF_TEST_VARIABLE) == "1"


def usable_cpus(cgroup_root="/sys/fs/cgroup"):
    """How many cores this process may keep busy: the CPUs it may run on (its affinity; where the
    platform has none, ``os.cpu_count()``), capped by the CPU quota of the cgroup mounted at
    ``cgroup_root`` (v2 ``cpu.max``, v1 ``cpu/cpu.cfs_quota_us`` over ``cpu.cfs_period_us``)
    rounded down, since a thread beyond the quota would be throttled; at least 1.
    ``os.cpu_count()`` alone counts the host's CPUs inside a container."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def _cgroup_cpu_quota(root):
    """CPUs' worth of time per period the cgroup grants (e.g. 1.5), or None without a limit."""
    for paths in ([os.path.join(root, "cpu.max")],  # v2: "<quota or max> <period>"
                  [os.path.join(root, "cpu", "cpu.cfs_quota_us"), os.path.join(root, "cpu", "cpu.cfs_period_us")]):
        try:
            fields = []
            for path in paths:
                with open(path) as f:
                    fields += f.read().split()
        except OSError:
            continue
        try:
            quota, period = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):  # v2 "max": no limit
            return None
        return quota / period if quota > 0 and period > 0 else None  # v1 quota -1: no limit
    return None


def local_processes(environ=None):
    """How many processes paddle.distributed.launch started on this machine (1 outside it):
    ``PADDLE_LOCAL_SIZE`` (Paddle 2.6 and 3.x), else the endpoints of ``PADDLE_TRAINER_ENDPOINTS``
    on this process's host (older launchers and fleetrun)."""
    environ = os.environ if environ is None else environ
    try:
        return max(1, int(environ["PADDLE_LOCAL_SIZE"]))
    except (KeyError, ValueError):
        pass
    host = environ.get("PADDLE_CURRENT_ENDPOINT", "").rpartition(":")[0]
    endpoints = [e.strip() for e in environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",") if e.strip()]
    return max(1, sum(1 for e in endpoints if e.rpartition(":")[0] == host)) if host else 1


def cpu_threads():
    """The thread count of Paddle's CPU math in this process: the ``OMP_NUM_THREADS`` it was given
    (see the module's notes), else ``usable_cpus()`` shared among the :func:`local_processes` (at
    least 1 each). A Paddle Inference predictor changes the whole process's count (to its own when
    created, to 1 after a run with oneDNN), so model.inference creates predictors with this one and
    puts it back after each run: evaluation inside training must not change the steps after it."""
    if _THREADS_GIVEN:
        try:
            return max(1, int(os.environ["OMP_NUM_THREADS"].split(",")[0]))
        except (KeyError, ValueError):
            pass
    return max(1, usable_cpus() // local_processes())


def use_cpu_cores():
    """Let Paddle's CPU math use :func:`cpu_threads` threads, unless ``OMP_NUM_THREADS`` was given
    (see the module's notes); returns the thread count it set, or None. Imports paddle."""
    import paddle
    if _THREADS_GIVEN:
        return None
    threads = cpu_threads()
    paddle.base.core.set_num_threads(threads)
    return threads


def add_device_args(parser):
    parser.add_argument("--device", choices=("auto", "gpu", "cpu"), default="auto",
                        help="auto: a GPU when this Paddle has CUDA and a card is visible, else the CPU")
    parser.add_argument("--gpu", type=int, default=0,
                        help="which GPU to use: its index among the visible cards (CUDA_VISIBLE_DEVICES); "
                             "under paddle.distributed.launch, the card the launcher gives each process (--gpus)")


def _visible_cards():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "" if visible is None else " (CUDA_VISIBLE_DEVICES={!r})".format(visible)


def select_device(args, gpu_id=None):
    """``paddle.set_device`` from the --device/--gpu flags and :func:`use_cpu_cores`; returns
    (use_gpu, gpu_id). ``gpu_id`` overrides --gpu: the card paddle.distributed.launch gave this
    process. --device auto without a visible card runs on the CPU and says why; --device gpu
    without one, or a card beyond the visible ones, ends the program with what to do."""
    import paddle
    has_cuda = paddle.device.is_compiled_with_cuda()
    if args.device == "gpu" and not has_cuda:
        raise SystemExit("--device gpu: this Paddle has no CUDA support; install paddlepaddle-gpu "
                         "(see README) or use --device cpu")
    cards = paddle.device.cuda.device_count() if has_cuda and args.device != "cpu" else 0
    if args.device == "auto" and has_cuda and cards == 0:
        print("--device auto: this Paddle has CUDA but sees no GPU{}: running on the CPU".format(_visible_cards()))
    use_gpu = args.device == "gpu" or (args.device == "auto" and cards > 0)
    from_launcher = gpu_id is not None
    gpu_id = args.gpu if gpu_id is None else gpu_id
    if use_gpu and cards == 0:
        raise SystemExit("--device gpu: this process sees no GPU{}; make a card visible "
                         "(e.g. CUDA_VISIBLE_DEVICES=0) or use --device cpu".format(_visible_cards()))
    if use_gpu and not 0 <= gpu_id < cards:
        given = ("paddle.distributed.launch gave this process card {} (FLAGS_selected_gpus)".format(gpu_id)
                 if from_launcher else "--gpu {}".format(gpu_id))
        raise SystemExit("{}: this process sees {} GPU{}{}, numbered {}; cards are counted among the visible "
                         "ones".format(given, cards, "" if cards == 1 else "s", _visible_cards(),
                                       ", ".join(str(card) for card in range(cards))))
    paddle.set_device("gpu:{}".format(gpu_id) if use_gpu else "cpu")
    use_cpu_cores()
    return use_gpu, gpu_id

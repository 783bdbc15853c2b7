"""Which device a run uses, on a CUDA build of Paddle with zero, one or four visible cards, alone or
under paddle.distributed.launch; and how many CPU threads each process gets. The CUDA build and
its cards are monkeypatched: this runs on the CPU build."""
import argparse

import paddle
import pytest

import utils.runtime as runtime
import utils.training.distributed as distributed
from utils.runtime import add_device_args, local_processes, select_device
from utils.training.distributed import Parallel

pytestmark = pytest.mark.paddle_api  # run on Paddle 2.6 too (README: the paddle-2.6 leg)

LAUNCHER_VARIABLES = ("PADDLE_TRAINERS_NUM", "PADDLE_TRAINER_ID", "PADDLE_LOCAL_SIZE", "FLAGS_selected_gpus",
                      "PADDLE_CURRENT_ENDPOINT", "PADDLE_TRAINER_ENDPOINTS", "CUDA_VISIBLE_DEVICES")


@pytest.fixture
def machine(monkeypatch):
    """A machine outside the launcher whose Paddle has CUDA and ``machine(cards)`` visible cards;
    returns the devices ``paddle.set_device`` was asked for."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    chosen = []
    monkeypatch.setattr(paddle, "set_device", chosen.append)
    monkeypatch.setattr(runtime, "use_cpu_cores", lambda: None)

    def with_cards(cards, cuda=True):
        monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: cuda)
        monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: cards if cuda else 0)
        return chosen
    return with_cards


def flags(*argv):
    parser = argparse.ArgumentParser()
    add_device_args(parser)
    return parser.parse_args(list(argv))


def launched(monkeypatch, rank, world_size, card):
    """This process as paddle.distributed.launch starts it (Paddle 2.6 and 3.x set the same variables)."""
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(world_size))
    monkeypatch.setenv("PADDLE_TRAINER_ID", str(rank))
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", str(world_size))
    monkeypatch.setenv("FLAGS_selected_gpus", str(card))
    monkeypatch.setattr(distributed.dist, "init_parallel_env", lambda: None)
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: rank)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: world_size)


@pytest.mark.parametrize("argv, cards, expected", [
    ((), 1, ("gpu:0", True, 0)),
    ((), 4, ("gpu:0", True, 0)),
    (("--gpu", "3"), 4, ("gpu:3", True, 3)),
    (("--device", "gpu", "--gpu", "1"), 4, ("gpu:1", True, 1)),
    (("--device", "cpu"), 4, ("cpu", False, 0)),
    (("--device", "cpu"), 0, ("cpu", False, 0)),
])
def test_the_flags_choose_a_visible_card_or_the_cpu(machine, argv, cards, expected):
    chosen = machine(cards)
    use_gpu, gpu_id = select_device(flags(*argv))
    assert (chosen, use_gpu, gpu_id) == ([expected[0]], expected[1], expected[2])


def test_auto_on_a_cuda_build_without_a_visible_card_runs_on_the_cpu_and_says_why(machine, monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    chosen = machine(0)
    assert select_device(flags()) == (False, 0)
    assert chosen == ["cpu"]
    said = capsys.readouterr().out.strip().splitlines()
    assert said == ["--device auto: this Paddle has CUDA but sees no GPU (CUDA_VISIBLE_DEVICES=''): running on the CPU"]


def test_auto_on_a_cpu_build_runs_on_the_cpu_quietly(machine, capsys):
    chosen = machine(0, cuda=False)
    assert select_device(flags()) == (False, 0)
    assert chosen == ["cpu"] and capsys.readouterr().out == ""


def test_gpu_without_a_visible_card_is_refused_with_what_to_do(machine, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    chosen = machine(0)
    with pytest.raises(SystemExit) as refused:
        select_device(flags("--device", "gpu"))
    assert str(refused.value) == ("--device gpu: this process sees no GPU (CUDA_VISIBLE_DEVICES=''); make a card "
                                  "visible (e.g. CUDA_VISIBLE_DEVICES=0) or use --device cpu")
    assert chosen == []


def test_gpu_on_a_cpu_build_is_refused(machine):
    machine(0, cuda=False)
    with pytest.raises(SystemExit, match="this Paddle has no CUDA support; install paddlepaddle-gpu"):
        select_device(flags("--device", "gpu"))


@pytest.mark.parametrize("device", ["auto", "gpu"])
def test_a_card_beyond_the_visible_ones_is_refused_with_the_visible_ones(machine, monkeypatch, device):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    chosen = machine(2)
    with pytest.raises(SystemExit) as refused:
        select_device(flags("--device", device, "--gpu", "2"))
    assert str(refused.value) == ("--gpu 2: this process sees 2 GPUs (CUDA_VISIBLE_DEVICES='2,3'), numbered 0, 1; "
                                  "cards are counted among the visible ones")
    assert chosen == []


def test_a_single_process_launched_on_card_3_uses_card_3(machine, monkeypatch):
    chosen = machine(4)
    launched(monkeypatch, rank=0, world_size=1, card=3)
    parallel = Parallel()
    assert (parallel.world_size, parallel.gpu_id) == (1, 3)
    assert select_device(flags(), parallel.gpu_id) == (True, 3)
    assert chosen == ["gpu:3"]


def test_each_of_four_launched_processes_uses_its_card_whatever_gpu_says(machine, monkeypatch):
    chosen = machine(4)
    for rank in range(4):
        launched(monkeypatch, rank=rank, world_size=4, card=rank)
        parallel = Parallel()
        assert (parallel.rank, parallel.world_size, parallel.gpu_id) == (rank, 4, rank)
        select_device(flags("--gpu", "1"), parallel.gpu_id)
    assert chosen == ["gpu:0", "gpu:1", "gpu:2", "gpu:3"]


def test_a_launched_process_given_several_cards_uses_the_first(machine, monkeypatch):
    machine(4)
    launched(monkeypatch, rank=0, world_size=1, card="2,3")
    assert Parallel().gpu_id == 2


def test_a_launcher_card_beyond_the_visible_ones_is_refused_naming_the_launcher(machine, monkeypatch):
    machine(1)
    launched(monkeypatch, rank=0, world_size=1, card=3)
    with pytest.raises(SystemExit, match=r"paddle.distributed.launch gave this process card 3 \(FLAGS_selected_gpus\): "
                                         r"this process sees 1 GPU, numbered 0;"):
        select_device(flags(), Parallel().gpu_id)


def test_outside_the_launcher_or_without_cuda_there_is_no_launcher_card(machine, monkeypatch):
    machine(4)
    monkeypatch.setenv("FLAGS_selected_gpus", "3")  # exported by hand, without the launcher
    assert Parallel().gpu_id is None
    machine(0, cuda=False)
    launched(monkeypatch, rank=0, world_size=1, card=3)
    assert Parallel().gpu_id is None


@pytest.mark.parametrize("environ, expected", [
    ({}, 1),
    ({"PADDLE_LOCAL_SIZE": "4"}, 4),
    ({"PADDLE_CURRENT_ENDPOINT": "10.0.0.2:6071",
      "PADDLE_TRAINER_ENDPOINTS": "10.0.0.1:6070,10.0.0.1:6071,10.0.0.2:6070,10.0.0.2:6071,10.0.0.2:6072"}, 3),
])
def test_local_processes_counts_the_launchers_processes_on_this_machine(environ, expected):
    assert local_processes(environ) == expected


@pytest.mark.parametrize("local_size, usable, expected", [(None, 8, 8), ("1", 8, 8), ("4", 8, 2), ("3", 8, 2),
                                                          ("16", 8, 1)])
def test_the_usable_cores_are_shared_among_the_local_processes(monkeypatch, local_size, usable, expected):
    threads = []
    monkeypatch.setattr(runtime, "_THREADS_GIVEN", False)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: usable)
    monkeypatch.setattr(paddle.base.core, "set_num_threads", threads.append)
    monkeypatch.delenv("PADDLE_TRAINER_ENDPOINTS", raising=False)
    if local_size is None:
        monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    else:
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", local_size)
    assert runtime.use_cpu_cores() == expected
    assert threads == [expected]


@pytest.mark.parametrize("environ, given", [
    ({}, False),
    ({"OMP_NUM_THREADS": "1"}, True),
    ({"OMP_NUM_THREADS": "4"}, True),
    ({"OMP_NUM_THREADS": "1", "PADDLE_LOCAL_SIZE": "2"}, False),  # the launcher's import paddle set it
    ({"OMP_NUM_THREADS": "4", "PADDLE_LOCAL_SIZE": "2"}, True),
])
def test_omp_num_threads_is_the_users_unless_the_launcher_passed_on_its_1(environ, given):
    assert runtime._threads_given(environ) is given

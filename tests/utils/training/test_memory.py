"""The memory estimate of one training iteration (utils/training/memory.py) against the peak RSS of
a real one on the CPU, and the preflight that stops a batch the GPU cannot hold."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from utils.methods.adaptsegnet import estimate_memory
from utils.training.memory import NotEnoughGPUMemory, check_gpu_memory
from utils.training.memory import gib as format_gib

GIB = 2 ** 30
ARGV = ["--data-dir", "data/GTA5", "--data-dir-target", "data/Cityscapes", "--snapshot-dir", "snapshots/x",
        "--from-scratch", "--device", "cpu", "--batch-size", "1"]


def measure_iteration(source_size, target_size):
    """In this (fresh) process: bytes one real iteration adds to the peak RSS, batch 1.

    The baseline is the RSS after a warm-up iteration at 64x48, which has loaded the kernels and
    created the gradients and the optimizers' state: what remains is what the iteration itself
    needs, the estimate's ``iteration_bytes``."""
    import resource

    import paddle
    import train_gta2cityscapes_multi as train
    from tests.helpers import one_iteration
    from utils.methods.adaptsegnet import AdaptSegNet, build_networks
    paddle.set_device("cpu")

    def arguments(source, target):
        return train.get_arguments(ARGV + ["--input-size", "{},{}".format(*source),
                                           "--input-size-target", "{},{}".format(*target)])

    def batches(args):
        (sw, sh), (tw, th) = args.input_size, args.input_size_target
        source = (paddle.randn([1, 3, sh, sw]), paddle.randint(0, 19, [1, sh, sw], dtype="int64"))
        return [(source, (paddle.randn([1, 3, th, tw]),))]

    args = arguments(source_size, target_size)
    model, sgd, discriminators = build_networks(args)
    nets = dict(model=model, **discriminators)
    optimizers = [sgd] + [paddle.optimizer.Adam(learning_rate=1e-4, beta1=0.9, beta2=0.99, parameters=D.parameters())
                          for D in discriminators.values()]
    warm_up = arguments((64, 48), (64, 48))
    one_iteration(AdaptSegNet, warm_up, nets, optimizers, batches(warm_up), 0)
    real_batches = batches(args)
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * resource.getpagesize()
    # The process's peak so far (imports, building the networks) may exceed the iteration's: start
    # the high-water mark afresh ("5": reset the peak resident set size).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    one_iteration(AdaptSegNet, args, nets, optimizers, real_batches, 1)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) * 1024
    return peak - before


def measured_in_a_fresh_process(source_size, target_size):
    code = "import json; from tests.utils.training.test_memory import measure_iteration; print(json.dumps(measure_iteration({}, {})))"
    out = subprocess.run([sys.executable, "-c", code.format(source_size, target_size)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("source_size,target_size", [((320, 180), (256, 128)), ((640, 360), (512, 256))])
def test_estimate_is_within_15_percent_of_a_real_iteration_on_the_cpu(source_size, target_size):
    measured = measured_in_a_fresh_process(source_size, target_size)
    estimate = estimate_memory(1, source_size, target_size)
    print("{}+{}: estimate {:.0f} MB, measured {:.0f} MB (peak RSS of one iteration); in all {}".format(
        source_size, target_size, estimate.iteration_bytes / 1e6, measured / 1e6, estimate))
    assert abs(estimate.iteration_bytes - measured) <= 0.15 * measured


def test_the_estimate_grows_with_the_batch_and_names_its_parts():
    one, two = estimate_memory(1, (1280, 720), (1024, 512)), estimate_memory(2, (1280, 720), (1024, 512))
    assert one.peak_pass == "source pass"  # its images are the larger
    assert 1.7 < two.iteration_bytes / one.iteration_bytes < 2.0  # the convolution workspace is per image
    assert two.parts == one.parts  # weights, gradients and optimizer state do not depend on it
    assert 8 * GIB < one.total_bytes < 10 * GIB < 15 * GIB < two.total_bytes


def preflight(args, **options):
    """The GPU preflight of an AdaptSegNet run (AdaptSegNet.preflight) with a fresh network."""
    return check_gpu_memory(args, lambda batch_size: estimate_memory(
        batch_size, args.input_size, args.input_size_target, args.bn, args.num_classes, on_gpu=True), **options)


def run_args(batch_size, iter_size=1):
    import train_gta2cityscapes_multi as train
    return train.get_arguments(ARGV[:-1] + [str(batch_size), "--iter-size", str(iter_size)])


def test_preflight_passes_when_the_card_holds_the_estimate():
    args = run_args(2)
    estimate = preflight(args, free_bytes=32 * GIB)
    assert estimate.batch_size == 2 and estimate.total_bytes < 32 * GIB


def test_preflight_stops_with_the_command_that_keeps_the_effective_batch():
    args = run_args(2, iter_size=3)
    argv = ["train_gta2cityscapes_multi.py"] + ARGV[:-1] + ["2", "--iter-size", "3", "--random-mirror"]
    with pytest.raises(NotEnoughGPUMemory) as error:
        preflight(args, free_bytes=12 * GIB, argv=argv)
    message = str(error.value)
    print(message)
    assert "--batch-size 2 needs about 14.5 GiB" in message and "12.0 GiB is free" in message
    assert ("python train_gta2cityscapes_multi.py --data-dir data/GTA5 --data-dir-target data/Cityscapes "
            "--snapshot-dir snapshots/x --from-scratch --device cpu --batch-size 1 --iter-size 6 "
            "--random-mirror") in message
    assert "effective batch of 6" in message


def test_preflight_divides_the_batch_over_the_ranks():
    args = run_args(4)
    argv = ["train_gta2cityscapes_multi.py", "--batch-size", "4"]
    assert preflight(args, free_bytes=12 * GIB, world_size=4, argv=argv).batch_size == 1
    with pytest.raises(NotEnoughGPUMemory, match="--batch-size 2 --iter-size 2"):
        preflight(args, free_bytes=12 * GIB, world_size=2, argv=argv)


def test_preflight_says_when_not_even_one_image_fits():
    with pytest.raises(NotEnoughGPUMemory, match="even one image per GPU does not fit"):
        preflight(run_args(1), free_bytes=4 * GIB, argv=["train_gta2cityscapes_multi.py"])
    assert format_gib(1.5 * GIB) == "1.5 GiB"


SYNTHETIC_DATA = dict(num_source=2, num_target_train=2, num_target_val=1)


def as_if_on_a_gpu(monkeypatch, free_bytes):
    """The training session on a card with ``free_bytes`` free (this machine has none)."""
    import utils.training.memory
    import utils.training.session
    monkeypatch.setattr(utils.training.session, "select_device", lambda args, gpu_id=None: (True, 0))
    monkeypatch.setattr(utils.training.memory, "free_gpu_memory", lambda gpu_id: free_bytes)


def test_a_run_whose_batch_does_not_fit_the_card_stops_before_iteration_1(data, tmp_path, monkeypatch):
    import train_gta2cityscapes_multi as train
    from tests.helpers import training_args
    as_if_on_a_gpu(monkeypatch, 4 * GIB)
    args = training_args(data, tmp_path, 2, "--input-size", "1280,720", "--input-size-target", "1024,512",
                         batch_size=2)
    with pytest.raises(NotEnoughGPUMemory, match=r"--batch-size 2 needs about 14\.\d GiB .* 4\.0 GiB is free"):
        train.main(args)
    assert not [name for name in os.listdir(str(tmp_path)) if name.endswith(".pdparams")]


def test_cudnn_exhaustive_search_is_set_on_a_gpu_when_asked(data, tmp_path, monkeypatch):
    import paddle
    import train_gta2cityscapes_multi as train
    from tests.helpers import training_args
    as_if_on_a_gpu(monkeypatch, 64 * GIB)
    flags = []
    monkeypatch.setattr(paddle, "set_flags", flags.append)
    session_args = train.get_arguments(training_args(data, tmp_path, 1, "--cudnn-exhaustive-search"))
    from utils.training.session import TrainingSession
    with TrainingSession(session_args, train.AdaptSegNet):
        pass
    assert flags == [{"FLAGS_cudnn_exhaustive_search": True}]

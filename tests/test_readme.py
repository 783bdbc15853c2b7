"""Every command of README.md runs, in README's order, against synthetic data and weight files.

Commands run from a workspace holding `data/GTA5`, `data/Cityscapes` and stand-ins for the
authors' weight files under README's names; only small-size flags are added, and each builds the
self-test network (utils/runtime.py; the stand-ins shaped alike): what is tested is that the
command lines work, not the network (tests/model/, the parity tests and tests/utils/test_demo.py
build the real one). Lines with "..." are templates for GPUs (the distributed launch itself is tested in test_distributed.py); the
install-and-test line is what CI runs.
"""
import os
import re
import shlex
import subprocess
import sys

import shutil

import pytest

from dataset.synthetic import make_nthu, make_synthetic, make_synthia
from model import DeeplabMulti, FCDiscriminator
from tests.helpers import ROOT, seeded_torch_state
from utils.demo.torch_writer import save_legacy
from utils.files.weights import hash_suffix

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
SMALL_TRAINING = ["--input-size", "48,32", "--input-size-target", "48,32", "--num-steps", "100",
                  "--save-pred-every", "1", "--num-workers", "0", "--log-every", "1", "--picture-every", "0",
                  "--device", "cpu"]
SMALL_EVALUATION = ["--input-size", "128,64", "--num-workers", "0", "--device", "cpu"]
# README's iteration numbers, scaled down to the few iterations run here.
ITERATIONS = {"50000": "1", "60001": "2"}


def readme_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("#")[0].strip()
            if command and "..." not in command:
                commands.append(command)
    return commands


def stand_in_weights(workspace):
    """The authors' files, as the README names them, with seeded weights of the right shapes."""
    segmentation = seeded_torch_state(DeeplabMulti(), 0)
    voc_classifier = seeded_torch_state(DeeplabMulti(num_classes=21), 0)
    init = {"Scale." + k: v for k, v in segmentation.items() if not k.startswith(("layer5.", "layer6."))}
    init.update({"Scale." + k: voc_classifier[k] for k in segmentation if k.startswith("layer5.")})
    discriminator = seeded_torch_state(FCDiscriminator(19), 1)
    files = {"DeepLab_resnet_pretrained_init-f81d91e8.pth": init, "GTA2Cityscapes_multi-ed35151c.pth": segmentation,
             "GTA5_60000_D1.pth": discriminator}
    for name, state in files.items():
        save_legacy(state, os.path.join(workspace, name))
    # The same weights under other names: copied, not written again.
    released = "GTA2Cityscapes_multi-ed35151c.pth"
    copies = {"GTA5_60000.pth": released, "gta5_pretrained.pth": released,
              "DeepLab_resnet_pretrained_imagenet.pth": "DeepLab_resnet_pretrained_init-f81d91e8.pth",
              "gta5-cityscapes-pseudoweak-cw-pa.pth": released, "GTA5_60000_D2.pth": "GTA5_60000_D1.pth",
              "GTA5_100000_D2.pth": "GTA5_60000_D1.pth"}
    for name, original in copies.items():
        shutil.copyfile(os.path.join(workspace, original), os.path.join(workspace, name))


def runnable(command):
    """README's command as this test runs it: this interpreter, small sizes, few iterations."""
    tokens = [ITERATIONS.get(token, token) for token in shlex.split(command)]
    assert tokens[0] == "python", command
    if any(hash_suffix(token) for token in tokens):
        tokens.append("--no-hash-check")  # the stand-ins carry the authors' names, not their bytes
    script = tokens[1]
    if script.endswith(".py"):
        tokens[1] = os.path.join(ROOT, script)
    if tokens[1:3] == ["-m", "utils.methods"]:
        tokens += SMALL_TRAINING + ["--num-steps-stop", "2"]
    elif script == "train_gta2cityscapes_multi.py":
        stop = "3" if "--start-iter" in tokens else "2"
        tokens += SMALL_TRAINING + ["--num-steps-stop", stop]
    elif script == "train_weak_labels.py":  # one snapshot (with --use-weak-cw, 2.3 GB for the real network)
        tokens += SMALL_TRAINING + ["--num-steps-stop", "1"]
    elif script in ("evaluate_cityscapes.py", "predict.py"):
        tokens += SMALL_EVALUATION
    return [sys.executable] + tokens[1:]


def test_readme_has_the_commands_users_need():
    commands = " ".join(readme_commands())
    for needed in ("python -m utils.demo", "python -m pytest", "utils.convert_weights", "--continue-train",
                   "--restore-from-D1", "evaluate_cityscapes.py", "compute_iou.py"):
        assert needed in commands


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    workspace = str(tmp_path)
    gta5, _ = make_synthetic(os.path.join(workspace, "data"), num_source=4, num_target_train=3, num_target_val=2)
    make_synthia(os.path.join(workspace, "data"), count=4)
    make_nthu(os.path.join(workspace, "data"), cities=("Rome",))
    # CycleGAN translations of the source images, where the weak-label reference expects them
    shutil.copytree(os.path.join(gta5, "images"), os.path.join(workspace, "data", "cycleGAN_output", "gta5_deeplab",
                                                               "images"))
    stand_in_weights(workspace)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ran = 0
    for command in readme_commands():
        if command.startswith("python3 -m venv"):
            continue  # the install lines: CI runs the tests' one; the demo has its own test
        result = subprocess.run(runnable(command), cwd=workspace, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=600)
        output = result.stdout.decode(errors="replace")
        assert result.returncode == 0, "README command failed: {}\n{}".format(command, output[-4000:])
        ran += 1
    assert ran >= 10
    assert os.path.exists(os.path.join(workspace, "result", "cityscapes", "mIoU.json"))
    assert os.path.exists(os.path.join(workspace, "snapshots", "GTA2Cityscapes_multi", "GTA5_best.pdparams"))
    assert os.path.exists(os.path.join(workspace, "snapshots", "from_pytorch", "GTA5_3.pdparams"))
    for run in ("weak_uda", "weak_point"):
        assert os.path.exists(os.path.join(workspace, "snapshots", run, "GTA5_1_cwD.pdparams"))
        assert os.path.exists(os.path.join(workspace, "snapshots", run, "GTA5_best.pdparams"))  # --val


@pytest.mark.slow
@pytest.mark.parametrize("line", [c for c in readme_commands() if "utils.demo" in c])
def test_readme_demo_runs_and_says_where_everything_is(line, tmp_path):
    command = [sys.executable, "-m", "utils.demo", "--out", str(tmp_path / "demo"), "--iterations", "2"]
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-4000:]
    assert "===> mIoU:" in output and "resumed from" in output
    assert "predictions:" in output and "visualdl --logdir" in output
    assert os.listdir(str(tmp_path / "demo" / "predictions"))

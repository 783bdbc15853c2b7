"""Plain functions shared by the test modules: seeded weights named the way the PyTorch reference
names them, the command line of a tiny training run, and comparisons of two runs' snapshots."""
import json
import os

import numpy as np
import paddle

from tests.fixtures.seeded_weights import seeded_state_dict

_PADDLE_TO_TORCH_BUFFERS = {"_mean": "running_mean", "_variance": "running_var"}


def torch_style_shapes(model):
    """{PyTorch state-dict name: shape} of a Paddle model, as the reference would name it."""
    shapes = {}
    for name, value in model.state_dict().items():
        module, _, leaf = name.rpartition(".")
        shapes[module + "." + _PADDLE_TO_TORCH_BUFFERS.get(leaf, leaf)] = tuple(value.shape)
    return shapes


def seeded_torch_state(model, seed=0):
    """The weights the parity fixtures were made with, as a PyTorch-named state dict."""
    return seeded_state_dict(torch_style_shapes(model), seed)


def training_args(data, snapshot_dir, stop, *extra, size="48,32", source=None, batch_size=None, mirror=False,
                  workers=0, steps=20, save_every=2, log_every=1, picture_every=0, continue_train=False):
    """The command line of a tiny CPU run of train_gta2cityscapes_multi.py (or train_weak_labels.py)
    on data = (source dir, Cityscapes dir), stopped after `stop` iterations; `extra` comes last, so
    it can override a flag. --from-scratch (random weights, no ImageNet download) unless `extra`
    restores from a file; None leaves a flag at the script's default."""
    source_dir, cityscapes = data
    args = ["--data-dir", source_dir, "--data-dir-target", cityscapes, "--input-size", size,
            "--input-size-target", size, "--num-workers", str(workers), "--num-steps", str(steps),
            "--num-steps-stop", str(stop), "--save-pred-every", str(save_every), "--picture-every",
            str(picture_every), "--snapshot-dir", str(snapshot_dir), "--device", "cpu"]
    if source is not None:
        args += ["--source", source]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if mirror:
        args.append("--random-mirror")
    if log_every is not None:
        args += ["--log-every", str(log_every)]
    if "--restore-from" not in extra:
        args.append("--from-scratch")
    if continue_train:
        args.append("--continue-train")
    return args + list(extra)


def _load(directory, name):
    return paddle.load(os.path.join(str(directory), name), return_numpy=True)


def assert_same_snapshot(dir_a, dir_b, iteration, discriminators=("D1", "D2"), prefix="GTA5"):
    """Two runs wrote the same weights and the same optimizer states at `iteration`, bit for bit."""
    for suffix in [""] + ["_" + name for name in discriminators]:
        name = "{}_{}{}.pdparams".format(prefix, iteration, suffix)
        a, b = _load(dir_a, name), _load(dir_b, name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg="{} {}".format(name, key))
    state_a = _load(dir_a, "{}_{}_state.pdopt".format(prefix, iteration))["state"]
    state_b = _load(dir_b, "{}_{}_state.pdopt".format(prefix, iteration))["state"]
    for name in ("model",) + tuple(discriminators):
        assert state_a[name].keys() == state_b[name].keys() and state_a[name]
        for key in state_a[name]:
            np.testing.assert_array_equal(state_a[name][key], state_b[name][key], err_msg=key)


def logged_losses(snapshot_dir):
    """[(step, {loss/... and lr/... scalars})] of a run's metrics.jsonl, one entry per record."""
    with open(os.path.join(str(snapshot_dir), "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [(r["step"], {k: v for k, v in r["scalars"].items() if k.startswith(("loss/", "lr/"))}) for r in records]

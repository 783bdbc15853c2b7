"""Plain functions shared by the test modules: seeded weights named the way the PyTorch reference
names them, the command line of a tiny training run, and comparisons of two runs' snapshots."""
import json
import os
import sys

import numpy as np
import paddle

from tests.fixtures.seeded_weights import seeded_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
_PADDLE_TO_TORCH_BUFFERS = {"_mean": "running_mean", "_variance": "running_var"}


def script_command(script, *args):
    """``python SCRIPT ARGS``: a script of the project run by this interpreter."""
    return [sys.executable, script] + [str(arg) for arg in args]


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


def logged_steps(snapshot_dir):
    """How many records metrics.jsonl holds so far (0 before it exists); a run may be writing it."""
    try:
        with open(os.path.join(str(snapshot_dir), "metrics.jsonl")) as f:
            return sum(1 for line in f if line.endswith("\n"))
    except FileNotFoundError:
        return 0


def signal_during_run(command, snapshot_dir, after_steps, signum, to_group=False, pid_of=None, timeout=300,
                      then=None, wait_for=None):
    """Run ``command`` in a session of its own and send it ``signum`` once its run has logged
    ``after_steps`` records (or, with ``wait_for``, once that file exists): to its whole process
    group with ``to_group``, as Ctrl-C in a terminal does, else to ``pid_of(process)`` or the
    process; ``then(process)`` runs after that. Returns (exit status, stdout, stderr)."""
    import signal as signals
    import subprocess
    import tempfile
    import time
    # Files, not pipes: a pipe nobody reads until the signal would block a talkative process.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)

        def output(stream):
            stream.seek(0)
            return stream.read().decode(errors="replace")

        try:
            deadline = time.time() + timeout
            while (not os.path.exists(wait_for)) if wait_for else logged_steps(snapshot_dir) < after_steps:
                assert process.poll() is None, output(err)[-3000:]
                assert time.time() < deadline, "the run logged no step {} in {} s".format(after_steps, timeout)
                time.sleep(0.05)
            if to_group:
                os.killpg(process.pid, signum)
            else:
                os.kill(pid_of(process) if pid_of else process.pid, signum)
            if then is not None:
                then(process)
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signals.SIGKILL)
                process.wait()
        return process.returncode, output(out), output(err)


def leftover_processes(marker):
    """Processes still alive whose command line holds ``marker`` (a run's unique folder)."""
    import psutil
    left = []
    for process in psutil.process_iter():
        try:
            if marker in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process.pid)
        except psutil.Error:
            pass
    return left


def named_batches(batches, source_fields=("images", "labels"), target_fields=("images",)):
    """(source, target) pairs of positional fields as the engine's dataset.loader.Batch pairs."""
    from dataset.loader import Batch
    return [(Batch(source_fields, source), None if target is None else Batch(target_fields, target))
            for source, target in batches]


def one_iteration(method_class, args, nets, optimizers, batches, iteration, parallel=None, **fields):
    """The engine's iteration (Method.run_step) of ``method_class`` on these networks ({"model": G,
    part: network}, or G and its parts in order) and (source, target) batches of positional fields."""
    if not isinstance(nets, dict):
        nets = dict(zip(("model",) + tuple(method_class.part_weights), nets))
    method = method_class.on_networks(args, {name: net for name, net in nets.items() if net is not None}, optimizers)
    return method.run_step(named_batches(batches, **fields), iteration, parallel)

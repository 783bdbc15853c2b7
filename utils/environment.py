"""What a run or an evaluation ran on, recorded at its start: this project's version, Python,
Paddle and its CUDA/cuDNN build, the device, the number of ranks and the seed (and whether it
built the self-test network, utils/runtime.py).

A number is only comparable with another when both were made alike; this record is what says
so. Training writes it to train.log and into every snapshot's state (``extra["environment"]``),
evaluation prints it and keeps it with each cached score, and report.py shows it. Reading a
record needs nothing; making one asks Paddle (imported by then in every script that makes one).
"""
import functools
import os
import platform
import subprocess
import sys
import time

from utils.runtime import SELF_TEST_VARIABLE, self_test_network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = ("version", "python", "paddle", "device", "ranks", "seed")  # what a complete record holds


@functools.lru_cache(maxsize=None)
def project_version(root=ROOT):
    """{"commit": hash, "dirty": whether tracked files differ from it} of the git checkout at
    ``root``; {"commit": None} outside a checkout or without git."""
    def git(*command):
        return subprocess.run(("git", "-C", root) + command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=20, check=True).stdout.decode().strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    return {"commit": commit, "dirty": dirty}


def _read_first(path, key):
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def _gpu_driver():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20, check=True)
        return out.stdout.decode().split("\n")[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_record(use_gpu=False, gpu_id=0):
    """The device's name, memory (GiB) and driver (GPU) or usable cores (CPU)."""
    if use_gpu:
        import paddle
        try:
            properties = paddle.device.cuda.get_device_properties(gpu_id)
            name, memory = properties.name, round(properties.total_memory / 2.0 ** 30, 2)
        except (ValueError, RuntimeError, OSError):  # a build or driver that cannot say: the record says so
            name = memory = None
        return {"kind": "gpu", "index": gpu_id, "name": name, "memory_gib": memory, "driver": _gpu_driver()}
    from utils.runtime import usable_cpus
    memory_kib = _read_first("/proc/meminfo", "MemTotal")
    return {"kind": "cpu", "name": _read_first("/proc/cpuinfo", "model name") or platform.processor() or None,
            "memory_gib": round(int(memory_kib.split()[0]) / 2.0 ** 20, 2) if memory_kib else None,
            "cores": usable_cpus()}


def paddle_record():
    import paddle
    record = {"version": paddle.__version__, "cuda": None, "cudnn": None,
              "compiled_with_cuda": bool(paddle.device.is_compiled_with_cuda())}
    if record["compiled_with_cuda"]:
        record["cuda"], record["cudnn"] = str(paddle.version.cuda()), str(paddle.version.cudnn())
    return record


def environment_record(seed=None, ranks=1, use_gpu=False, gpu_id=0):
    """The record of this process's environment (a dict of plain values)."""
    record = {"version": project_version(), "python": platform.python_version(), "platform": platform.platform(),
              "paddle": paddle_record(), "device": device_record(use_gpu, gpu_id), "ranks": ranks, "seed": seed,
              "recorded": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)}
    if self_test_network():
        record["self_test_network"] = True
    return record


def missing_fields(record):
    """The FIELDS a record lacks (all of them for None: a run from before environments were recorded)."""
    return [name for name in FIELDS if not record or name not in record]


def describe_environment(record):
    """One line: 'environment: AdaptSegNet-Paddle 1cd995e (modified), Python 3.11.4, Paddle 3.3.1 (CPU build),
    cpu AMD EPYC (2 cores, 7.8 GiB), 1 rank, seed 1234'."""
    if not record:
        return "environment: not recorded (the run predates environment records)"
    version = record.get("version") or {}
    commit = version.get("commit")
    project = "commit {}{}".format(commit[:10], " (modified)" if version.get("dirty") else "") if commit else \
        "not a git checkout"
    paddle = record.get("paddle") or {}
    build = "CUDA {}, cuDNN {}".format(paddle.get("cuda"), paddle.get("cudnn")) if paddle.get("compiled_with_cuda") \
        else "CPU build"
    device = record.get("device") or {}
    if device.get("kind") == "gpu":
        where = "GPU {} ({} GiB, driver {})".format(device.get("name"), device.get("memory_gib"), device.get("driver"))
    else:
        where = "CPU {} ({} cores, {} GiB)".format(device.get("name"), device.get("cores"), device.get("memory_gib"))
    return "environment: {}, Python {}, Paddle {} ({}), {}, {} rank{}, seed {}{}".format(
        project, record.get("python"), paddle.get("version"), build, where, record.get("ranks"),
        "" if record.get("ranks") == 1 else "s", record.get("seed"),
        "; the self-test network ({}=1), not the real one".format(SELF_TEST_VARIABLE)
        if record.get("self_test_network") else "")

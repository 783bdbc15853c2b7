"""One-shot acceptance check of a GPU machine: does the project train and evaluate here, how fast,
in how much memory. Installs nothing; meant to run unattended in the few minutes a rented or
notebook GPU is available.

    python -m bench.gpu_check [--gpu 0] [--out gpu_check.json] [--time-limit 10]
    python -m bench.gpu_check --device cpu --quick    # self-test of the check itself, tiny sizes

What it runs, each part in its own process so that an out-of-memory error or a broken CUDA
context stays in its own row of the table:
  - the GPU: name, memory, a convolution and a matmul checked against numpy, AMP support;
  - the real training iteration at the documented sizes (source 1280x720, target 1024x512,
    both discriminators): batch 2 with --amp off, fp16 and bf16, batch 1 with --amp off, and
    batch 2 with --cudnn-exhaustive-search; ADVENT's AdvEnt as its recipe runs it (batch 1, the
    four-branch DeeplabMulti4); seconds/iteration after warm-up and the peak GPU memory of each
    beside the preflight's estimate;
  - evaluation at 1024x512 with seeded random weights: seconds/image of the dynamic graph and of
    Paddle Inference, and the share of pixels on which their predictions agree (99.9% required);
  - the scripts' own command lines on synthetic full-size data: train 3 iterations validating
    the snapshot (--val), continue the run to 6 with the same command (--continue-train),
    evaluate its snapshot directory; the weak-label method with category-wise alignment; two
    processes under paddle.distributed.launch (two cards).

It prints a line per result as it goes and one table at the end. Every failure is a FAILED row
with a one-line reason; the full output and tracebacks of every process are in the .log beside
the JSON. The JSON (--out) is rewritten after every step, so a session that ends early leaves
what was measured. Exit status: 0 when no row FAILED, 1 otherwise, 2 when it refuses to start.
--quick runs the same steps at tiny sizes with fewer iterations and the self-test network
(utils/runtime.py): its figures say nothing about the machine, only that the check itself works
(on a CPU: --device cpu --quick, AMP left out).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the worker processes import the project from here

import utils.runtime  # noqa: E402,F401  (first: settings that must precede paddle)

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from utils.files.atomic import atomic_write_json  # noqa: E402
from utils.runtime import SELF_TEST_VARIABLE, use_cpu_cores  # noqa: E402
from utils.stopping import run_interruptible

# The documented training sizes (README, utils/training/options.py) and evaluate_cityscapes.py's input.
SOURCE_SIZE, TARGET_SIZE, EVAL_SIZE = (1280, 720), (1024, 512), (1024, 512)
QUICK_SOURCE_SIZE, QUICK_TARGET_SIZE = (128, 72), (128, 64)
# Cityscapes labels are 2048x1024: evaluation upsamples the logits to twice the network's input.
LABEL_SCALE = 2
# (--batch-size, --amp, other flags, method); the fifth measures cuDNN's exhaustive algorithm search,
# the last ADVENT (its recipe advent, network DeeplabMulti4).
TRAINING_RUNS = ((2, "off", (), "adaptsegnet"), (2, "fp16", (), "adaptsegnet"), (2, "bf16", (), "adaptsegnet"),
                 (1, "off", (), "adaptsegnet"), (2, "off", ("--cudnn-exhaustive-search",), "adaptsegnet"),
                 (1, "off", (), "advent"))
AMP_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
AGREEMENT_REQUIRED = 0.999
# Longest each kind of process may take (seconds) before it is stopped and its row FAILED: generous,
# so that a slower GPU than the V100 the check is sized for still completes.
STEP_SECONDS = {"device": 120, "train": 240, "eval": 300, "script": 300}
MIN_STEP_SECONDS = 10  # a step with less time left than this is SKIPPED rather than started
PASSED, FAILED, UNSUPPORTED, SKIPPED, INFO = "PASSED", "FAILED", "UNSUPPORTED", "SKIPPED", "INFO"
UNIT_FORMATS = {"s/it": "{:.3f} s/it", "s/image": "{:.4f} s/image", "s": "{:.1f} s", "%": "{:.3f} %"}
TABLE_LINE = "{:<48}  {:<11}  {:<24}  {}"  # check, status, result, detail
DETAIL_WIDTH = 100


class StepFailed(Exception):
    """A step could not produce its result; ``reason`` is the one line its row shows."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# -- rows, the table and the JSON ------------------------------------------------------------

def make_row(check, status, value=None, unit="", detail="", **extra):
    """One line of the table: ``value`` is a number in ``unit`` or a text (environment rows);
    ``extra`` (what was measured, the command) goes to the JSON only."""
    result = "-" if value is None else UNIT_FORMATS[unit].format(value) if unit else str(value)
    return dict(check=check, status=status, value=value, unit=unit, result=result, detail=detail, **extra)


def one_line(text, limit=None):
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def table_line(row):
    return TABLE_LINE.format(row["check"], row["status"], row["result"], one_line(row["detail"], DETAIL_WIDTH)).rstrip()


def format_table(results):
    """The table printed at the end: a title, one line per row, the counts and where the files are."""
    environment, settings = results["environment"], results["settings"]
    title = "bench.gpu_check on {}: Paddle {}{}".format(
        environment.get("device_name") or settings["device"], environment.get("paddle_version", "?"),
        " (--quick: tiny sizes, the self-test network; the figures say nothing about the machine)"
        if settings["quick"] else "")
    counts = collections.Counter(row["status"] for row in results["rows"])
    summary = ", ".join("{} {}".format(counts[status], status) for status in (PASSED, FAILED, UNSUPPORTED, SKIPPED)
                        if status in (PASSED, FAILED) or counts[status])
    return "\n".join([title, "", TABLE_LINE.format("check", "status", "result", "detail")] +
                     [table_line(row) for row in results["rows"]] +
                     ["", "{} in {:.0f} s".format(summary, results["seconds"]), "results: " + results["json_path"],
                      "log (full output, tracebacks): " + results["log_path"]])


def exit_status(results):
    return 1 if any(row["status"] == FAILED for row in results["rows"]) else 0


def gib(num_bytes):
    return "{:.1f} GiB".format(num_bytes / 2.0 ** 30)


def json_safe(value):
    """A copy JSON can hold: numpy scalars become Python numbers, NaN and infinities None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_json(path, results):
    """``results`` to ``path`` whole or not at all, so that a session that ends mid-write keeps the last one."""
    atomic_write_json(path, json_safe(results))


# -- one-line reasons -------------------------------------------------------------------------

# "ValueError: ...", "paddle.base.core.ResourceExhaustedError:", "FatalError: `Segmentation fault` ...",
# argparse's "prog: error: ..." and the scripts' "error: ...".
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception):|^error:|: error:")


def failure_reason(text, returncode=None, limit=300):
    """The line of a process's stderr (or an exception's text) that says what went wrong.

    The last error line wins; Paddle's C++ errors put the message on the line after
    "ResourceExhaustedError:" and end with "(at file:line)", which says nothing to a user.
    Without an error line: the signal that killed the process, else the last line, else the
    exit status.
    """
    lines = [line.strip() for line in re.split(r"[\r\n]+", text or "") if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        if _ERROR_LINE.search(lines[index]):
            reason = lines[index]
            if reason.endswith(":") and index + 1 < len(lines):
                reason += " " + lines[index + 1]
            return one_line(reason, limit)
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal {}".format(-returncode)
        hint = " (out of host memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return "killed by {}{}".format(name, hint)
    if lines:
        return one_line(lines[-1], limit)
    return "exit status {} and no output".format(returncode)


def exception_reason(exc):
    return failure_reason("".join(traceback.format_exception_only(type(exc), exc)))


def gpu_refusal(compiled_with_cuda, device_count, gpu_id, paddle_version="?"):
    """Why this machine cannot run the GPU check (one line), or None when it can."""
    if not compiled_with_cuda:
        return ("bench.gpu_check needs a GPU: this Paddle ({}) was built without CUDA; install "
                "paddlepaddle-gpu (see README). To test the check itself on a CPU: "
                "python -m bench.gpu_check --device cpu --quick".format(paddle_version))
    if device_count < 1:
        return ("bench.gpu_check needs a GPU: Paddle was built with CUDA but sees no GPU "
                "(CUDA_VISIBLE_DEVICES={!r}; does nvidia-smi list one?)".format(os.environ.get("CUDA_VISIBLE_DEVICES")))
    if not 0 <= gpu_id < device_count:
        return "bench.gpu_check: --gpu {} but {} GPU(s) are visible (ids 0 to {})".format(
            gpu_id, device_count, device_count - 1)
    return None


# -- measurements: each runs in a worker process and returns a plain dict -----------------------

def _set_device(device, gpu_id):
    """paddle.set_device; returns the function that waits for the device's queued work."""
    import paddle
    if device == "gpu":
        paddle.set_device("gpu:{}".format(gpu_id))
        return paddle.device.cuda.synchronize
    paddle.set_device("cpu")
    use_cpu_cores()
    return lambda: None


def amp_support(place):
    """{"fp16": bool, "bf16": bool}: what Paddle says this device can train in."""
    import paddle
    return {mode: bool(getattr(paddle.amp, "is_{}_supported".format(dtype))(place))
            for mode, dtype in AMP_DTYPES.items()}


def smoke_test(synchronize):
    """A matmul checked against numpy and a convolution's forward and backward (cuDNN loads)."""
    import numpy as np
    import paddle
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
    expected = a @ b
    # TF32 matmuls (Ampere and newer) keep ~1e-3 relative precision; a wrong result is far off.
    error = float(np.abs(paddle.matmul(paddle.to_tensor(a), paddle.to_tensor(b)).numpy() - expected).max() /
                  np.abs(expected).max())
    if not error < 1e-2:
        raise RuntimeError("a 512x512 matmul differs from numpy's by {:.1e} of its largest value".format(error))
    conv = paddle.nn.Conv2D(3, 16, 3, padding=1)
    images = paddle.to_tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    loss = paddle.nn.functional.relu(conv(images)).mean()
    loss.backward()
    if not math.isfinite(float(loss)) or conv.weight.grad is None:
        raise RuntimeError("a convolution's forward and backward gave a non-finite loss or no gradient")
    synchronize()
    return {"seconds": time.perf_counter() - started, "matmul_relative_error": error}


def measure_device(device, gpu_id):
    """What the device is, whether it computes correctly, and which AMP modes Paddle supports on it."""
    import paddle
    synchronize = _set_device(device, gpu_id)
    info = {"device": device}
    if device == "gpu":
        cuda = paddle.device.cuda
        properties = cuda.get_device_properties(gpu_id)
        info.update(name=properties.name, total_memory_bytes=int(properties.total_memory),
                    capability=[properties.major, properties.minor], visible_gpus=cuda.device_count(),
                    multiprocessors=properties.multi_processor_count)
        place = "gpu:{}".format(gpu_id)
    else:
        info.update(name="CPU ({}, {} cores)".format(platform.processor() or platform.machine(), os.cpu_count()),
                    capability=None)
        place = "cpu"
    try:
        info["smoke"] = smoke_test(synchronize)
    except Exception as exc:  # noqa: BLE001  (reported as the smoke test's row)
        traceback.print_exc()
        info["smoke"] = {"error": exception_reason(exc)}
    try:
        info["amp"] = amp_support(place)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        info["amp"] = {"error": exception_reason(exc)}
    return info


def peak_memory(device, gpu_id):
    """Peak bytes of this process: GPU memory of tensors (allocated) and of Paddle's pool (reserved).

    Paddle 2.6 cannot reset these peaks, so each measured configuration runs in a process of its
    own, and the peak since the process started is that configuration's.
    """
    import resource
    import paddle
    peaks = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device == "gpu":
        peaks.update(peak_allocated_bytes=int(paddle.device.cuda.max_memory_allocated(gpu_id)),
                     peak_reserved_bytes=int(paddle.device.cuda.max_memory_reserved(gpu_id)))
    return peaks


def measure_training(data_root, run_dir, batch_size, amp, source_size, target_size, device, gpu_id, warmup,
                     iterations, num_workers, flags=(), method="adaptsegnet"):
    """Seconds per training iteration (median after ``warmup``) and peak memory, as bench_train runs it."""
    import paddle
    from bench.bench_train import time_iterations
    from utils.methods import method_class
    from utils.training.options import parse_settings
    method = method_class(method)
    # A configuration the script refuses (argparse, or --amp on a CPU) exits with its own message.
    args = parse_settings(method, [
        "--data-dir", os.path.join(data_root, "GTA5"), "--data-dir-target", os.path.join(data_root, "Cityscapes"),
        "--snapshot-dir", run_dir, "--input-size", "{},{}".format(*source_size),
        "--input-size-target", "{},{}".format(*target_size), "--batch-size", str(batch_size), "--amp", amp,
        "--num-workers", str(num_workers), "--random-mirror", "--num-steps-stop", str(warmup + iterations),
        "--device", device, "--gpu", str(gpu_id), "--from-scratch"] + list(flags))
    synchronize = paddle.device.cuda.synchronize if device == "gpu" else None
    timings, _ = time_iterations(args, warmup, iterations, synchronize, method=method)
    totals = [wait + compute for wait, compute in zip(timings["data_wait"], timings["compute"])]
    result = {"seconds_per_iteration": statistics.median(totals), "seconds": totals,
              "data_wait": statistics.median(timings["data_wait"]), "compute": statistics.median(timings["compute"]),
              "sgd_step": statistics.median(timings["sgd_step"]) if timings["sgd_step"] else None,
              "skipped_steps": len(totals) - len(timings["sgd_step"]), "warmup": warmup}
    result.update(peak_memory(device, gpu_id))
    # After the peaks are read: the estimate probes a network of its own.
    from utils.methods import adaptsegnet, advent
    estimate_memory = advent.estimate_memory if method is advent.Advent else adaptsegnet.estimate_memory
    estimate = estimate_memory(batch_size, tuple(source_size), tuple(target_size), bn=args.bn, on_gpu=device == "gpu")
    result.update(estimated_bytes=estimate.total_bytes, estimate=str(estimate))
    return result


def measure_evaluation(cityscapes_root, size, device, gpu_id, warmup, runs, seed=0):
    """Seconds/image of the dynamic graph and Paddle Inference on a seeded DeeplabMulti, and how
    often their upsampled argmax agrees. A part that fails is {"error": reason}; the others run."""
    import numpy as np
    import paddle
    from dataset.cityscapes_dataset import cityscapesDataSet
    from dataset.classes import CITYSCAPES
    from model.deeplab_multi import DeeplabMulti
    from model.inference import SegmentationPredictor, upsample_argmax

    synchronize = _set_device(device, gpu_id)
    paddle.seed(seed)
    model = DeeplabMulti(num_classes=CITYSCAPES.num_classes)
    model.eval()
    dataset = cityscapesDataSet(cityscapes_root, crop_size=tuple(size), set="val")
    images = [dataset[index][0][None] for index in range(len(dataset))]
    label_size = (size[1] * LABEL_SCALE, size[0] * LABEL_SCALE)
    result, outputs = {}, {}
    for backend in ("dygraph", "inference"):
        try:
            started = time.perf_counter()
            predictor = SegmentationPredictor(model, backend, use_gpu=device == "gpu", gpu_id=gpu_id)
            setup = time.perf_counter() - started
            seconds = []
            for call in range(warmup + runs):
                synchronize()
                started = time.perf_counter()
                predictor(images[call % len(images)])
                synchronize()
                if call >= warmup:
                    seconds.append(time.perf_counter() - started)
            logits = [predictor(image) for image in images]
            outputs[backend] = (logits, [upsample_argmax(out, label_size) for out in logits])
            result[backend] = {"seconds_per_image": statistics.median(seconds), "seconds": seconds,
                               "setup_seconds": setup, "warmup": warmup}
            del predictor
        except Exception as exc:  # noqa: BLE001  (reported as this backend's row)
            traceback.print_exc()
            result[backend] = {"error": exception_reason(exc)}
    if len(outputs) == 2:
        (logits_d, labels_d), (logits_i, labels_i) = outputs["dygraph"], outputs["inference"]
        agree = sum(int((a == b).sum()) for a, b in zip(labels_d, labels_i))
        pixels = sum(a.size for a in labels_d)
        result["agreement"] = {
            "share": agree / float(pixels), "pixels": pixels, "images": len(images),
            "max_abs_logit_difference": max(float(np.abs(a - b).max()) for a, b in zip(logits_d, logits_i)),
            "max_abs_logit": max(float(np.abs(a).max()) for a in logits_d)}
    else:
        result["agreement"] = {"error": "needs both the dynamic graph and Paddle Inference (see their rows)"}
    return result


WORKERS = {"device": measure_device, "train": measure_training, "eval": measure_evaluation}


def run_worker(name, spec, result_path):
    """Entry of a worker process: the measurement's dict into ``result_path`` (written whole or not at all)."""
    try:
        result = WORKERS[name](**spec)
    except StepFailed as failed:
        result = {"error": failed.reason}
    save_json(result_path, result)
    return 0


# -- the run: steps, processes, rows ----------------------------------------------------------

def environment():
    """Versions and the machine, read without touching the GPU (the workers use it)."""
    import paddle

    def version(read):
        value = str(read())
        return None if value in ("False", "", "0") else value  # a CPU build says 'False'

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "paddle_version": paddle.__version__, "paddle_commit": getattr(paddle.version, "commit", None),
            "cuda": version(paddle.version.cuda), "cudnn": version(paddle.version.cudnn),
            "compiled_with_cuda": paddle.device.is_compiled_with_cuda(), "cpu_cores": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total,memory.used",
                 "--format=csv,noheader"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20,
            ).stdout.decode(errors="replace").strip().splitlines()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = ["nvidia-smi failed: {}".format(exc)]
    return info


def check_settings(quick, device, gpu_id):
    settings = dict(device=device, gpu=gpu_id, quick=quick, source_size=SOURCE_SIZE, target_size=TARGET_SIZE,
                    eval_size=EVAL_SIZE, warmup=3, iterations=5, eval_warmup=3, eval_runs=10, script_steps=[3, 6],
                    num_workers=4)
    if quick:
        settings.update(source_size=QUICK_SOURCE_SIZE, target_size=QUICK_TARGET_SIZE, eval_size=QUICK_TARGET_SIZE,
                        warmup=1, iterations=1, eval_warmup=1, eval_runs=1, script_steps=[1, 2], num_workers=0)
    return settings


def size_text(size):
    return "{}x{}".format(*size)


class Run(object):
    """One run of the check: its settings, the rows so far, the JSON and the log, the clock."""

    def __init__(self, settings, json_path, time_limit_minutes, work_dir, command_line):
        self.settings = settings
        self.started = time.time()
        self.deadline = self.started + 60 * time_limit_minutes
        self.time_limit_minutes = time_limit_minutes
        self.work_dir = work_dir
        self.json_path = os.path.abspath(json_path)
        self.log_path = os.path.splitext(self.json_path)[0] + ".log"
        self.results = {"tool": "bench.gpu_check", "format": 1, "command": command_line,
                        "started": datetime.datetime.now().isoformat(timespec="seconds"), "seconds": 0.0,
                        "settings": settings, "environment": {}, "rows": [], "json_path": self.json_path,
                        "log_path": self.log_path}
        self.log = open(self.log_path, "w")
        self._workers = 0

    def close(self):
        self.log.close()

    def elapsed(self):
        return time.time() - self.started

    def say(self, message):
        print("[{:4.0f} s] {}".format(self.elapsed(), message), flush=True)

    def write_log(self, text):
        self.log.write(text if text.endswith("\n") else text + "\n")
        self.log.flush()

    def save(self):
        self.results["seconds"] = self.elapsed()
        save_json(self.json_path, self.results)

    def add(self, row):
        self.results["rows"].append(row)
        self.say(table_line(row))
        self.write_log("ROW {}".format(json.dumps(json_safe(row))))
        self.save()

    def time_left(self, cap):
        """Seconds the next step may take: its own allowance, or what is left of --time-limit."""
        return min(cap, self.deadline - time.time())

    def run(self, label, command, cap, cwd=ROOT):
        """Run ``command`` in its own process group, stopped after ``cap`` seconds or at the time
        limit; returns (exit status, or None when stopped, stdout, stderr, seconds, why stopped).
        Its output goes to the log."""
        timeout = self.time_left(cap)
        self.say(TABLE_LINE.format(label, "running", "", "").rstrip())
        self.write_log("\n=== {}\n$ {}\n".format(label, " ".join(shlex.quote(c) for c in command)))
        started = time.time()
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)  # its data-loader workers go with it when stopped
        stopped = None
        try:
            out, err = process.communicate(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            stopped = ("took longer than its allowance of {:.0f} s".format(cap) if timeout >= cap else
                       "stopped at the --time-limit of {:g} min".format(self.time_limit_minutes))
            _kill_group(process)
            out, err = process.communicate()
        except BaseException:  # Ctrl-C: the process is in its own session and would not see it
            _kill_group(process)
            process.communicate()
            raise
        seconds = time.time() - started
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        self.write_log("--- stdout\n{}--- stderr\n{}--- exit status {} after {:.1f} s{}\n".format(
            out, err, process.returncode, seconds, "; " + stopped if stopped else ""))
        return (None if stopped else process.returncode), out, err, seconds, stopped

    def worker(self, label, name, spec, cap):
        """The dict a measurement returns, run in a process of its own; StepFailed when it has none."""
        self._workers += 1
        result_path = os.path.join(self.work_dir, "{}-{}.json".format(name, self._workers))
        command = [sys.executable, "-m", "bench.gpu_check", "--worker", name, "--spec", json.dumps(spec),
                   "--result", result_path]
        code, _, err, seconds, stopped = self.run(label, command, cap)
        if stopped:
            raise StepFailed(stopped)
        if code != 0 or not os.path.exists(result_path):
            raise StepFailed(failure_reason(err, code))
        with open(result_path) as f:
            result = json.load(f)
        if "error" in result and len(result) == 1:
            raise StepFailed(result["error"])
        return result

    def step(self, checks, function, *args):
        """``function(*args)``; if it fails, a FAILED row for each of ``checks`` it did not report."""
        reported = len(self.results["rows"])
        try:
            return function(*args)
        except StepFailed as failed:
            reason = failed.reason
        except Exception as exc:  # noqa: BLE001  (a bug here must not hide the other rows)
            self.write_log("internal error:\n" + traceback.format_exc())
            reason = "internal error of bench.gpu_check: {} (traceback in the log)".format(exception_reason(exc))
        done = {row["check"] for row in self.results["rows"][reported:]}
        for check in checks:
            if check not in done:
                self.add(make_row(check, FAILED, detail=reason))
        return None

    def skip_all(self, checks, reason):
        for check in checks:
            self.add(make_row(check, SKIPPED, detail=reason))

    def out_of_time(self, checks, cap):
        if self.time_left(cap) >= min(cap, MIN_STEP_SECONDS):
            return False
        self.skip_all(checks, "not started: the --time-limit of {:g} min was reached".format(self.time_limit_minutes))
        return True


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass  # already gone


# -- the steps --------------------------------------------------------------------------------

def environment_rows(run, info):
    run.results["environment"].update(info)
    run.add(make_row("Paddle", INFO, info["paddle_version"], detail="commit {}; Python {}, {}".format(
        (info.get("paddle_commit") or "?")[:10], info["python"], info["platform"])))
    driver = ""
    smi = info.get("nvidia_smi") or []
    if smi and smi[0].count(",") >= 2:
        driver = "driver {}".format(smi[0].split(",")[2].strip())
    run.add(make_row("CUDA / cuDNN", INFO, "{} / {}".format(info["cuda"] or "none", info["cudnn"] or "none"),
                     detail=driver))


def data_step(run, data_root):
    from dataset.synthetic import make_synthetic
    settings = run.settings
    started = time.time()
    try:
        make_synthetic(data_root, num_source=4, num_target_train=4, num_target_val=3,
                       source_size=settings["source_size"], target_size=settings["target_size"])
    except (OSError, ValueError) as exc:
        raise StepFailed("cannot write the synthetic data into {}: {} (choose another --work-dir)".format(
            data_root, exception_reason(exc)))
    run.add(make_row("synthetic data", PASSED, time.time() - started, "s", detail="4 source {}, 4+3 target {}".format(
        size_text(settings["source_size"]), size_text(settings["target_size"]))))


def device_step(run):
    settings = run.settings
    info = run.worker("device", "device", {"device": settings["device"], "gpu_id": settings["gpu"]},
                      STEP_SECONDS["device"])
    run.results["environment"]["device_name"] = info["name"]
    run.results["environment"]["device"] = info
    if info.get("total_memory_bytes"):
        detail = "{} of memory, compute capability {}.{}; {} GPU(s) visible".format(
            gib(info["total_memory_bytes"]), info["capability"][0], info["capability"][1], info["visible_gpus"])
        run.add(make_row("GPU {}".format(settings["gpu"]), INFO, info["name"], detail=detail))
    else:
        run.add(make_row("device", INFO, info["name"]))
    smoke = info["smoke"]
    if "error" in smoke:
        run.add(make_row("smoke test (matmul, convolution)", FAILED, detail=smoke["error"]))
        return None
    run.add(make_row("smoke test (matmul, convolution)", PASSED, smoke["seconds"], "s",
                     detail="matmul within {:.1e} of numpy".format(smoke["matmul_relative_error"])))
    return info


def training_check(run, batch_size, amp, flags=(), method="adaptsegnet"):
    return "train {}+{} batch {}, amp {}{}{}".format(size_text(run.settings["source_size"]),
                                                     size_text(run.settings["target_size"]), batch_size, amp,
                                                     "".join(" " + flag for flag in flags),
                                                     ", ADVENT" if method == "advent" else "")


def amp_unavailable(run, amp, device_info):
    """Why ``amp`` is not measured on this device (row status, reason), or None."""
    if amp == "off":
        return None
    if run.settings["device"] == "cpu":
        return SKIPPED, "the CPU self-test runs --amp off only"
    support = device_info["amp"]
    if "error" in support:
        return FAILED, "cannot tell whether Paddle supports AMP here: " + support["error"]
    if not support[amp]:
        return UNSUPPORTED, "Paddle has no {} on this GPU (compute capability {}.{})".format(
            AMP_DTYPES[amp], *device_info["capability"])
    return None


def training_step(run, data_root, batch_size, amp, flags, method, device_info):
    settings, check = run.settings, training_check(run, batch_size, amp, flags, method)
    unavailable = amp_unavailable(run, amp, device_info)
    if flags and settings["device"] == "cpu":
        unavailable = SKIPPED, "cuDNN is a GPU's"
    if unavailable:
        run.add(make_row(check, unavailable[0], detail=unavailable[1]))
        return
    spec = dict(data_root=data_root, flags=list(flags), method=method,
                run_dir=os.path.join(run.work_dir, "train-{}-b{}-{}{}".format(method, batch_size, amp, len(flags))),
                batch_size=batch_size, amp=amp, source_size=settings["source_size"],
                target_size=settings["target_size"], device=settings["device"], gpu_id=settings["gpu"],
                warmup=settings["warmup"], iterations=settings["iterations"], num_workers=settings["num_workers"])
    result = run.worker(check, "train", spec, STEP_SECONDS["train"])
    if settings["device"] == "gpu":
        memory = "peak {} allocated, {} reserved of {}".format(gib(result["peak_allocated_bytes"]), gib(
            result["peak_reserved_bytes"]), gib(device_info["total_memory_bytes"]))
    else:
        memory = "peak RSS {}".format(gib(result["peak_rss_bytes"]))
    if "estimated_bytes" in result:
        memory += " (estimate {})".format(gib(result["estimated_bytes"]))
    detail = "{}; data wait {:.3f} s; median of {} after {} warm-up".format(
        memory, result["data_wait"], len(result["seconds"]), result["warmup"])
    if result.get("skipped_steps"):
        detail += "; {} timed iterations skipped the optimizer step (fp16 overflow)".format(result["skipped_steps"])
    run.add(make_row(check, PASSED, result["seconds_per_iteration"], "s/it", detail=detail, measured=result))


def evaluation_checks(run):
    size = size_text(run.settings["eval_size"])
    return ("eval {} dynamic graph".format(size), "eval {} Paddle Inference".format(size),
            "eval argmax agreement (dygraph vs Inference)")


def evaluation_step(run, data_root):
    settings = run.settings
    dygraph_check, inference_check, agreement_check = evaluation_checks(run)
    spec = dict(cityscapes_root=os.path.join(data_root, "Cityscapes"), size=settings["eval_size"],
                device=settings["device"], gpu_id=settings["gpu"], warmup=settings["eval_warmup"],
                runs=settings["eval_runs"])
    result = run.worker("evaluation", "eval", spec, STEP_SECONDS["eval"])
    for check, backend in ((dygraph_check, "dygraph"), (inference_check, "inference")):
        part = result[backend]
        if "error" in part:
            run.add(make_row(check, FAILED, detail=part["error"]))
            continue
        detail = "median of {} after {} warm-up, batch 1".format(len(part["seconds"]), part["warmup"])
        if backend == "inference":
            detail += "; export and load {:.1f} s".format(part["setup_seconds"])
        run.add(make_row(check, PASSED, part["seconds_per_image"], "s/image", detail=detail, measured=part))
    agreement = result["agreement"]
    if "error" in agreement:
        run.add(make_row(agreement_check, FAILED, detail=agreement["error"]))
        return
    share, label_size = agreement["share"], [side * LABEL_SCALE for side in settings["eval_size"]]
    detail = "{:.1f}% required; {} images at {}; largest logit difference {:.1e} (largest logit {:.1e})".format(
        AGREEMENT_REQUIRED * 100, agreement["images"], size_text(label_size), agreement["max_abs_logit_difference"],
        agreement["max_abs_logit"])
    run.add(make_row(agreement_check, PASSED if share >= AGREEMENT_REQUIRED else FAILED, 100.0 * share, "%",
                     detail=detail, measured=agreement))


def script_checks(run):
    first, second = run.settings["script_steps"]
    return ("script: train {} iterations".format(first), "script: --continue-train to {}".format(second),
            "script: evaluate_cityscapes.py on the snapshots")


def script_commands(run, data_root, snapshot_dir):
    """The three command lines users type, on the synthetic data, in the order they run."""
    settings = run.settings
    first, second = settings["script_steps"]
    device = ["--device", settings["device"], "--gpu", str(settings["gpu"])]
    train = [sys.executable, os.path.join(ROOT, "train_gta2cityscapes_multi.py"),
             "--data-dir", os.path.join(data_root, "GTA5"), "--data-dir-target", os.path.join(data_root, "Cityscapes"),
             "--snapshot-dir", snapshot_dir, "--from-scratch", "--random-mirror", "--continue-train", "--val",
             "--input-size", "{},{}".format(*settings["source_size"]),
             "--input-size-target", "{},{}".format(*settings["target_size"]),
             "--save-pred-every", str(first), "--num-workers", str(settings["num_workers"])] + device
    evaluate = [sys.executable, os.path.join(ROOT, "evaluate_cityscapes.py"), "--restore-from", snapshot_dir,
                "--data-dir", os.path.join(data_root, "Cityscapes"), "--input-size", "{},{}".format(
                    *settings["eval_size"]), "--num-workers", "2"] + device
    return train + ["--num-steps-stop", str(first)], train + ["--num-steps-stop", str(second)], evaluate


def script_step(run, data_root):
    """The three commands in turn; each is a row, and a step whose input is missing is SKIPPED."""
    checks = script_checks(run)
    first, second = run.settings["script_steps"]
    snapshot_dir = os.path.join(run.work_dir, "snapshots")

    def wrote(iteration):  # and validated it (--val): the score is cached beside the snapshot
        return all(os.path.exists(os.path.join(snapshot_dir, "GTA5_{}{}".format(iteration, suffix)))
                   for suffix in (".pdparams", ".eval.json"))

    def scored(out, iteration):
        return re.search(r"^{}\t".format(iteration), out, re.M) is not None

    # What each command must have done besides exiting 0: (done?, PASSED detail, FAILED reason).
    expectations = (
        lambda out: (wrote(first), "wrote and validated snapshot GTA5_{}".format(first),
                     "exited 0 but wrote or validated no GTA5_{}".format(first)),
        lambda out: ("resumed from" in out and wrote(second),
                     "resumed from GTA5_{}, wrote GTA5_{}".format(first, second),
                     "exited 0 but did not resume from GTA5_{} and write GTA5_{}".format(first, second)),
        lambda out: (scored(out, first) and scored(out, second), "scored GTA5_{} and GTA5_{}".format(first, second),
                     "exited 0 but its table lacks iterations {} and {}".format(first, second)))
    work = os.path.join(run.work_dir, "scripts")
    os.makedirs(work, exist_ok=True)
    commands = script_commands(run, data_root, snapshot_dir)
    for index, (check, command, expect) in enumerate(zip(checks, commands, expectations)):
        if run.out_of_time(checks[index:], STEP_SECONDS["script"]):
            return
        code, out, err, seconds, stopped = run.run(check, command, STEP_SECONDS["script"], cwd=work)
        if stopped or code != 0:
            passed, reason = False, stopped or failure_reason(err, code)
        else:
            passed, detail, reason = expect(out)
        if passed:
            run.add(make_row(check, PASSED, seconds, "s", detail=detail, command=command))
            continue
        run.add(make_row(check, FAILED, seconds, "s", detail=reason, command=command))
        run.skip_all(checks[index + 1:], "needs the step before it, which FAILED")
        return


def more_script_checks():
    return ("script: train_weak_labels.py, category-wise alignment", "script: two processes (distributed.launch)")


def more_script_step(run, data_root, device_info):
    """The weak-label method's full UDA iteration (its 159.5M-parameter category-wise discriminator
    included) and a data-parallel job of two processes: one row each, independent of each other."""
    settings, work = run.settings, os.path.join(run.work_dir, "more")
    os.makedirs(work, exist_ok=True)
    common = ["--data-dir", os.path.join(data_root, "GTA5"), "--data-dir-target", os.path.join(data_root, "Cityscapes"),
              "--from-scratch", "--input-size", "{},{}".format(*settings["source_size"]),
              "--input-size-target", "{},{}".format(*settings["target_size"]), "--num-steps-stop", "2",
              "--num-workers", str(settings["num_workers"]), "--device", settings["device"]]
    weak = [sys.executable, os.path.join(ROOT, "train_weak_labels.py"), "--use-weak", "--use-pseudo", "--use-weak-cw",
            "--snapshot-dir", os.path.join(work, "weak"), "--gpu", str(settings["gpu"])] + common
    if settings["device"] == "gpu":
        cards = device_info.get("visible_gpus", 1)
        launch = ["--gpus", "{},{}".format(settings["gpu"], (settings["gpu"] + 1) % max(cards, 1))]
    else:
        cards, launch = 2, ["--nproc_per_node", "2"]
    ranks = [sys.executable, "-m", "paddle.distributed.launch", "--log_dir", os.path.join(work, "ranks_log")] + \
        launch + [os.path.join(ROOT, "train_gta2cityscapes_multi.py"), "--batch-size", "2",
                  "--snapshot-dir", os.path.join(work, "ranks")] + common
    for check, command, snapshot in zip(more_script_checks(), (weak, ranks), ("weak", "ranks")):
        if check.endswith("(distributed.launch)") and cards < 2:
            run.add(make_row(check, SKIPPED, detail="one GPU visible"))
            continue
        if run.out_of_time([check], STEP_SECONDS["script"]):
            return
        code, out, err, seconds, stopped = run.run(check, command, STEP_SECONDS["script"], cwd=work)
        wrote = os.path.exists(os.path.join(work, snapshot, "GTA5_2.pdparams"))
        if stopped or code != 0 or not wrote:
            reason = stopped or (failure_reason(err, code) if code else "exited 0 but wrote no GTA5_2.pdparams")
            run.add(make_row(check, FAILED, seconds, "s", detail=reason, command=command))
        else:
            run.add(make_row(check, PASSED, seconds, "s", detail="2 iterations, wrote GTA5_2", command=command))


def run_check(run):
    """Every step in order; a step that fails becomes rows and the next one runs."""
    data_root = os.path.join(run.work_dir, "data")
    run.step(["synthetic data"], data_step, run, data_root)
    data_ok = any(row["check"] == "synthetic data" and row["status"] == PASSED for row in run.results["rows"])
    if run.out_of_time(["smoke test (matmul, convolution)"], STEP_SECONDS["device"]):
        return
    device_info = run.step(["smoke test (matmul, convolution)"], device_step, run)
    later = [training_check(run, *config) for config in TRAINING_RUNS] + list(evaluation_checks(run)) + \
        list(script_checks(run)) + list(more_script_checks())
    if device_info is None:
        run.skip_all(later, "the device did not pass its smoke test (see above)")
        return
    if not data_ok:
        run.skip_all(later, "needs the synthetic data, which could not be written (see above)")
        return
    for config in TRAINING_RUNS:
        check = training_check(run, *config)
        if not run.out_of_time([check], STEP_SECONDS["train"]):
            run.step([check], training_step, run, data_root, *(config + (device_info,)))
    if not run.out_of_time(list(evaluation_checks(run)), STEP_SECONDS["eval"]):
        run.step(list(evaluation_checks(run)), evaluation_step, run, data_root)
    run.step(list(script_checks(run)), script_step, run, data_root)
    run.step(list(more_script_checks()), more_script_step, run, data_root, device_info)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=int, default=0, help="which GPU to check (its id; default 0)")
    parser.add_argument("--out", default="gpu_check.json",
                        help="the results as JSON (default ./gpu_check.json); the log goes beside it (.log)")
    parser.add_argument("--time-limit", type=float, default=10.0,
                        help="minutes: a step still running then is stopped (FAILED), later ones SKIPPED (default 10)")
    parser.add_argument("--work-dir", default=None,
                        help="where the synthetic data and snapshots go (about 1 GB, mostly two snapshots; "
                             "default: a temporary folder, removed at the end)")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="cpu only with --quick: a self-test of the check itself")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, few iterations, the self-test network: tests the check, measures nothing")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.device == "cpu" and not args.quick:
            parser.error("--device cpu measures nothing useful at full size: it is the self-test, add --quick")
        if args.time_limit <= 0:
            parser.error("--time-limit must be positive")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
            parser.error("--out {}: {} is not a writable directory".format(args.out, out_dir))
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, json.loads(args.spec), args.result)

    import paddle
    if args.device == "gpu":
        compiled = paddle.device.is_compiled_with_cuda()
        refusal = gpu_refusal(compiled, paddle.device.cuda.device_count() if compiled else 0, args.gpu,
                              paddle.__version__)
        if refusal:
            print(refusal, file=sys.stderr)
            return 2

    if args.quick:  # every process of the check builds the self-test network; a full check, the real one
        os.environ[SELF_TEST_VARIABLE] = "1"
    else:
        os.environ.pop(SELF_TEST_VARIABLE, None)
    command_line = "python -m bench.gpu_check " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None
                                                                                    else argv))
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(work_dir, exist_ok=True)
    run = Run(check_settings(args.quick, args.device, args.gpu), args.out, args.time_limit, work_dir, command_line)
    run.say("bench.gpu_check: {}, at most {:g} min; results to {}, full output to {}".format(
        "self-test at tiny sizes (--quick)" if args.quick else "full sizes", args.time_limit, run.json_path,
        run.log_path))
    try:
        run.step(["Paddle"], lambda: environment_rows(run, environment()))
        run_check(run)
    except KeyboardInterrupt:
        run.add(make_row("run", FAILED, detail="interrupted (Ctrl-C); the rows above are what was measured"))
    except Exception as exc:  # noqa: BLE001  (the rows measured so far are still printed and saved)
        run.write_log("internal error:\n" + traceback.format_exc())
        run.add(make_row("run", FAILED, detail="internal error of bench.gpu_check: {} (traceback in the log)".format(
            exception_reason(exc))))
    finally:
        run.save()
        run.close()
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print()
    print(format_table(run.results))
    return exit_status(run.results)


if __name__ == "__main__":
    sys.exit(run_interruptible(main, lambda: "the report above covers the checks that finished; run it "
                                                  "again for all of them"))

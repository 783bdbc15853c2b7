"""bench/gpu_check.py without a GPU: the refusal, the table and JSON of a run, one-line reasons for
what fails, and the whole check as its CPU self-test (--device cpu --quick).

The recorded results below have the shape a GPU run produces; their numbers are made up for the
test and say nothing about any GPU.
"""
import json
import os
import subprocess
import sys
import time

import paddle
import psutil
import pytest

from bench import gpu_check
from bench.gpu_check import FAILED, INFO, PASSED, SKIPPED, UNSUPPORTED, make_row
from dataset.synthetic import make_synthetic
from tests.helpers import ROOT
from utils.files.weights import read_paddle_pickle

HAS_GPU = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0

# How Paddle reports a GPU out of memory: a Python exception whose text carries a C++ traceback,
# then a summary with the message on the line after the error's name.
PADDLE_OOM_STDERR = """\
Traceback (most recent call last):
  File "/home/user/AdaptSegNet/bench/gpu_check.py", line 220, in measure_training
    timings, _ = time_iterations(args, warmup, iterations, synchronize)
MemoryError:

--------------------------------------
C++ Traceback (most recent call last):
--------------------------------------
0   conv2d_ad_func(paddle::Tensor const&, paddle::Tensor const&, ...)
1   paddle::memory::allocation::CUDAAllocator::AllocateImpl(unsigned long)

----------------------
Error Message Summary:
----------------------
ResourceExhaustedError:

Out of memory error on GPU 0. Cannot allocate 256.000000MB memory on GPU 0, 15.620850GB memory has been \
allocated and available memory is only 153.375000MB.

Please check whether there is any other process using GPU 0.
1. If yes, please stop them, or start PaddlePaddle on another GPU.
2. If no, please decrease the batch size of your model.
 (at ../paddle/phi/core/memory/allocation/cuda_allocator.cc:84)
"""


def recorded_results(rows):
    return {"tool": "bench.gpu_check", "format": 1, "seconds": 201.4,
            "settings": {"device": "gpu", "gpu": 0, "quick": False},
            "environment": {"paddle_version": "2.6.1", "device_name": "Tesla V100-SXM2-16GB", "cuda": "11.8"},
            "rows": rows, "json_path": "/home/user/gpu_check.json", "log_path": "/home/user/gpu_check.log"}


def v100_rows():
    oom = gpu_check.failure_reason(PADDLE_OOM_STDERR)
    return [
        make_row("Paddle", INFO, "2.6.1", detail="commit fa1234567b; Python 3.10.10"),
        make_row("GPU 0", INFO, "Tesla V100-SXM2-16GB", detail="15.8 GiB of memory, compute capability 7.0"),
        make_row("train 1280x720+1024x512 batch 2, amp off", FAILED, detail=oom),
        make_row("train 1280x720+1024x512 batch 2, amp fp16", PASSED, 0.61234, "s/it",
                 detail="peak 9.5 GiB allocated, 10.2 GiB reserved of 15.8 GiB; data wait 0.004 s",
                 measured={"seconds": [0.61, 0.62, 0.61], "peak_allocated_bytes": 10200547328}),
        make_row("train 1280x720+1024x512 batch 2, amp bf16", UNSUPPORTED,
                 detail="Paddle has no bfloat16 on this GPU (compute capability 7.0); bf16 needs 8.0 or newer"),
        make_row("eval argmax agreement (dygraph vs Inference)", FAILED, 99.87, "%",
                 detail="99.9% required; 3 images at 2048x1024"),
        make_row("script: train 3 iterations", PASSED, 31.04, "s", detail="wrote snapshot GTA5_3"),
        make_row("script: --continue-train to 6", FAILED, 12.5, "s", detail="error: the run cannot\ncontinue"),
        make_row("script: evaluate_cityscapes.py on the snapshots", SKIPPED,
                 detail="needs the step before it, which FAILED"),
    ]


def test_refuses_to_run_without_a_gpu(tmp_path):
    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    stderr = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert result.stdout == b""  # no table: nothing ran
    assert stderr[-1].startswith("bench.gpu_check needs a GPU: ")
    assert "paddlepaddle-gpu" in stderr[-1] and "--device cpu --quick" in stderr[-1]
    assert not out.exists() and not (tmp_path / "gpu_check.log").exists()


def test_refusal_says_what_is_missing():
    assert "built without CUDA" in gpu_check.gpu_refusal(False, 0, 0, "3.3.1")
    assert "sees no GPU" in gpu_check.gpu_refusal(True, 0, 0)
    assert "--gpu 2 but 1 GPU(s) are visible" in gpu_check.gpu_refusal(True, 1, 2)
    assert gpu_check.gpu_refusal(True, 2, 1) is None


def test_cpu_needs_quick():
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--device", "cpu"])
    assert gpu_check.parse_args(["--device", "cpu", "--quick"]).quick


def test_table_has_one_line_per_row_and_failures_in_one_line():
    results = recorded_results(v100_rows())
    table = gpu_check.format_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("bench.gpu_check on Tesla V100-SXM2-16GB: Paddle 2.6.1")
    assert sum(line.split()[:4] == ["check", "status", "result", "detail"] for line in lines) == 1
    for row in results["rows"]:
        matching = [line for line in lines if line.startswith(row["check"] + " ")]
        assert len(matching) == 1, row["check"]
        assert row["status"] in matching[0].split()
        assert len(matching[0]) <= 48 + 2 + 11 + 2 + 24 + 2 + gpu_check.DETAIL_WIDTH  # the detail is cut short
    by_check = {line.split("  ")[0]: line for line in lines}
    oom = by_check["train 1280x720+1024x512 batch 2, amp off"]
    assert "FAILED" in oom and "ResourceExhaustedError: Out of memory error on GPU 0." in oom
    assert oom.endswith("...")  # the full reason is in the JSON
    assert "0.612 s/it" in by_check["train 1280x720+1024x512 batch 2, amp fp16"]
    assert "99.870 %" in by_check["eval argmax agreement (dygraph vs Inference)"]
    assert "error: the run cannot continue" in by_check["script: --continue-train to 6"]
    assert "31.0 s" in by_check["script: train 3 iterations"]
    assert lines[-3] == "2 PASSED, 3 FAILED, 1 UNSUPPORTED, 1 SKIPPED in 201 s"
    assert lines[-2:] == ["results: /home/user/gpu_check.json",
                          "log (full output, tracebacks): /home/user/gpu_check.log"]


def test_json_holds_every_row_and_what_was_measured(tmp_path):
    results = recorded_results(v100_rows() + [make_row("eval 1024x512 dynamic graph", PASSED, float("nan"),
                                                       "s/image")])
    gpu_check.save_json(str(tmp_path / "gpu_check.json"), results)
    loaded = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [row["check"] for row in loaded["rows"]] == [row["check"] for row in results["rows"]]
    fp16 = loaded["rows"][3]
    assert fp16["value"] == 0.61234 and fp16["measured"]["peak_allocated_bytes"] == 10200547328
    assert loaded["rows"][2]["detail"].startswith("ResourceExhaustedError: Out of memory error on GPU 0. Cannot")
    assert loaded["rows"][-1]["value"] is None  # NaN is not JSON
    assert loaded["environment"]["device_name"] == "Tesla V100-SXM2-16GB"


def test_exit_status_is_1_only_when_a_row_failed():
    rows = v100_rows()
    assert gpu_check.exit_status(recorded_results(rows)) == 1
    assert gpu_check.exit_status(recorded_results([r for r in rows if r["status"] != FAILED])) == 0


@pytest.mark.parametrize("stderr, reason", [
    (PADDLE_OOM_STDERR, "ResourceExhaustedError: Out of memory error on GPU 0. Cannot allocate 256.000000MB"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: --amp bf16: this GPU or Paddle "
     "build does not support bfloat16\n", "ValueError: --amp bf16: this GPU or Paddle build"),
    ("usage: train_gta2cityscapes_multi.py [-h]\ntrain_gta2cityscapes_multi.py: error: unrecognized arguments: "
     "--amp fp16\n", "train_gta2cityscapes_multi.py: error: unrecognized arguments: --amp fp16"),
    ("training:  33%|###    | 1/3 [00:05<00:10]\rtraining:  67%|######  | 2/3\nerror: checkpoint directory /x is "
     "not writable\n", "error: checkpoint directory /x is not writable"),
    ("--device gpu: this Paddle has no CUDA support; install paddlepaddle-gpu\n", "--device gpu: this Paddle"),
])
def test_failure_reason_is_the_line_that_says_what_went_wrong(stderr, reason):
    found = gpu_check.failure_reason(stderr)
    assert found.startswith(reason)
    assert "\n" not in found and len(found) <= 300


def test_failure_reason_without_an_error_line_names_the_signal():
    assert gpu_check.failure_reason("", -9).startswith("killed by SIGKILL (out of host memory?")
    assert gpu_check.failure_reason("resumed from GTA5_3\n", -11) == "killed by SIGSEGV"
    assert gpu_check.failure_reason("  \n", 3) == "exit status 3 and no output"


@pytest.fixture
def run(tmp_path):
    settings = gpu_check.check_settings(quick=True, device="cpu", gpu_id=0)
    run = gpu_check.Run(settings, str(tmp_path / "gpu_check.json"), 10, str(tmp_path), "python -m bench.gpu_check")
    yield run
    run.close()


def test_a_process_that_hangs_is_stopped_with_its_children(run):
    # The child starts a grandchild, as a trainer starts its data-loader workers.
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(61.5)']);"
            "print('started', flush=True); time.sleep(60)")
    started = time.time()
    status, out, _, _, stopped = run.run("hangs", [sys.executable, "-c", code], cap=3)
    assert status is None and stopped == "took longer than its allowance of 3 s"
    assert time.time() - started < 30 and out.strip() == "started"
    time.sleep(0.5)

    def grandchild(process):
        try:
            return "time.sleep(61.5)" in " ".join(process.cmdline())
        except psutil.Error:
            return False

    assert not [p for p in psutil.process_iter() if grandchild(p)]


def test_a_failing_measurement_becomes_failed_rows_and_the_run_goes_on(run, tmp_path):
    checks = gpu_check.evaluation_checks(run)
    run.step(checks, gpu_check.evaluation_step, run, str(tmp_path / "no data here"))
    rows = run.results["rows"]
    assert [row["check"] for row in rows] == list(checks)
    assert all(row["status"] == FAILED for row in rows)
    assert "cityscapesDataSet" in rows[0]["detail"] and "\n" not in rows[0]["detail"]
    with open(run.log_path) as f:
        assert "Traceback" in f.read()  # the full story is in the log
    assert json.loads(open(run.json_path).read())["rows"] == rows


def test_a_training_configuration_the_script_refuses_fails_with_its_message(run, tmp_path):
    make_synthetic(str(tmp_path / "data"), num_source=2, num_target_train=2, num_target_val=1)
    spec = dict(data_root=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), batch_size=1, amp="fp16",
                source_size=(48, 32), target_size=(48, 32), device="cpu", gpu_id=0, warmup=0, iterations=1,
                num_workers=0)
    with pytest.raises(gpu_check.StepFailed, match=r"^ValueError: --amp fp16: .*CUDA"):
        run.worker("train fp16 on a CPU", "train", spec, cap=120)


@pytest.mark.slow
def test_quick_self_test_on_the_cpu_runs_every_step(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--quick", "--out", str(out),
                             "--work-dir", str(tmp_path / "work")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=600)
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-4000:]
    results = json.loads(out.read_text())
    statuses = {row["check"]: row["status"] for row in results["rows"]}
    expected = ["synthetic data", "smoke test (matmul, convolution)", "train 128x72+128x64 batch 2, amp off",
                "train 128x72+128x64 batch 1, amp off", "train 128x72+128x64 batch 1, amp off, ADVENT",
                "eval 128x64 dynamic graph", "eval 128x64 Paddle Inference",
                "eval argmax agreement (dygraph vs Inference)", "script: train 1 iterations",
                "script: --continue-train to 2", "script: evaluate_cityscapes.py on the snapshots",
                "script: train_weak_labels.py, category-wise alignment", "script: two processes (distributed.launch)"]
    assert {check: statuses.get(check) for check in expected} == dict.fromkeys(expected, PASSED)
    assert statuses["train 128x72+128x64 batch 2, amp fp16"] == SKIPPED
    assert statuses["train 128x72+128x64 batch 2, amp off --cudnn-exhaustive-search"] == SKIPPED
    trained = next(row for row in results["rows"] if row["check"] == "train 128x72+128x64 batch 2, amp off")
    assert "(estimate " in trained["detail"] and trained["measured"]["estimated_bytes"] > 0
    estimates = {row["check"]: row["measured"]["estimated_bytes"] for row in results["rows"]
                 if row["check"].startswith("train 128x72+128x64 batch 1")}
    # ADVENT's batch 1: AdaptSegNet's passes with batch statistics in BN, plus its entropy maps
    assert estimates["train 128x72+128x64 batch 1, amp off, ADVENT"] > estimates["train 128x72+128x64 batch 1, amp off"]
    table = output[output.index("bench.gpu_check on "):]
    assert output.count("bench.gpu_check on ") == 1 and table.rstrip().endswith(str(tmp_path / "check.log"))
    assert "13 PASSED, 0 FAILED, 3 SKIPPED" in table
    # --quick's processes built the self-test network (this module's own processes do not: conftest)
    state = read_paddle_pickle(os.path.join(str(tmp_path / "work" / "snapshots"), "GTA5_2_state.pdopt"))
    assert state["extra"]["environment"]["self_test_network"] is True

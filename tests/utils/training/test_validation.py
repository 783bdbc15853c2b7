"""--val: every snapshot scored on the target's val set while training, as evaluate_cityscapes.py
scores it and into the same cache; the best kept; the training itself untouched."""
import filecmp
import functools
import json
import os
import subprocess

import pytest

import train_gta2cityscapes_multi as train
from tests.helpers import ROOT, assert_same_snapshot, logged_losses, script_command, training_args
from utils.evaluation.validation import validation_backend
from utils.files.snapshots import SnapshotDir
from utils.training.session import ValidationFailed

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network
SYNTHETIC_DATA = dict(num_source=6, num_target_train=5, num_target_val=3)
run_args = functools.partial(training_args, batch_size=2, mirror=True, workers=2, continue_train=True)


def val_records(snapshot_dir):
    with open(os.path.join(str(snapshot_dir), "metrics.jsonl")) as f:
        return {r["step"]: r["scalars"] for r in map(json.loads, f) if "val/mIoU" in r["scalars"]}


@pytest.fixture(scope="module")
def validated_run(data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("validated")
    train.main(run_args(data, run_dir, 4, "--val"))
    return str(run_dir)


def test_every_snapshot_is_scored_logged_cached_and_the_best_kept(validated_run):
    records = val_records(validated_run)
    assert sorted(records) == [2, 4]
    for scalars in records.values():
        assert 0.0 <= scalars["val/mIoU"] <= 1.0 and "val/IoU_road" in scalars
    best = max(records, key=lambda step: (records[step]["val/mIoU"], -step))
    assert filecmp.cmp(os.path.join(validated_run, "GTA5_best.pdparams"),
                       os.path.join(validated_run, "GTA5_{}.pdparams".format(best)), shallow=False)
    for step in (2, 4):
        with open(os.path.join(validated_run, "GTA5_{}.eval.json".format(step))) as f:
            assert json.load(f)["mIoU"] == pytest.approx(records[step]["val/mIoU"], rel=1e-12)
    with open(os.path.join(validated_run, "train.log")) as f:
        assert "iter 4 val mIoU" in f.read()


def test_directory_evaluation_reuses_the_scores_and_agrees(data, validated_run):
    result = subprocess.run(script_command(os.path.join(ROOT, "evaluate_cityscapes.py"), "--restore-from",
                                           validated_run, "--data-dir", data[1], "--input-size", "48,32", "--device",
                                           "cpu"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:]
    assert output.count("(cached in") == 2 and "GTA5_2.pdparams: mIoU" in output
    records = val_records(validated_run)
    for step, scalars in records.items():
        assert "{}\t{:.2f}".format(step, scalars["val/mIoU"] * 100) in output


def test_validation_changes_nothing_of_the_training(data, validated_run, tmp_path):
    train.main(run_args(data, tmp_path, 4))
    assert_same_snapshot(validated_run, str(tmp_path), 4)
    losses = [(step, scalars) for step, scalars in logged_losses(validated_run) if scalars]  # not val records
    assert losses == logged_losses(str(tmp_path))


def test_a_resumed_validated_run_equals_the_uninterrupted_one_and_keeps_its_best(data, validated_run, tmp_path):
    train.main(run_args(data, tmp_path, 2, "--val", "--val-backend", "dygraph"))
    first_best = open(os.path.join(str(tmp_path), "GTA5_best.pdparams"), "rb").read()
    train.main(run_args(data, tmp_path, 4, "--val", "--val-backend", "dygraph"))
    assert_same_snapshot(validated_run, str(tmp_path), 4)
    records, straight = val_records(tmp_path), val_records(validated_run)
    assert sorted(records) == [2, 4]
    for step in records:  # the dynamic graph and Paddle Inference agree on these scores
        assert records[step]["val/mIoU"] == pytest.approx(straight[step]["val/mIoU"], abs=1e-6)
    best_path = os.path.join(str(tmp_path), "GTA5_best.pdparams")
    if records[4]["val/mIoU"] > records[2]["val/mIoU"]:
        assert filecmp.cmp(best_path, os.path.join(str(tmp_path), "GTA5_4.pdparams"), shallow=False)
    else:  # the continuation compared with the best of the first session, and kept it
        assert open(best_path, "rb").read() == first_best


def test_val_list_needs_val(data, tmp_path):
    with pytest.raises(SystemExit):
        train.main(run_args(data, tmp_path, 2, "--val-list", "list.txt"))


OUT_OF_MEMORY = "ResourceExhaustedError: \n\nOut of memory error on GPU 0. Cannot allocate 1.2 GB memory on GPU 0"


def failing_once(monkeypatch):
    """evaluate() runs out of memory the first time validation calls it."""
    import utils.evaluation.validation as validation
    real, calls = validation.evaluate, []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError(OUT_OF_MEMORY)
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, "evaluate", evaluate)
    return calls


def test_a_failed_validation_costs_no_snapshot_and_the_run_goes_on(data, tmp_path, monkeypatch):
    calls = failing_once(monkeypatch)
    assert train.main(run_args(data, tmp_path, 4, "--val")) == 0
    assert len(calls) == 2
    assert SnapshotDir(str(tmp_path)).complete() == [2, 4]
    with open(os.path.join(str(tmp_path), "train.log")) as f:
        log = f.read()
    assert "validation of GTA5_2 failed: MemoryError: Out of memory error on GPU 0. Cannot allocate 1.2 GB" in log
    assert "the snapshot is written all the same" in log
    assert sorted(val_records(tmp_path)) == [4]


def test_with_val_on_error_stop_the_run_stops_with_its_snapshot_complete(data, tmp_path, monkeypatch):
    failing_once(monkeypatch)
    with pytest.raises(ValidationFailed, match="validation of GTA5_2 failed.*snapshot GTA5_2 is complete"):
        train.main(run_args(data, tmp_path, 4, "--val", "--val-on-error", "stop"))
    assert SnapshotDir(str(tmp_path)).complete() == [2]
    assert train.main(run_args(data, tmp_path, 4, "--val", "--val-on-error", "stop")) == 0
    assert SnapshotDir(str(tmp_path)).complete() == [2, 4]


def test_validation_backend_follows_the_device():
    assert validation_backend("auto", use_gpu=False) == "inference"
    assert validation_backend("auto", use_gpu=True) == "dygraph"
    assert validation_backend("inference", use_gpu=True) == "inference"

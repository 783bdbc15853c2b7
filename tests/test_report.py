"""report.py on tiny synthetic runs (two seeds, a source-only baseline, an oracle): its numbers
against an independent computation from the files, its plots, its one-line refusals; and the
environment every run records."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import report
import train_gta2cityscapes_multi as train
from tests.helpers import training_args
from utils import health
from utils.environment import FIELDS
from utils.files.weights import read_paddle_pickle
from utils.report.plots import SIZE

SELF_TEST_NETWORK = True  # utils/runtime.py: what is tested is not the network

SYNTHETIC_DATA = dict(num_source=4, num_target_train=2, num_target_val=2)
STOP = 4
VAL = ("--val", "--val-backend", "dygraph")  # at 48x32 the dynamic graph scores faster than building a predictor


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """{name: run directory} of four tiny runs; all but the second seed validate while training (their
    scores cached by training), the second is scored by the report."""
    root = tmp_path_factory.mktemp("runs")
    source, cityscapes = data
    dirs = {name: str(root / name) for name in ("seed1", "seed2", "source_only", "oracle")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(health, "PINNED_FOR", 0)  # so that this tiny run breaks a rule: D sits at ln 2 from the start
        train.main(training_args(data, dirs["seed1"], STOP, "--random-seed", "1", *VAL))
    train.main(training_args(data, dirs["seed2"], STOP, "--random-seed", "2"))
    train.main(training_args(data, dirs["source_only"], STOP, "--source-only", *VAL))
    train.main(training_args((cityscapes, cityscapes), dirs["oracle"], STOP, "--source", "cityscapes",
                             "--source-only", *VAL))
    return dirs


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    status = report.main([runs["seed1"], runs["seed2"], "--baseline", runs["source_only"], "--oracle", runs["oracle"],
                          "--out", out, "--backend", "dygraph"])
    assert status == 0
    with open(os.path.join(out, "report.json")) as f:
        return out, json.load(f)


def cached_mious(directory):
    """{iteration: (mIoU, {class: IoU})} read straight off the cache files."""
    found = {}
    for path in glob.glob(os.path.join(directory, "*_*.eval.json")):
        with open(path) as f:
            record = json.load(f)
        found[record["iteration"]] = (record["mIoU"], record["IoU"])
    return found


def test_seed_statistics_match_the_cached_scores(runs, written):
    out, numbers = written
    seeds = [cached_mious(runs[name]) for name in ("seed1", "seed2")]
    assert all(sorted(s) == [2, 4] for s in seeds)
    best = [max(v[0] for v in s.values()) for s in seeds]
    last = [s[4][0] for s in seeds]
    group, = numbers["seed_groups"]
    assert group["runs"] == ["seed1", "seed2"] and group["seeds"] == [1, 2]
    assert group["best_mIoU"]["mean"] == pytest.approx(np.mean(best))
    assert group["best_mIoU"]["std"] == pytest.approx(np.std(best, ddof=1))
    assert group["last_mIoU"]["mean"] == pytest.approx(np.mean(last))
    assert group["last_mIoU"]["std"] == pytest.approx(np.std(last, ddof=1))
    for iteration in (2, 4):
        at = [s[iteration][0] for s in seeds]
        assert group["mIoU_at"][str(iteration)]["mean"] == pytest.approx(np.mean(at))
        assert group["mIoU_at"][str(iteration)]["std"] == pytest.approx(np.std(at, ddof=1))
    lower = ["seed1", "seed2"][int(np.lexsort(([1, 2], last))[0])]  # of two, the lower middle one
    assert group["median_seed_run"] == lower


def test_gains_and_share_of_the_gap_match_the_cached_scores(runs, written):
    out, numbers = written
    group = numbers["seed_groups"][0]
    adapted = cached_mious(runs[group["median_seed_run"]])[STOP]
    baseline, oracle = cached_mious(runs["source_only"])[STOP], cached_mious(runs["oracle"])[STOP]
    gap, = numbers["gap"]
    assert (gap["baseline"], gap["adapted"], gap["oracle"], gap["snapshot"]) == (
        "source_only", group["median_seed_run"], "oracle", "last")
    rows = {row["class"]: row for row in gap["rows"]}
    assert list(rows)[:-1] == list(adapted[1]) and list(rows)[-1] == "mIoU"
    checked = 0
    for name in list(adapted[1]) + ["mIoU"]:
        b, a, o = (s[0] if name == "mIoU" else s[1][name] for s in (baseline, adapted, oracle))
        row = rows[name]
        if b is None or a is None:
            assert row["gain"] is None
            continue
        assert (row["baseline"], row["adapted"], row["oracle"]) == pytest.approx((b, a, o))
        assert row["gain"] == pytest.approx(a - b)
        assert row["gap_closed"] == (pytest.approx((a - b) / (o - b)) if o is not None and o > b else None)
        checked += 1
    assert checked >= 2


def test_per_run_numbers_and_the_markdown(runs, written):
    out, numbers = written
    seed1 = numbers["runs"][0]
    scores = cached_mious(runs["seed1"])
    assert seed1["mIoU"] == {str(it): scores[it][0] for it in sorted(scores)}
    best = max(sorted(scores), key=lambda it: (scores[it][0], -it))
    assert seed1["best"]["iteration"] == best and seed1["last"]["iteration"] == STOP
    assert seed1["best"]["IoU"] == scores[best][1]
    assert seed1["recipe"] == "paddle-port" and seed1["differs_from_recipe"]["num_steps"]["value"] == 20
    assert seed1["environment"]["seed"] == 1 and not seed1["notes"][:0]
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    for heading in ("# Report on 2 runs", "## Seeds", "## What adaptation gained", "## Run `seed1`", "## Health rules"):
        assert heading in text
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 3 * 2 + 1 + 1 and all(os.path.exists(os.path.join(out, link)) for link in links)


def test_plots_have_their_size_and_are_not_blank(written):
    out, numbers = written
    paths = glob.glob(os.path.join(out, "*.png"))
    assert len(paths) == 8
    for path in paths:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        assert pixels.shape[1::-1] == SIZE, path
        drawn = np.any(pixels < 200, axis=2).mean()  # anything darker than the light grid
        assert 0.01 < drawn < 0.5, (path, drawn)
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, path


def test_every_run_records_its_environment_in_the_log_and_the_snapshot(runs):
    extra = read_paddle_pickle(os.path.join(runs["seed2"], "GTA5_4_state.pdopt"))["extra"]
    environment = extra["environment"]
    assert set(FIELDS) <= set(environment) and environment["seed"] == 2 and environment["ranks"] == 1
    assert environment["paddle"]["version"] and environment["device"]["kind"] == "cpu"
    with open(os.path.join(runs["seed2"], "train.log")) as f:
        assert "environment: " in f.read()


def test_training_warns_once_when_a_rule_breaks(runs):
    with open(os.path.join(runs["seed1"], "train.log")) as f:
        warnings = [line for line in f if line.startswith("health warning")]
    assert len(warnings) == 2  # D1 and D2, once each although both stay at ln 2 throughout
    assert "loss/D1" in warnings[0] and "loss/D2" in warnings[1]


def rewrite_state(directory, change):
    import paddle
    for path in glob.glob(os.path.join(directory, "*_state.pdopt")):
        state = read_paddle_pickle(path)
        change(state["extra"])
        paddle.save(state, path)


def test_a_run_from_before_environment_records_still_reports(runs, tmp_path):
    old = str(tmp_path / "old_run")
    shutil.copytree(runs["seed2"], old)
    rewrite_state(old, lambda extra: extra.pop("environment"))
    out = str(tmp_path / "report")
    assert report.main([old, "--out", out, "--no-plots", "--backend", "dygraph"]) == 0
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert "environment: not recorded" in text and "no environment record" in text


def test_what_cannot_be_reported_ends_in_one_line(runs, tmp_path):
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("hello")
    message = report.main([str(not_a_run), "--out", str(tmp_path / "a")])
    assert message.startswith("error: ") and "is not a run directory" in message and "\n" not in message

    unscorable = str(tmp_path / "unscorable")
    shutil.copytree(runs["seed2"], unscorable)
    for path in glob.glob(os.path.join(unscorable, "*.eval.json")):
        os.remove(path)
    rewrite_state(unscorable, lambda extra: extra["settings"].update(data_dir_target=str(tmp_path / "moved")))
    message = report.main([unscorable, "--out", str(tmp_path / "b")])
    assert message.startswith("error: ") and "no snapshot is scored" in message and "not there" in message
    assert "\n" not in message

    other_classes = str(tmp_path / "other_classes")
    shutil.copytree(runs["seed2"], other_classes)
    with open(os.path.join(other_classes, "class_set.json")) as f:
        record = json.load(f)
    record["names"], record["colours"] = record["names"][:16], record["colours"][:16]
    with open(os.path.join(other_classes, "class_set.json"), "w") as f:
        json.dump(record, f)
    message = report.main([runs["seed2"], other_classes, "--out", str(tmp_path / "c"), "--no-plots", "--backend",
                           "dygraph"])
    assert message.startswith("error: runs of different class sets") and "\n" not in message


def healthy_or_not(directory, broken):
    """A run directory from curves alone: metrics.jsonl, cached scores and the class record."""
    from tests.utils.test_health import END, healthy_curves, records_of
    curves = healthy_curves()
    if broken:
        curves["loss/D1"] = (curves["loss/D1"][0], [health.LN2] * len(curves["loss/D1"][0]))
    mious = curves.pop(health.MIOU)
    os.makedirs(directory)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records_of(curves))
    names = ["road", "car"]
    for step, miou in zip(*mious):
        with open(os.path.join(directory, "GTA5_{}.eval.json".format(step)), "w") as f:
            json.dump({"mIoU": miou, "IoU": {"road": miou + 0.1, "car": miou - 0.1}, "iteration": step}, f)
    with open(os.path.join(directory, "class_set.json"), "w") as f:
        json.dump({"names": names, "colours": [[0, 0, 0], [1, 1, 1]]}, f)
    return END


def test_a_healthy_run_reports_no_health_problem_and_a_broken_one_its_ranges(tmp_path):
    healthy, broken = str(tmp_path / "healthy"), str(tmp_path / "broken")
    end = healthy_or_not(healthy, False)
    healthy_or_not(broken, True)
    out = str(tmp_path / "report")
    assert report.main([healthy, broken, "--out", out, "--no-plots", "--backend", "dygraph"]) == 0
    with open(os.path.join(out, "report.json")) as f:
        numbers = json.load(f)
    assert numbers["runs"][0]["health"] == []
    finding, = numbers["runs"][1]["health"]
    assert finding["rule"] == "discriminator_at_chance" and finding["ranges"] == [[10, end]]
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert text.count("No health rule is broken.") == 1
    assert "**discriminator_at_chance** (loss/D1, iterations 10-{})".format(end) in text
    assert "settings and environment are unknown" in text

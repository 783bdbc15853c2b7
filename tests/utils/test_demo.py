"""python -m utils.demo run a second time replaces its own output, and nothing else."""
import json
import os

import pytest

from utils import demo


def test_a_second_demo_replaces_the_first_but_not_a_foreign_folder(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(demo, "run", commands.append)
    out = tmp_path / "demo"
    for _ in range(2):
        demo.main(["--out", str(out), "--source", "synthia"])
        (out / "left_by_a_run.txt").write_text("x")
    assert len(commands) == 10 and commands[1][3] == "synthia" and commands[4][1] == "report.py"
    assert "SYNTHIA_6.pdparams" in commands[3][3]
    demo.main(["--out", str(out)])
    assert not (out / "left_by_a_run.txt").exists()  # the earlier demo's files went

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not written by the demo"):
        demo.main(["--out", str(foreign)])
    assert os.listdir(str(foreign)) == ["notes.txt"]


def test_the_custom_demo_trains_between_two_domains_of_its_own_and_scores_their_five_classes(tmp_path, capfd):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--source", "custom", "--iterations", "2"]) == 0
    with open(str(out / "predictions" / "mIoU.json")) as f:
        report = json.load(f)
    with open(str(out / "data" / "custom" / "classes.json")) as f:
        names = [entry["name"] for entry in json.load(f)["classes"]]
    assert list(report["IoU"]) == names and len(names) == 5 and report["classes"] == "5"
    output = capfd.readouterr().out
    assert "resumed from custom_1 at iteration 1" in output
    assert "environment: " in output and "self-test network" not in output  # the real network

"""python -m utils.demo run a second time replaces its own output, and nothing else."""
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
    assert len(commands) == 8 and commands[1][3] == "synthia"
    assert "SYNTHIA_6.pdparams" in commands[3][3]
    demo.main(["--out", str(out)])
    assert not (out / "left_by_a_run.txt").exists()  # the earlier demo's files went

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not written by the demo"):
        demo.main(["--out", str(foreign)])
    assert os.listdir(str(foreign)) == ["notes.txt"]

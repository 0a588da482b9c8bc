"""JSONL log (NaN as null, torn lines, truncation on resume, rank gating) and PNG plots."""

from __future__ import annotations

import json
import re

from ditr.engine.logging import JsonlLogger, plot_class_iou, plot_training_curves, read_jsonl


def test_jsonl_log(tmp_path):
    log = JsonlLogger(tmp_path / "m.jsonl")
    for step in range(1, 5):
        log.log({"kind": "train", "step": step, "loss": 1.0 / step})
    log.log({"kind": "val", "step": 4, "miou": 0.5, "iou": [0.5, float("nan")]})
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["iou"] == [0.5, None]
    with open(tmp_path / "m.jsonl", "a") as fh:
        fh.write('{"kind": "train", "st')  # torn last line from a crash
    assert len(read_jsonl(tmp_path / "m.jsonl")) == 5
    log.truncate_after(2)
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2]

    JsonlLogger(tmp_path / "other.jsonl", enabled=False).log({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_plots(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 2 / s, "loss/ce": 1 / s, "lr": 0.01 * s}
               for s in range(1, 6)]
    records += [{"kind": "val", "step": 5, "miou": 0.4}]
    for path in (plot_training_curves(records, tmp_path / "curves.png"),
                 plot_class_iou([0.5, None, 0.25], tmp_path / "iou.png", ["wall", "floor", "box"])):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "iou.png"]


def test_progress_bar_plain_lines_off_terminal(capsys):
    from ditr.engine.logging import ProgressBar

    with ProgressBar(3, enabled=True, plain_every_s=3600) as bar:
        bar.update(1, info="loss 1.0")  # first line is printed at once
        bar.update(1, info="loss 0.5")  # rate-limited
        bar.update(1, info="loss 0.2")  # the last step always prints
        bar.print("step 3: mIoU 50.00%")
    with ProgressBar(3, enabled=False) as quiet:
        quiet.update(3, info="loss 0.1")
        quiet.print("nothing")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1] == "step 3: mIoU 50.00%"
    assert re.fullmatch(r"train 1/3  loss 1\.0  \[elapsed 0:0\d, ETA 0:0\d\]", lines[0]), lines[0]
    assert re.fullmatch(r"train 3/3  loss 0\.2  \[elapsed 0:0\d, ETA 0:00\]", lines[1]), lines[1]


def test_progress_bar_tasks_side_by_side_with_eta(capsys, monkeypatch):
    """Tasks added to one bar (the demo's parallel runs) keep their own counts, clocks and line rate."""
    from ditr.engine import logging as log

    clock = [100.0]
    monkeypatch.setattr(log.time, "monotonic", lambda: clock[0])
    with log.ProgressBar(enabled=True, plain_every_s=20) as bar:
        a = bar.add_task("train 3D-only", 400, completed=100)  # a resumed run: its ETA counts new steps only
        b = bar.add_task("train DITR", 400)
        clock[0] += 30
        bar.update(task=a, completed=200, info="loss 0.5")
        bar.update(task=b, completed=50, info="loss 1.0")
        clock[0] += 10
        bar.update(task=b, completed=60, info="loss 0.9")  # within 20 s of its last line: not printed
    assert capsys.readouterr().err.splitlines() == [
        "train 3D-only 200/400  loss 0.5  [elapsed 0:30, ETA 1:00]",
        "train DITR 50/400  loss 1.0  [elapsed 0:30, ETA 3:30]"]


def test_format_duration():
    from ditr.engine.logging import format_duration

    assert [format_duration(s) for s in (0, 59.6, 61, 3600 + 62)] == ["0:00", "1:00", "1:01", "1:01:02"]

"""Damaged and half-written training states: no silent start over, no temporary files left forever, a
rotation that works when ``last.pt`` and ``last.prev.pt`` are one file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ditr.engine.checkpoint import LAST, PREV, CheckpointManager, TrainingStateError, _link_or_copy, load_training_state
from ditr.fileio import atomic_write_bytes, clean_stale_temporaries
from test_engine_trainer import make_trainer


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_all_checkpoints_damaged_refuses_to_start_over_without_restart(tmp_path):
    """Before: both files renamed *.damaged and a rerun silently started from step 0."""
    run = tmp_path / "run"
    make_trainer(run, epochs=1, val=False).fit()
    for name in (LAST, PREV):
        (run / name).write_bytes((run / name).read_bytes()[:100])
    damaged = {name: (run / name).read_bytes() for name in (LAST, PREV)}
    for _ in range(2):  # and again: the rerun must refuse just the same
        with pytest.raises(TrainingStateError) as info:
            make_trainer(run, epochs=1, val=False).fit()
        message = str(info.value)
        assert "\n" not in message and "--restart" in message and LAST in message and PREV in message
        assert {name: (run / name).read_bytes() for name in (LAST, PREV)} == damaged  # kept under their names
        assert not list(run.glob("*.damaged"))
    trainer = make_trainer(run, epochs=1, val=False)
    with pytest.warns(UserWarning, match="starting over"):
        trainer.fit(restart=True)
    assert load_training_state(run / LAST)["step"] == trainer.step > 0


def test_restart_reaches_the_command_line(tmp_path, capsys):
    from ditr.cli import build_parser

    for command in ("train", "distill"):
        args = build_parser().parse_args([command, "synthetic", "--restart"])
        assert args.restart is True


def test_stale_temporaries_are_cleaned_and_only_ours(tmp_path):
    dead = dead_pid()
    stale = [tmp_path / f".last.pt.{dead}.ab_cd123.tmp", tmp_path / f".best.pt.{dead}.{'0' * 32}.tmp"]
    old = tmp_path / ".last.pt.k2j4h5g6.tmp"  # an older ditr's name (no pid), written before this process
    keep = [tmp_path / f".last.pt.{os.getpid()}.abcdefgh.tmp",  # our own write in progress
            tmp_path / f".last.pt.{os.getppid()}.abcdefgh.tmp",  # a live writer
            tmp_path / ".notes.tmp", tmp_path / "last.pt.tmp", tmp_path / f".x.{dead}.toolongname1.tmp"]
    for path in [*stale, old, *keep]:
        path.write_bytes(b"partial")
    past = time.time() - 3600
    os.utime(old, (past, past))
    fresh_old_style = tmp_path / ".prev.pt.zzzzzzzz.tmp"
    fresh_old_style.write_bytes(b"x")
    os.utime(fresh_old_style, (time.time() + 60, time.time() + 60))  # newer than this process: maybe live
    (tmp_path / f".folder.{dead}.abcdefgh.tmp").mkdir()
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([*stale, old])
    assert all(p.exists() for p in keep) and fresh_old_style.exists()


def test_a_run_cleans_temporaries_of_interrupted_writes_at_its_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / f".last.pt.{dead_pid()}.abcdefgh.tmp"
    stale.write_bytes(b"x" * 1000)
    with pytest.warns(UserWarning, match="removed 1 temporary"):
        make_trainer(run, epochs=1, val=False).fit()
    assert not stale.exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_atomic_writes_name_their_writer(tmp_path, monkeypatch):
    seen = []

    def replace(src, dst):
        seen.append(os.path.basename(src))
        raise OSError("stop")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert seen[0].startswith(f".x.bin.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_rotation_onto_a_hard_link_of_the_same_file(tmp_path):
    """``last.prev.pt`` already a hard link of ``last.pt`` (a save failed after the rotation): renaming one
    link onto another does nothing, which left the temporary link behind on every save before."""
    manager = CheckpointManager(tmp_path)
    manager.save({"step": 1})
    os.link(manager.last, manager.prev)
    _link_or_copy(manager.last, manager.prev)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, PREV])
    manager.save({"step": 2})
    assert load_training_state(manager.prev)["step"] == 1 and load_training_state(manager.last)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LAST, PREV])


def test_a_damaged_last_is_not_rotated_over_a_good_prev(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save({"step": 1})
    manager.save({"step": 2})
    manager.last.write_bytes(b"damaged")
    with pytest.warns(UserWarning, match="damaged"):
        path, state = manager.load_resume()
    assert path == manager.prev and state["step"] == 1
    manager.save({"step": 3})
    assert load_training_state(manager.prev)["step"] == 1 and load_training_state(manager.last)["step"] == 3
    manager.save({"step": 4})
    assert load_training_state(manager.prev)["step"] == 3

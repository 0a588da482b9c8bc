"""A full disk and a closed pipe: one clean line (or quiet) from the command line, never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ditr.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def full_disk(monkeypatch):
    """Every write that reaches the disk's fsync or NumPy's writer fails with ENOSPC."""
    monkeypatch.setattr(os, "fsync", _full)
    monkeypatch.setattr(np, "save", _full)
    monkeypatch.setattr(np.lib.format, "write_array", _full)


def test_full_disk_is_one_line_in_synth(tmp_path, full_disk, capsys):
    code = main(["synth", str(tmp_path / "rooms"), "--points", "2000", "--views", "1", "--width", "32",
                 "--height", "24"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if "error" in line]  # besides the progress line
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in err


def test_full_disk_names_the_file_of_an_atomic_write(tmp_path, full_disk, capsys, monkeypatch):
    from ditr.fileio import atomic_write_json

    def command(args):
        atomic_write_json(tmp_path / "summary.json", {"a": 1})
        return 0

    import ditr.commands.info as info

    monkeypatch.setattr(info, "run", command)
    assert main(["info", "whatever"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "summary.json" in err[0] and "no space left" in err[0]
    assert not list(tmp_path.iterdir()), "temporary file left behind"


def test_other_os_errors_still_propagate(monkeypatch):
    import ditr.commands.info as info

    def command(args):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(info, "run", command)
    with pytest.raises(OSError, match="I/O error"):
        main(["info", "whatever"])


def test_closed_pipe_ends_quietly():
    """``ditr models --json | head -c0``: the reader is gone before the first line is written."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = ("import sys, ditr.cli as c\n"
            "import ditr.commands.models as m\n"
            "def run(args):\n"
            "    for i in range(100000):\n"
            "        print('x' * 100)\n"
            "    return 0\n"
            "m.run = run\n"
            "sys.exit(c.main(['models']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away at once
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode in (0, 141), err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_full_disk_is_one_line_in_export_and_predict(tmp_path, monkeypatch, capsys):
    import torch

    from ditr.build import model_from_config
    from ditr.configs import load_preset
    from ditr.engine.checkpoint import save_training_state
    from ditr.scene import Scene
    from conftest import wall_and_box_scene

    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    model = save_training_state(tmp_path / "m.pt", {"model": model_from_config(config).state_dict(),
                                                    "config": config.to_dict(), "step": 0})
    scene: Scene = wall_and_box_scene()
    scene.save(tmp_path / "scene")
    monkeypatch.setattr(os, "fsync", _full)
    monkeypatch.setattr(np, "save", _full)
    monkeypatch.setattr(np.lib.format, "write_array", _full)
    for argv in (["export", str(model), str(tmp_path / "m.ditr")],
                 ["predict", str(model), str(tmp_path / "scene"), "--out", str(tmp_path / "pred"), "--quiet",
                  "--device", "cpu", "--render-views", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if "error" in line]
        assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in err, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

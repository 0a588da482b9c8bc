"""Hostile input to ``ditr predict``: views that see nothing, a reused ``--out``, a stored config that asks
for downloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ditr.predict as predict_module
from ditr.build import model_from_config
from ditr.cli import main
from ditr.configs import load_preset
from ditr.engine.checkpoint import save_training_state
from ditr.scene import Scene
from ditr.viz.render import _first_per_cell
from conftest import look_at, small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory.mktemp("hostile_predict"))


@pytest.fixture(scope="module")
def ditr_model(world, tmp_path_factory):
    _, _, vfm = world
    config = load_preset(["synthetic", "method/ditr"], [f"model.image_channels={vfm['feature_dim']}"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "ditr.pt"
    save_training_state(path, {"model": model_from_config(config).state_dict(), "config": config.to_dict(),
                               "step": 0})
    return path


def predict(model: Path, scene: Path, out: Path, *args: str) -> int:
    return main(["predict", str(model), str(scene), "--out", str(out), "--device", "cpu", "--quiet", *args])


def test_first_per_cell_of_nothing_is_empty():
    cells, rows = _first_per_cell(np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert cells.shape == (0,) and rows.shape == (0,)


def test_no_camera_sees_the_scene_warns_and_renders_empty(world, ditr_model, tmp_path, capsys):
    """Every view looks away (IndexError in _first_per_cell before): a warning per view, renders, exit 0."""
    _, rooms, _ = world
    scene = Scene.load(rooms[0])
    away = [dataclasses.replace(v, cam_to_world=look_at([3, -50, 1.5], [3, -100, 1.5])) for v in scene.views]
    dataclasses.replace(scene, views=away).save(tmp_path / "away", image_format="png")
    out = tmp_path / "out"
    assert predict(ditr_model, tmp_path / "away", out, "--render-views", "2") == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["points_seen_by_camera"] == 0
    assert sum("sees no point" in w for w in summary["warnings"]) == 2
    assert "sees no point" in captured.err and "no camera sees" in captured.err
    assert len(list(out.glob("view_*.png"))) == 2
    assert np.load(out / "labels.npy").shape == (scene.num_points,)


def test_a_failing_run_leaves_a_reused_out_as_it_was(world, ditr_model, tmp_path, monkeypatch, capsys):
    """A run that fails while writing never leaves new labels beside an old summary (it did before)."""
    _, rooms, _ = world
    out = tmp_path / "out"
    assert predict(ditr_model, rooms[0], out, "--render-views", "1") == 0
    capsys.readouterr()
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr("ditr.viz.render.render_topdown", broken)
    with pytest.raises(RuntimeError, match="rendering failed"):
        predict(ditr_model, rooms[1], out, "--render-views", "1")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    monkeypatch.undo()
    # a successful rerun into the same folder replaces the whole prediction and keeps the user's file
    assert predict(ditr_model, rooms[1], out, "--render-views", "0") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scene"] == str(rooms[1]) and not list(out.glob("view_*.png"))
    assert (out / "notes.txt").read_text() == "mine"
    assert len(np.load(out / "labels.npy")) == summary["points"]
    assert predict_module.OUTPUT_FILES


def test_out_that_is_a_file_is_a_clean_error(world, ditr_model, tmp_path, capsys):
    _, rooms, _ = world
    (tmp_path / "out").write_text("x")
    assert predict(ditr_model, rooms[0], tmp_path / "out", "--render-views", "0") == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_stored_config_never_asks_for_downloads(tmp_path):
    """``vfm.download: true`` in a checkpoint's or bundle's config is ignored unless --download is given."""
    from ditr.model_files import read_model_file
    from ditr.published import LoadOptions

    config = load_preset(["synthetic", "method/ditr"], ["vfm.download=true"])
    path = save_training_state(tmp_path / "stored.pt", {"model": {}, "config": config.to_dict(), "step": 0})
    assert read_model_file(path).run_config().vfm.download is False
    assert read_model_file(path, LoadOptions(download=True)).run_config().vfm.download is True


def test_a_point_1000_km_away_is_a_clean_error(world, tmp_path, capsys):
    """A scene wider than the serialization codes hold (~3.3 km at 5 cm): one line naming the extent and
    the voxel size (a traceback from the model's serialization before)."""
    _, rooms, _ = world
    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    model = save_training_state(tmp_path / "ptv3.pt", {"model": model_from_config(config).state_dict(),
                                                      "config": config.to_dict(), "step": 0})
    scene = Scene.load(rooms[0])
    coord = scene.coord.copy()
    coord[0] = [1_000_000.0, 0.0, 0.0]
    dataclasses.replace(scene, coord=coord, views=[]).save(tmp_path / "far")
    assert predict(model, tmp_path / "far", tmp_path / "out", "--render-views", "0") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "1,000,00" in err and "voxels of" in err and " m" in err
    assert not (tmp_path / "out").exists()

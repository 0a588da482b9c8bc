"""Paths a checkpoint recorded at training are hints: found again after a move, never filled elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ditr.cli import main
from ditr.configs import load_preset
from ditr.errors import DitrError
from ditr.model_files import read_bundle
from ditr.stored_paths import TrainingPlace, strip_paths
from ditr.training import evaluate, train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A three-step DITR run trained in folder ``a`` (relative cache and run directory), then moved whole
    to ``b``; ``c`` is an unrelated folder to run commands from."""
    from ditr.io.synthetic import ensure_rooms
    from ditr.vfm.extract import fill_scene_features

    base = tmp_path_factory.mktemp("paths")
    root = base / "a"
    rooms = ensure_rooms(root / "rooms", 1, 0, points=2000, views=2)
    vfm = fill_scene_features(rooms, "dinov2-tiny-random-reg", root / "features")
    config = load_preset(["synthetic", "method/ditr"], [
        "vfm.cache=features", f"model.image_channels={vfm['feature_dim']}", "trainer.epochs=null",
        "trainer.max_steps=3", "trainer.batch_size=1", "trainer.eval_every_epochs=1000", "mix3d.p=0"])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        train(config, "runs/x", train_scenes=rooms, quiet=True)
    shutil.move(base / "a", base / "b")
    (base / "c").mkdir()
    return base


def files_under(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_a_moved_run_evaluates_from_another_folder(moved, monkeypatch, capsys):
    monkeypatch.chdir(moved / "c")
    b = moved / "b"
    assert main(["evaluate", str(b / "runs" / "x" / "last.pt"), str(b / "rooms" / "room_0000"),
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert 0.0 <= json.loads(out.strip().splitlines()[-1])["miou"] <= 1.0
    used = [line for line in err.splitlines() if "feature cache:" in line]
    assert len(used) == 1 and str(b / "features") in used[0] and "vfm.cache: features" in used[0]
    assert not (moved / "c" / "features").exists()


def test_info_says_where_the_recorded_paths_are(moved, capsys):
    b = moved / "b"
    assert main(["info", str(b / "runs" / "x" / "last.pt"), "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)["paths"]
    assert paths["vfm.cache"] == {"recorded": "features", "here": str(b / "features"),
                                  "how": "in the same place relative to the checkpoint as at training"}
    # the explicit scene list's folder is the recorded root (not the preset's data/synthetic)
    assert paths["dataset.root"]["recorded"] == str(moved / "a" / "rooms")
    assert paths["dataset.root"]["here"] == str(b / "rooms")
    assert main(["info", str(b / "runs" / "x" / "last.pt")]) == 0
    assert "recorded at training: features (found here at" in capsys.readouterr().out


def test_the_user_wins_and_a_missing_cache_is_one_line(moved, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(moved / "c")
    b = moved / "b"
    checkpoint, room = b / "runs" / "x" / "last.pt", b / "rooms" / "room_0000"
    mine = tmp_path / "mine"
    shutil.move(b / "features", mine)
    try:
        before = {d: files_under(d) for d in (moved, tmp_path)}
        with pytest.raises(DitrError) as err:
            evaluate(checkpoint, [room])
        message = str(err.value)
        assert "\n" not in message and "vfm.cache: features" in message and "--set vfm.cache=DIR" in message
        assert str(b / "features") in message and str(moved / "a" / "features") in message
        assert {d: files_under(d) for d in (moved, tmp_path)} == before  # nothing written anywhere
        capsys.readouterr()
        result = evaluate(checkpoint, [room], overrides=[f"vfm.cache={mine}"])
        assert 0.0 <= result.metrics["miou"] <= 1.0 and "feature cache:" not in capsys.readouterr().err
    finally:
        shutil.move(mine, b / "features")


def test_candidates_in_order():
    place = TrainingPlace(Path("/new/proj/runs/x/last.pt"), "/old/proj", "/old/proj/runs/x")
    assert [str(p) for p, _ in place.candidates("feats")] == [
        "/old/proj/feats", "/new/proj/feats", "/new/proj/runs/x/feats"]
    assert [str(p) for p, _ in place.candidates("/old/proj/feats")] == ["/old/proj/feats", "/new/proj/feats"]
    older = TrainingPlace(Path("/new/proj/runs/x/last.pt"), None, "runs/x")  # before the folder was recorded
    assert [str(p) for p, _ in older.candidates("feats")] == ["/new/proj/feats", "/new/proj/runs/x/feats"]


def test_bundles_carry_no_paths(moved, tmp_path):
    bundle = tmp_path / "model.ditr"
    assert main(["export", str(moved / "b" / "runs" / "x" / "last.pt"), str(bundle)]) == 0
    size = int.from_bytes(bundle.read_bytes()[:8], "little")  # the safetensors header: JSON of the metadata
    header = bundle.read_bytes()[8:8 + size].decode()
    for text in ("/tmp", str(moved), '\\"features\\"', "rooms", "runs/x", "last.pt"):
        assert text not in header, text
    _, config, record = read_bundle(bundle)
    assert config["vfm"]["cache"] is None and config["dataset"]["root"] is None and "paths" not in record


def test_strip_paths_reaches_sources_and_init():
    values = {"vfm": {"cache": "f", "checkpoint": "/w/vit.pth", "model": "m"},
              "dataset": {"root": "/d", "splits": {"train": "train", "val": "/d/val.txt", "test": ["/d/s1"]}},
              "init": {"path": "/r/last.pt", "source": "/r", "loaded": 3},
              "distill": {"datasets": ["scannet", {"vfm": {"cache": "/c2"}, "dataset": {"root": "/d2"}}]}}
    out = strip_paths(values)
    assert out["vfm"] == {"cache": None, "checkpoint": None, "model": "m"}
    assert out["dataset"] == {"root": None, "splits": {"train": "train", "val": None, "test": None}}
    assert out["init"] == {"loaded": 3}
    assert out["distill"]["datasets"] == ["scannet", {"vfm": {"cache": None}, "dataset": {"root": None}}]
    assert values["vfm"]["cache"] == "f"  # the input is left as it was

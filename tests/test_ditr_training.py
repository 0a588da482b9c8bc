"""DITR end to end: model wiring, overfitting one room, exact resume, the demo and ditr evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.build import build_model
from ditr.cli import main
from ditr.configs import RunConfig, load_preset
from ditr.data import SceneDataset, collate
from ditr.demo import DemoSettings, run_demo
from ditr.engine.logging import read_jsonl
from ditr.engine.trainer import Callback
from ditr.errors import DitrError
from ditr.io.synthetic import CLASS_NAMES
from ditr.model_files import load_model
from ditr.models.ditr import DITRSegmentor
from ditr.models.ptv3 import PTv3Segmentor
from ditr.training import evaluate, train
from conftest import NO_AUGMENTATION, small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small rooms with cached features of the tiny random DINOv2."""
    return small_world(tmp_path_factory.mktemp("ditr"))


def ditr_config(root, vfm, *extra: str) -> RunConfig:
    return load_preset(["synthetic", "method/ditr"], [
        f"vfm.cache={root / 'features'}", f"model.image_channels={vfm['feature_dim']}", "trainer.epochs=null",
        "trainer.batch_size=1", "trainer.eval_every_epochs=1000", "mix3d.p=0", *extra])


def test_build_model_variants():
    config = load_preset(["synthetic", "method/ditr"], ["model.image_channels=32"])
    model = build_model(config, in_channels=6, num_classes=15)
    assert isinstance(model, DITRSegmentor) and model.missing_embedding is None
    keys = model.state_dict().keys()
    assert {f"backbone.dec.dec{s}.up.proj_image_feat.1.weight" for s in range(4)} <= set(keys)  # reference names
    config.model.injection.stages, config.model.injection.missing = [0, 1], "learned"
    partial = build_model(config, in_channels=6, num_classes=15)
    assert "missing_embedding" in partial.state_dict()
    assert "backbone.dec.dec3.up.proj_image_feat.1.weight" not in partial.state_dict()
    assert "backbone.dec.dec1.up.proj_image_feat.1.weight" in partial.state_dict()
    plain = build_model(load_preset(["synthetic", "method/ptv3"]), in_channels=6, num_classes=15)
    assert type(plain) is PTv3Segmentor and not any("image" in k for k in plain.state_dict())
    with pytest.raises(DitrError, match="missing"):
        load_preset(["synthetic", "method/ditr"], ["model.injection.missing=sometimes"])


def test_image_features_reach_the_logits(world):
    root, rooms, vfm = world
    config = ditr_config(root, vfm)
    batch = collate([SceneDataset(rooms[:1], None, config, "val")[0]])
    model = build_model(config, in_channels=6, num_classes=15).eval()
    with torch.no_grad():
        base = model(batch)
        changed = model({**batch, "img_table": batch["img_table"] * 0 + 3.0})
    seen = batch["img_seen"]
    assert seen.any() and (~seen).any()
    assert (base - changed)[seen].abs().max() > 1e-3


def test_overfits_a_single_room(world):
    """DITR reaches >= 0.95 mIoU on one synthetic room in a few hundred steps."""
    root, rooms, vfm = world
    config = ditr_config(root, vfm, "trainer.max_steps=300", "optim.lr=0.01", NO_AUGMENTATION)
    train(config, root / "overfit", train_scenes=rooms[:1], quiet=True)
    result = evaluate(root / "overfit" / "last.pt", rooms[:1])
    assert result.metrics["miou"] >= 0.95, result.metrics
    # Test-time voting over every voxelisation fragment (this model never saw rotations, so the
    # preset's rotation / scale variants are left out here).
    voted = evaluate(root / "overfit" / "last.pt", rooms[:1], tta=True, overrides=["test_time.variants=[]"])
    assert voted.confusion.sum() == result.confusion.sum()  # every labelled point scored once
    assert voted.metrics["miou"] >= 0.9, voted.metrics


class Crash(Callback):
    def on_step_end(self, trainer, losses):
        if trainer.step == 3:
            raise RuntimeError("simulated crash")


def test_interrupted_training_resumes_to_the_same_step_count(world):
    root, rooms, vfm = world
    config = ditr_config(root, vfm, "trainer.max_steps=6", "trainer.checkpoint_every_steps=1")
    full = train(config, root / "full", train_scenes=rooms, quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, root / "crash", train_scenes=rooms, quiet=True, callbacks=[Crash()])
    resumed = train(config, root / "crash", train_scenes=rooms, quiet=True)
    assert resumed["step"] == full["step"] == 6
    steps = [r["step"] for r in read_jsonl(root / "crash" / "metrics.jsonl") if r.get("kind") == "train"]
    assert steps == sorted(steps) and steps[-1] == 6
    a = torch.load(root / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(root / "crash" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_demo_writes_results_and_pictures(tmp_path, capsys):
    settings = DemoSettings(train_rooms=2, val_rooms=1, test_rooms=1, points=2000, views=2, steps=4, batch_size=1,
                            distill_rooms=1, distill_views="mean")
    results = run_demo(tmp_path, settings, quiet=True, workers=2)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["runs"]) == ["3d-only", "ditr", "d-ditr"] and saved["seeds"] == [0]
    runs = tmp_path / "runs" / "seed_0"
    for method in ("3d-only", "ditr", "d-ditr"):
        run = saved["runs"][method]
        assert 0.0 <= run["miou"] <= 1.0 and list(run["iou"]) == list(CLASS_NAMES)  # fractions, by class name
        assert all(v is None or 0.0 <= v <= 1.0 for v in run["iou"].values())
        assert run["miou_per_seed"] == {"0": run["miou"]} and run["miou_std"] is None  # one seed: no spread
        assert run["seeds"]["0"]["steps"] == 4 and run["input_features"] == ["coord", "color", "normal"]
        val = [r for r in read_jsonl(runs / method / "metrics.jsonl") if r["kind"] == "val"]
        assert val and list(val[-1]["iou"]) == list(CLASS_NAMES) and 0.0 <= val[-1]["miou"] <= 1.0
        assert run["val_miou"] == pytest.approx(val[-1]["miou"])  # the settings are chosen on these rooms
    assert saved["runs"]["ditr"]["needs_images"] and not saved["runs"]["3d-only"]["needs_images"]
    assert saved["teachers"]["trained"]["model"] == "demo-vit-rooms"
    assert saved["teachers"]["trained"]["random_weights"] is False and saved["teachers"]["random"] is None
    assert saved["mode"] == "custom" and saved["workers"] == 2 and "one seed is not a result" in saved["note"]
    difference = saved["comparisons"]["ditr - 3d-only"]
    assert difference["mean"] == pytest.approx(saved["runs"]["ditr"]["miou"] - saved["runs"]["3d-only"]["miou"])
    assert difference["ci95"] == [None, None] and difference["seeds"] == [0]
    assert set(results["pictures"]) == {"per_class_iou", "training_curves", "predictions", "distillation"}
    rooms = saved["rooms"]["0"]
    assert rooms == {"train": ["room_0000", "room_0001"], "val": ["room_0002"], "test": ["room_0003"],
                     "unlabelled": ["room_0004"]}
    assert saved["prediction_view"]["room"] == "room_0003" and saved["prediction_view"]["visible_points"] > 0
    d_ditr = saved["runs"]["d-ditr"]["seeds"]["0"]
    assert not saved["runs"]["d-ditr"]["needs_images"] and -1.0 <= d_ditr["teacher_cosine"] <= 1.0
    # D-DITR pretraining also used the extra unlabelled room, for the fine-tuning's number of steps.
    assert d_ditr["distill_steps"] == 4 and d_ditr["distill_rooms"] == 3 and d_ditr["distill_views"] == "mean"
    for picture in results["pictures"].values():
        assert Path(picture).parent == tmp_path and Path(picture).stat().st_size > 10_000
    # Run again with another run added: the runs with a result are not trained again.
    stamps = {m: (runs / m / "result.json").stat().st_mtime_ns for m in ("3d-only", "ditr", "d-ditr")}
    again = run_demo(tmp_path, settings, quiet=True, workers=2, runs=["3d-only", "3d-geometry-only"])
    assert {m: (runs / m / "result.json").stat().st_mtime_ns for m in stamps} == stamps
    assert again["runs"]["3d-only"]["miou"] == saved["runs"]["3d-only"]["miou"]
    assert again["runs"]["3d-geometry-only"]["input_features"] == ["coord", "normal"]
    assert set(again["comparisons"]) == {"3d-only - 3d-geometry-only"}
    # A run made in a worker process equals the same run made here, after other work in this process.
    from ditr.demo.runs import train_run
    from ditr.demo.settings import RUNS, run_config

    room_dirs = sorted((tmp_path / "rooms" / "seed_0").glob("room_*"))
    config = run_config(RUNS["3d-only"], settings, tmp_path / "features", {}, saved["teachers"]["trained"]["precision"])
    train_run("3d-only", config, tmp_path / "here", room_dirs[:2], room_dirs[2:3])
    here = torch.load(tmp_path / "here" / "last.pt", weights_only=True)["model"]
    there = torch.load(runs / "3d-only" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(here[k], there[k]) for k in there)
    # The trained DITR model evaluates from the command line, reading the same feature cache.
    model, config = load_model(runs / "ditr" / "last.pt")
    assert isinstance(model, DITRSegmentor)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(runs / "ditr" / "last.pt"), str(room_dirs[3]),
                 "--out", str(out), "--plot", str(tmp_path / "iou.png"), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["miou"] == pytest.approx(saved["runs"]["ditr"]["miou"])
    written = json.loads(out.read_text())
    assert written["confusion"] and (tmp_path / "iou.png").is_file()
    assert list(written["iou"]) == list(CLASS_NAMES) and 0.0 <= written["miou"] <= 1.0
    assert {k: v for k, v in written["iou"].items() if v is not None} == pytest.approx(
        {k: v for k, v in saved["runs"]["ditr"]["iou"].items() if v is not None})


def test_online_vfm_gives_the_cached_features(world):
    """vfm.online runs the VFM inside the model; without colour jitter it must see what the cache holds."""
    root, rooms, vfm = world
    cached_cfg = ditr_config(root, vfm)
    online_cfg = ditr_config(root, vfm, "vfm.online=true", "vfm.cache=null")
    # the same generator: validation keeps a random point per voxel too
    cached = collate([SceneDataset(rooms[:1], None, cached_cfg, "val").get(0, np.random.default_rng(0))])
    online = collate([SceneDataset(rooms[:1], None, online_cfg, "val").get(0, np.random.default_rng(0))])
    assert "img_table" in cached and "images" in online and "img_table" not in online
    from ditr.build import model_from_config

    model = model_from_config(online_cfg).eval()
    assert model.vfm is not None
    with torch.no_grad():
        from_cache = model.image_features(cached)
        from_vfm = model.image_features(online)
    torch.testing.assert_close(from_vfm, from_cache, atol=2e-2, rtol=1e-2)  # the cache stores fp16
    with torch.no_grad():
        assert model(online).shape == (online["coord"].shape[0], 15)


def test_demo_runs_start_afresh_when_settings_change(tmp_path):
    from ditr.demo.pipeline import _reset_runs_if_settings_changed

    runs = tmp_path / "runs"
    _reset_runs_if_settings_changed(runs, DemoSettings(steps=4))
    (runs / "ditr").mkdir()
    _reset_runs_if_settings_changed(runs, DemoSettings(steps=4))
    assert (runs / "ditr").is_dir()  # same settings: the runs resume
    _reset_runs_if_settings_changed(runs, DemoSettings(steps=8))
    assert not (runs / "ditr").exists() and (runs / "settings.json").is_file()


def test_bad_engine_settings_are_one_line_errors(tmp_path, capsys):
    """A config value the engine rejects reaches the user as one line with exit status 2."""
    from ditr.io.synthetic import ensure_rooms

    ensure_rooms(tmp_path / "rooms", 2, 0, 2000, 2)
    common = ["train", "synthetic", "method/ptv3", f"dataset.root={tmp_path / 'rooms'}"]
    options = ["--quiet", "--work-dir", str(tmp_path / "run")]
    for override, message in [("trainer.amp=fp8", "trainer.amp: must be"),
                              ("trainer.max_steps=2", "needs at least 3 steps, got 2: set trainer.max_steps=3"),
                              ("trainer.batch_size=3", "set trainer.batch_size=2 or less")]:
        extra = [override, "trainer.epochs=null"] if "max_steps" in override else [override]
        assert main(common + extra + options) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

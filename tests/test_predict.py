"""ditr predict: chunk plans, normal estimation, whole-scene and chunked prediction, the output files."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData

from ditr.build import model_from_config
from ditr.cli import main
from ditr.configs import load_preset
from ditr.demo.settings import RUNS, DemoSettings, run_config
from ditr.engine.checkpoint import save_training_state
from ditr.errors import DitrError
from ditr.inference import Predictor
from ditr.model_files import load_model
from ditr.predict import PredictOptions, inference_config, plan_chunks
from ditr.scene import Scene
from ditr.training import train
from ditr.viz.viewer import viewer_payload, write_viewer
from conftest import look_at, small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small synthetic rooms (3000 points, 4 views) with cached tiny-random DINOv2 features."""
    return small_world(tmp_path_factory.mktemp("predict"))


def save_random_model(path: Path, presets: list[str], *overrides: str) -> Path:
    """A random-init model saved the way the trainer saves its state (config stored alongside)."""
    config = load_preset(presets, list(overrides))
    torch.manual_seed(0)
    save_training_state(path, {"model": model_from_config(config).state_dict(), "config": config.to_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def demo_model(world):
    """DITR trained as ``ditr demo`` trains it (its preset and settings), for 12 steps only."""
    root, rooms, vfm = world
    settings = DemoSettings(points=3000, views=4, steps=12, batch_size=1, teacher=vfm["model"])
    config = run_config(RUNS["ditr"], settings, root / "features", {vfm["model"]: vfm["feature_dim"]},
                        vfm["precision"])
    config.trainer.eval_every_epochs = 1000
    train(config, root / "demo_ditr", train_scenes=rooms, quiet=True)
    return root / "demo_ditr" / "last.pt"


def run_predict(capsys, checkpoint: Path, scene: Path, out: Path, *args: str) -> dict:
    assert main(["predict", str(checkpoint), str(scene), "--out", str(out), "--device", "cpu", "--quiet",
                 *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())
    return summary


def check_outputs(out: Path, num_points: int, num_classes: int, renders: int) -> np.ndarray:
    """The files of ditr predict exist and agree with each other; returns the labels."""
    labels = np.load(out / "labels.npy")
    assert labels.shape == (num_points,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < num_classes
    vertex = PlyData.read(str(out / "pred.ply"))["vertex"].data
    assert len(vertex) == num_points
    np.testing.assert_array_equal(vertex["label"], labels)
    assert {"x", "y", "z", "red", "green", "blue", "confidence"} <= set(vertex.dtype.names)
    classes = json.loads((out / "classes.json").read_text())
    counts = [c["points"] for c in classes["classes"]]
    assert len(counts) == num_classes and sum(counts) == num_points == classes["points"]
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=num_classes))
    for name in ("legend.png", "topdown.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list(out.glob("view_*.png"))) == renders
    return labels


# ------------------------------------------------------------------------------------------ planning
def test_chunk_plans_cover_everything_within_budget():
    rng = np.random.default_rng(0)
    counts = []
    for side in (4.0, 8.0, 16.0):  # the same density over growing floors
        n = int(400 * side * side)
        coord = np.concatenate([rng.uniform(0, side, (n, 2)), rng.uniform(0, 3, (n, 1))], 1)
        chunks = plan_chunks(coord, max_points=6000, overlap=0.5)
        assert all(len(c.members) <= 6000 for c in chunks)
        core = np.concatenate([c.members[c.weight == 1] for c in chunks])
        assert np.array_equal(np.unique(core), np.arange(len(coord)))  # every row in some core
        assert all(np.all(np.diff(c.members) > 0) for c in chunks)
        assert all(c.weight.min() >= 0 and c.weight.max() <= 1 for c in chunks)
        counts.append(len(chunks))
    assert counts[0] < counts[1] < counts[2], counts
    whole = plan_chunks(coord[:100], max_points=100, overlap=1.0)
    assert len(whole) == 1 and np.array_equal(whole[0].members, np.arange(100))
    dense = plan_chunks(np.zeros((500, 3)), max_points=100, overlap=1.0)  # no split can help: capped
    assert all(len(c.members) <= 100 for c in dense)
    with pytest.raises(DitrError, match="max_points"):
        plan_chunks(coord, 0, 1.0)


def test_chunk_plans_count_the_points_each_voxel_stands_for():
    rng = np.random.default_rng(2)
    coord = rng.uniform(0, 8, (4000, 3))
    points = rng.integers(1, 6, len(coord))  # scene points per voxel
    chunks = plan_chunks(coord, max_points=3000, overlap=0.5, points=points)
    assert all(points[c.members].sum() <= 3000 for c in chunks)
    core = np.concatenate([c.members[c.weight == 1] for c in chunks])
    assert np.array_equal(np.unique(core), np.arange(len(coord)))
    assert len(chunks) > len(plan_chunks(coord, max_points=3000, overlap=0.5))  # one point per voxel: fewer
    assert len(plan_chunks(coord, max_points=int(points.sum()), overlap=0.5, points=points)) == 1
    # a voxel of more points than the budget still gets its chunk
    single = plan_chunks(coord[:3], max_points=4, overlap=0.0, points=np.array([9, 1, 1]))
    assert np.array_equal(np.unique(np.concatenate([c.members for c in single])), np.arange(3))


# ------------------------------------------------------------------------------------------ synthetic rooms
def test_predict_room_with_views_writes_every_file(world, tmp_path, capsys):
    root, rooms, vfm = world
    ckpt = save_random_model(tmp_path / "ditr.pt", ["synthetic", "method/ditr"], f"vfm.cache={root / 'features'}",
                             f"model.image_channels={vfm['feature_dim']}")
    scene = Scene.load(rooms[0])
    out = tmp_path / "cached"
    summary = run_predict(capsys, ckpt, rooms[0], out, "--features", str(root / "features"), "--save-probs",
                          "--html")
    assert (out / "pred.html").stat().st_size > 10_000 and "pred.html" in summary["files"]
    labels = check_outputs(out, scene.num_points, 15, renders=3)
    # one chunk: exactly the evaluation forward (the stored config, the inference service)
    model, config = load_model(ckpt)
    np.testing.assert_array_equal(labels, Predictor(model, config).predict(rooms[0]).labels)
    assert summary["chunks"] == 1 and summary["views_used"] == 4 and summary["uses_images"]
    assert 0 < summary["points_seen_by_camera"] < scene.num_points
    assert summary["points_unseen"] == scene.num_points - summary["points_seen_by_camera"]
    assert summary["evaluation"]["scored"] and 0 <= summary["evaluation"]["miou"] <= 1
    iou = summary["evaluation"]["iou"]  # fractions by class name, in the model's class order
    assert list(iou) == config.dataset.class_names and all(v is None or 0 <= v <= 1 for v in iou.values())
    assert not summary["normals_estimated"] and not summary["warnings"]
    probs = np.load(out / "probs.npy")
    assert probs.shape == (scene.num_points, 15) and np.allclose(probs.sum(1), 1, atol=1e-2)
    # online VFM (the default) gives the same labels up to the cache's float16 rounding
    online = run_predict(capsys, ckpt, rooms[0], tmp_path / "online", "--render-views", "0", "--views", "2")
    assert online["image_features"].startswith("online") and online["views_used"] == 2
    assert not list((tmp_path / "online").glob("view_*.png"))


def test_chunked_prediction_agrees_and_covers_every_point(world, demo_model):
    root, rooms, _ = world
    whole_opts = PredictOptions(features=root / "features")
    model, config = load_model(demo_model, prepare=lambda c: inference_config(c, whole_opts))
    whole = Predictor(model, config).predict(rooms[0], whole_opts)
    assert whole.chunks == 1
    chunked = Predictor(model, config).predict(rooms[0], dataclasses.replace(whole_opts, max_points=whole.voxels // 3))
    assert chunked.chunks > 3 and chunked.labels.shape == whole.labels.shape
    assert (chunked.labels == whole.labels).mean() > 0.95  # measured 0.97 after 12 training steps
    assert np.allclose(chunked.probs.sum(1), 1, atol=1e-4)
    config.test_time.variants = config.test_time.variants[1:3]  # two of the preset's 13
    tta = Predictor(model, config).predict(rooms[0], dataclasses.replace(whole_opts, tta=True,
                                                                        max_points=whole.voxels // 2))
    assert tta.passes > 1 and tta.chunks >= 2 * tta.passes and np.allclose(tta.probs.sum(1), 1, atol=1e-4)
    assert (tta.labels == whole.labels).mean() > 0.6  # rotated variants of a barely trained model: 0.8 measured


def test_unseen_scenes_are_reported(world, tmp_path):
    root, rooms, vfm = world
    ckpt = save_random_model(tmp_path / "ditr.pt", ["synthetic", "method/ditr"],
                             f"model.image_channels={vfm['feature_dim']}")
    scene = Scene.load(rooms[0])
    away = [dataclasses.replace(v, cam_to_world=look_at([3, -50, 1.5], [3, -100, 1.5])) for v in scene.views]
    dataclasses.replace(scene, views=away).save(tmp_path / "away", image_format="png")
    dataclasses.replace(scene, views=[]).save(tmp_path / "blind")
    opts = PredictOptions()
    model, config = load_model(ckpt, prepare=lambda c: inference_config(c, opts))
    away_pred = Predictor(model, config).predict(tmp_path / "away", opts)
    assert away_pred.points_seen == 0 and any("no camera sees" in w for w in away_pred.warnings)
    blind = Predictor(model, config).predict(tmp_path / "blind", opts)
    assert blind.views == [] and any("no views" in w for w in blind.warnings)
    assert blind.labels.shape == (scene.num_points,)


def test_refuses_distillation_checkpoints_and_bad_options(world, tmp_path, capsys):
    root, rooms, _ = world
    student = save_random_model(tmp_path / "student.pt", ["synthetic", "method/d-ditr"], "distill.head_channels=32")
    assert main(["predict", str(student), str(rooms[0]), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "distillation checkpoint" in capsys.readouterr().err
    plain = save_random_model(tmp_path / "plain.pt", ["synthetic", "method/ptv3"])
    assert main(["predict", str(plain), str(rooms[0]), "--out", str(tmp_path / "o"), "--views", "some"]) == 2
    assert "--views" in capsys.readouterr().err
    assert main(["predict", str(plain), str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ ScanNet sample
def test_scannet_sample_image_free_model(scannet_scene, tmp_path, capsys):
    """The ScanNet recipe (3D only, tiny backbone): the sample has no normals, so they are estimated."""
    ckpt = save_random_model(tmp_path / "ptv3.pt", ["scannet", "method/ptv3"], "model.backbone=tiny")
    summary = run_predict(capsys, ckpt, scannet_scene.path, tmp_path / "out", "--render-views", "1")
    check_outputs(tmp_path / "out", scannet_scene.num_points, 20, renders=1)
    assert not summary["uses_images"] and summary["points_seen_by_camera"] is None
    assert summary["normals_estimated"] and any("normal" in w for w in summary["warnings"])
    labelled = int((scannet_scene.segment("segment20") >= 0).sum())
    assert summary["evaluation"]["scored"] and summary["evaluation"]["labelled_points"] == labelled


def test_scannet_sample_with_demo_trained_ditr(scannet_scene, demo_model, tmp_path, capsys):
    """The issue's must-show: a demo-trained DITR model predicts the ScanNet sample, its image
    features computed online from the sample's three frames."""
    summary = run_predict(capsys, demo_model, scannet_scene.path, tmp_path / "out", "--views", "all")
    check_outputs(tmp_path / "out", scannet_scene.num_points, 15, renders=3)
    assert summary["uses_images"] and summary["views_used"] == 3
    assert 0 < summary["points_seen_by_camera"] < scannet_scene.num_points
    assert summary["image_features"] == "online dinov2-tiny-random-reg"
    assert not summary["evaluation"]["scored"] and "differ" in summary["evaluation"]["reason"]


# ------------------------------------------------------------------------------------------ HTML viewer
#: Runs the viewer's script in node with a stand-in WebGL context and DOM: it must decode the data,
#: draw every point (but the ceiling, which a room's page starts with hidden) and aim the camera at the cloud.
NODE_HARNESS = r"""
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const json = html.split('<script type="application/json" id="data">')[1].split("</script>")[0];
const code = html.split("<script>")[1].split("</script>")[0];
const calls = {draws: 0, points: 0, mvp: null};
const element = id => ({textContent: id === "data" ? json : "", style: {}, value: "2", clientWidth: 800,
  clientHeight: 600, getContext: () => gl, addEventListener() {}, appendChild() {}, querySelectorAll: () => [],
  firstChild: {addEventListener() {}}});
const gl = new Proxy({}, {get: (_, name) => {
  if (name === "drawArrays") return (mode, start, count) => { calls.draws++; calls.points += count; };
  if (name === "uniformMatrix4fv") return (loc, transpose, m) => { calls.mvp = Array.from(m); };
  if (name === "getShaderParameter") return () => true;
  if (/^[A-Z_]+$/.test(name)) return 1;
  return () => ({});
}});
global.document = {getElementById: element, createElement: () => element(""), querySelectorAll: () => [], body: {}};
global.window = {addEventListener() {}, devicePixelRatio: 1};
global.atob = s => Buffer.from(s, "base64").toString("binary");
eval(code);
console.log(JSON.stringify(calls));
"""


def test_html_viewer_payload_and_script(world, tmp_path):
    _, rooms, _ = world
    scene = Scene.load(rooms[0])
    labels = scene.segment()
    payload = viewer_payload(scene.coord, labels, scene.class_names, scene.attributes.get("color"), max_points=2000)
    assert payload["count"] == 2000 and payload["total"] == scene.num_points
    pos = np.frombuffer(__import__("base64").b64decode(payload["position"]), "<f4").reshape(-1, 3)
    assert pos.shape == (2000, 3) and np.abs(pos).max() <= payload["radius"] + 1e-4  # centred
    assert sum(c["count"] for c in payload["classes"]) == 2000
    assert [c["start"] for c in payload["classes"]] == sorted(c["start"] for c in payload["classes"])
    page = write_viewer(tmp_path / "v.html", scene.coord, labels, scene.class_names, max_points=2000,
                        title="room </script>")
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the viewer's script was not executed")
    (tmp_path / "harness.js").write_text(NODE_HARNESS)
    run = subprocess.run(["node", str(tmp_path / "harness.js"), str(page)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = json.loads(run.stdout)
    shown = [c for c in payload["classes"] if c["id"] not in payload["camera"]["ceiling_classes"]]
    assert payload["camera"]["ceiling_classes"] == [scene.class_names.index("ceiling")]  # a room: starts hidden
    assert calls["points"] == sum(c["count"] for c in shown) and calls["draws"] == len(shown)
    clip = np.array(calls["mvp"]).reshape(4, 4).T @ [0, 0, 0, 1]  # column-major; the cloud's centre
    assert clip[3] > 0 and np.all(np.abs(clip[:3] / clip[3]) < 1)

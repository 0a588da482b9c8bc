"""ImageFeatureSource: patch grids, cached table == online table, one VFM constructor, one source type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.configs import load_preset
from ditr.errors import DitrError
from ditr.image_features import VIEW_BATCH, ImageFeatureSource, batch_image_table
from ditr.lifting import image_table_from_grids
from ditr.scene import Scene
from ditr.vfm import VFMBackend, build_backend
from conftest import small_world

pytestmark = pytest.mark.usefixtures("single_thread")
MODEL = "dinov2-tiny-random-reg"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small synthetic rooms (3000 points, 4 views) with cached features, flips included."""
    return small_world(tmp_path_factory.mktemp("image-features"))


def _settings(root, **extra) -> dict:
    return {"model": MODEL, "cache": str(root / "features"), **extra}


def test_build_backend_reads_the_vfm_settings():
    backend = build_backend({"model": MODEL, "precision": "fp32", "pos_interpolation": "plain"}, "cpu")
    assert isinstance(backend, VFMBackend) and backend.device.type == "cpu"
    assert backend.settings == "precision=fp32;pos=plain" and backend.spec.name == MODEL
    with pytest.raises(DitrError, match="vfm.model"):
        build_backend({}, "cpu")


def test_patch_grids_and_settings_errors(world):
    root, rooms, _ = world
    view = Scene.load(rooms[0]).views[0]
    source = ImageFeatureSource(_settings(root), None)
    p = source.patch_size
    h, w = source.input_size(view)
    assert source.patch_grid(view) == (h // p, w // p) and source.feature_dim == 32
    with pytest.raises(DitrError, match="images.resolution"):
        source.patch_grid(None)
    fixed = ImageFeatureSource(_settings(root), (2 * p, 3 * p))
    assert fixed.patch_grid(view) == fixed.patch_grid(None) == (2, 3)
    with pytest.raises(DitrError, match="vfm.cache is not set"):
        ImageFeatureSource({"model": MODEL}, None)
    online = ImageFeatureSource(_settings(root, online=True), None)
    assert online.online and online.cache is None  # online features never read (or write) the cache


def test_cached_table_equals_the_online_table(world):
    """The same views, flips and padding: the cache (fp16) and the VFM run now agree to fp16 precision."""
    root, rooms, _ = world
    scene = Scene.load(rooms[1])
    views = [*scene.views, None, scene.views[0]]  # a padding view in between, more than VIEW_BATCH views
    assert len(views) > VIEW_BATCH
    flips = np.array([False, True, False, True, False, True])
    cached_source = ImageFeatureSource(_settings(root), None)
    online_source = ImageFeatureSource(_settings(root, online=True), None)
    grids = np.array([cached_source.patch_grid(v) if v else cached_source.patch_grid(scene.views[0]) for v in views])
    batches = []
    cached = cached_source.table(scene, views, flips, grids)
    online = online_source.table(scene, views, flips, grids, on_batch=lambda done, total: batches.append((done, total)))
    m = int((grids[:, 0] * grids[:, 1]).sum())
    assert cached.dtype == torch.float16 and online.dtype == torch.float32
    assert cached.shape == online.shape == (m, 32)
    assert batches == [(VIEW_BATCH, len(views)), (len(views), len(views))]
    real = np.repeat([v is not None for v in views], grids[:, 0] * grids[:, 1])
    torch.testing.assert_close(online[real], cached[real].float(), rtol=2e-3, atol=1e-4)
    assert (cached[~real] == 0).all()  # padding: zero features from the cache
    # the online table is the network inputs' table: what the model and the teacher compute per batch
    pixels = online_source.pixels(views[:2], flips[:2], grids[:2])
    assert pixels.device.type == "cpu" and pixels.shape[0] == 2
    torch.testing.assert_close(online_source.table_from_pixels(pixels), online[:int(grids[0].prod() + grids[1].prod())])
    # and the per-view grids of the cache give the same table as the one the data pipeline reads
    same = image_table_from_grids([g.half() for g in cached_source.grids(scene.views[:2], [False, True])])
    assert torch.equal(same, cached[:same.shape[0]])


def test_missing_cache_entries_name_the_command(world, tmp_path):
    _, rooms, _ = world
    scene = Scene.load(rooms[0])
    source = ImageFeatureSource({"model": MODEL, "cache": str(tmp_path / "empty")}, None)
    grids = np.array([source.patch_grid(scene.views[0])])
    with pytest.raises(DitrError, match=r"ditr features .* --model dinov2-tiny-random-reg --cache .*--flip"):
        source.table(scene, scene.views[:1], [True], grids)


def test_batch_table_cached_online_and_errors(world):
    root, _, _ = world
    source = ImageFeatureSource(_settings(root, online=True), None)
    table = torch.randn(5, 32)
    assert batch_image_table({"img_table": table}, None) is table
    with pytest.raises(DitrError, match="model kind that uses images"):
        batch_image_table({}, source)
    pixels = torch.zeros(1, 3, 28, 28)
    with pytest.raises(DitrError, match="teacher has none"):
        batch_image_table({"images": pixels}, None, "teacher")
    assert batch_image_table({"images": pixels}, source).shape == (4, 32)


def test_model_teacher_dataset_and_predict_share_one_source_type(world, tmp_path, monkeypatch):
    """The DITR model's online VFM, the D-DITR teacher, the dataset's features and predict's table
    all come from ImageFeatureSource; predict uses the model's own source (one VFM in memory)."""
    from ditr.data import SceneDataset
    from ditr.distill import load_teacher
    from ditr.inference import Predictor
    from ditr.predict import PredictOptions, inference_config
    from ditr.training import model_from_config

    _, rooms, vfm = world
    online = load_preset(["synthetic", "method/ditr"], [f"model.image_channels={vfm['feature_dim']}",
                                                         "vfm.online=true", "vfm.cache=null"])
    model = model_from_config(online)
    assert isinstance(model.vfm, ImageFeatureSource) and model.vfm.online
    teacher = load_teacher(load_preset(["synthetic", "method/d-ditr"], ["distill.head_channels=32", "vfm.online=true"]))
    assert isinstance(teacher, ImageFeatureSource) and teacher.online
    dataset = SceneDataset(rooms, None, online, "val")
    assert isinstance(dataset.features, ImageFeatureSource)
    assert type(dataset.features) is type(model.vfm) is type(teacher)

    used = []
    original = SceneDataset.feature_table

    def spy(self, *args, **kwargs):
        used.append(self.features)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SceneDataset, "feature_table", spy)
    config = inference_config(online, PredictOptions(max_points=10**6))
    pred = Predictor(model, config).predict(rooms[0], PredictOptions(max_points=10**6))
    assert used == [model.vfm] and used[0] is model.vfm and pred.points_seen
    with pytest.raises(DitrError, match="model's VFM"):
        Predictor(model_from_config(load_preset(["synthetic", "method/ditr"],
                                                [f"model.image_channels={vfm['feature_dim']}"])),
                  config).predict(rooms[0], PredictOptions())

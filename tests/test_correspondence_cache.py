"""The per-view correspondence cache: same results cold or warm, keys that change with anything the
result depends on, damaged entries recomputed, an unwritable folder computed around, and the data
workers of a cached-features run filling and reading it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ditr.correspondence_cache import (SUBFOLDER, CorrespondenceCache, project_cached, scene_identity,
                                       view_identity)
from ditr.io.synthetic import generate_room
from ditr.io.synthetic.lidar import LidarConfig
from ditr.io.synthetic.outdoor import generate_street
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def street() -> Scene:
    return generate_street(8, lidar=LidarConfig.velodyne(32, azimuth_step_deg=0.4), width=400, height=225).scene


def _rooms() -> dict[str, tuple[Scene, ProjectionConfig]]:
    """A scene per occlusion rule other than the scan test (the street's)."""
    room = generate_room(0, num_points=4000, num_views=4, width=160, height=120)
    bare = generate_room(0, num_points=4000, num_views=4, width=160, height=120)
    sparse = generate_room(0, num_points=1500, num_views=4, width=160, height=120)
    for v in [*bare.views, *sparse.views]:
        v.depth = None
    return {"depth": (room, ProjectionConfig()), "surface": (bare, ProjectionConfig()),
            "sparse": (sparse, ProjectionConfig(acquisition="sfm"))}


def _same_where_in_frame(got, expect) -> None:
    assert torch.equal(got.in_frame, expect.in_frame) and torch.equal(got.visible, expect.visible)
    m = expect.in_frame
    assert torch.equal(got.uv[m], expect.uv[m]) and torch.equal(got.depth[m], expect.depth[m])
    assert got.rules == expect.rules and got.view_names == expect.view_names
    assert torch.equal(got.image_sizes, expect.image_sizes) and got.warnings == expect.warnings


def test_a_views_visibility_does_not_depend_on_the_other_views(street):
    """What makes per-view entries valid: each view projected alone decides exactly as with all of
    them, for every rule (the street with two cameras at half size, so buffers differ per view)."""
    views = list(street.views)
    for j in (1, 3):
        k = views[j].intrinsics.copy()
        k[:2] /= 2
        views[j] = dataclasses.replace(views[j], width=views[j].width // 2, height=views[j].height // 2,
                                       intrinsics=k, image=None, label=None)
    cases = {"scan": (dataclasses.replace(street, views=views), ProjectionConfig()), **_rooms()}
    for rule, (scene, config) in cases.items():
        together = project_scene(scene, config)
        assert together.rules[0] == rule
        for i, view in enumerate(scene.views):
            alone = project_scene(dataclasses.replace(scene, views=[view]), config)
            assert torch.equal(alone.in_frame[0], together.in_frame[i]), (rule, i)
            assert torch.equal(alone.visible[0], together.visible[i]), (rule, i)


def test_cold_and_warm_give_what_projection_gives(street, tmp_path):
    cache = CorrespondenceCache(tmp_path)
    expect = project_scene(street)
    cold = project_cached(street, ProjectionConfig(), cache)
    assert cache.stats["absent"] == 6 and cache.stats["written"] == 6
    warm = project_cached(street, ProjectionConfig(), cache)
    assert cache.stats["hit"] == 6 and cache.stats["written"] == 6
    for got in (cold, warm):
        _same_where_in_frame(got, expect)
        assert not got.uv[~expect.in_frame].any() and not got.depth[~expect.in_frame].any()
    assert torch.equal(cold.uv, warm.uv) and torch.equal(cold.depth, warm.depth)
    assert torch.equal(project_cached(street, ProjectionConfig(), None).uv, cold.uv)  # no cache: assembled alike
    # a subset in another order: read from the entries, nothing computed
    subset = dataclasses.replace(street, views=[street.views[4], street.views[1]])
    got = project_cached(subset, ProjectionConfig(), cache)
    assert cache.stats["hit"] == 8 and cache.stats["written"] == 6
    assert torch.equal(got.visible, expect.visible[[4, 1]])


def test_sparse_warnings_survive_the_cache(tmp_path):
    scene, config = _rooms()["sparse"]
    thin = generate_room(0, num_points=150, num_views=3, width=160, height=120)
    for v in thin.views:
        v.depth = None
    cache = CorrespondenceCache(tmp_path)
    for s in (scene, thin):
        expect = project_scene(s, config)
        for _ in range(2):
            _same_where_in_frame(project_cached(s, config, cache), expect)
    assert project_scene(thin, config).sparse_views and cache.stats["hit"] == 7


def test_keys_change_with_everything_the_result_depends_on(street, tmp_path):
    config = ProjectionConfig()
    base, view = scene_identity(street, config, "cpu"), view_identity(street.views[0], config)
    moved = street.coord.copy()
    moved[0, 0] += 1e-3
    assert scene_identity(dataclasses.replace(street, coord=moved), config, "cpu") != base
    assert scene_identity(street, dataclasses.replace(config, depth_tolerance=0.3), "cpu") != base
    assert scene_identity(street, dataclasses.replace(config, acquisition="mesh"), "cpu") != base
    assert scene_identity(street, config, "cuda") != base
    sensor = dataclasses.replace(street, meta={**street.meta, "acquisition": {"kind": "lidar", "sensor_to_scene":
                                                                            np.eye(4).tolist()}})
    assert scene_identity(sensor, config, "cpu") != base
    pose = street.views[0].cam_to_world.copy()
    pose[0, 3] += 0.01
    assert view_identity(dataclasses.replace(street.views[0], cam_to_world=pose), config) != view
    k = street.views[0].intrinsics.copy()
    k[0, 0] += 1
    assert view_identity(dataclasses.replace(street.views[0], intrinsics=k), config) != view
    pixels = np.zeros((street.num_points, 2), np.float32)
    assert view_identity(dataclasses.replace(street.views[0], pixels=pixels), config) != view
    # a depth map rewritten in place (same name) changes the key
    room = generate_room(0, num_points=500, num_views=1, width=32, height=24).save(tmp_path / "room")
    loaded = Scene.load(room)
    before = view_identity(loaded.views[0], config)
    depth_path = loaded.views[0].depth_path
    data = bytearray(depth_path.read_bytes())
    from PIL import Image
    array = np.asarray(Image.open(depth_path)).copy()
    array[0, 0] += 7
    Image.fromarray(array).save(depth_path)
    assert bytes(data) != depth_path.read_bytes()
    assert view_identity(Scene.load(room).views[0], config) != before


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_entries_are_recomputed_never_served(street, tmp_path, damage):
    cache = CorrespondenceCache(tmp_path)
    expect = project_cached(street, ProjectionConfig(), cache)
    entry = sorted(tmp_path.rglob("*.safetensors"))[0]
    data = bytearray(entry.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-5] ^= 0xFF  # a byte of the last tensor's data
    else:
        data = bytearray(b"not a cache entry")
    entry.write_bytes(bytes(data))
    got = project_cached(street, ProjectionConfig(), cache)
    assert cache.stats["corrupt"] == 1 and cache.stats["written"] == 7
    assert torch.equal(got.visible, expect.visible) and torch.equal(got.in_frame, expect.in_frame)
    torch.testing.assert_close(got.uv, expect.uv, rtol=0, atol=1e-4)  # computed alone now: rounding may differ
    assert project_cached(street, ProjectionConfig(), cache) and cache.stats["corrupt"] == 1  # overwritten


def test_an_unwritable_cache_is_warned_about_once_and_computed_around(street, tmp_path):
    (tmp_path / "file").write_text("a file where the cache's folder would be")  # fails even for root
    cache = CorrespondenceCache(tmp_path / "file" / "cache")
    with pytest.warns(UserWarning, match="cannot be written") as caught:
        got = project_cached(street, ProjectionConfig(), cache)
    assert len(caught) == 1 and cache.stats["unwritable"] == 6
    _same_where_in_frame(got, project_scene(street))


def test_data_workers_keep_correspondences_beside_cached_features(tmp_path):
    """A run on cached features projects each view once: the second pass over the data reads every
    projection, and its samples equal the first's."""
    from ditr.cache import FeatureCache
    from ditr.data import SceneDataset
    from ditr.io.synthetic import write_rooms
    from ditr.vfm import VFMBackend, load_vfm
    from ditr.vfm.extract import FeatureSource, ImageJob, fill_cache

    model = "dinov2-tiny-random-reg"
    paths = write_rooms(tmp_path / "scenes", 1, seed=3, num_points=2000, num_views=2, width=64, height=48)
    features = FeatureCache(tmp_path / "features")
    jobs = [ImageJob(p.name, v, False) for p in paths for v in Scene.load(p).views]
    fill_cache(jobs, FeatureSource(VFMBackend(load_vfm(model, hash_memo=features.hash_memo)), features))
    config = {"dataset": {"input_features": ["coord"], "segment": "segment"}, "model": {"name": "ditr"},
              "images": {"train_views": "all", "eval_views": "all"},
              "vfm": {"model": model, "cache": str(tmp_path / "features")},
              "transforms": {"val": [{"type": "GridSample", "grid_size": 0.05, "return_inverse": True}]}}
    ds = SceneDataset(tmp_path / "scenes", None, config, "val")
    first = ds.get(0, np.random.default_rng(0))
    assert ds.correspondences is not None and ds.correspondences.root == tmp_path / "features" / SUBFOLDER
    assert ds.correspondences.stats["written"] == 2
    second = ds.get(0, np.random.default_rng(0))
    assert ds.correspondences.stats["hit"] == 2 and ds.correspondences.stats["written"] == 2
    for key in ("img_index", "img_weight", "img_seen"):
        assert torch.equal(first[key], second[key])
    assert len(FeatureCache(tmp_path / "features").entries()) == 2  # the feature cache's own listing is unchanged


def test_a_missing_depth_map_is_named(tmp_path):
    from ditr.errors import SceneError

    scene = Scene.load(generate_room(0, num_points=500, num_views=2, width=32, height=24).save(tmp_path / "room"))
    scene.views[1].depth_path.unlink()
    with pytest.raises(SceneError, match=r"view_01.*views\[.*\]\.depth"):
        project_cached(scene, ProjectionConfig(), CorrespondenceCache(tmp_path / "cache"))

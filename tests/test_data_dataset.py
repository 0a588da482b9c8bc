"""SceneDataset end to end on tiny synthetic rooms with features from the tiny random VFM."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ditr.cache import FeatureCache
from ditr.configs import load_preset
from ditr.data import SceneDataset, collate
from ditr.data.dataset import pick_frames
from ditr.errors import DitrError
from ditr.io.synthetic import write_rooms
from ditr.lifting import lift, lookup_image_features, view_weights
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene
from ditr.vfm import VFMBackend, load_vfm
from ditr.vfm.color_jitter import ColorJitter
from ditr.vfm.extract import FeatureSource, ImageJob, fill_cache, image_jobs

MODEL = "dinov2-tiny-random-reg"
STRENGTH = [0.4, 0.4, 0.2, 0.1]


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    paths = write_rooms(root / "scenes", 2, seed=3, num_points=3000, num_views=3, width=64, height=48)
    cache = FeatureCache(root / "features")
    backend = VFMBackend(load_vfm(MODEL, hash_memo=cache.hash_memo))
    jobs = [ImageJob(p.name, v, flip) for p in paths for v in Scene.load(p).views for flip in (False, True)]
    fill_cache(jobs, FeatureSource(backend, cache))
    return root, paths


def _config(root, **images) -> dict:
    return {
        "dataset": {"input_features": ["coord", "normal"], "segment": "segment"},
        "model": {"name": "ditr"},
        "images": {"views_per_sample": 2, **images},
        "vfm": {"model": MODEL, "cache": str(root / "features")},
        "transforms": {
            "train": [{"type": "CenterShift"}, {"type": "RandomDropout", "p": 1.0}, {"type": "RandomRotate", "p": 1.0},
                      {"type": "ImageFlip", "p": 0.5},
                      {"type": "GridSample", "grid_size": 0.05}, {"type": "SphereCrop", "point_max": 1500},
                      {"type": "CenterShift", "apply_z": False}],
            "val": [{"type": "CenterShift"}, {"type": "GridSample", "grid_size": 0.05, "return_inverse": True}],
            "test": [{"type": "CenterShift"}, {"type": "GridSample", "grid_size": 0.05, "mode": "test"}],
        },
        "test_time": {"variants": [[], [{"type": "RandomFlip", "p": 1.0}]]},
        "mix3d": {"p": 0.8},
    }


def test_train_sample_features_equal_lifting_the_raw_scene(rooms):
    root, paths = rooms
    ds = SceneDataset(root / "scenes", None, _config(root), "train")
    assert len(ds) == 2
    for seed in range(3):
        s = ds.get(0, np.random.default_rng(seed))
        n = s["coord"].shape[0]
        assert s["feat"].shape == (n, 6) and s["grid_coord"].dtype == torch.int64 and n <= 1500
        assert s["img_index"].shape == (n, 1) and len(s["view_names"]) == 2
        assert s["img_table"].dtype == torch.float16 and s["img_table"].shape[0] == s["num_cells"]
        # reference: project the raw scene into the chosen views, lift with lifting.lift, index the points
        scene = Scene.load(paths[0])
        views = [next(v for v in scene.views if v.name == name) for name in s["view_names"]]
        corr = project_scene(dataclasses.replace(scene, views=views), ProjectionConfig())
        flips = s["view_flipped"].tolist()
        grids = FeatureSource(VFMBackend(load_vfm(MODEL)), FeatureCache(root / "features")).grids(views, flips)
        expect, seen = lift(grids, corr.uv, corr.image_sizes, view_weights(corr.visible, corr.depth, "last"), flips)
        got = lookup_image_features(s["img_table"], s["img_index"], s["img_weight"])
        torch.testing.assert_close(got, expect[s["index"]])
        assert s["img_seen"].tolist() == seen[s["index"]].tolist()
        assert s["img_seen"].any()


def test_items_are_reproducible_from_the_global_seed(rooms):
    root, _ = rooms
    ds = SceneDataset(root / "scenes", None, _config(root), "train")
    np.random.seed(11)
    a = ds[1]
    np.random.seed(11)
    b = ds[1]
    for key in ("coord", "index", "img_index", "view_flipped"):
        torch.testing.assert_close(a[key], b[key])
    assert a["view_names"] == b["view_names"]


def test_frame_rules_strided_is_the_reference_evaluation_rule(rooms):
    rng = np.random.default_rng(0)
    # strided: step = n // count, frames 0, step, ..., (count - 1) * step; at most count frames: all
    assert pick_frames(25, 10, "strided", rng).tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert pick_frames(39, 10, "strided", rng).tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert pick_frames(10, 10, "strided", rng).tolist() == list(range(10))
    assert pick_frames(7, 10, "strided", rng).tolist() == list(range(7))  # S3DIS then pads (pad_views)
    # evenly: from the first frame to the last
    assert pick_frames(25, 10, "evenly", rng).tolist() == [0, 3, 5, 8, 11, 13, 16, 19, 21, 24]
    assert pick_frames(7, 10, "evenly", rng).tolist() == list(range(7))
    random = pick_frames(25, 10, "random", rng)
    assert len(set(random.tolist())) == 10 and random.max() < 25
    assert pick_frames(25, 10, "all", rng).tolist() == list(range(25))
    with pytest.raises(DitrError, match="frame selection 'linspace'"):
        pick_frames(25, 10, "linspace", rng)
    for preset in ("scannet", "scannet200", "s3dis"):  # the indoor presets evaluate as the reference
        assert load_preset([preset]).images.eval_views == "strided"
    root, _ = rooms
    ds = SceneDataset(root / "scenes", None, _config(root, eval_views="strided"), "val")
    assert ds.get(0, np.random.default_rng(0))["view_names"] == ["view_00", "view_01"]  # step 3 // 2 = 1


def test_val_sample_collates_with_full_resolution_inverse(rooms):
    root, _ = rooms
    ds = SceneDataset(root / "scenes", None, _config(root, eval_views="evenly"), "val")
    samples = [ds.get(i, np.random.default_rng(i)) for i in range(2)]
    assert samples[0]["view_names"] == ["view_00", "view_02"]  # evenly spaced over 3 frames
    assert "mix3d" not in samples[0]
    batch = collate(samples)
    n0 = samples[0]["coord"].shape[0]
    assert batch["inverse"].shape == (6000,) and batch["origin_segment"].shape == (6000,)
    assert int(batch["inverse"][:3000].max()) < n0 <= int(batch["inverse"][3000:].min())
    # every original point's voxel representative carries a label of that voxel
    assert batch["offset"].tolist() == batch["sample_offset"].tolist()


def test_test_mode_fragments_of_every_variant_cover_every_point(rooms):
    root, _ = rooms
    ds = SceneDataset(root / "scenes", None, _config(root), "test")
    item = ds.get(0, np.random.default_rng(0))
    assert item["origin_segment"].shape == (3000,)
    per_variant = len(item["fragments"]) // 2
    for half in (item["fragments"][:per_variant], item["fragments"][per_variant:]):
        covered = torch.cat([f["index"] for f in half]).unique()
        assert covered.tolist() == list(range(3000))
    flipped = item["fragments"][per_variant]
    assert "img_table" in flipped and collate([flipped])["offset"].tolist() == [flipped["coord"].shape[0]]


def test_test_items_after_a_pre_grid_name_every_points_representative(rooms):
    """The outdoor test pipeline: one pre-grid draw shared by the variants, fragments of its points."""
    root, _ = rooms
    config = _config(root)
    config["transforms"]["test"] = [{"type": "GridSample", "grid_size": 0.05, "mode": "train", "return_inverse": True},
                                    {"type": "GridSample", "grid_size": 0.1, "mode": "test"}]
    item = SceneDataset(root / "scenes", None, config, "test").get(0, np.random.default_rng(0))
    rep = item["represented_by"]
    assert rep.shape == (3000,) and len(rep.unique()) < 3000
    assert all("inverse" not in f and "represented_by" not in f for f in item["fragments"])
    covered = torch.cat([f["index"] for f in item["fragments"]]).unique()
    assert torch.equal(covered, rep.unique())  # both variants' fragments hold the same pre-grid points


def test_three_d_only_mode_has_no_image_keys(rooms):
    root, _ = rooms
    cfg = _config(root)
    cfg["model"]["name"] = "ptv3"  # the 3D-only model kind: samples never carry views
    s = SceneDataset(root / "scenes", None, cfg, "train").get(0, np.random.default_rng(0))
    assert not any(k.startswith("img_") or k.startswith("view_") for k in s)
    assert "img_table" not in collate([s, s])


def test_padding_views_and_online_images(rooms):
    root, _ = rooms
    s = SceneDataset(root / "scenes", None, _config(root, views_per_sample=5, pad_views=True), "train").get(
        0, np.random.default_rng(0))
    assert s["view_valid"].tolist() == [True, True, True, False, False]
    assert s["img_table"].shape[0] == s["num_cells"] == 5 * 3 * 5  # 64x48 -> 70x42 input, a 3x5 grid
    assert (s["img_table"][3 * 15:] == 0).all()
    cfg = _config(root)
    cfg["vfm"] = {"model": MODEL, "online": True}
    s = SceneDataset(root / "scenes", None, cfg, "train").get(0, np.random.default_rng(0))
    assert s["images"].shape == (2, 3, 42, 70) and "img_table" not in s
    assert int(s["img_index"].max()) < s["num_cells"] == 2 * 15
    cfg["images"].update(color_jitter=[0.4, 0.4, 0.2, 0.1], color_jitter_p=1.0)  # every view jittered
    jittered = SceneDataset(root / "scenes", None, cfg, "train").get(0, np.random.default_rng(0))
    assert jittered["view_names"] == s["view_names"] and not torch.equal(jittered["images"], s["images"])
    torch.testing.assert_close(jittered["img_index"], s["img_index"])  # colours never move pixels
    cfg["images"]["color_jitter_p"] = 0.0  # never jittered: the images as they are
    assert torch.equal(SceneDataset(root / "scenes", None, cfg, "train").get(0, np.random.default_rng(0))["images"],
                       s["images"])
    cfg["vfm"] = {"model": MODEL, "cache": str(root / "features")}
    with pytest.raises(DitrError, match="color_jitter.*vfm.online"):
        SceneDataset(root / "scenes", None, cfg, "train")


@pytest.fixture(scope="module")
def variant_cache(rooms, tmp_path_factory):
    """The rooms' features with two colour-jitter variants per image, flipped and not."""
    _, paths = rooms
    cache = FeatureCache(tmp_path_factory.mktemp("variants"))
    jitter = ColorJitter(tuple(STRENGTH), variants=2)
    fill_cache([job for p in paths for job in image_jobs(p.name, Scene.load(p).views, (False, True), jitter)],
               FeatureSource(VFMBackend(load_vfm(MODEL)), cache))
    return cache.root


def _view_variants(ds: SceneDataset, sample: dict, cache_root) -> list[list[int]]:
    """Per view of a sample: which cached variants (0 = the image as it is) its rows of img_table equal."""
    scene = Scene.load(ds.paths[0])
    source = FeatureSource(VFMBackend(load_vfm(MODEL)), FeatureCache(cache_root))
    jitter = ColorJitter(tuple(STRENGTH), variants=2)
    rows = sample["img_table"].split(sample["num_cells"] // len(sample["view_names"]))
    found = []
    for name, flip, row in zip(sample["view_names"], sample["view_flipped"].tolist(), rows):
        view = next(v for v in scene.views if v.name == name)
        found.append([k for k in range(3) if torch.equal(
            row, source.cache.get(source.key(view, flip, jitter.variant(k))).flatten(1).T)])
    return found


def test_training_reads_the_drawn_variants_and_evaluation_the_images(rooms, variant_cache):
    root, _ = rooms
    cfg = _config(root, color_jitter=STRENGTH, color_jitter_p=1.0, jitter_variants=2)
    cfg["vfm"]["cache"] = str(variant_cache)
    ds = SceneDataset(root / "scenes", None, cfg, "train")
    drawn = [m for seed in range(4) for m in _view_variants(ds, ds.get(0, np.random.default_rng(seed)), variant_cache)]
    assert all(len(m) == 1 for m in drawn) and {m[0] for m in drawn} == {1, 2}  # p = 1: always a jittered variant
    cfg["images"]["color_jitter_p"] = 0.0
    never = SceneDataset(root / "scenes", None, cfg, "train")
    assert _view_variants(never, never.get(0, np.random.default_rng(0)), variant_cache) == [[0], [0]]
    cfg["images"]["color_jitter_p"] = 1.0
    val = SceneDataset(root / "scenes", None, cfg, "val")
    assert _view_variants(val, val.get(0, np.random.default_rng(0)), variant_cache) == [[0], [0]]


def test_online_jitter_sees_the_cached_variants(rooms, variant_cache):
    root, _ = rooms
    cfg = _config(root, color_jitter=STRENGTH, color_jitter_p=0.5, jitter_variants=2)
    cfg["vfm"]["cache"] = str(variant_cache)
    cached_ds = SceneDataset(root / "scenes", None, cfg, "train")
    cfg["vfm"] = {"model": MODEL, "online": True}
    online_ds = SceneDataset(root / "scenes", None, cfg, "train")
    drawn = set()
    for seed in range(8):
        cached = cached_ds.get(0, np.random.default_rng(seed))
        online = online_ds.get(0, np.random.default_rng(seed))
        assert online["view_names"] == cached["view_names"]
        table = online_ds.features.table_from_pixels(online["images"])
        torch.testing.assert_close(table.half(), cached["img_table"], atol=2e-3, rtol=1e-3)
        drawn |= {k for m in _view_variants(cached_ds, cached, variant_cache) for k in m}
    assert drawn == {0, 1, 2}  # the draws covered the image as it is and both variants


def test_a_missing_variant_names_the_command_that_caches_it(rooms, variant_cache, tmp_path):
    root, _ = rooms
    cfg = _config(root, color_jitter=STRENGTH, color_jitter_p=1.0, jitter_variants=3)
    cfg["vfm"]["cache"] = str(variant_cache)  # holds variants 1 and 2 only
    ds = SceneDataset(root / "scenes", None, cfg, "train")
    with pytest.raises(DitrError, match=r"variant 3 of 3 .*\n  ditr features .*--jitter-variants 3 "
                                        r"--color-jitter 0\.4,0\.4,0\.2,0\.1"):
        for seed in range(20):  # each view draws variant 3 with probability 1/3
            ds.get(0, np.random.default_rng(seed))
    cfg["vfm"]["cache"] = str(tmp_path / "empty")  # even the image as it is: one command fills all the run needs
    with pytest.raises(DitrError, match=r"are not in the cache.*\n  ditr features .*--jitter-variants 3 "):
        SceneDataset(root / "scenes", None, cfg, "train").get(0, np.random.default_rng(0))


def test_missing_features_say_how_to_compute_them(rooms, tmp_path):
    root, _ = rooms
    cfg = _config(root)
    cfg["vfm"]["cache"] = str(tmp_path / "empty")
    ds = SceneDataset(root / "scenes", None, cfg, "train")
    with pytest.raises(DitrError, match=r"ditr features .*room_000\d --model dinov2-tiny-random-reg --cache"):
        ds.get(0, np.random.default_rng(0))


def test_splits_and_input_checks(rooms, tmp_path):
    root, paths = rooms
    (root / "scenes" / "splits").mkdir(exist_ok=True)
    (root / "scenes" / "splits" / "train.txt").write_text("room_0001\n")
    cfg = _config(root)
    cfg["dataset"].update(root=str(root / "scenes"), splits={"train": "train", "val": ["room_0000", "room_0001"]})
    assert SceneDataset.from_config(cfg, "train").paths == [paths[1]]
    assert SceneDataset.from_config(cfg, "test").paths == paths
    cfg["dataset"]["input_features"] = ["strength"]
    with pytest.raises(DitrError, match="strength"):
        SceneDataset(paths, None, cfg, "train").get(0, np.random.default_rng(0))
    cfg["images"]["train_views"] = "first"
    with pytest.raises(DitrError, match="images.train_views: must be one of"):
        SceneDataset(paths, None, cfg, "train")
    cfg["images"]["train_views"] = "random"
    with pytest.raises(DitrError, match="split 'nope'"):
        SceneDataset(root / "scenes", "nope", cfg, "train")


def test_trains_and_evaluates_with_the_engine(rooms, tmp_path):
    """The contract with ditr.engine and ditr.models: seeded loading, Mix3D batches, image lookup in
    the model, full-resolution validation through ``inverse`` / ``origin_segment``."""
    from ditr.configs import input_channels
    from ditr.lifting import lookup_image_features
    from ditr.engine.losses import SegmentationCriterion
    from ditr.engine.trainer import Trainer, TrainerConfig
    from ditr.models import create_segmentor

    root, _ = rooms
    cfg = _config(root)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = create_segmentor("tiny", num_classes=15, image_channels=32,
                                        in_channels=input_channels(cfg["dataset"]["input_features"]))

        def forward(self, batch):
            image_feat = lookup_image_features(batch["img_table"], batch["img_index"], batch["img_weight"])
            return self.net({**batch, "image_feat": image_feat})

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny clouds: one thread is fastest and avoids OpenMP stalls on a shared CPU
    torch.manual_seed(0)
    config = TrainerConfig(work_dir=tmp_path / "run", batch_size=2, max_steps=3, num_classes=15, quiet=True,
                           plots=False)
    trainer = Trainer(Model(), SegmentationCriterion(), SceneDataset(root / "scenes", None, cfg, "train"), config,
                      collate_fn=collate, val_set=SceneDataset(root / "scenes", None, cfg, "val"))
    try:
        summary = trainer.fit()
    finally:
        torch.set_num_threads(threads)
    assert summary["step"] == 3 and 0 <= summary["metrics"]["allacc"] <= 1


def test_a_scene_without_views_mixes_with_one_that_has_them(rooms, tmp_path):
    root, paths = rooms
    bare = write_rooms(tmp_path / "bare", 1, seed=5, num_points=2000, num_views=0)[0]
    ds = SceneDataset([bare, paths[0]], None, _config(root), "train")
    empty, full = ds.get(0, np.random.default_rng(0)), ds.get(1, np.random.default_rng(0))
    assert empty["view_names"] == [] and empty["img_table"].shape == (0, 32) and not empty["img_seen"].any()
    batch = collate([empty, full])
    feats = lookup_image_features(batch["img_table"], batch["img_index"], batch["img_weight"])
    n0 = empty["coord"].shape[0]
    assert (feats[:n0] == 0).all() and feats[n0:].abs().sum() > 0

"""Transforms: invariants, correspondences carried through sampling, determinism, voxel sampling."""

from __future__ import annotations

import numpy as np
import pytest

from ditr.vfm.color_jitter import color_jitter
from ditr.errors import ConfigError
from ditr.data.transforms import (ChromaticAutoContrast, ChromaticJitter, ChromaticTranslation, CenterShift,
                                  ElasticDistortion, GridSample, ImageFlip, NormalizeColor, RandomDropout,
                                  RandomFlip, RandomJitter, RandomRotate, RandomScale, SphereCrop,
                                  build_transforms, voxel_groups)


def make_sample(n: int = 4000, views: int = 3, seed: int = 0) -> dict:
    """Random points in a 2 x 2 x 1 m box with colours, unit normals and fake correspondences."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal((n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    sizes = np.array([[48, 64]] * views, np.int64)
    return {
        "name": "test",
        "coord": (rng.random((n, 3)) * [2, 2, 1] + [5, -3, 1]).astype(np.float32),
        "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
        "normal": normal,
        "segment": rng.integers(-1, 5, n).astype(np.int64),
        "index": np.arange(n, dtype=np.int64),
        "pixel_uv": (rng.random((views, n, 2)) * [64, 48]).astype(np.float32),
        "visible": rng.random((views, n)) < 0.5,
        "view_depth": rng.random((views, n)).astype(np.float32) + 1,
        "image_sizes": sizes,
        "patch_grids": np.array([[4, 5]] * views, np.int64),
        "view_flipped": np.zeros(views, bool),
        "view_valid": np.ones(views, bool),
    }


def assert_links_follow_index(out: dict, raw: dict) -> None:
    """Each kept point's correspondences are those of its original point (``index``)."""
    idx = out["index"]
    np.testing.assert_array_equal(out["pixel_uv"], raw["pixel_uv"][:, idx])
    np.testing.assert_array_equal(out["visible"], raw["visible"][:, idx])
    np.testing.assert_array_equal(out["view_depth"], raw["view_depth"][:, idx])
    np.testing.assert_array_equal(out["segment"], raw["segment"][idx])
    np.testing.assert_array_equal(out["color"], raw["color"][idx])


GEOMETRIC = [CenterShift(), RandomRotate(p=1.0), RandomRotate(axis="x", angle=(-1 / 64, 1 / 64), p=1.0),
             RandomScale(), RandomFlip(p=1.0), RandomJitter(), ElasticDistortion(p=1.0)]


@pytest.mark.parametrize("transform", GEOMETRIC, ids=lambda t: type(t).__name__)
def test_geometric_augmentations_move_points_not_correspondences(transform):
    raw = make_sample()
    out = transform(dict(raw), np.random.default_rng(1))
    assert out["coord"].shape == raw["coord"].shape and out["coord"].dtype == np.float32
    assert not np.allclose(out["coord"], raw["coord"])
    for key in ("pixel_uv", "visible", "view_depth", "segment", "index"):
        assert out[key] is raw[key]  # untouched, not even copied
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=1), 1.0, atol=1e-5)


def test_rotation_is_rigid_and_normals_follow():
    raw = make_sample(500)
    out = RandomRotate(angle=(0.5, 0.5), axis="z", center=(0, 0, 0), p=1.0)(dict(raw), np.random.default_rng(0))
    expect = raw["coord"] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float32).T  # +90 degrees about z
    np.testing.assert_allclose(out["coord"], expect, atol=1e-5)
    np.testing.assert_allclose((out["normal"] * raw["normal"]).sum(1), raw["normal"][:, 2] ** 2, atol=1e-5)


def test_centre_shift_and_flip_and_scale():
    raw = make_sample(500)
    out = CenterShift(apply_z=True)(dict(raw), np.random.default_rng(0))
    lo, hi = out["coord"].min(0), out["coord"].max(0)
    np.testing.assert_allclose([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], 0, atol=1e-5)
    flipped = RandomFlip(p=1.0)(dict(raw), np.random.default_rng(0))
    np.testing.assert_allclose(flipped["coord"], raw["coord"] * [-1, -1, 1])
    np.testing.assert_allclose(flipped["normal"], raw["normal"] * [-1, -1, 1])
    scaled = RandomScale(scale=(1.05, 1.05))(dict(raw), np.random.default_rng(0))
    np.testing.assert_allclose(scaled["coord"], raw["coord"] * 1.05, rtol=1e-6)


def test_jitter_is_clipped_and_elastic_is_smooth():
    raw = make_sample(3000)
    out = RandomJitter(sigma=0.5, clip=0.02)(dict(raw), np.random.default_rng(0))
    assert np.abs(out["coord"] - raw["coord"]).max() <= 0.02 + 1e-6
    out = ElasticDistortion(params=[[0.2, 0.4]], p=1.0)(dict(raw), np.random.default_rng(0))
    shift = out["coord"] - raw["coord"]
    assert 0 < np.abs(shift).max() < 0.4  # smoothed noise x magnitude
    # neighbours (within 1 cm) move alike: the field is smooth on the 20 cm scale
    a, b = raw["coord"][:, None], raw["coord"][None]
    close = (np.linalg.norm(a - b, axis=-1) < 0.01) & ~np.eye(len(raw["coord"]), dtype=bool)
    i, j = np.nonzero(close)
    assert len(i) > 0 and np.abs(shift[i] - shift[j]).max() < 0.05 * np.abs(shift).max() + 1e-3


def test_colour_transforms_stay_in_range_and_normalise():
    raw = make_sample(1000)
    raw["color"] = raw["color"] * 0.4 + 50  # a dull range that auto-contrast stretches
    rng = np.random.default_rng(0)
    for t in (ChromaticAutoContrast(p=1.0), ChromaticTranslation(p=1.0, ratio=0.5), ChromaticJitter(p=1.0, std=0.5)):
        out = t(dict(raw), rng)
        assert out["color"].dtype == np.float32 and out["color"].min() >= 0 and out["color"].max() <= 255
        assert not np.allclose(out["color"], raw["color"])
    out = NormalizeColor()(dict(raw), rng)
    np.testing.assert_allclose(out["color"], raw["color"] / 127.5 - 1, atol=1e-6)


def test_dropout_and_sphere_crop_subset_correspondences():
    raw = make_sample(4000)
    out = RandomDropout(dropout_ratio=0.2, p=1.0)(dict(raw), np.random.default_rng(0))
    assert len(out["coord"]) == 3200 and len(np.unique(out["index"])) == 3200
    assert_links_follow_index(out, raw)
    crop = SphereCrop(point_max=1000)(dict(raw), np.random.default_rng(0))
    assert len(crop["coord"]) == 1000
    assert_links_follow_index(crop, raw)
    assert len(np.unique(crop["index"])) == 1000
    # a ball: every kept point is nearer the centre than every dropped one (centre = a random point)
    centre = raw["coord"][np.random.default_rng(0).integers(4000)]
    dist = np.linalg.norm(raw["coord"] - centre, axis=1)
    dropped = np.setdiff1d(np.arange(4000), crop["index"])
    assert dist[crop["index"]].max() <= dist[dropped].min()
    small = SphereCrop(point_max=10000)(dict(raw), np.random.default_rng(0))
    assert small["coord"] is raw["coord"]


def test_sphere_crop_by_sample_rate_keeps_a_ball_of_that_fraction():
    raw = make_sample(4000)
    crop = build_transforms([{"type": "SphereCrop", "sample_rate": 0.6, "mode": "random"}])(dict(raw),
                                                                                             np.random.default_rng(2))
    assert len(crop["coord"]) == 2400 and len(np.unique(crop["index"])) == 2400
    assert_links_follow_index(crop, raw)
    centre = raw["coord"][np.random.default_rng(2).integers(4000)]
    dist = np.linalg.norm(raw["coord"] - centre, axis=1)
    assert dist[crop["index"]].max() <= dist[np.setdiff1d(np.arange(4000), crop["index"])].min()
    # the S3DIS order: a fraction of the room, then the cap; the rate rounds down and keeps at least one point
    s3dis = build_transforms([{"type": "SphereCrop", "sample_rate": 0.6, "mode": "random"},
                              {"type": "SphereCrop", "point_max": 2000, "mode": "random"}])
    assert len(s3dis(dict(raw), np.random.default_rng(0))["coord"]) == 2000
    assert len(SphereCrop(sample_rate=0.8)(make_sample(999), np.random.default_rng(0))["coord"]) == 799
    assert len(SphereCrop(sample_rate=0.1)(make_sample(5), np.random.default_rng(0))["coord"]) == 1
    assert SphereCrop(sample_rate=1.0)(dict(raw), np.random.default_rng(0))["coord"] is raw["coord"]
    assert SphereCrop().point_max == 102400 and SphereCrop(mode="center").sample_rate is None
    assert build_transforms([{"type": "SphereCrop", "point_max": 102400, "mode": "random"}]).transforms[0].point_max \
        == 102400
    with pytest.raises(ConfigError, match="point_max or sample_rate, not both"):
        build_transforms([{"type": "SphereCrop", "point_max": 100, "sample_rate": 0.5}])
    for rate in (0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=r"sample_rate must lie in \(0, 1\]"):
            build_transforms([{"type": "SphereCrop", "sample_rate": rate}])


def test_point_clip_clamps_into_the_box_and_keeps_every_point():
    raw = make_sample(4000)  # x in [5, 7], y in [-3, -1], z in [1, 2]
    spec = {"type": "PointClip", "point_cloud_range": [5.5, -2.5, 1.2, 6.5, -1.5, 1.8]}
    out = build_transforms([spec])(dict(raw), np.random.default_rng(0))
    assert out["coord"].shape == raw["coord"].shape and out["coord"].dtype == np.float32
    low, high = np.float32([5.5, -2.5, 1.2]), np.float32([6.5, -1.5, 1.8])
    np.testing.assert_array_equal(out["coord"], np.clip(raw["coord"], low, high))
    inside = ((raw["coord"] > low) & (raw["coord"] < high)).all(1)
    assert 0 < inside.sum() < 4000
    np.testing.assert_array_equal(out["coord"][inside], raw["coord"][inside])  # points inside do not move
    for key in ("pixel_uv", "visible", "segment", "index", "normal"):
        assert out[key] is raw[key]
    for bad, message in (([-35.2, -35.2, -4, 35.2, 35.2], "must be 6 numbers"), ("box", "must be 6 numbers"),
                         ([0, 0, 0, 1, 1, float("nan")], "must be 6 numbers"),
                         ([-1, 2, 1, 1, 1, 1], "minimum must lie below the maximum .*along y, z")):
        with pytest.raises(ConfigError, match=message):
            build_transforms([{"type": "PointClip", "point_cloud_range": bad}])
    with pytest.raises(ConfigError, match="point_cloud_range"):
        build_transforms([{"type": "PointClip"}])


def test_grid_sample_train_keeps_one_random_point_per_voxel_with_inverse():
    raw = make_sample(4000)
    grid, order, starts, counts = voxel_groups(raw["coord"], 0.1)
    out = GridSample(0.1, "train", return_inverse=True)(dict(raw), np.random.default_rng(0))
    assert len(out["coord"]) == len(counts)  # exactly one point per occupied voxel
    assert len(np.unique(out["grid_coord"], axis=0)) == len(counts)
    assert out["grid_coord"].dtype == np.int64 and out["grid_coord"].min() == 0
    np.testing.assert_array_equal(out["grid_coord"], grid[out["index"]])  # each point's own voxel
    assert_links_follow_index(out, raw)
    # inverse: every original point maps to the sampled point of its own voxel
    np.testing.assert_array_equal(out["grid_coord"][out["inverse"]], grid)
    again = GridSample(0.1, "train")(dict(raw), np.random.default_rng(1))
    assert not np.array_equal(again["index"], out["index"])  # a new random choice per draw


def test_grid_sample_test_fragments_cover_every_point():
    raw = make_sample(4000)
    _, _, _, counts = voxel_groups(raw["coord"], 0.1)
    frags = GridSample(0.1, "test")(dict(raw), np.random.default_rng(0))
    assert len(frags) == counts.max()
    covered = np.concatenate([f["index"] for f in frags])
    assert set(covered.tolist()) == set(range(4000))
    seen: set[int] = set()
    for k, f in enumerate(frags):  # each fragment is a complete voxelisation: every voxel, one point each
        assert len(f["index"]) == len(counts) == len(np.unique(f["grid_coord"], axis=0))
        assert_links_follow_index(f, raw)
        new = set(f["index"].tolist()) - seen  # fragment k brings the k-th point of voxels with > k points
        assert len(new) == int((counts > k).sum())
        seen |= new
    assert len(seen) == 4000


def pre_grid(fine: float, coarse: float, seed: int = 0) -> tuple[dict, dict, list[dict]]:
    """(raw sample, its pre-grid, the fragments): the outdoor test pipeline on a dense random cloud."""
    raw = make_sample(20000, seed=seed)
    pre = GridSample(fine, "train", return_inverse=True)(dict(raw), np.random.default_rng(seed))
    pipeline = build_transforms([{"type": "GridSample", "grid_size": fine, "mode": "train", "return_inverse": True},
                                 {"type": "GridSample", "grid_size": coarse, "mode": "test"}])
    return raw, pre, pipeline(dict(raw), np.random.default_rng(seed))


def test_fragments_after_a_pre_grid_cover_its_points_and_name_every_points_representative():
    raw, pre, frags = pre_grid(0.025, 0.05)
    assert len(pre["coord"]) < 20000  # the pre-grid thins the cloud
    rep = frags[0]["represented_by"]
    assert all(f["represented_by"] is rep and "inverse" not in f for f in frags)
    # every raw point is represented by the pre-grid point of its own fine voxel
    np.testing.assert_array_equal(rep, pre["index"][pre["inverse"]])
    fine = voxel_groups(raw["coord"], 0.025)[0]
    np.testing.assert_array_equal(fine[rep], fine)
    # the fragments cover exactly the pre-grid's points, each a complete voxelisation of them
    covered = np.unique(np.concatenate([f["index"] for f in frags]))
    np.testing.assert_array_equal(covered, np.sort(pre["index"]))
    _, _, _, counts = voxel_groups(pre["coord"], 0.05)
    assert len(frags) == counts.max() and all(len(f["index"]) == len(counts) for f in frags)
    for f in frags:
        assert_links_follow_index(f, raw)
    # a 5 cm voxel holds at most 2^3 pre-grid points of 2.5 cm (5^3 of 1 cm): the fragment count is bounded
    assert len(frags) <= 8
    assert len(pre_grid(0.01, 0.05)[2]) <= 125


def test_chained_train_grids_compose_their_inverse_maps():
    raw = make_sample(20000)
    out = build_transforms([{"type": "GridSample", "grid_size": 0.025, "mode": "train", "return_inverse": True},
                            {"type": "GridSample", "grid_size": 0.1, "mode": "train", "return_inverse": True}]
                           )(dict(raw), np.random.default_rng(0))
    assert out["inverse"].shape == (20000,)
    # each raw point's final row sits in the coarse voxel of its pre-grid representative (in the point's fine voxel)
    rng = np.random.default_rng(0)
    pre = GridSample(0.025, "train", return_inverse=True)(dict(raw), rng)
    coarse = voxel_groups(pre["coord"], 0.1)[0]
    np.testing.assert_array_equal(out["grid_coord"][out["inverse"]], coarse[pre["inverse"]])
    with pytest.raises(ValueError, match="inverse map would be lost"):
        GridSample(0.05, "train")(pre, rng)


def test_image_flip_mirrors_u_and_marks_views():
    raw = make_sample(200, views=4)
    out = ImageFlip(p=1.0)(dict(raw), np.random.default_rng(0))
    np.testing.assert_allclose(out["pixel_uv"][..., 0], 64 - raw["pixel_uv"][..., 0])
    np.testing.assert_array_equal(out["pixel_uv"][..., 1], raw["pixel_uv"][..., 1])
    assert out["view_flipped"].all() and not raw["view_flipped"].any()
    some = ImageFlip(p=0.5)(dict(raw), np.random.default_rng(3))
    f = some["view_flipped"]
    assert 0 < f.sum() < 4
    np.testing.assert_array_equal(some["pixel_uv"][~f], raw["pixel_uv"][~f])


def test_pipeline_is_deterministic_given_the_generator():
    specs = [{"type": "CenterShift"}, {"type": "RandomDropout", "p": 0.5}, {"type": "RandomRotate"},
             {"type": "RandomScale"}, {"type": "RandomFlip"}, {"type": "RandomJitter"},
             {"type": "ElasticDistortion"}, {"type": "ChromaticAutoContrast"}, {"type": "ChromaticTranslation"},
             {"type": "ChromaticJitter"}, {"type": "ImageFlip"}, {"type": "GridSample", "grid_size": 0.05},
             {"type": "SphereCrop", "point_max": 800}, {"type": "NormalizeColor"}]
    pipeline = build_transforms(specs)
    raw = make_sample(3000)
    a, b = (pipeline(dict(raw), np.random.default_rng(7)) for _ in range(2))
    c = pipeline(dict(raw), np.random.default_rng(8))
    for key in ("coord", "color", "index", "pixel_uv", "view_flipped", "grid_coord"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["coord"], c["coord"])
    assert len(a["coord"]) == 800


def test_build_transforms_reports_unknown_names_and_parameters():
    with pytest.raises(ConfigError, match=r"transforms\[1\].*RandomSpin.*unknown transform"):
        build_transforms([{"type": "CenterShift"}, {"type": "RandomSpin"}])
    with pytest.raises(ConfigError, match=r"RandomScale.sigma.*unknown parameter"):
        build_transforms([{"type": "RandomScale", "sigma": 1}])
    with pytest.raises(ConfigError, match="mode must be train or test"):
        build_transforms([{"type": "GridSample", "mode": "fast"}])
    with pytest.raises(ConfigError, match="mapping with a 'type'"):
        build_transforms(["CenterShift"])


def test_subsetting_after_the_inverse_map_is_refused():
    raw = make_sample(3000)
    out = GridSample(0.05, "train", return_inverse=True)(dict(raw), np.random.default_rng(0))
    with pytest.raises(ValueError, match="inverse"):
        SphereCrop(point_max=10)(out, np.random.default_rng(0))


def test_color_jitter_of_images():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    assert np.array_equal(color_jitter(image, (0, 0, 0, 0), rng), image)
    grey = np.full((4, 5, 3), 90, np.uint8)  # saturation and hue leave grey alone
    assert np.array_equal(color_jitter(grey, (0, 0, 0.5, 0.5), rng), grey)
    a = color_jitter(image, (0.4, 0.4, 0.2, 0.1), np.random.default_rng(1))
    b = color_jitter(image, (0.4, 0.4, 0.2, 0.1), np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == image.shape and np.array_equal(a, b)
    assert not np.array_equal(a, image)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    shifted = color_jitter(red, (0, 0, 0, 1 / 3 - 1e-9), np.random.default_rng(4))  # hue turns towards green/blue
    assert shifted[..., 0].max() < 255


def test_trilinear_interpolation_matches_the_formula():
    from ditr.data.transforms import _trilinear

    rng = np.random.default_rng(0)
    grid = rng.standard_normal((4, 5, 6, 3))
    t = rng.random((50, 3)) * [3, 4, 5]
    i0 = np.floor(t).astype(int)
    f = t - i0
    expect = np.zeros((50, 3))
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        w = np.prod(np.where(c, f, 1 - f), axis=1)
        idx = i0 + c
        expect += w[:, None] * grid[idx[:, 0], idx[:, 1], idx[:, 2]]
    np.testing.assert_allclose(_trilinear(grid, t), expect, atol=1e-5)

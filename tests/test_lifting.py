"""Per-point lifting: the nearest patch of the chosen view(s), view fusion, flips, unseen points, whole scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.cache import FeatureCache
from ditr.errors import DitrError
from ditr.image_features import point_features
from ditr.lifting import best_view, build_lookup, lift, patch_index, view_weights
from ditr.projection import ProjectionConfig, project_scene
from ditr.scene import Scene, View
from ditr.vfm import VFMBackend, load_vfm
from ditr.vfm.extract import FeatureSource


def _coded_grids(nv: int, h: int, w: int) -> list[torch.Tensor]:
    """Grids whose feature at (row, col) of view v is (v, row, col): lookups become readable."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return [torch.stack([torch.full((h, w), v), rows, cols]).float() for v in range(nv)]


def test_patch_index_follows_the_resize_formula():
    # a 100 x 200 image resized to 28 x 56 with patch 14: a (2, 4) grid, 50 x 50 original pixels per patch
    uv = torch.tensor([[0.0, 0.0], [49.9, 49.9], [50.0, 50.0], [199.99, 99.99], [-3.0, 120.0]])
    idx = patch_index(uv, (100, 200), (2, 4))
    assert idx.tolist() == [0, 0, 5, 7, 4]  # the last one is clamped into the grid
    flipped = patch_index(uv, (100, 200), (2, 4), flip=True)  # u' = W - u
    assert flipped.tolist() == [3, 3, 7, 4, 7]


def test_view_strategies():
    """View fusion over plain (V, N) arrays: visible and camera depth."""
    vis = [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0]]
    depth = [[3.0, 1.0, 9, 9], [2.0, 9, 5.0, 9], [9, 2.0, 4.0, 9]]
    visible, depth = torch.tensor([[bool(x) for x in row] for row in vis]), torch.tensor(depth)
    last = view_weights(visible, depth, "last")
    assert last.argmax(0)[:3].tolist() == [1, 2, 2] and last[:, 3].sum() == 0
    nearest = view_weights(visible, depth, "nearest")
    assert nearest.argmax(0)[:3].tolist() == [1, 0, 2]
    mean = view_weights(visible, depth, "mean")
    torch.testing.assert_close(mean[:, 0], torch.tensor([0.5, 0.5, 0.0]))
    assert mean[:, 3].sum() == 0
    for seed in range(5):
        rnd = view_weights(visible, depth, "random", generator=torch.Generator().manual_seed(seed))
        assert torch.equal(rnd.sum(0), torch.tensor([1.0, 1, 1, 0]))
        assert (rnd * ~visible).sum() == 0
    a = view_weights(visible, depth, "random", generator=torch.Generator().manual_seed(3))
    b = view_weights(visible, depth, "random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(DitrError):
        view_weights(visible, depth, "best")


def test_view_weights_take_numpy_arrays_and_agree_with_the_lookup():
    rng = np.random.default_rng(1)
    visible = rng.random((4, 500)) < 0.4
    depth = (rng.random((4, 500)) * 3 + 0.5).astype(np.float32)
    for fusion in ("last", "nearest", "mean"):
        from_numpy = view_weights(visible, depth, fusion)
        from_torch = view_weights(torch.from_numpy(visible), torch.from_numpy(depth), fusion)
        assert from_numpy.dtype == torch.float32 and torch.equal(from_numpy, from_torch)
        assert torch.equal(from_numpy.sum(0) > 0, torch.from_numpy(visible.any(0)))
    # the one-hot fusions: view_weights is one-hot at best_view, which is what build_lookup reads
    uv = (rng.random((4, 500, 2)) * [64, 48]).astype(np.float32)
    sizes, grids = np.array([[48, 64]] * 4), np.array([[3, 4]] * 4)
    for fusion in ("last", "nearest"):
        best = best_view(visible, depth, fusion)
        seen = visible.any(0)
        assert torch.equal(view_weights(visible, depth, fusion).argmax(0)[seen], best[seen])
        index, weight, _ = build_lookup(uv, visible, depth, sizes, grids, fusion, np.random.default_rng(0))
        assert (index[seen, 0] // 12 == best.numpy()[seen]).all() and (weight[seen] == 1).all()
    with pytest.raises(DitrError, match="depth"):
        view_weights(visible, None, "nearest")


def test_lift_last_mean_and_unseen_points():
    grids = _coded_grids(2, 2, 4)
    uv = torch.tensor([[[10.0, 10.0], [150.0, 80.0], [0.0, 0.0]],
                       [[60.0, 60.0], [150.0, 80.0], [0.0, 0.0]]])
    sizes = torch.tensor([[100, 200], [100, 200]])
    last = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # point 2 seen by no view
    feats, seen = lift(grids, uv, sizes, last)
    assert seen.tolist() == [True, True, False]
    assert feats.tolist() == [[1, 1, 1], [0, 1, 3], [0, 0, 0]]
    mean = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    feats, _ = lift(grids, uv, sizes, mean)
    assert feats[0].tolist() == [0.5, 0.5, 0.5] and feats[1].tolist() == [0.5, 1.0, 3.0]


def test_flipped_grid_is_read_at_the_mirrored_column():
    grid = torch.randn(8, 3, 5)
    uv = torch.rand(1, 200, 2) * torch.tensor([99.0, 59.0]) + 0.5
    sizes, w = torch.tensor([[60, 100]]), torch.ones(1, 200)
    plain, _ = lift([grid], uv, sizes, w)
    mirrored, _ = lift([grid.flip(-1)], uv, sizes, w, flips=[True])
    torch.testing.assert_close(plain, mirrored)


def _scene(tmp_path) -> Scene:
    rng = np.random.default_rng(0)
    wall = np.c_[np.full(800, 1.0), rng.uniform(-1, 1, 800), rng.uniform(0, 1.5, 800)].astype(np.float32)
    behind = wall[:50] * [-3, 1, 1]  # behind the cameras: never seen
    k = np.array([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]])
    views = []
    for i in range(2):
        c2w = np.eye(4)
        c2w[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]  # camera looks along +x
        c2w[:3, 3] = [-1.0, 0.4 * i - 0.2, 0.75]
        views.append(View(name=f"v{i}", width=80, height=60, intrinsics=k, cam_to_world=c2w,
                          image=rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)))
    return Scene(coord=np.r_[wall, behind], views=views, meta={"name": "wall"}).save(tmp_path / "wall")


def test_point_features_of_a_scene(tmp_path):
    scene = Scene.load(_scene(tmp_path))
    source = FeatureSource(VFMBackend(load_vfm("dinov2-tiny-random-reg")), FeatureCache(tmp_path / "cache"))
    lifted = point_features(scene, source, "last")
    corr = project_scene(scene, ProjectionConfig())
    assert lifted.features.shape == (850, 32) and lifted.seen.dtype == torch.bool
    assert torch.equal(lifted.seen, corr.seen) and 0 < int(lifted.seen.sum()) <= 800
    assert not lifted.seen[800:].any() and lifted.features[~lifted.seen].abs().sum() == 0
    assert lifted.features[lifted.seen].abs().sum(1).min() > 0
    # the last view wins where both see a point: equal to lifting view 1's grid with its one-hot weights
    grids = source.grids(scene.views)
    w = view_weights(corr.visible, corr.depth, "last")
    both = corr.visible.all(0)
    assert both.any()
    expected, _ = lift([torch.zeros_like(grids[0]), grids[1]], corr.uv, corr.image_sizes, w * both)
    torch.testing.assert_close(lifted.features[both], expected[both])
    mean = point_features(scene, source, "mean")
    assert torch.equal(mean.seen, lifted.seen) and source.forward_calls == 1  # later calls all hit
    flipped = point_features(scene, source, "last", flips=[True, True])
    assert not torch.allclose(flipped.features, lifted.features)

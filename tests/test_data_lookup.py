"""Image-feature lookup against a brute-force per-point loop; collate offsets and Mix3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.data.collate import collate
from ditr.lifting import build_lookup, cell_offsets, image_table_from_grids, lookup_image_features


def _tiny(seed: int = 0, views: int = 3, n: int = 40):
    rng = np.random.default_rng(seed)
    sizes = np.array([[48, 64], [48, 64], [30, 90]][:views], np.int64)  # (H, W) per view
    grids = np.array([[4, 5], [3, 4], [2, 6]][:views], np.int64)  # (h, w) per view
    uv = np.stack([rng.random((n, 2)) * [s[1], s[0]] for s in sizes]).astype(np.float32)
    visible = rng.random((views, n)) < 0.5
    depth = (rng.random((views, n)) * 3 + 0.5).astype(np.float32)
    table = torch.randn(int(cell_offsets(grids)[-1]), 7)
    return uv, visible, depth, sizes, grids, table


def _brute_force(uv, visible, depth, sizes, grids, table, strategy):
    """One point at a time, straight from docs/design.md#point-to-patch-lookup.

    Patch row = floor(v h / H), col = floor(u w / W).
    """
    starts = cell_offsets(grids)
    nv, n = visible.shape
    out = torch.zeros(n, table.shape[1])
    for p in range(n):
        seeing = [v for v in range(nv) if visible[v, p]]
        if not seeing:
            continue
        if strategy == "last":
            chosen, weights = [seeing[-1]], [1.0]
        elif strategy == "nearest":
            chosen, weights = [min(seeing, key=lambda v: depth[v, p])], [1.0]
        else:  # mean
            chosen, weights = seeing, [1.0 / len(seeing)] * len(seeing)
        for v, w in zip(chosen, weights):
            (height, width), (h, wd) = sizes[v], grids[v]
            row = min(int(np.floor(uv[v, p, 1] * h / height)), h - 1)
            col = min(int(np.floor(uv[v, p, 0] * wd / width)), wd - 1)
            out[p] += w * table[starts[v] + row * wd + col]
    return out


@pytest.mark.parametrize("strategy", ["last", "nearest", "mean"])
def test_lookup_equals_brute_force(strategy):
    uv, visible, depth, sizes, grids, table = _tiny()
    index, weight, seen = build_lookup(uv, visible, depth, sizes, grids, strategy, np.random.default_rng(0))
    assert index.dtype == np.int64 and weight.dtype == np.float32
    assert index.shape[1] == (3 if strategy == "mean" else 1)
    got = lookup_image_features(table, torch.from_numpy(index), torch.from_numpy(weight))
    torch.testing.assert_close(got, _brute_force(uv, visible, depth, sizes, grids, table, strategy))
    np.testing.assert_array_equal(seen, visible.any(0))
    assert (got[~torch.from_numpy(seen)] == 0).all()


def test_random_strategy_picks_a_seeing_view_reproducibly():
    uv, visible, depth, sizes, grids, table = _tiny(n=300)
    a = build_lookup(uv, visible, depth, sizes, grids, "random", np.random.default_rng(5))
    b = build_lookup(uv, visible, depth, sizes, grids, "random", np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    starts = cell_offsets(grids)
    view = np.searchsorted(starts, a[0][:, 0], side="right") - 1
    seen = a[2]
    assert visible[view[seen], np.flatnonzero(seen)].all()
    multi = visible.sum(0) > 1
    assert len(np.unique(view[multi])) > 1  # not always the same view


def test_flipped_view_reads_the_mirrored_grid():
    """A flipped view: u mirrored (ImageFlip) + the grid of the mirrored image = the original feature."""
    uv, visible, depth, sizes, grids, _ = _tiny(views=1, n=100)
    grid = torch.randn(7, 4, 5)
    plain_idx, w, _ = build_lookup(uv, visible, depth, sizes, grids, "last", np.random.default_rng(0))
    mirrored_uv = uv.copy()
    mirrored_uv[..., 0] = sizes[0, 1] - uv[..., 0]
    flip_idx, _, _ = build_lookup(mirrored_uv, visible, depth, sizes, grids, "last", np.random.default_rng(0))
    plain = lookup_image_features(image_table_from_grids(grid[None]), torch.from_numpy(plain_idx), torch.from_numpy(w))
    flipped = lookup_image_features(image_table_from_grids(grid.flip(-1)[None]), torch.from_numpy(flip_idx),
                                    torch.from_numpy(w))
    torch.testing.assert_close(plain, flipped)


def _sample(seed: int, n: int, views: int, strategy: str = "last", mix: bool = False) -> dict:
    uv, visible, depth, sizes, grids, table = _tiny(seed, views, n)
    index, weight, seen = build_lookup(uv, visible, depth, sizes, grids, strategy, np.random.default_rng(0))
    return {"coord": torch.randn(n, 3), "grid_coord": torch.randint(0, 9, (n, 3)), "feat": torch.randn(n, 6),
            "segment": torch.randint(0, 5, (n,)), "img_index": torch.from_numpy(index),
            "img_weight": torch.from_numpy(weight), "img_seen": torch.from_numpy(seen),
            "img_table": table.half(), "num_cells": int(table.shape[0]),
            "view_flipped": torch.zeros(views, dtype=torch.bool), "view_valid": torch.ones(views, dtype=torch.bool),
            "view_names": [f"v{i}" for i in range(views)], "name": f"s{seed}", "mix3d": mix,
            "inverse": torch.randint(0, n, (2 * n,)), "origin_segment": torch.randint(0, 5, (2 * n,))}


@pytest.mark.parametrize("strategy", ["last", "mean"])
def test_collate_offsets_and_batched_lookup(strategy):
    samples = [_sample(0, 30, 3, strategy), _sample(1, 20, 2, strategy), _sample(2, 25, 3, strategy)]
    batch = collate(samples)
    assert batch["offset"].tolist() == [30, 50, 75] and batch["offset"].dtype == torch.int64
    assert batch["sample_offset"].tolist() == [30, 50, 75]
    assert batch["coord"].shape == (75, 3) and batch["num_views"].tolist() == [3, 2, 3]
    assert batch["img_table"].shape[0] == sum(s["num_cells"] for s in samples)
    assert batch["img_index"].shape[1] == (3 if strategy == "mean" else 1)  # 'mean' padded to max views
    whole = lookup_image_features(batch["img_table"], batch["img_index"], batch["img_weight"])
    parts = torch.cat([lookup_image_features(s["img_table"], s["img_index"], s["img_weight"]) for s in samples])
    torch.testing.assert_close(whole, parts)
    # inverse maps original points to rows of the batch (engine contract: already offset)
    assert batch["inverse"][60:100].tolist() == (samples[1]["inverse"] + 30).tolist()
    assert batch["name"] == ["s0", "s1", "s2"] and len(batch["view_names"]) == 3


def test_mix3d_merges_pairs_and_each_half_keeps_its_images():
    a, b, c = _sample(0, 30, 3, mix=True), _sample(1, 20, 2), _sample(2, 25, 3, mix=True)
    batch = collate([a, b, c])
    assert batch["offset"].tolist() == [50, 75]  # a + b are one cloud; c has no partner
    assert batch["sample_offset"].tolist() == [30, 50, 75]
    cells_a = a["num_cells"]
    idx, seen = batch["img_index"][:, 0], batch["img_seen"]
    assert (idx[:30][seen[:30]] < cells_a).all()  # half A only reads A's views
    assert (idx[30:50][seen[30:50]] >= cells_a).all()  # half B only B's views (shifted by A's cells)
    assert (idx[30:50] < cells_a + b["num_cells"]).all()
    assert seen[:30].any() and seen[30:50].any()


def test_lookup_with_an_empty_table_gives_zeros():
    out = lookup_image_features(torch.zeros(0, 4), torch.zeros(5, 1, dtype=torch.long), torch.zeros(5, 1))
    assert out.shape == (5, 4) and (out == 0).all()

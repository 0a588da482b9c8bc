"""Attention patch grouping: the reference's non-flash ("fixed") and flash-attention ("flash") rules."""

from __future__ import annotations

import pytest
import torch

from ditr.build import build_model
from ditr.configs import load_preset
from ditr.errors import ConfigError
from ditr.models import Point, create_segmentor
from ditr.models.attention import SerializedAttention, flash_attn_available, patch_layout

CUDA = torch.cuda.is_available()

pytestmark = pytest.mark.usefixtures("single_thread")


def _line_level(counts: list[int]) -> Point:
    """Clouds of points on a line: the serialized order is the input order."""
    n = sum(counts)
    grid = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)], 1)
    return Point.from_batch(grid, torch.zeros(n, 1), offset=torch.tensor(counts).cumsum(0))


def _patches(counts: list[int], patch_size: int, grouping: str) -> tuple[list[list[int]], list[list[int]]]:
    """(points of every patch, the patch each point reads its output from) in serialized positions."""
    layout = patch_layout(_line_level(counts).current, patch_size, grouping)
    cu = layout.cu_seqlens.tolist()
    patches = [layout.source[a:b].tolist() for a, b in zip(cu[:-1], cu[1:])]
    patch_of_slot = torch.repeat_interleave(torch.arange(len(patches)), torch.diff(layout.cu_seqlens))
    return patches, [patches[i] for i in patch_of_slot[layout.slot_of_position].tolist()]


def test_flash_grouping_keeps_k_and_gives_a_short_cloud_one_patch() -> None:
    """Clouds of 3 (< K), 9 (not a multiple of K) and 8 (a multiple) points, K = 4."""
    patches, read_from = _patches([3, 9, 8], 4, "flash")
    # The short cloud is one patch of 3; the 9-point cloud is padded to 12 with the points K = 4
    # positions earlier (8, 9, 10 again); the 8-point cloud is two plain patches. Longest first.
    assert patches == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 8, 9, 10], [12, 13, 14, 15], [16, 17, 18, 19],
                       [0, 1, 2]]
    # A point duplicated into the padding reads its output from its own patch, not the padded one.
    assert read_from[8] == read_from[10] == [7, 8, 9, 10] and read_from[11] == [11, 8, 9, 10]
    assert read_from[1] == [0, 1, 2] and read_from[19] == [16, 17, 18, 19]
    layout = patch_layout(_line_level([3, 9, 8]).current, 4, "flash")
    assert layout.patch_size == 4 and layout.runs == ((4, 20), (3, 3))
    assert layout.cu_seqlens.dtype == torch.int32 and layout.cu_seqlens.tolist() == [0, 4, 8, 12, 16, 20, 23]


def test_fixed_grouping_shrinks_every_patch_to_the_smallest_cloud() -> None:
    patches, read_from = _patches([3, 9, 8], 4, "fixed")
    assert patches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14], [15, 16, 17], [18, 19, 17]]
    assert read_from[17] == [15, 16, 17]
    # Without a cloud shorter than the patch the two rules are the same layout.
    assert _patches([9, 8], 4, "fixed") == _patches([9, 8], 4, "flash")


def _flash_rule(counts: list[int], k: int) -> list[tuple[list[int], list[int]]]:
    """The flash rule cloud by cloud: (points of the patch, the points that read their output there)."""
    out, start = [], 0
    for n in counts:
        padded = n if n <= k else -(-n // k) * k
        local = list(range(n)) + [j - k for j in range(n, padded)]
        for g in range(0, padded, k):
            out.append(([start + j for j in local[g:g + k]], [start + j for j in range(g, min(g + k, n))]))
        start += n
    return out


def _random_batch(counts: list[int], seed: int) -> Point:
    """Clouds of distinct random voxels in a shared 12^3 box (so the serialization depth is the same)."""
    gen = torch.Generator().manual_seed(seed)
    grids = [torch.randperm(12 ** 3, generator=gen)[:n] for n in counts]
    grid = torch.cat([torch.stack([g // 144, g // 12 % 12, g % 12], 1) for g in grids])
    return Point.from_batch(grid, torch.zeros(len(grid), 1), offset=torch.tensor(counts).cumsum(0))


def _attention(backend: str, grouping: str, patch_size: int = 8) -> SerializedAttention:
    torch.manual_seed(0)
    return SerializedAttention(16, 2, patch_size, order_index=1, backend=backend, patch_grouping=grouping).double()


def test_sdpa_over_flash_patches_equals_per_patch_attention() -> None:
    counts = [5, 23, 16]
    level = _random_batch(counts, 0).current
    attn = _attention("sdpa", "flash")
    x = torch.randn(level.num_points, 16, dtype=torch.double)
    order = level.order[1]
    qkv = attn.qkv(x)
    expected = torch.empty(level.num_points, 16, dtype=torch.double)
    for members, owners in _flash_rule(counts, 8):
        q, k, v = qkv[order[members]].view(len(members), 3, 2, 8).permute(1, 2, 0, 3)
        out = torch.softmax(q @ k.transpose(1, 2) * attn.scale, -1) @ v
        expected[order[owners]] = out.transpose(0, 1).reshape(len(members), 16)[: len(owners)]
    assert torch.allclose(attn(x, level), attn.proj(expected), atol=1e-12)


@pytest.mark.parametrize(("grouping", "independent"), [("flash", True), ("fixed", False)])
def test_a_small_cloud_changes_others_only_under_the_fixed_grouping(grouping: str, independent: bool) -> None:
    alone, batched = _random_batch([40], 1).current, _random_batch([40, 5], 1).current
    attn = _attention("sdpa", grouping, patch_size=16)
    x = torch.randn(45, 16, dtype=torch.double)
    same = torch.allclose(attn(x[:40], alone), attn(x, batched)[:40], atol=1e-12)
    assert same == independent


@pytest.mark.parametrize("grouping", ["flash", "fixed"])
def test_a_model_s_output_for_a_cloud_ignores_its_batch_under_flash_grouping(grouping: str) -> None:
    """End to end (eval, tiny config, patch 16): a 6-point cloud is shorter than the patch at every level."""
    model = create_segmentor("tiny", patch_grouping=grouping).eval()
    gen = torch.Generator().manual_seed(2)
    batch = _random_batch([300, 6], 2)
    feat = torch.randn(306, 6, generator=gen)
    with torch.no_grad():
        alone = model({"grid_coord": batch.levels[0].grid_coord[:300], "feat": feat[:300],
                       "offset": torch.tensor([300])})
        together = model({"grid_coord": batch.levels[0].grid_coord, "feat": feat, "offset": torch.tensor([300, 306])})
    assert torch.allclose(alone, together[:300], atol=1e-5) == (grouping == "flash")


def test_sdpa_matches_naive_under_flash_grouping() -> None:
    level = _random_batch([3, 21, 8, 6], 3).current
    x = torch.randn(level.num_points, 16, dtype=torch.double)
    assert torch.allclose(_attention("sdpa", "flash")(x, level), _attention("naive", "flash")(x, level), atol=1e-12)


def test_auto_grouping_follows_the_kernel_and_the_run_config_sets_it() -> None:
    assert _attention("sdpa", "auto")._resolve_grouping("sdpa") == "fixed"
    assert _attention("flash", "auto")._resolve_grouping("flash") == "flash"
    config = load_preset(["synthetic"], ["model.ptv3.patch_grouping=flash"])
    model = build_model(config, in_channels=6, num_classes=3)
    groupings = {m.patch_grouping for m in model.modules() if isinstance(m, SerializedAttention)}
    assert groupings == {"flash"}
    with pytest.raises(ConfigError, match=r"model.ptv3.patch_grouping: must be one of"):
        load_preset(["synthetic"], ["model.ptv3.patch_grouping=varlen"])


@pytest.mark.skipif(not (CUDA and flash_attn_available()), reason="needs CUDA and flash-attn")
def test_flash_kernel_matches_sdpa_over_flash_patches() -> None:
    level = _random_batch([5, 23, 16], 4).current
    point = Point.from_batch(level.grid_coord.cuda(), torch.zeros(level.num_points, 1, device="cuda"),
                             offset=torch.tensor([5, 28, 44], device="cuda")).current
    x = torch.randn(point.num_points, 16, device="cuda")
    sdpa, flash = _attention("sdpa", "flash").float().cuda(), _attention("flash", "auto").float().cuda()
    assert torch.allclose(flash(x, point), sdpa(x, point), atol=2e-2)

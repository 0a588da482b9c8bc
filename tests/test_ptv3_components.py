"""Building blocks of the PTv3 backbone: sparse conv, attention padding/backends, model modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ditr.models import Point, PTv3Segmentor, create_segmentor, get_config
from ditr.models.attention import SerializedAttention, flash_attn_available, patch_layout
from ditr.models.sparse_conv import SubMConv3d, spconv_available

CUDA = torch.cuda.is_available()


pytestmark = pytest.mark.usefixtures("single_thread")


def _random_voxels(seed: int, size: int = 8, clouds: int = 2,
                   density: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    occupied = (torch.rand(clouds, size, size, size, generator=gen) < density).nonzero()
    return occupied[:, 1:], occupied[:, 0]


def _surface_batch(seed: int, n: int = 600, clouds: int = 2, channels: int = 6) -> dict[str, torch.Tensor]:
    """Points on random planes, one per voxel, grouped by cloud."""
    gen = torch.Generator().manual_seed(seed)
    grids, counts = [], []
    for _ in range(clouds):
        uv = torch.randint(0, 40, (n, 2), generator=gen)
        plane = torch.randint(0, 3, (n,), generator=gen)
        height = torch.randint(0, 30, (4,), generator=gen)[torch.randint(0, 4, (n,), generator=gen)]
        grid = torch.stack([uv[:, 0], uv[:, 1], height], 1)
        grid = torch.where(plane[:, None] == 1, grid[:, [2, 0, 1]], grid)
        grid = torch.unique(grid, dim=0)
        grids.append(grid[torch.randperm(len(grid), generator=gen)])
        counts.append(len(grid))
    grid = torch.cat(grids)
    return {
        "grid_coord": grid,
        "feat": torch.randn(len(grid), channels, generator=gen),
        "offset": torch.cumsum(torch.tensor(counts), 0),
    }


@pytest.mark.parametrize(("kernel_size", "in_channels"), [(3, 4), (5, 4), (3, 12), (5, 12)])
def test_subm_conv_matches_dense_conv3d(kernel_size: int, in_channels: int) -> None:
    """Both torch paths: narrow inputs use the im2col GEMM, wider ones the per-offset rulebook."""
    grid, batch = _random_voxels(0)
    level = Point.from_batch(grid, torch.zeros(len(grid), 1), batch=batch).current
    conv = SubMConv3d(in_channels, 5, kernel_size, bias=True, backend="torch").double()
    x = torch.randn(len(grid), in_channels, dtype=torch.double, requires_grad=True)
    out = conv(x, level)
    dense = torch.zeros(2, in_channels, 8, 8, 8, dtype=torch.double)
    dense[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]] = x.detach()
    dense.requires_grad_(True)
    weight = conv.weight.permute(0, 4, 1, 2, 3)  # (out, kx, ky, kz, in) -> (out, in, kx, ky, kz)
    ref = F.conv3d(dense, weight, conv.bias, padding=kernel_size // 2)[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]]
    assert torch.allclose(out, ref, atol=1e-12)
    # Gradients of the custom autograd function (input and weight) against the dense reference.
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, conv.weight), grad)
    gd, gw_ref = torch.autograd.grad(ref, (dense, conv.weight), grad)
    assert torch.allclose(gw, gw_ref, atol=1e-10)
    assert torch.allclose(gx, gd[batch, :, grid[:, 0], grid[:, 1], grid[:, 2]], atol=1e-10)


def test_patch_layout_reference_padding() -> None:
    """K = min(patch, smallest cloud); the last patch is topped up from the previous one's tail."""
    grid = torch.stack([torch.arange(13), torch.zeros(13, dtype=torch.long), torch.zeros(13, dtype=torch.long)], 1)
    level = Point.from_batch(grid, torch.zeros(13, 1), offset=torch.tensor([9, 13])).current
    layout = patch_layout(level, patch_size=16)
    assert layout.patch_size == 4
    # cloud 0: 9 points -> 12 slots, slots 9..11 repeat positions 5..7; cloud 1: 4 points, no padding.
    assert layout.source.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 9, 10, 11, 12]
    assert layout.slot_of_position.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15]


def _attention_out(backend: str, data: dict[str, torch.Tensor], order_index: int) -> torch.Tensor:
    device = data["feat"].device
    torch.manual_seed(0)
    attn = SerializedAttention(32, 4, patch_size=64, order_index=order_index, backend=backend).to(device)
    level = Point.from_batch(data["grid_coord"], data["feat"], offset=data["offset"]).current
    x = torch.randn(level.num_points, 32, generator=torch.Generator().manual_seed(1)).to(device)
    return attn(x, level)


@pytest.mark.parametrize("order_index", [0, 2])
def test_attention_sdpa_matches_naive(order_index: int) -> None:
    data = _surface_batch(1)
    assert torch.allclose(_attention_out("sdpa", data, order_index), _attention_out("naive", data, order_index),
                          atol=1e-5)


def test_default_inference_is_deterministic_and_training_runs() -> None:
    data = _surface_batch(2)
    model = create_segmentor("tiny", drop_path=0.2).eval()
    with torch.no_grad():
        first, second = model(data), model(data)
    assert torch.equal(first, second)
    model.train()
    loss = model(data).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_encoder_only_mode() -> None:
    data = _surface_batch(3)
    config, _ = get_config("tiny", enc_mode=True)
    model = PTv3Segmentor(config, num_classes=3).eval()
    assert not list(model.backbone.dec.children())
    with torch.no_grad():
        point = model.backbone(data)
    assert point.level == 4 and point.feat.shape == (point.levels[4].num_points, 32)


def test_ditr_hierarchy_exposes_pooled_image_features() -> None:
    data = _surface_batch(4)
    data["image_feat"] = torch.randn(len(data["feat"]), 12)
    model = create_segmentor("tiny", image_channels=12, image_reduce="mean").eval()
    with torch.no_grad():
        point = model.backbone(data)
    level1 = point.levels[1]
    inv = level1.pooling_inverse
    sums = torch.zeros(level1.num_points, 12).index_add_(0, inv, data["image_feat"])
    manual = sums / torch.bincount(inv, minlength=level1.num_points)[:, None]
    assert torch.allclose(level1.image_feat, manual, atol=1e-6)
    assert point.levels[0].dec_feat is point.feat
    with pytest.raises(ValueError, match="image_feat"):
        model.backbone({k: v for k, v in data.items() if k != "image_feat"})


@pytest.mark.skipif(not (CUDA and spconv_available()), reason="needs CUDA and spconv")
def test_spconv_backend_matches_torch() -> None:
    data = _surface_batch(5)
    level = Point.from_batch(data["grid_coord"].cuda(), data["feat"].cuda(), offset=data["offset"].cuda()).current
    conv = SubMConv3d(6, 16, 3, backend="torch").cuda()
    feat = torch.randn(level.num_points, 6, device="cuda")
    ref = conv(feat, level)
    conv.backend = "spconv"
    assert torch.allclose(conv(feat, level), ref, atol=1e-4)


@pytest.mark.skipif(not (CUDA and flash_attn_available()), reason="needs CUDA and flash-attn")
def test_flash_backend_matches_sdpa() -> None:
    data = {k: v.cuda() for k, v in _surface_batch(6).items()}
    ref = _attention_out("sdpa", data, 0)
    assert torch.allclose(_attention_out("flash", data, 0), ref, atol=2e-2)


def test_forward_leaves_a_given_point_untouched_and_reuses_its_caches() -> None:
    data = _surface_batch(7)
    model = create_segmentor("tiny").train()
    point = Point.from_dict(data)
    before = (point.feat.clone(), point.levels[0].order.clone())
    out = model.backbone(point)
    out2 = model.backbone(point)
    assert len(point.levels) == 1 and point.levels[0].enc_feat is None
    assert torch.equal(point.feat, before[0]) and torch.equal(point.levels[0].order, before[1])
    assert out.levels[0].cache is point.levels[0].cache and ("neighbor_map", 5) in point.levels[0].cache
    assert out2.feat.shape == out.feat.shape

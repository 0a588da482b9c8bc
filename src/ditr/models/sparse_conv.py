"""Submanifold sparse 3D convolution in plain PyTorch (optional spconv backend on CUDA).

A submanifold convolution only produces outputs at occupied voxels and only reads occupied
neighbours, so it reduces to: find, for every voxel and kernel offset, the row of the neighbour
(hashed lookup), gather those rows and multiply by the kernel. The neighbour map is computed once
per level and kernel size and cached on the :class:`~ditr.models.point.Level`.

The weight is stored as ``(out, kx, ky, kz, in)`` exactly like spconv 2.x, so reference state
dicts load without conversion. Kernel axis 1 follows x, 2 follows y, 3 follows z; it is a
correlation (no kernel flip).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from .point import Level

# Rows gathered per chunk are bounded so the temporary (rows, k^3 * C) matrix stays ~16 MB.
_CHUNK_ELEMENTS = 1 << 22


def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> Tensor:
    """(k^3, 3) offsets in weight order: x slowest, z fastest, centred on zero."""
    r = kernel_size // 2
    grid = itertools.product(range(kernel_size), repeat=3)
    return torch.tensor([[a - r, b - r, c - r] for a, b, c in grid], device=device, dtype=torch.long)


def build_neighbor_map(grid_coord: Tensor, batch: Tensor, kernel_size: int) -> Tensor:
    """Row index of the neighbour of every voxel at every kernel offset, ``N`` where empty.

    Voxels are packed into unique int64 keys (batch, x, y, z) with a margin of the kernel radius so
    that shifted keys never alias; lookup is a sort + ``searchsorted``. Returns (N, k^3) int64.
    """
    n = grid_coord.shape[0]
    r = kernel_size // 2
    g = grid_coord.long() + r
    extent = int(g.max()) + r + 1 if n else 1
    key = ((batch.long() * extent + g[:, 0]) * extent + g[:, 1]) * extent + g[:, 2]
    sorted_key, perm = torch.sort(key)
    offs = kernel_offsets(kernel_size, grid_coord.device)
    delta = (offs[:, 0] * extent + offs[:, 1]) * extent + offs[:, 2]
    query = key[:, None] + delta[None, :]
    pos = torch.searchsorted(sorted_key, query).clamp_(max=max(n - 1, 0))
    found = sorted_key[pos] == query
    return torch.where(found, perm[pos], torch.full_like(pos, n))


def neighbor_map(level: Level, kernel_size: int) -> Tensor:
    """Cached :func:`build_neighbor_map` for a level."""
    key = ("neighbor_map", kernel_size)
    if key not in level.cache:
        level.cache[key] = build_neighbor_map(level.grid_coord, level.batch, kernel_size)
    return level.cache[key]


def _gather_matmul(src: Tensor, nbr: Tensor, weight2d: Tensor) -> Tensor:
    """``out[i] = concat_k(src_pad[nbr[i, k]]) @ weight2d`` in row chunks; src_pad has a zero row."""
    n, taps = nbr.shape
    src_pad = torch.cat([src, src.new_zeros(1, src.shape[1])])
    out = src.new_empty(n, weight2d.shape[1])
    rows = max(1, _CHUNK_ELEMENTS // max(1, taps * src.shape[1]))
    for start in range(0, n, rows):
        idx = nbr[start : start + rows]
        gathered = src_pad.index_select(0, idx.reshape(-1)).view(idx.shape[0], -1)
        torch.mm(gathered, weight2d, out=out[start : start + rows])
    return out


class _SubMConvFunction(torch.autograd.Function):
    """Gather-matmul conv that saves only the input and the neighbour map for backward.

    Autograd through a gather would keep the (N, k^3 * C) gathered matrix alive for every conv in
    the network; recomputing it in backward keeps training memory near the size of the features.
    The input gradient is itself a submanifold conv with the flipped, transposed kernel because
    the neighbour relation is symmetric (same cloud, opposite offset).
    """

    @staticmethod
    def forward(ctx, feat: Tensor, weight: Tensor, nbr: Tensor) -> Tensor:  # type: ignore[override]
        c_out, taps, c_in = weight.shape[0], nbr.shape[1], weight.shape[-1]
        w2d = weight.reshape(c_out, taps, c_in).permute(1, 2, 0).reshape(taps * c_in, c_out)
        ctx.save_for_backward(feat, weight, nbr)
        return _gather_matmul(feat, nbr, w2d)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        feat, weight, nbr = ctx.saved_tensors
        c_out, taps, c_in = weight.shape[0], nbr.shape[1], weight.shape[-1]
        grad_out = grad_out.contiguous()
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[0]:
            w_flip = weight.flip(1, 2, 3).reshape(c_out, taps, c_in).permute(1, 0, 2)
            grad_feat = _gather_matmul(grad_out, nbr, w_flip.reshape(taps * c_out, c_in))
        if ctx.needs_input_grad[1]:
            n = nbr.shape[0]
            feat_pad = torch.cat([feat, feat.new_zeros(1, c_in)])
            acc = feat.new_zeros(taps * c_in, c_out)
            rows = max(1, _CHUNK_ELEMENTS // max(1, taps * c_in))
            for start in range(0, n, rows):
                idx = nbr[start : start + rows]
                gathered = feat_pad.index_select(0, idx.reshape(-1)).view(idx.shape[0], -1)
                acc.addmm_(gathered.t(), grad_out[start : start + rows])
            grad_weight = acc.reshape(taps, c_in, c_out).permute(2, 0, 1).reshape(weight.shape)
        return grad_feat, grad_weight, None


def spconv_available() -> bool:
    """True when the spconv package can be imported (checked lazily, never at module import)."""
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:
        return False
    return True


class SubMConv3d(nn.Module):
    """Submanifold sparse conv over a :class:`Level`'s voxels.

    ``backend``: ``"torch"`` (gather + matmul, any device), ``"spconv"`` (CUDA + spconv installed)
    or ``"auto"`` (spconv for CUDA inputs when importable, torch otherwise).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, backend: str = "auto"
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("submanifold convolution needs an odd kernel size")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.backend = backend
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels * self.kernel_size**3
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}, backend={self.backend!r}"
        )

    def _resolve_backend(self, feat: Tensor) -> str:
        if self.backend == "auto":
            return "spconv" if feat.is_cuda and spconv_available() else "torch"
        if self.backend not in ("torch", "spconv"):
            raise ValueError(f"unknown sparse conv backend {self.backend!r}")
        return self.backend

    def forward(self, feat: Tensor, level: Level) -> Tensor:
        if self._resolve_backend(feat) == "spconv":
            out = self._forward_spconv(feat, level)
        else:
            out = _SubMConvFunction.apply(feat, self.weight, neighbor_map(level, self.kernel_size))
        if self.bias is not None:
            out = out + self.bias
        return out

    def _forward_spconv(self, feat: Tensor, level: Level) -> Tensor:
        """Run spconv's SubMConv3d with this module's weight; rulebooks are cached per level."""
        import spconv.pytorch as spconv
        from torch.func import functional_call

        key = ("spconv_module", self.in_channels, self.out_channels, self.kernel_size)
        module = level.cache.get(key)
        if module is None:
            module = spconv.SubMConv3d(
                self.in_channels, self.out_channels, self.kernel_size, bias=False,
                indice_key=f"subm{self.kernel_size}",
            ).to(feat.device)
            level.cache[key] = module
        tensor_key = ("spconv_tensor", self.kernel_size)
        sp = level.cache.get(tensor_key)
        indices = torch.cat([level.batch[:, None], level.grid_coord], 1).int()
        if sp is None:
            shape = (level.grid_coord.max(0).values + self.kernel_size).tolist()
            sp = spconv.SparseConvTensor(feat, indices, shape, int(level.batch.max()) + 1)
        else:
            sp = sp.replace_feature(feat)
        out = functional_call(module, {"weight": self.weight.to(feat.dtype)}, (sp,))
        level.cache[tensor_key] = out  # carries the rulebook (indice_dict) for later convs
        return out.features

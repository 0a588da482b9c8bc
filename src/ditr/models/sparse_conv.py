"""Submanifold sparse 3D convolution in plain PyTorch (optional spconv backend on CUDA).

A submanifold convolution only produces outputs at occupied voxels and only reads occupied
neighbours, so it reduces to: find, for every voxel and kernel offset, the row of the neighbour
(hashed lookup), then per offset gather the existing neighbours, multiply by that offset's kernel
slice and add into the outputs. On surfaces only about a third of a 3x3x3 neighbourhood is
occupied, so working on existing pairs instead of a dense (N, k^3) table saves most of the
arithmetic and memory traffic. Narrow inputs (the stem) instead gather whole neighbourhoods and
run one GEMM (see ``_IM2COL_MAX_IN_CHANNELS``). The rulebook is computed once per level and kernel size and cached
on the :class:`~ditr.models.point.Level`.

The weight is stored as ``(out, kx, ky, kz, in)`` exactly like spconv 2.x, so reference state
dicts load without conversion. Kernel axis 1 follows x, 2 follows y, 3 follows z; it is a
correlation (no kernel flip).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .point import Level

#: Sparse-convolution implementations: ``auto`` picks spconv on CUDA when installed, else torch.
CONV_BACKENDS = ("auto", "torch", "spconv")

def kernel_offsets(kernel_size: int, device: torch.device | None = None) -> Tensor:
    """(k^3, 3) offsets in weight order: x slowest, z fastest, centred on zero."""
    r = kernel_size // 2
    grid = itertools.product(range(kernel_size), repeat=3)
    return torch.tensor([[a - r, b - r, c - r] for a, b, c in grid], device=device, dtype=torch.long)


# Neighbour lookup uses a dense int32 table over the (batch, x, y, z) box when it has at most this
# many cells (128 MB); larger, sparser extents (outdoor scenes) fall back to sort + searchsorted.
_DENSE_TABLE_CELLS = 1 << 25


def build_neighbor_map(grid_coord: Tensor, batch: Tensor, kernel_size: int) -> Tensor:
    """Row index of the neighbour of every voxel at every kernel offset, ``N`` where empty.

    Voxels are packed into unique int64 keys (batch, x, y, z) with a margin of the kernel radius on
    every axis, so that a shifted key never aliases another cell or cloud. Lookup goes through a
    dense table when the box is small, otherwise through sort + ``searchsorted``. Returns
    (N, k^3) int64 with offsets in weight order.
    """
    n = grid_coord.shape[0]
    device = grid_coord.device
    r = kernel_size // 2
    g = grid_coord.long() + r
    if n == 0:
        return torch.zeros(0, kernel_size**3, dtype=torch.long, device=device)
    ex, ey, ez = (int(v) + r + 1 for v in g.max(0).values)
    key = ((batch.long() * ex + g[:, 0]) * ey + g[:, 1]) * ez + g[:, 2]
    offs = kernel_offsets(kernel_size, device)
    delta = (offs[:, 0] * ey + offs[:, 1]) * ez + offs[:, 2]
    cells = (int(batch.max()) + 1) * ex * ey * ez
    if cells <= _DENSE_TABLE_CELLS:
        table = torch.full((cells,), n, dtype=torch.int32, device=device)
        table[key] = torch.arange(n, dtype=torch.int32, device=device)
        return table[key[:, None] + delta[None, :]].long()
    sorted_key, perm = torch.sort(key)
    query = key[:, None] + delta[None, :]
    pos = torch.searchsorted(sorted_key, query).clamp_(max=n - 1)
    found = sorted_key[pos] == query
    return torch.where(found, perm[pos], torch.full_like(pos, n))


# Convs with at most this many input channels (the stem) gather whole neighbourhoods and run one
# GEMM: with few input channels the gathered matrix is small, and it avoids per-offset scatters
# into the much wider output (3x faster for the 6 -> 32 channel, 5^3 stem at 100k points).
_IM2COL_MAX_IN_CHANNELS = 8
_IM2COL_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ConvPairs:
    """Rulebook of a submanifold conv: for every non-centre kernel offset, the (output row, input
    row) pairs that exist. The centre offset pairs every voxel with itself and needs no indices."""

    kernel_size: int
    out_index: tuple[Tensor, ...]
    in_index: tuple[Tensor, ...]

    @property
    def centre(self) -> int:
        return self.kernel_size**3 // 2


def build_conv_pairs(nbr: Tensor, kernel_size: int) -> ConvPairs:
    """Split a neighbour map into per-offset index pairs (only existing neighbours)."""
    n = nbr.shape[0]
    nbr_t = nbr.t()
    valid = nbr_t < n
    counts = valid.sum(1).tolist()
    k_idx, rows = valid.nonzero(as_tuple=True)
    out_index = rows.split(counts)
    in_index = nbr_t[k_idx, rows].split(counts)
    return ConvPairs(kernel_size, tuple(out_index), tuple(in_index))


def neighbor_map(level: Level, kernel_size: int) -> Tensor:
    """Cached :func:`build_neighbor_map` of a level."""
    key = ("neighbor_map", kernel_size)
    if key not in level.cache:
        level.cache[key] = build_neighbor_map(level.grid_coord, level.batch, kernel_size)
    return level.cache[key]


def conv_pairs(level: Level, kernel_size: int) -> ConvPairs:
    """Cached rulebook of a level for a kernel size."""
    key = ("conv_pairs", kernel_size)
    if key not in level.cache:
        nbr = build_neighbor_map(level.grid_coord, level.batch, kernel_size)
        level.cache[key] = build_conv_pairs(nbr, kernel_size)
    return level.cache[key]


def _im2col_matmul(src: Tensor, nbr: Tensor, weight2d: Tensor) -> Tensor:
    """``out[i] = concat_k(src_pad[nbr[i, k]]) @ weight2d`` in row chunks (src_pad: a zero row
    appended for missing neighbours); the gathered chunk stays around 16 MB."""
    n, taps = nbr.shape
    src_pad = torch.cat([src, src.new_zeros(1, src.shape[1])])
    out = src.new_empty(n, weight2d.shape[1])
    rows = max(1, _IM2COL_CHUNK_ELEMENTS // (taps * src.shape[1]))
    for start in range(0, n, rows):
        idx = nbr[start : start + rows]
        gathered = src_pad.index_select(0, idx.reshape(-1)).view(idx.shape[0], -1)
        torch.mm(gathered, weight2d, out=out[start : start + rows])
    return out


class _Im2colConvFunction(torch.autograd.Function):
    """Dense-neighbourhood conv for narrow inputs (the stem): one GEMM per row chunk over the
    gathered (rows, k^3 * C_in) matrix, no scatter. Backward recomputes the gathers; the input
    gradient is the same conv with the flipped, transposed kernel (the neighbour relation is
    symmetric)."""

    @staticmethod
    def forward(ctx, feat: Tensor, weight: Tensor, nbr: Tensor) -> Tensor:  # type: ignore[override]
        c_out, taps, c_in = weight.shape[0], nbr.shape[1], weight.shape[-1]
        w2d = weight.reshape(c_out, taps * c_in).t().to(feat.dtype)
        ctx.save_for_backward(feat, weight, nbr)
        return _im2col_matmul(feat, nbr, w2d)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        feat, weight, nbr = ctx.saved_tensors
        c_out, taps, c_in = weight.shape[0], nbr.shape[1], weight.shape[-1]
        grad_out = grad_out.contiguous().to(feat.dtype)
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[0]:
            w_flip = weight.flip(1, 2, 3).reshape(c_out, taps, c_in).permute(1, 0, 2)
            grad_feat = _im2col_matmul(grad_out, nbr, w_flip.reshape(taps * c_out, c_in).to(feat.dtype))
        if ctx.needs_input_grad[1]:
            feat_pad = torch.cat([feat, feat.new_zeros(1, c_in)])
            acc = feat.new_zeros(taps * c_in, c_out)
            rows = max(1, _IM2COL_CHUNK_ELEMENTS // (taps * c_in))
            for start in range(0, nbr.shape[0], rows):
                idx = nbr[start : start + rows]
                gathered = feat_pad.index_select(0, idx.reshape(-1)).view(idx.shape[0], -1)
                acc.addmm_(gathered.t(), grad_out[start : start + rows])
            grad_weight = acc.t().reshape(weight.shape).to(weight.dtype)
        return grad_feat, grad_weight, None


def _pairs_matmul(src: Tensor, weight: Tensor, pairs: ConvPairs, transpose: bool) -> Tensor:
    """``out[o] += src[i] @ W_k`` over the rulebook (``transpose``: the input-gradient direction,
    ``out[i] += src[o] @ W_k^T``). ``weight`` is (out, k^3, in)."""
    # w[:, k, :] maps src channels to result channels: (in, k^3, out) forward, (out, k^3, in) backward.
    w = weight if transpose else weight.permute(2, 1, 0)
    out = src @ w[:, pairs.centre, :]
    for k, (o, i) in enumerate(zip(pairs.out_index, pairs.in_index)):
        if k == pairs.centre or o.numel() == 0:
            continue
        dst, rows = (i, o) if transpose else (o, i)
        out.index_add_(0, dst, src.index_select(0, rows) @ w[:, k, :])
    return out


class _SubMConvFunction(torch.autograd.Function):
    """Rulebook conv that saves only the input (and the cached rulebook) for backward.

    Recomputing the gathers in backward keeps training memory near the size of the features
    instead of keeping a gathered copy per kernel offset alive for every conv in the network.
    """

    @staticmethod
    def forward(ctx, feat: Tensor, weight: Tensor, pairs: ConvPairs) -> Tensor:  # type: ignore[override]
        c_out, c_in = weight.shape[0], weight.shape[-1]
        # Under autocast the features may arrive in bf16/fp16: compute in their precision.
        w = weight.reshape(c_out, -1, c_in).to(feat.dtype)
        ctx.save_for_backward(feat, weight)
        ctx.pairs = pairs
        return _pairs_matmul(feat, w, pairs, transpose=False)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        feat, weight = ctx.saved_tensors
        pairs: ConvPairs = ctx.pairs
        c_out, c_in = weight.shape[0], weight.shape[-1]
        w = weight.reshape(c_out, -1, c_in).to(feat.dtype)
        grad_out = grad_out.contiguous().to(feat.dtype)
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feat = _pairs_matmul(grad_out, w, pairs, transpose=True)
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(w)
            grad_w[:, pairs.centre, :] = grad_out.t() @ feat
            for k, (o, i) in enumerate(zip(pairs.out_index, pairs.in_index)):
                if k != pairs.centre and o.numel():
                    grad_w[:, k, :] = grad_out.index_select(0, o).t() @ feat.index_select(0, i)
            grad_weight = grad_w.reshape(weight.shape).to(weight.dtype)
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
        if self.backend not in CONV_BACKENDS[1:]:
            raise ValueError(f"unknown sparse conv backend {self.backend!r}")
        return self.backend

    def forward(self, feat: Tensor, level: Level) -> Tensor:
        if self._resolve_backend(feat) == "spconv":
            out = self._forward_spconv(feat, level)
        elif self.in_channels <= _IM2COL_MAX_IN_CHANNELS:
            out = _Im2colConvFunction.apply(feat, self.weight, neighbor_map(level, self.kernel_size))
        else:
            out = _SubMConvFunction.apply(feat, self.weight, conv_pairs(level, self.kernel_size))
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

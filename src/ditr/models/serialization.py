"""Space-filling-curve codes for voxel coordinates (z-order and Hilbert).

PTv3 turns an unordered point set into sequences by sorting voxels along a space-filling curve.
Every function here is vectorised over points: the only Python loops run over the (at most 16)
bits of a coordinate, never over points.

A code is ``(batch << 3 * depth) | curve_code`` so that sorting a code sorts by cloud first and
patches built from the sorted order never mix clouds.
"""

from __future__ import annotations

import torch
from torch import Tensor

ORDERS: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
MAX_DEPTH = 16


def serialization_depth(grid_coord: Tensor, formula: str = "pointcept") -> int:
    """Bits per axis needed for a batch of voxel coordinates.

    Two formulas exist in the reference code bases and they disagree when ``max + 1`` is a power
    of two; Hilbert codes depend on the depth, so a checkpoint must be run with the formula it was
    trained with. ``"pointcept"``: ``bit_length(max + 1)``; ``"ditr"``: ``bit_length(max)``.
    """
    top = int(grid_coord.max()) if grid_coord.numel() else 0
    if formula == "pointcept":
        depth = (top + 1).bit_length()
    elif formula == "ditr":
        depth = top.bit_length()
    else:
        raise ValueError(f"unknown depth formula {formula!r}; expected 'pointcept' or 'ditr'")
    if depth > MAX_DEPTH:
        raise ValueError(f"grid coordinates up to {top} need {depth} bits; at most {MAX_DEPTH} supported")
    return max(depth, 1)


def _interleave(v0: Tensor, v1: Tensor, v2: Tensor, depth: int) -> Tensor:
    """Interleave three integer axes bit by bit; within each 3-bit group v0 is the most significant."""
    code = torch.zeros_like(v0)
    for i in range(depth):
        code |= ((v0 >> i) & 1) << (3 * i + 2)
        code |= ((v1 >> i) & 1) << (3 * i + 1)
        code |= ((v2 >> i) & 1) << (3 * i)
    return code


def z_order_encode(grid_coord: Tensor, depth: int) -> Tensor:
    """Morton code of (x, y, z) columns; x takes the most significant bit of each group."""
    g = grid_coord.long()
    return _interleave(g[:, 0], g[:, 1], g[:, 2], depth)


def hilbert_encode(grid_coord: Tensor, depth: int) -> Tensor:
    """Hilbert index via Skilling's "axes to transpose" transform, then bit interleaving.

    The depth is part of the curve's definition: the same coordinates at another depth give
    another curve, which is why :func:`serialization_depth` has to match the checkpoint.
    """
    g = grid_coord.long()
    v = [g[:, 0].clone(), g[:, 1].clone(), g[:, 2].clone()]
    q = 1 << (depth - 1)
    while q > 1:
        low = q - 1
        for i in range(3):
            bit_set = (v[i] & q) != 0
            if i == 0:
                v[0] = torch.where(bit_set, v[0] ^ low, v[0])
                continue
            swap = (v[0] ^ v[i]) & low
            v[0], v[i] = (
                torch.where(bit_set, v[0] ^ low, v[0] ^ swap),
                torch.where(bit_set, v[i], v[i] ^ swap),
            )
        q >>= 1
    v[1] = v[1] ^ v[0]
    v[2] = v[2] ^ v[1]
    t = torch.zeros_like(v[2])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((v[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    return _interleave(v[0] ^ t, v[1] ^ t, v[2] ^ t, depth)


def encode(grid_coord: Tensor, batch: Tensor, depth: int, order: str) -> Tensor:
    """Serialization code of one order, with the batch index in the high bits."""
    if order in ("z-trans", "hilbert-trans"):
        grid_coord = grid_coord[:, [1, 0, 2]]
    if order in ("z", "z-trans"):
        code = z_order_encode(grid_coord, depth)
    elif order in ("hilbert", "hilbert-trans"):
        code = hilbert_encode(grid_coord, depth)
    else:
        raise ValueError(f"unknown serialization order {order!r}; expected one of {ORDERS}")
    return (batch.long() << (3 * depth)) | code


def argsort_codes(code: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row sort order of codes and its inverse (position of each point in the order)."""
    order = torch.argsort(code, dim=1)
    inverse = torch.empty_like(order)
    positions = torch.arange(code.shape[1], device=code.device).expand_as(order)
    inverse.scatter_(1, order, positions)
    return order, inverse

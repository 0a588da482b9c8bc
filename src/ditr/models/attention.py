"""Serialized patch attention: multi-head attention inside fixed-size patches of a sorted order.

Points are sorted along one serialization order and cut into consecutive patches of ``K`` points,
per cloud. The reference's padding rule is kept exactly because it changes outputs: with
``K = min(patch_size, smallest cloud)``, a cloud of ``n > K`` points whose length is not a multiple
of K gets ``K - n % K`` extra slots filled with the points ``K`` positions earlier, i.e. the last
patch is topped up from the tail of the previous one. Each point reads its output from its own
slot; duplicates are dropped.

Backends: ``"sdpa"`` (torch scaled_dot_product_attention, fused and memory-lean on CPU and CUDA),
``"naive"`` (softmax(QK^T)V written out; the baseline for benchmarks), ``"flash"`` (flash-attn
varlen kernel, CUDA fp16/bf16, lazily imported), ``"auto"`` (flash when on CUDA and installed,
otherwise sdpa).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .point import Level

ATTENTION_BACKENDS = ("auto", "sdpa", "naive", "flash")


@dataclass(frozen=True)
class PatchLayout:
    """Slots of the padded, patched sequence for one level and patch size.

    ``source[j]``: serialized position (global over the batch) whose point fills slot j.
    ``slot_of_position[p]``: the slot where serialized position p reads its result.
    """

    patch_size: int
    source: Tensor
    slot_of_position: Tensor


def effective_patch_size(level: Level, patch_size: int) -> int:
    """``min(patch_size, smallest per-cloud point count)``, the reference's non-flash rule."""
    return max(1, min(patch_size, int(level.counts().min())))


def patch_layout(level: Level, patch_size: int) -> PatchLayout:
    """Padding indices for a level (cached; independent of which order row is used)."""
    k = effective_patch_size(level, patch_size)
    key = ("patch_layout", k)
    if key in level.cache:
        return level.cache[key]
    counts = level.counts()
    device = counts.device
    padded = torch.where(counts > k, (counts + k - 1) // k * k, counts)
    start = torch.cumsum(counts, 0) - counts
    start_pad = torch.cumsum(padded, 0) - padded
    cloud_of_slot = torch.repeat_interleave(torch.arange(len(counts), device=device), padded)
    local = torch.arange(int(padded.sum()), device=device) - start_pad[cloud_of_slot]
    local = torch.where(local < counts[cloud_of_slot], local, local - k)
    source = start[cloud_of_slot] + local
    cloud_of_pos = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    slot_of_position = torch.arange(level.num_points, device=device) + (start_pad - start)[cloud_of_pos]
    layout = PatchLayout(k, source, slot_of_position)
    level.cache[key] = layout
    return layout


def flash_attn_available() -> bool:
    """True when flash-attn can be imported (checked lazily)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:
        return False
    return True


def naive_attention(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T * scale) v with the score matrix materialised, as the reference computes it."""
    attn = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, dropout_p)
    return attn @ v


class SerializedAttention(nn.Module):
    """Multi-head attention over serialized patches; ``qkv``/``proj`` names match the reference."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        patch_size: int,
        order_index: int = 0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by heads {num_heads}")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {ATTENTION_BACKENDS}")
        self.channels, self.num_heads, self.patch_size = channels, num_heads, patch_size
        self.order_index = order_index
        self.scale = qk_scale or (channels // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.backend = backend
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, patch_size={self.patch_size}, order_index={self.order_index}, "
                f"backend={self.backend!r}")

    def _resolve_backend(self, x: Tensor) -> str:
        if self.backend == "auto":
            return "flash" if x.is_cuda and flash_attn_available() else "sdpa"
        return self.backend

    def forward(self, x: Tensor, level: Level) -> Tensor:
        layout = patch_layout(level, self.patch_size)
        row = self.order_index % level.order.shape[0]
        # index_select rather than advanced indexing: its backward is an index_add, which on CPU is
        # several times faster than the accumulating index_put behind ``x[idx]``.
        slot_point = level.order[row].index_select(0, layout.source)  # point filling each slot
        qkv = self.qkv(x).index_select(0, slot_point)
        h, c, k = self.num_heads, self.channels, layout.patch_size
        dropout = self.attn_drop if self.training else 0.0
        backend = self._resolve_backend(x)
        if backend == "flash":
            out = self._flash(qkv, k, dropout)
        else:
            q, key, v = qkv.view(-1, k, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
            if backend == "naive":
                out = naive_attention(q, key, v, self.scale, dropout)
            else:
                out = F.scaled_dot_product_attention(q, key, v, dropout_p=dropout, scale=self.scale)
            out = out.transpose(1, 2).reshape(-1, c)
        out = out.index_select(0, layout.slot_of_position.index_select(0, level.inverse[row]))
        return self.proj_drop(self.proj(out))

    def _flash(self, qkv: Tensor, k: int, dropout: float) -> Tensor:
        """flash-attn varlen path (half precision on CUDA); patches are the cu_seqlens segments."""
        from flash_attn import flash_attn_varlen_qkvpacked_func

        h, c = self.num_heads, self.channels
        slots = qkv.shape[0]
        cu_seqlens = torch.arange(0, slots + 1, k, device=qkv.device, dtype=torch.int32)
        dtype = qkv.dtype if qkv.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = flash_attn_varlen_qkvpacked_func(
            qkv.to(dtype).view(slots, 3, h, c // h), cu_seqlens, max_seqlen=k,
            dropout_p=dropout, softmax_scale=self.scale,
        )
        return out.reshape(slots, c).to(qkv.dtype)

"""Serialized patch attention: multi-head attention inside patches of a sorted order.

Points are sorted along one serialization order and cut into consecutive patches of ``K`` points,
per cloud. The reference's padding rule is kept exactly because it changes outputs: a cloud of
``n > K`` points whose length is not a multiple of K gets ``K - n % K`` extra slots filled with the
points ``K`` positions earlier, i.e. the last patch is topped up from the tail of the previous one.
Each point reads its output from its own slot; duplicates are dropped.

The reference has two rules for K (``patch_grouping``), and they differ only when some cloud of the
batch has fewer than ``patch_size`` points at a level:

* ``"fixed"`` (its non-flash mode): ``K = min(patch_size, smallest cloud)``, every patch has K
  points, so one small cloud shrinks the patches of every other cloud in the batch;
* ``"flash"`` (its flash-attention mode, the one it trains with): ``K = patch_size``, and a cloud
  shorter than K is one patch of its own length (a shorter cu_seqlens segment), so a cloud's output
  does not depend on the other clouds of its batch.

``"auto"`` follows the reference: the flash rule with the flash kernel, the fixed rule otherwise.
The dense backends run the flash rule's variable-length patches one length at a time.

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
PATCH_GROUPINGS = ("auto", "fixed", "flash")


@dataclass(frozen=True)
class PatchLayout:
    """Slots of the padded, patched sequence for one level, patch size and grouping.

    ``source[j]``: serialized position (global over the batch) whose point fills slot j.
    ``slot_of_position[p]``: the slot where serialized position p reads its result.
    Every patch is a run of consecutive slots: ``cu_seqlens`` (int32) holds their boundaries, and
    ``runs`` lists ``(patch length, slots)`` for consecutive stretches of equal-length patches, so a
    dense kernel runs each stretch as one ``(patches, length)`` batch. Slots are ordered so that
    patches of equal length are adjacent (one run for the fixed grouping).
    ``patch_size`` is the longest patch.
    """

    patch_size: int
    source: Tensor
    slot_of_position: Tensor
    cu_seqlens: Tensor
    runs: tuple[tuple[int, int], ...]


def effective_patch_size(level: Level, patch_size: int) -> int:
    """``min(patch_size, smallest per-cloud point count)``, the reference's non-flash rule."""
    return max(1, min(patch_size, int(level.counts().min())))


def patch_layout(level: Level, patch_size: int, grouping: str = "fixed") -> PatchLayout:
    """Padding indices and patches for a level (cached; independent of which order row is used).

    ``grouping`` is ``"fixed"`` or ``"flash"`` (see the module docstring).
    """
    if grouping not in ("fixed", "flash"):
        raise ValueError(f"unknown patch grouping {grouping!r}; expected 'fixed' or 'flash'")
    k = effective_patch_size(level, patch_size) if grouping == "fixed" else patch_size
    key = ("patch_layout", grouping, k)
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
    # A cloud of at least k points makes padded / k patches of k; a shorter one (flash grouping only)
    # is a single patch of its own length.
    lengths = torch.repeat_interleave(counts.clamp(max=k), (padded + k - 1) // k)
    if bool((lengths != k).any()):
        source, slot_of_position, lengths = _sort_patches_by_length(source, slot_of_position, lengths)
    values, patches = torch.unique_consecutive(lengths, return_counts=True)
    runs = tuple((int(n), int(n) * int(p)) for n, p in zip(values.tolist(), patches.tolist()))
    cu_seqlens = F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)
    layout = PatchLayout(max(n for n, _ in runs) if runs else k, source, slot_of_position, cu_seqlens, runs)
    level.cache[key] = layout
    return layout


def _sort_patches_by_length(source: Tensor, slot_of_position: Tensor,
                            lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Reorder whole patches (longest first, stable) so that equal lengths are adjacent slots.

    Attention within a patch does not depend on where the patch sits, so this only lets a dense
    kernel batch each length as one (patches, length) tensor.
    """
    rank = torch.empty_like(lengths)
    by_length = torch.argsort(lengths, descending=True, stable=True)
    rank[by_length] = torch.arange(len(lengths), device=lengths.device)
    patch_of_slot = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    new_to_old = torch.argsort(rank[patch_of_slot], stable=True)
    old_to_new = torch.empty_like(new_to_old)
    old_to_new[new_to_old] = torch.arange(len(new_to_old), device=new_to_old.device)
    return source[new_to_old], old_to_new[slot_of_position], lengths[by_length]


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
        patch_grouping: str = "auto",
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by heads {num_heads}")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {ATTENTION_BACKENDS}")
        if patch_grouping not in PATCH_GROUPINGS:
            raise ValueError(f"unknown patch grouping {patch_grouping!r}; expected one of {PATCH_GROUPINGS}")
        self.channels, self.num_heads, self.patch_size = channels, num_heads, patch_size
        self.order_index = order_index
        self.scale = qk_scale or (channels // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.backend = backend
        self.patch_grouping = patch_grouping
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, patch_size={self.patch_size}, order_index={self.order_index}, "
                f"backend={self.backend!r}, patch_grouping={self.patch_grouping!r}")

    def _resolve_backend(self, x: Tensor) -> str:
        if self.backend == "auto":
            return "flash" if x.is_cuda and flash_attn_available() else "sdpa"
        return self.backend

    def _resolve_grouping(self, backend: str) -> str:
        """``auto``: the rule the reference pairs with the kernel (flash rule with flash-attn)."""
        if self.patch_grouping == "auto":
            return "flash" if backend == "flash" else "fixed"
        return self.patch_grouping

    def forward(self, x: Tensor, level: Level) -> Tensor:
        backend = self._resolve_backend(x)
        layout = patch_layout(level, self.patch_size, self._resolve_grouping(backend))
        row = self.order_index % level.order.shape[0]
        # index_select rather than advanced indexing: its backward is an index_add, which on CPU is
        # several times faster than the accumulating index_put behind ``x[idx]``.
        slot_point = level.order[row].index_select(0, layout.source)  # point filling each slot
        qkv = self.qkv(x).index_select(0, slot_point)
        dropout = self.attn_drop if self.training else 0.0
        if backend == "flash":
            out = self._flash(qkv, layout, dropout)
        else:
            sizes = [slots for _, slots in layout.runs]
            chunks = qkv.split(sizes) if len(sizes) > 1 else (qkv,)
            parts = [self._dense(chunk, length, backend, dropout) for (length, _), chunk in zip(layout.runs, chunks)]
            out = parts[0] if len(parts) == 1 else torch.cat(parts)
        out = out.index_select(0, layout.slot_of_position.index_select(0, level.inverse[row]))
        return self.proj_drop(self.proj(out))

    def _dense(self, qkv: Tensor, length: int, backend: str, dropout: float) -> Tensor:
        """sdpa / naive attention over (slots, 3C) rows that form whole patches of ``length``."""
        h, c = self.num_heads, self.channels
        q, key, v = qkv.view(-1, length, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        if backend == "naive":
            out = naive_attention(q, key, v, self.scale, dropout)
        else:
            out = F.scaled_dot_product_attention(q, key, v, dropout_p=dropout, scale=self.scale)
        return out.transpose(1, 2).reshape(-1, c)

    def _flash(self, qkv: Tensor, layout: PatchLayout, dropout: float) -> Tensor:
        """flash-attn varlen path (half precision on CUDA); patches are the cu_seqlens segments."""
        from flash_attn import flash_attn_varlen_qkvpacked_func

        h, c = self.num_heads, self.channels
        slots = qkv.shape[0]
        dtype = qkv.dtype if qkv.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = flash_attn_varlen_qkvpacked_func(
            qkv.to(dtype).view(slots, 3, h, c // h), layout.cu_seqlens, max_seqlen=layout.patch_size,
            dropout_p=dropout, softmax_scale=self.scale,
        )
        return out.reshape(slots, c).to(qkv.dtype)

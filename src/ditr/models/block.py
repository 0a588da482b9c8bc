"""PTv3 transformer block: conditional positional encoding, patch attention, MLP.

Submodule names (``cpe.0``, ``norm1.0``, ``attn.qkv``, ``mlp.0.fc1`` ...) follow the reference
state-dict layout so checkpoints load by name.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import SerializedAttention
from .point import Level
from .sparse_conv import SubMConv3d


class DropPath(nn.Module):
    """Stochastic depth per point: the reference applies it to the (N, C) feature matrix, so each
    point's residual branch is dropped independently (rows scaled by 1/keep)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)
        return x * mask / keep


class MLP(nn.Module):
    def __init__(self, channels: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """``x += CPE(x); x += Attn(LN(x)); x += MLP(LN(x))`` (pre-norm) or the post-norm variant.

    ``cpe_input`` lets the caller feed the positional conv something other than ``x``; the
    reference's first decoder block reads the projected skip features there (see
    ``PTv3Config.reference_compat``) while the residual still adds to the fused features.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        patch_size: int,
        order_index: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        pre_norm: bool = True,
        attn_backend: str = "auto",
        conv_backend: str = "auto",
        patch_grouping: str = "auto",
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.cpe = nn.ModuleList(
            [SubMConv3d(channels, channels, 3, bias=True, backend=conv_backend), nn.Linear(channels, channels),
             nn.LayerNorm(channels)]
        )
        self.norm1 = nn.Sequential(nn.LayerNorm(channels))
        self.attn = SerializedAttention(
            channels, num_heads, patch_size, order_index, qkv_bias, qk_scale, attn_drop, proj_drop, attn_backend,
            patch_grouping,
        )
        self.norm2 = nn.Sequential(nn.LayerNorm(channels))
        self.mlp = nn.Sequential(MLP(channels, int(channels * mlp_ratio), proj_drop))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, level: Level, cpe_input: Tensor | None = None) -> Tensor:
        conv, linear, norm = self.cpe
        x = x + norm(linear(conv(x if cpe_input is None else cpe_input, level)))
        if self.pre_norm:
            x = x + self.drop_path(self.attn(self.norm1(x), level))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        else:
            x = self.norm1(x + self.drop_path(self.attn(x, level)))
            x = self.norm2(x + self.drop_path(self.mlp(x)))
        return x

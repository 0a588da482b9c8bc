"""Point Transformer V3: one configurable backbone, a segmentation wrapper and named configs.

Module and parameter names mirror the reference PT-v3m1 / DITR PT-v3m1-image state dicts
(``embedding.stem.conv``, ``enc.enc1.down.proj``, ``dec.dec0.up.proj_image_feat.1`` ...), so
reference checkpoints load by name; see :mod:`ditr.models.reference`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from .. import checks
from ..errors import ConfigError
from .attention import ATTENTION_BACKENDS, PATCH_GROUPINGS, SerializedAttention
from .block import Block
from .point import Point
from .pooling import REDUCTIONS, SerializedPooling, SerializedUnpooling, _bn
from .serialization import ORDERS
from .sparse_conv import CONV_BACKENDS, SubMConv3d

#: Upper bound of any channel count (a sanity limit: larger widths only mean a typo and an out-of-memory crash).
MAX_CHANNELS = 1 << 16


@dataclass
class PTv3Config:
    """Every option of the backbone. Field names follow the reference config where one exists.

    ``reference_compat`` reproduces behaviours of the reference code that change outputs and that
    a checkpoint trained with it may rely on:

    * the first block of every decoder stage feeds its positional conv with the projected skip
      features instead of the fused ones (a stale sparse tensor in the reference);
    * every pooling re-shuffles the serialization rows with ``torch.randperm`` on the global RNG,
      in eval too (disable just this with ``compat_pooling_shuffle=False``);
    * level 0's rows are shuffled whenever ``shuffle_orders`` is set, in eval too. Repeatable
      inference needs both ``shuffle_orders=False`` and ``compat_pooling_shuffle=False``.

    Without it the model is deterministic at inference: orders are shuffled only in training
    (``shuffle_orders``). ``depth_formula`` selects the serialization depth rule ("pointcept":
    ``bit_length(max+1)``, "ditr": ``bit_length(max)``), which matters for Hilbert codes.

    DITR: ``image_channels`` (the VFM width) adds an image projection to the decoder stages named
    in ``image_stages`` (None: all of them, the reference), pooled with ``image_reduce``.

    ``patch_grouping`` picks how attention patches form when a cloud of the batch has fewer than
    ``patch_size`` points at a level: "fixed" (the reference without flash-attn: every patch of the
    batch shrinks to the smallest cloud), "flash" (the reference with flash-attn, as it trains:
    patches keep ``patch_size`` and a short cloud is one shorter patch), "auto" (flash with the
    flash kernel, fixed otherwise). See :mod:`ditr.models.attention`.
    """

    in_channels: int = 6
    order: tuple[str, ...] = ORDERS
    stride: tuple[int, ...] = (2, 2, 2, 2)
    enc_depths: tuple[int, ...] = (2, 2, 2, 6, 2)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256, 512)
    enc_num_head: tuple[int, ...] = (2, 4, 8, 16, 32)
    enc_patch_size: tuple[int, ...] = (1024, 1024, 1024, 1024, 1024)
    dec_depths: tuple[int, ...] = (2, 2, 2, 2)
    dec_channels: tuple[int, ...] = (64, 64, 128, 256)
    dec_num_head: tuple[int, ...] = (4, 4, 8, 16)
    dec_patch_size: tuple[int, ...] = (1024, 1024, 1024, 1024)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    drop_path: float = 0.3
    pre_norm: bool = True
    shuffle_orders: bool = True
    enc_mode: bool = False
    pooling_reduce: str = "max"
    image_channels: int | None = None
    image_stages: tuple[int, ...] | None = None
    image_reduce: str = "max"
    image_dropout: float = 0.0
    reference_compat: bool = False
    compat_pooling_shuffle: bool = True
    depth_formula: str = "pointcept"
    attn_backend: str = "auto"
    conv_backend: str = "auto"
    patch_grouping: str = "auto"

    def __post_init__(self) -> None:
        """Ranges and relations of the fields; a ConfigError names the field (``model.ptv3.<field>``
        in a run config, where :mod:`ditr.configs.schema` adds the section)."""
        for name in ("order", "stride", "enc_depths", "enc_channels", "enc_num_head", "enc_patch_size",
                     "dec_depths", "dec_channels", "dec_num_head", "dec_patch_size"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)):
                raise ConfigError("", name, f"must be a list, got {value!r}")
            setattr(self, name, tuple(value))
        checks.positive_int("in_channels", self.in_channels, high=MAX_CHANNELS)
        if not self.order:
            raise ConfigError("", "order", "needs at least one serialization order")
        unknown = set(self.order) - set(ORDERS)
        if unknown:
            raise ConfigError("", "order", f"unknown serialization orders {sorted(unknown)}; expected {ORDERS}")
        stages = len(self.enc_depths)
        if stages < 1:
            raise ConfigError("", "enc_depths", "needs at least one encoder stage")
        for name in ("enc_channels", "enc_num_head", "enc_patch_size"):
            if len(getattr(self, name)) != stages:
                raise ConfigError("", name, f"needs {stages} entries (one per encoder stage: enc_depths has {stages})")
        if len(self.stride) != stages - 1:
            raise ConfigError("", "stride", f"needs {stages - 1} entries (one per pooling between the {stages} "
                                            "encoder stages of enc_depths)")
        if not self.enc_mode:
            for name in ("dec_depths", "dec_channels", "dec_num_head", "dec_patch_size"):
                if len(getattr(self, name)) != stages - 1:
                    raise ConfigError("", name, f"needs {stages - 1} entries (one per decoder stage: "
                                                f"enc_depths has {stages} stages)")
        for name, high in (("stride", 64), ("enc_depths", 1000), ("dec_depths", 1000), ("enc_channels", MAX_CHANNELS),
                           ("dec_channels", MAX_CHANNELS), ("enc_num_head", MAX_CHANNELS),
                           ("dec_num_head", MAX_CHANNELS), ("enc_patch_size", 1 << 20), ("dec_patch_size", 1 << 20)):
            for i, v in enumerate(getattr(self, name)):
                checks.positive_int(f"{name}[{i}]", v, high=high)
        for part in ("enc", "dec"):
            for i, (c, h) in enumerate(zip(getattr(self, f"{part}_channels"), getattr(self, f"{part}_num_head"))):
                if c % h:
                    raise ConfigError("", f"{part}_num_head[{i}]",
                                      f"{h} heads do not divide {c} channels ({part}_channels[{i}])")
        checks.number("mlp_ratio", self.mlp_ratio, low=0, high=64, low_open=True)
        checks.number("qk_scale", self.qk_scale, low=0, low_open=True, optional=True)
        for name in ("attn_drop", "proj_drop", "drop_path", "image_dropout"):
            checks.number(name, getattr(self, name), low=0, high=1, high_open=True)
        checks.one_of("pooling_reduce", self.pooling_reduce, REDUCTIONS)
        checks.one_of("image_reduce", self.image_reduce, REDUCTIONS)
        checks.positive_int("image_channels", self.image_channels, optional=True, high=MAX_CHANNELS)
        checks.one_of("depth_formula", self.depth_formula, ("pointcept", "ditr"))
        checks.one_of("attn_backend", self.attn_backend, ATTENTION_BACKENDS)
        checks.one_of("conv_backend", self.conv_backend, CONV_BACKENDS)
        checks.one_of("patch_grouping", self.patch_grouping, PATCH_GROUPINGS)
        if self.image_stages is not None:
            self.image_stages = tuple(self.image_stages)
            bad = [i for i in self.image_stages if not 0 <= i < len(self.dec_depths)]
            if bad:
                raise ConfigError("", "image_stages",
                                  f"{bad} are not decoder stages 0..{len(self.dec_depths) - 1}")
        if self.image_channels is not None and self.enc_mode:
            raise ConfigError("", "enc_mode", "image features are injected in the decoder; enc_mode has none")

    @property
    def out_channels(self) -> int:
        return self.enc_channels[-1] if self.enc_mode else self.dec_channels[0]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PTv3Config:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown PTv3Config fields {sorted(unknown)}")
        return cls(**dict(data))


def _drop_path_rates(depths: tuple[int, ...], rate: float) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates over all blocks, split per stage."""
    total = sum(depths)
    values = torch.linspace(0, rate, total, device="cpu").tolist() if total else []
    out, start = [], 0
    for d in depths:
        out.append(values[start : start + d])
        start += d
    return out


class Embedding(nn.Module):
    """Stem: ``GELU(BN(SubMConv5(x)))`` (no conv bias)."""

    def __init__(self, in_channels: int, channels: int, conv_backend: str) -> None:
        super().__init__()
        self.stem = nn.ModuleDict(
            {
                "conv": SubMConv3d(in_channels, channels, 5, bias=False, backend=conv_backend),
                "norm": _bn(channels),
                "act": nn.GELU(),
            }
        )

    def forward(self, point: Point) -> Tensor:
        return self.stem["act"](self.stem["norm"](self.stem["conv"](point.feat, point.current)))


class Stage(nn.Module):
    """Optional down/up sampling followed by ``block0 .. block{n-1}``."""

    def __init__(self, blocks: list[Block], down: SerializedPooling | None = None,
                 up: SerializedUnpooling | None = None) -> None:
        super().__init__()
        if down is not None:
            self.down = down
        if up is not None:
            self.up = up
        self.num_blocks = len(blocks)
        for i, block in enumerate(blocks):
            self.add_module(f"block{i}", block)

    def blocks(self) -> list[Block]:
        return [getattr(self, f"block{i}") for i in range(self.num_blocks)]


class PointTransformerV3(nn.Module):
    """PTv3 backbone (PT-v3m1), optionally with DITR image-feature injection in the decoder.

    ``forward`` takes a dict with ``grid_coord``, ``feat``, ``offset``/``batch`` and, for DITR,
    ``image_feat`` (N, image_channels), or a :class:`Point` built from one (reusing a Point reuses
    its cached neighbour maps; it is not modified). It returns a new :class:`Point` with the final
    features in ``feat`` (level 0 unless ``enc_mode``) and every level's encoder/decoder outputs
    and pooled image features kept in ``point.levels``.
    """

    def __init__(self, config: PTv3Config | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or PTv3Config(), **overrides)
        self.config = config
        c = config
        block_args: dict[str, Any] = dict(
            mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, qk_scale=c.qk_scale, attn_drop=c.attn_drop,
            proj_drop=c.proj_drop, pre_norm=c.pre_norm, attn_backend=c.attn_backend, conv_backend=c.conv_backend,
            patch_grouping=c.patch_grouping,
        )
        num_orders = len(c.order)
        self.embedding = Embedding(c.in_channels, c.enc_channels[0], c.conv_backend)
        self.enc = nn.ModuleDict()
        for s, rates in enumerate(_drop_path_rates(c.enc_depths, c.drop_path)):
            down = None
            if s > 0:
                down = SerializedPooling(c.enc_channels[s - 1], c.enc_channels[s], c.stride[s - 1], c.pooling_reduce)
            blocks = [
                Block(c.enc_channels[s], c.enc_num_head[s], c.enc_patch_size[s], i % num_orders,
                      drop_path=rate, **block_args)
                for i, rate in enumerate(rates)
            ]
            self.enc[f"enc{s}"] = Stage(blocks, down=down)
        self.dec = nn.ModuleDict()
        if not c.enc_mode:
            dec_channels = list(c.dec_channels) + [c.enc_channels[-1]]
            dec_rates = _drop_path_rates(c.dec_depths, c.drop_path)
            for s in reversed(range(len(c.dec_depths))):
                injected = c.image_stages is None or s in c.image_stages
                up = SerializedUnpooling(dec_channels[s + 1], c.enc_channels[s], dec_channels[s],
                                         c.image_channels if injected else None, c.image_dropout)
                blocks = [
                    Block(dec_channels[s], c.dec_num_head[s], c.dec_patch_size[s], i % num_orders,
                          drop_path=rate, **block_args)
                    for i, rate in enumerate(reversed(dec_rates[s]))
                ]
                self.dec[f"dec{s}"] = Stage(blocks, up=up)

    @property
    def reference_compat(self) -> bool:
        return self.config.reference_compat

    @reference_compat.setter
    def reference_compat(self, value: bool) -> None:
        self.config.reference_compat = bool(value)

    def set_backends(self, attn: str | None = None, conv: str | None = None,
                     patch_grouping: str | None = None) -> None:
        """Switch attention / sparse-conv backends of every layer (``auto``/``sdpa``/``naive``/
        ``flash`` and ``auto``/``torch``/``spconv``) and the attention patch grouping
        (``auto``/``fixed``/``flash``), e.g. to evaluate on the CPU with the grouping a model was
        trained with."""
        for module in self.modules():
            if isinstance(module, SerializedAttention):
                if attn is not None:
                    module.backend = attn
                if patch_grouping is not None:
                    module.patch_grouping = patch_grouping
            if conv is not None and isinstance(module, SubMConv3d):
                module.backend = conv
        if attn is not None:
            self.config.attn_backend = attn
        if conv is not None:
            self.config.conv_backend = conv
        if patch_grouping is not None:
            self.config.patch_grouping = patch_grouping

    def make_point(self, data: Point | Mapping[str, Tensor]) -> Point:
        """Serialize input data with this model's orders and depth rule."""
        if isinstance(data, Point):
            return data.fresh()
        return Point.from_dict(data, orders=self.config.order, depth_formula=self.config.depth_formula)

    def _maybe_shuffle(self, point: Point, at_pooling: bool) -> None:
        c = self.config
        if c.reference_compat:
            shuffle = c.compat_pooling_shuffle if at_pooling else c.shuffle_orders
        else:
            shuffle = c.shuffle_orders and self.training
        if shuffle:
            point.permute_orders(torch.randperm(len(c.order)))

    def forward(self, data: Point | Mapping[str, Tensor]) -> Point:
        c = self.config
        point = self.make_point(data)
        if c.image_channels is not None:
            image = point.levels[0].image_feat
            if image is None or image.shape[-1] != c.image_channels:
                raise ValueError(f"this model needs image_feat of shape (N, {c.image_channels})")
        self._maybe_shuffle(point, at_pooling=False)
        point.feat = self.embedding(point)
        for s, stage in enumerate(cast("Iterable[Stage]", self.enc.values())):
            if s > 0:
                stage.down(point, c.image_reduce)
                self._maybe_shuffle(point, at_pooling=True)
            for block in stage.blocks():
                point.feat = block(point.feat, point.current)
            point.current.enc_feat = point.feat
        for stage in cast("Iterable[Stage]", self.dec.values()):
            point, skip = stage.up(point)
            for i, block in enumerate(stage.blocks()):
                stale = skip if (i == 0 and c.reference_compat) else None
                point.feat = block(point.feat, point.current, cpe_input=stale)
            point.current.dec_feat = point.feat
        return point


class PTv3Segmentor(nn.Module):
    """Backbone + ``seg_head = Linear(out_channels, num_classes)`` (reference ``DefaultSegmentorV2``)."""

    def __init__(self, config: PTv3Config | None = None, num_classes: int = 20, **overrides: Any) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = PointTransformerV3(config, **overrides)
        self.seg_head = nn.Linear(self.backbone.config.out_channels, num_classes)

    @property
    def config(self) -> PTv3Config:
        return self.backbone.config

    def forward(self, data: Point | Mapping[str, Tensor]) -> Tensor:
        """Per-point logits (N, num_classes) in input order (coarsest level when ``enc_mode``)."""
        return self.seg_head(self.backbone(data).feat)


_CONFIGS: dict[str, Callable[[], tuple[PTv3Config, int]]] = {}


def register_config(
        name: str) -> Callable[[Callable[[], tuple[PTv3Config, int]]], Callable[[], tuple[PTv3Config, int]]]:
    """Register a named config: a function returning (backbone config, number of classes)."""

    def wrap(fn: Callable[[], tuple[PTv3Config, int]]) -> Callable[[], tuple[PTv3Config, int]]:
        if name in _CONFIGS:
            raise ValueError(f"config {name!r} registered twice")
        _CONFIGS[name] = fn
        return fn

    return wrap


def list_configs() -> list[str]:
    return sorted(_CONFIGS)


def get_config(name: str, **overrides: Any) -> tuple[PTv3Config, int]:
    """Named config with field overrides; ``num_classes`` may be overridden too."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown PTv3 config {name!r}; available: {list_configs()}")
    config, num_classes = _CONFIGS[name]()
    num_classes = overrides.pop("num_classes", num_classes)
    return dataclasses.replace(config, **overrides), num_classes


def create_segmentor(name: str, **overrides: Any) -> PTv3Segmentor:
    """``create_segmentor("scannet")`` builds the reference ScanNet PTv3 (46,167,572 parameters)."""
    config, num_classes = get_config(name, **overrides)
    return PTv3Segmentor(config, num_classes)


@register_config("scannet")
def _scannet() -> tuple[PTv3Config, int]:
    """PT-v3m1 ScanNet semantic segmentation (20 classes, colour + normal input)."""
    return PTv3Config(), 20


@register_config("scannet200")
def _scannet200() -> tuple[PTv3Config, int]:
    return PTv3Config(), 200


@register_config("ditr-scannet")
def _ditr_scannet() -> tuple[PTv3Config, int]:
    """DITR PT-v3m1-image with DINOv2 ViT-L features (1024 channels) injected in the decoder."""
    return PTv3Config(image_channels=1024, depth_formula="ditr"), 20


@register_config("tiny")
def _tiny() -> tuple[PTv3Config, int]:
    """The widths of the shared parity fixtures: a few hundred thousand parameters, for tests."""
    return (
        PTv3Config(
            enc_depths=(1, 1, 1, 1, 1), enc_channels=(8, 16, 16, 32, 32), enc_num_head=(1, 2, 2, 4, 4),
            enc_patch_size=(16,) * 5, dec_depths=(1, 1, 1, 1), dec_channels=(16, 16, 16, 32),
            dec_num_head=(2, 2, 2, 4), dec_patch_size=(16,) * 4, mlp_ratio=2, drop_path=0.0,
        ),
        5,
    )


__all__ = [
    "PTv3Config", "PointTransformerV3", "PTv3Segmentor", "Embedding", "Stage",
    "register_config", "list_configs", "get_config", "create_segmentor",
]

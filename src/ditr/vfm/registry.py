"""Named vision foundation models: one spec class, each variant a single registration line.

A name (``dinov2-vitl14-reg``, ``dinov3-vitl16``, ...) fixes the architecture only; where the weights
come from (a local Hugging Face directory, an official Meta ``.pth``, the hub, or a seeded random
init for the ``tiny-random`` variants) is decided by :mod:`ditr.vfm.loading`. Keeping the numbers
here, away from loading and forward code, means a new variant is one line and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DitrError

#: Numeric precisions a backend runs the VFM in ("auto": bf16 on a CUDA device that has it, else fp32).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: "antialias": resize DINOv2's learned position embeddings as timm and Meta's register models do
#: (bicubic, antialiased; the reference); "plain": bicubic without antialiasing (transformers'
#: Dinov2Model default). Irrelevant for DINOv3, whose RoPE needs no resizing.
POS_INTERPOLATIONS = ("antialias", "plain")

if TYPE_CHECKING:  # transformers loads in seconds: only where a model is built, not for `ditr --help`
    from transformers import PretrainedConfig

#: Pixel mean / std the DINO models were trained with (ImageNet statistics, RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VFMSpec:
    """Architecture of one named DINOv2 / DINOv3 ViT (what a checkpoint must match)."""

    name: str
    family: str  # "dinov2" (learned, interpolated position embeddings) or "dinov3" (RoPE)
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_ratio: int = 4
    swiglu: bool = False
    swiglu_align: int = 8
    num_registers: int = 0
    qkv_bias: bool = True
    image_size: int = 518  # pretraining size; sets DINOv2's position-embedding grid (518 / 14 = 37)
    intermediate_size: int | None = None  # the MLP width as a config.json gives it (else from mlp_ratio)
    hub_id: str | None = None
    random_weights: bool = False  # tiny test / demo models: seeded random init, never real features
    seed: int = 0

    @property
    def feature_dim(self) -> int:
        return self.hidden_size

    @property
    def model_type(self) -> str:
        """The transformers ``model_type`` whose classes implement this spec."""
        if self.family == "dinov3":
            return "dinov3_vit"
        return "dinov2_with_registers" if self.num_registers else "dinov2"

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the block MLP (SwiGLU keeps two thirds, rounded up to ``swiglu_align``)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        width = int(self.hidden_size * self.mlp_ratio)
        if not self.swiglu:
            return width
        d = int(width * 2 / 3)
        return d + (-d % self.swiglu_align)

    def hf_config(self) -> PretrainedConfig:
        from transformers import Dinov2Config, Dinov2WithRegistersConfig, DINOv3ViTConfig

        """The transformers configuration that builds this architecture."""
        common: dict[str, Any] = dict(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                      num_attention_heads=self.num_heads, patch_size=self.patch_size,
                      image_size=self.image_size, layerscale_value=1.0)
        if self.family == "dinov3":
            # the gated MLP applies hidden_act to the gate: SiLU makes it Meta's SwiGLU
            return DINOv3ViTConfig(**common, intermediate_size=self.mlp_hidden, use_gated_mlp=self.swiglu,
                                   hidden_act="silu" if self.swiglu else "gelu",
                                   num_register_tokens=self.num_registers, query_bias=self.qkv_bias,
                                   key_bias=False, value_bias=self.qkv_bias, layer_norm_eps=1e-5,
                                   rope_theta=100.0)
        common.update(mlp_ratio=self.mlp_ratio, use_swiglu_ffn=self.swiglu, qkv_bias=self.qkv_bias,
                      layer_norm_eps=1e-6)
        if self.num_registers:
            return Dinov2WithRegistersConfig(**common, num_register_tokens=self.num_registers)
        return Dinov2Config(**common)


_REGISTRY: dict[str, VFMSpec] = {}


def register(spec: VFMSpec) -> VFMSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _dinov2(size: str, dim: int, depth: int, heads: int, hub: str, **kw) -> None:
    """Register a DINOv2 size with and without the 4 register tokens (the reference uses ``-reg``)."""
    register(VFMSpec(f"dinov2-vit{size}14", "dinov2", 14, dim, depth, heads, hub_id=f"facebook/dinov2-{hub}", **kw))
    register(VFMSpec(f"dinov2-vit{size}14-reg", "dinov2", 14, dim, depth, heads, num_registers=4,
                     hub_id=f"facebook/dinov2-with-registers-{hub}", **kw))


def _dinov3(arch: str, dim: int, depth: int, heads: int, **kw) -> None:
    """Register a DINOv3 ViT under Meta's architecture tag (``vitl16``, ``vith16plus``, ...)."""
    register(VFMSpec(f"dinov3-{arch}", "dinov3", 16, dim, depth, heads, num_registers=4, image_size=224,
                     hub_id=f"facebook/dinov3-{arch}-pretrain-lvd1689m", **kw))


_dinov2("s", 384, 12, 6, "small")
_dinov2("b", 768, 12, 12, "base")
_dinov2("l", 1024, 24, 16, "large")
_dinov2("g", 1536, 40, 24, "giant", swiglu=True)
_dinov3("vits16", 384, 12, 6)
_dinov3("vits16plus", 384, 12, 6, mlp_ratio=6, swiglu=True)
_dinov3("vitb16", 768, 12, 12)
_dinov3("vitl16", 1024, 24, 16)
_dinov3("vith16plus", 1280, 32, 20, mlp_ratio=6, swiglu=True)
_dinov3("vit7b16", 4096, 40, 32, mlp_ratio=3, swiglu=True, swiglu_align=64, qkv_bias=False)
# Tiny seeded random-init variants: same code paths as the real models, for tests and the offline demo.
register(VFMSpec("dinov2-tiny-random", "dinov2", 14, 32, 2, 2, image_size=56, random_weights=True))
register(VFMSpec("dinov2-tiny-random-reg", "dinov2", 14, 32, 2, 2, num_registers=4, image_size=56,
                 random_weights=True))
register(VFMSpec("dinov3-tiny-random", "dinov3", 16, 32, 2, 2, num_registers=4, image_size=64,
                 random_weights=True))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


#: Architectures of unregistered Hugging Face repositories read so far, by repository id.
_HUB_SPECS: dict[str, VFMSpec] = {}


def get_spec(name: str, *, allow_download: bool = False) -> VFMSpec:
    """Look a model up by name; Meta's hub spelling (``dinov2_vitl14_reg``) is accepted too, and so is a
    Hugging Face repository id (:mod:`ditr.vfm.hub`: a registered model's, or any DINO repository in the
    local cache; fetched with ``allow_download``)."""
    from .hub import hub_spec, is_hub_id

    key = name.strip().lower().replace("_", "-")
    if key in _REGISTRY:
        return _REGISTRY[key]
    if not is_hub_id(name):
        raise DitrError(f"unknown model {name!r}; known models: {', '.join(list_models())}, "
                        f"or a Hugging Face repository id (owner/name)")
    repo_id = name.strip()
    registered = [spec for spec in _REGISTRY.values() if spec.hub_id and spec.hub_id.lower() == repo_id.lower()]
    if registered:
        return registered[0]
    if repo_id not in _HUB_SPECS:
        _HUB_SPECS[repo_id] = hub_spec(repo_id, allow_download)
    return _HUB_SPECS[repo_id]

"""The architecture of one DINOv2 / DINOv3 ViT, apart from the names that register it.

:mod:`ditr.vfm.registry` names the variants ditr knows and :mod:`ditr.vfm.hub` reads the architecture
of other Hugging Face repositories; both build this one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # transformers loads in seconds: only where a model is built, not for `ditr --help`
    from transformers import PretrainedConfig


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
    #: file name under ``ditr/vfm/weights/`` for models whose weights ship with the package
    packaged_weights: str | None = None
    #: what the packaged weights are, shown wherever the weights' source is reported
    weights_note: str = ""

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
        """The transformers configuration that builds this architecture."""
        from transformers import Dinov2Config, Dinov2WithRegistersConfig, DINOv3ViTConfig

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

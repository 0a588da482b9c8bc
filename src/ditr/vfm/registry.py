"""Named vision foundation models: one spec class, each variant a single registration line.

A name (``dinov2-vitl14-reg``, ``dinov3-vitl16``, ...) fixes the architecture only; where the weights
come from (a local Hugging Face directory, an official Meta ``.pth``, the hub, a seeded random
init for the ``tiny-random`` variants, or a file shipped inside the package for ``demo-vit-rooms``)
is decided by :mod:`ditr.vfm.loading`. Keeping the numbers
here, away from loading and forward code, means a new variant is one line and nothing else changes.
"""

from __future__ import annotations

from ..errors import DitrError
from .spec import VFMSpec

__all__ = ["VFMSpec", "get_spec", "list_models", "register"]

#: Numeric precisions a backend runs the VFM in ("auto": bf16 on a CUDA device that has it, else fp32).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: "antialias": resize DINOv2's learned position embeddings as timm and Meta's register models do
#: (bicubic, antialiased; the reference); "plain": bicubic without antialiasing (transformers'
#: Dinov2Model default). Irrelevant for DINOv3, whose RoPE needs no resizing.
POS_INTERPOLATIONS = ("antialias", "plain")

#: Pixel mean / std the DINO models were trained with (ImageNet statistics, RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
# A tiny DINOv2-architecture ViT trained here on synthetic rooms' 2D label images (ditr.vfm.train_teacher,
# docs/demo-teacher.md): a teacher that knows the rooms' classes, not a foundation model.
register(VFMSpec("demo-vit-rooms", "dinov2", 14, 96, 4, 3, image_size=224,
                 packaged_weights="demo-vit-rooms.safetensors",
                 weights_note="trained on synthetic rooms (2D labels), not a foundation model"))
# Its outdoor sibling, trained the same way on synthetic streets' camera images (benchmarks/occlusion_study.py).
register(VFMSpec("demo-vit-streets", "dinov2", 14, 96, 4, 3, image_size=224,
                 packaged_weights="demo-vit-streets.safetensors",
                 weights_note="trained on synthetic streets (2D labels), not a foundation model"))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


#: Architectures of unregistered Hugging Face repositories read so far, by repository id.
_HUB_SPECS: dict[str, VFMSpec] = {}


def get_spec(name: str, *, allow_download: bool = False) -> VFMSpec:
    """Look a model up by name; Meta's hub spelling (``dinov2_vitl14_reg``) is accepted too, and so is a
    Hugging Face repository id (:mod:`ditr.vfm.hub`: a registered model's, or any DINO repository in the
    local cache; fetched with ``allow_download``)."""
    from .hub import hub_spec, is_hub_id  # hub reads config.json files: only for repository ids

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

"""Official Meta checkpoints (``*.pth`` of the DINOv2 / DINOv3 repositories) <-> transformers layout.

Meta's releases fuse the attention projections (``attn.qkv``) and, for SwiGLU models, DINOv2's gate
and up projections (``mlp.w12``); transformers keeps them apart. Both directions are driven by the
same rename table, so converting a transformers state dict to Meta's layout and back is the identity
(the tests rely on that to build a Meta-format file from random weights). Everything else about a
checkpoint (where it lives, how it is identified) belongs to :mod:`ditr.vfm.loading`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from ..errors import DitrError
from .registry import VFMSpec

#: Meta keys with no counterpart in the patch-feature path: training heads, and the separate norms
#: that DINOv3 applies to the CLS / register tokens only (we drop those tokens).
_IGNORED_PREFIXES = ("dino_head.", "ibot_head.", "head.", "cls_norm.", "local_cls_norm.")
_WRAPPER_KEYS = ("teacher", "model", "state_dict")
_STRIP_PREFIXES = ("module.", "backbone.")
_BLOCK_KEY = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")  # "blocks.3.x" or chunked "blocks.0.3.x"


@dataclass(frozen=True)
class _Rule:
    """One Meta tensor and the transformers tensors it holds, concatenated along dim 0 in this order.

    ``None`` marks a slice transformers does not keep: DINOv3's key bias, which is masked to zero in
    the released models and would not change the output anyway (a per-query constant added to every
    attention logit cancels in the softmax).
    """

    meta: str
    hf: tuple[str | None, ...]

    @property
    def first(self) -> str:
        """The first transformers tensor, always present: the Meta tensor is looked up by it."""
        name = self.hf[0]
        assert name is not None
        return name


def _rules(spec: VFMSpec) -> tuple[dict[str, _Rule], dict[str, _Rule]]:
    """(top-level rules, per-block rules relative to ``blocks.{i}.``) for one architecture."""
    v3 = spec.family == "dinov3"
    top = [_Rule("cls_token", ("embeddings.cls_token",)), _Rule("mask_token", ("embeddings.mask_token",))]
    if v3:
        top += [_Rule("storage_tokens", ("embeddings.register_tokens",)),
                _Rule("patch_embed.proj.weight", ("embeddings.patch_embeddings.weight",)),
                _Rule("patch_embed.proj.bias", ("embeddings.patch_embeddings.bias",)),
                _Rule("norm.weight", ("norm.weight",)), _Rule("norm.bias", ("norm.bias",))]
    else:
        top += [_Rule("pos_embed", ("embeddings.position_embeddings",)),
                _Rule("patch_embed.proj.weight", ("embeddings.patch_embeddings.projection.weight",)),
                _Rule("patch_embed.proj.bias", ("embeddings.patch_embeddings.projection.bias",)),
                _Rule("norm.weight", ("layernorm.weight",)), _Rule("norm.bias", ("layernorm.bias",))]
        if spec.num_registers:
            top.append(_Rule("register_tokens", ("embeddings.register_tokens",)))
    block = [_Rule("attn.qkv.weight",
                   ("attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight")),
             _Rule("attn.qkv.bias",
                   ("attention.q_proj.bias", None if v3 else "attention.k_proj.bias", "attention.v_proj.bias")),
             _Rule("ls1.gamma", ("layer_scale1.lambda1",)), _Rule("ls2.gamma", ("layer_scale2.lambda1",))]
    for part in ("weight", "bias"):
        block += [_Rule(f"norm1.{part}", (f"norm1.{part}",)), _Rule(f"norm2.{part}", (f"norm2.{part}",)),
                  _Rule(f"attn.proj.{part}", (f"attention.o_proj.{part}",))]
        if spec.swiglu and v3:  # DINOv3 SwiGLUFFN: w3(silu(w1 x) * w2 x)
            block += [_Rule(f"mlp.w1.{part}", (f"mlp.gate_proj.{part}",)),
                      _Rule(f"mlp.w2.{part}", (f"mlp.up_proj.{part}",)),
                      _Rule(f"mlp.w3.{part}", (f"mlp.down_proj.{part}",))]
        elif spec.swiglu:  # DINOv2 fused SwiGLU: w12 = [gate; up]
            block += [_Rule(f"mlp.w12.{part}", (f"mlp.gate_proj.{part}", f"mlp.up_proj.{part}")),
                      _Rule(f"mlp.w3.{part}", (f"mlp.down_proj.{part}",))]
        else:
            fc1, fc2 = ("up_proj", "down_proj") if v3 else ("fc1", "fc2")
            block += [_Rule(f"mlp.fc1.{part}", (f"mlp.{fc1}.{part}",)),
                      _Rule(f"mlp.fc2.{part}", (f"mlp.{fc2}.{part}",))]
    return {r.meta: r for r in top}, {r.meta: r for r in block}


def _hf_block_prefix(spec: VFMSpec, i: int) -> str:
    return f"model.layer.{i}." if spec.family == "dinov3" else f"encoder.layer.{i}."


def rope_periods(spec: VFMSpec) -> torch.Tensor:
    """DINOv3's RoPE periods (Meta stores them as the ``rope_embed.periods`` buffer)."""
    head_dim = spec.hidden_size // spec.num_heads
    return 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (training checkpoints nest it; DDP prefixes names)."""
    while isinstance(obj, Mapping):
        nested = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DitrError("checkpoint does not contain a state dict of tensors")
    out = {}
    for key, value in obj.items():
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _check_architecture(sd: Mapping[str, torch.Tensor], spec: VFMSpec, source: str) -> None:
    """Fail with a readable message when the file holds a different ViT size than ``spec``."""
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))}
    width = sd["norm.weight"].shape[0] if "norm.weight" in sd else None
    if len(blocks) != spec.num_layers or width != spec.hidden_size:
        raise DitrError(f"{source}: checkpoint has {len(blocks)} blocks of width {width}, but model "
                        f"{spec.name!r} has {spec.num_layers} blocks of width {spec.hidden_size}; "
                        "choose the --model that matches the file")
    if spec.family == "dinov2" and "rope_embed.periods" in sd:
        raise DitrError(f"{source}: this is a DINOv3 checkpoint (RoPE); use a dinov3-* model name")
    if spec.family == "dinov3" and "pos_embed" in sd:
        raise DitrError(f"{source}: this is a DINOv2 checkpoint (learned position embeddings); "
                        "use a dinov2-* model name")


def meta_to_hf(state_dict: Mapping[str, torch.Tensor], spec: VFMSpec,
               source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Convert a Meta-layout state dict to transformers names; unknown keys are an error, not skipped."""
    sd = unwrap_state_dict(state_dict)
    _check_architecture(sd, spec, source)
    top, block = _rules(spec)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith(_IGNORED_PREFIXES) or key.endswith("attn.qkv.bias_mask"):
            continue
        if key == "rope_embed.periods":
            if not torch.allclose(value.float().cpu(), rope_periods(spec), rtol=1e-4):
                raise DitrError(f"{source}: RoPE periods differ from the standard DINOv3 ones (base 100); "
                                "not supported")
            continue
        m = _BLOCK_KEY.match(key)
        rule, prefix = (block.get(m.group(2)), _hf_block_prefix(spec, int(m.group(1)))) if m else (top.get(key), "")
        if rule is None:
            unknown.append(key)
            continue
        if m and m.group(2) == "attn.qkv.bias" and key + "_mask" in sd:
            value = value * _bias_mask(sd[key + "_mask"], source, key)
        if spec.family == "dinov3" and key == "mask_token":
            value = value.reshape(1, 1, -1)
        for name, part in zip(rule.hf, value.chunk(len(rule.hf), dim=0)):
            if name is not None:
                out[prefix + name] = part.contiguous()
    if unknown:
        raise DitrError(f"{source}: {len(unknown)} keys are not part of a {spec.family} ViT "
                        f"(first: {', '.join(unknown[:5])}); is this a backbone checkpoint of the right family?")
    return out


def _bias_mask(mask: torch.Tensor, source: str, key: str) -> torch.Tensor:
    if not torch.isfinite(mask).all():
        raise DitrError(f"{source}: {key}_mask holds NaN (an uninitialised training model, not a released checkpoint)")
    return mask.to(torch.float32)


def hf_to_meta(state_dict: Mapping[str, torch.Tensor], spec: VFMSpec) -> dict[str, torch.Tensor]:
    """The inverse of :func:`meta_to_hf`: write transformers weights in Meta's released layout."""
    top, block = _rules(spec)
    out: dict[str, torch.Tensor] = {}

    def gather(rule: _Rule, prefix: str, like: str) -> torch.Tensor:
        parts = [state_dict[prefix + n] if n is not None else torch.zeros_like(state_dict[prefix + like])
                 for n in rule.hf]
        return torch.cat(parts, dim=0) if len(parts) > 1 else parts[0].clone()

    for rule in top.values():
        if rule.first in state_dict:
            out[rule.meta] = gather(rule, "", rule.first)
    if spec.family == "dinov3":
        out["mask_token"] = out["mask_token"].reshape(1, -1)
        out["rope_embed.periods"] = rope_periods(spec)
    for i in range(spec.num_layers):
        prefix = _hf_block_prefix(spec, i)
        for rule in block.values():
            if prefix + rule.first in state_dict:
                out[f"blocks.{i}.{rule.meta}"] = gather(rule, prefix, rule.first)
        if spec.family == "dinov3" and spec.qkv_bias:
            d = spec.hidden_size
            out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
    return out


def config_for_state_dict(spec: VFMSpec, state_dict: Mapping[str, torch.Tensor]) -> PretrainedConfig:
    """The spec's transformers config, with DINOv3's bias switches read from the file.

    DINOv3 releases differ in which projections carry biases (the 7B has none on q / k / v); the
    file is the authority, so a present or absent bias never makes an otherwise valid file fail.
    """
    config = spec.hf_config()
    if spec.family == "dinov3":
        keys = unwrap_state_dict(state_dict).keys()
        config.query_bias = config.value_bias = "blocks.0.attn.qkv.bias" in keys
        config.proj_bias = "blocks.0.attn.proj.bias" in keys
        config.mlp_bias = any(k.startswith("blocks.0.mlp.") and k.endswith(".bias") for k in keys)
    return config


def load_meta_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], spec: VFMSpec,
                         source: str) -> None:
    """Convert and load strictly, naming missing / unexpected tensors instead of a torch traceback."""
    converted = meta_to_hf(state_dict, spec, source)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in converted.items()
             if k in expected and v.shape != expected[k].shape]
    unexpected = sorted(set(converted) - set(expected))
    if missing or wrong or unexpected:
        detail = "; ".join(f"{label}: {', '.join(items[:4])}" + (" ..." if len(items) > 4 else "")
                           for label, items in (("missing", missing), ("shape mismatch", wrong),
                                                ("unexpected", unexpected))
                           if items)
        raise DitrError(f"{source}: does not fit model {spec.name!r} ({detail})")
    bad = [k for k, v in converted.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DitrError(f"{source}: non-finite weights in {', '.join(bad[:4])}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=True)

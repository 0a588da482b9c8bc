"""Weights loaded from a Hugging Face directory and from a Meta-format .pth give the same features,
and the Meta layout is interpreted as Meta's own code does (checked against an independent forward)."""

from __future__ import annotations

import math

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ditr.errors import DitrError
from ditr.vfm import VFMBackend, VFMHandle, VFMSpec, get_spec, load_vfm
from ditr.vfm.checkpoints import hf_to_meta, load_meta_state_dict, meta_to_hf
from ditr.vfm.loading import _MODEL_CLASSES, build_random

TINY = ["dinov2-tiny-random", "dinov2-tiny-random-reg", "dinov3-tiny-random"]


def _perturbed_model(name: str, seed: int = 1):
    return _perturbed(build_random(get_spec(name)), seed)


def _perturbed(model, seed: int = 1):
    """Random weights with non-trivial layer scales, biases and tokens (init leaves many at 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", TINY)
def test_hf_directory_and_meta_pth_give_the_same_features(tmp_path, name):
    spec = get_spec(name)
    model = _perturbed_model(name)
    model.save_pretrained(tmp_path / "hf")
    torch.save(hf_to_meta(model.state_dict(), spec), tmp_path / "meta.pth")
    from_dir = load_vfm(name, tmp_path / "hf")
    from_pth = load_vfm(name, tmp_path / "meta.pth")
    assert "Hugging Face" in from_dir.source and "checkpoint file" in from_pth.source
    assert not from_dir.random_weights and not from_pth.random_weights
    img = _image(70, 100)
    a = VFMBackend(from_dir)([img], resolution=(56 if spec.patch_size == 14 else 64, 112))
    b = VFMBackend(from_pth)([img], resolution=(56 if spec.patch_size == 14 else 64, 112))
    assert a.shape == (1, spec.hidden_size, 4, 112 // spec.patch_size)
    assert (a - b).abs().max().item() <= 1e-5
    # and the weights really came from the files, not from the seeded init
    r = VFMBackend(load_vfm(name))([img], resolution=(56 if spec.patch_size == 14 else 64, 112))
    assert (a - r).abs().max().item() > 1e-2


@pytest.mark.parametrize("name", TINY)
def test_meta_layout_round_trip_is_exact(name):
    spec = get_spec(name)
    sd = _perturbed_model(name).state_dict()
    back = meta_to_hf(hf_to_meta(sd, spec), spec)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k].reshape(back[k].shape)), k


def _layer_norm(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)


def _rope(x: torch.Tensor, periods: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """DINOv3's rotary embedding of the patch tokens, written from its published definition."""
    ch = (torch.arange(h) + 0.5) / h * 2 - 1
    cw = (torch.arange(w) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), -1).reshape(-1, 2)
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None]).flatten(1).tile(2)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * angles.cos() + rotated * angles.sin()


def _meta_reference_forward(sd: dict, spec, pixels: torch.Tensor) -> torch.Tensor:
    """An independent ViT forward that reads Meta's key layout directly (no transformers)."""
    p, d, nh = spec.patch_size, spec.hidden_size, spec.num_heads
    v3 = spec.family == "dinov3"
    eps = 1e-5 if v3 else 1e-6
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = sd["cls_token"].expand(b, -1, -1)
    if v3:
        x = torch.cat([cls, sd["storage_tokens"].expand(b, -1, -1), x], 1)
    else:
        x = torch.cat([cls, x], 1) + sd["pos_embed"]  # native grid: no interpolation
        if spec.num_registers:
            x = torch.cat([x[:, :1], sd["register_tokens"].expand(b, -1, -1), x[:, 1:]], 1)
    prefix_tokens = 1 + spec.num_registers
    for i in range(spec.num_layers):
        blk = f"blocks.{i}."
        h = _layer_norm(x, sd, blk + "norm1", eps)
        bias = sd[blk + "attn.qkv.bias"] * sd.get(blk + "attn.qkv.bias_mask", 1.0)
        qkv = F.linear(h, sd[blk + "attn.qkv.weight"], bias).reshape(b, -1, 3, nh, d // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if v3:
            periods = sd["rope_embed.periods"]
            q = torch.cat([q[:, :, :prefix_tokens], _rope(q[:, :, prefix_tokens:], periods, gh, gw)], 2)
            k = torch.cat([k[:, :, :prefix_tokens], _rope(k[:, :, prefix_tokens:], periods, gh, gw)], 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // nh), -1) @ v
        attn = F.linear(attn.transpose(1, 2).reshape(b, -1, d), sd[blk + "attn.proj.weight"],
                        sd[blk + "attn.proj.bias"])
        x = x + sd[blk + "ls1.gamma"] * attn
        h = _layer_norm(x, sd, blk + "norm2", eps)

        def lin(name: str, t: torch.Tensor, blk: str = blk) -> torch.Tensor:
            return F.linear(t, sd[blk + f"mlp.{name}.weight"], sd[blk + f"mlp.{name}.bias"])

        if spec.swiglu and v3:  # w3(silu(w1 x) * w2 x)
            h = lin("w3", F.silu(lin("w1", h)) * lin("w2", h))
        elif spec.swiglu:  # w12 x = [x1; x2] -> w3(silu(x1) * x2)
            x1, x2 = lin("w12", h).chunk(2, -1)
            h = lin("w3", F.silu(x1) * x2)
        else:
            h = lin("fc2", F.gelu(lin("fc1", h)))
        x = x + sd[blk + "ls2.gamma"] * h
    x = _layer_norm(x, sd, "norm", eps)[:, prefix_tokens:]
    return x.reshape(b, gh, gw, d).permute(0, 3, 1, 2)


# SwiGLU variants (the layouts of DINOv2 ViT-g and DINOv3 ViT-S+/H+/7B) at test size
SWIGLU = {"dinov2-tiny-swiglu-reg": VFMSpec("dinov2-tiny-swiglu-reg", "dinov2", 14, 32, 2, 2, swiglu=True,
                                            num_registers=4, image_size=56, random_weights=True),
          "dinov3-tiny-swiglu": VFMSpec("dinov3-tiny-swiglu", "dinov3", 16, 32, 2, 2, mlp_ratio=6, swiglu=True,
                                        num_registers=4, image_size=64, random_weights=True)}


@pytest.mark.parametrize("name", [*TINY, *SWIGLU])
def test_converted_meta_weights_match_an_independent_meta_forward(name):
    spec = SWIGLU.get(name) or get_spec(name)
    meta = hf_to_meta(_perturbed(build_random(spec)).state_dict(), spec)
    model = _MODEL_CLASSES[spec.model_type](spec.hf_config())
    load_meta_state_dict(model, meta, spec, "test")
    backend = VFMBackend(VFMHandle.of_model(spec, model, "converted", random_weights=True))
    size = (spec.image_size, spec.image_size) if spec.family == "dinov2" else (48, 80)
    pixels = backend.preprocess([_image(*size)], size)
    ours = backend.forward(pixels)
    ref = _meta_reference_forward(meta, spec, pixels)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_dinov3_key_bias_is_masked_not_used(tmp_path):
    """Released DINOv3 files carry a key bias multiplied by a 0 mask; a NaN mask is rejected."""
    spec = get_spec("dinov3-tiny-random")
    meta = hf_to_meta(_perturbed_model("dinov3-tiny-random").state_dict(), spec)
    d = spec.hidden_size
    meta["blocks.0.attn.qkv.bias"][d:2 * d] = 5.0  # masked out by bias_mask
    assert "blocks.0.attention.k_proj.bias" not in meta_to_hf(meta, spec)
    meta["blocks.0.attn.qkv.bias_mask"][:] = float("nan")
    with pytest.raises(DitrError, match="NaN"):
        meta_to_hf(meta, spec)


def test_wrong_size_family_or_extra_keys_are_clear_errors(tmp_path):
    spec = get_spec("dinov2-tiny-random-reg")
    meta = hf_to_meta(_perturbed_model("dinov2-tiny-random-reg").state_dict(), spec)
    with pytest.raises(DitrError, match="blocks of width"):
        meta_to_hf(meta, get_spec("dinov2-vits14-reg"))
    with pytest.raises(DitrError, match="not part of"):
        meta_to_hf({**meta, "blocks.0.attn.extra": torch.zeros(1)}, spec)
    v3 = hf_to_meta(_perturbed_model("dinov3-tiny-random").state_dict(), get_spec("dinov3-tiny-random"))
    with pytest.raises(DitrError, match="DINOv3 checkpoint"):
        meta_to_hf(v3, get_spec("dinov2-tiny-random-reg"))
    # training checkpoints nest the backbone and prefix its names; both are unwrapped
    nested = {"teacher": {f"backbone.{k}": v for k, v in meta.items()}, "dino_head.w": torch.zeros(1)}
    assert set(meta_to_hf(nested, spec)) == set(meta_to_hf(meta, spec))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DitrError, match="cannot be read"):
        _ = load_vfm("dinov2-tiny-random-reg", tmp_path / "junk.pth").model  # read on first use
    with pytest.raises(DitrError, match="does not exist"):
        load_vfm("dinov2-tiny-random-reg", tmp_path / "missing.pth")


def test_no_weights_offline_is_a_clear_error_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DITR_MODELS", raising=False)
    with pytest.raises(DitrError) as err:
        load_vfm("dinov2-vitl14-reg")
    message = str(err.value)
    assert "--checkpoint" in message and "--download" in message and "facebook/dinov2-with-registers-large" in message


def test_models_dir_environment_variable(tmp_path, monkeypatch):
    spec = get_spec("dinov3-tiny-random")
    torch.save(hf_to_meta(_perturbed_model("dinov3-tiny-random").state_dict(), spec), tmp_path / f"{spec.name}.pth")
    monkeypatch.setenv("DITR_MODELS", str(tmp_path))
    loaded = load_vfm("dinov3-tiny-random")
    assert not loaded.random_weights and "checkpoint file" in loaded.source and not loaded.is_loaded


def test_dinov3_bias_switches_follow_the_file(tmp_path):
    """A release without q / k / v biases (as the 7B) loads; the missing biases are really absent."""
    spec = get_spec("dinov3-tiny-random")
    meta = hf_to_meta(_perturbed_model("dinov3-tiny-random").state_dict(), spec)
    for i in range(spec.num_layers):
        del meta[f"blocks.{i}.attn.qkv.bias"], meta[f"blocks.{i}.attn.qkv.bias_mask"]
    torch.save(meta, tmp_path / "nobias.pth")
    model = load_vfm("dinov3-tiny-random", tmp_path / "nobias.pth").model
    assert model.config.query_bias is False and model.model.layer[0].attention.q_proj.bias is None

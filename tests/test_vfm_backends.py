"""Model names, feature extraction as the reference defines it, and the switchable details."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.errors import DitrError
from ditr.vfm import VFMBackend, get_spec, list_models, load_vfm


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_registry_names_and_architectures():
    names = list_models()
    for size in "sblg":
        assert f"dinov2-vit{size}14" in names and f"dinov2-vit{size}14-reg" in names
    for arch in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16"):
        assert f"dinov3-{arch}" in names
    assert get_spec("dinov2_vitl14_reg") is get_spec("dinov2-vitl14-reg")  # Meta's hub spelling
    assert get_spec("dinov2-vitl14-reg").feature_dim == 1024
    assert get_spec("dinov2-vitg14").mlp_hidden == 4096  # SwiGLU: 2/3 of 6144, multiple of 8
    assert get_spec("dinov3-vith16plus").mlp_hidden == 5120
    assert get_spec("dinov3-vit7b16").mlp_hidden == 8192
    cfg = get_spec("dinov3-vitl16").hf_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_register_tokens, cfg.patch_size) == (1024, 24, 4, 16)
    assert all(get_spec(n).random_weights == ("tiny-random" in n) for n in names)
    with pytest.raises(DitrError, match="unknown model"):
        get_spec("dinov4-huge")


@pytest.mark.parametrize("name", ["dinov2-tiny-random", "dinov2-tiny-random-reg", "dinov3-tiny-random"])
def test_features_are_final_norm_patch_tokens_without_cls_and_registers(name):
    loaded = load_vfm(name)
    assert loaded.random_weights and loaded.source.startswith("random weights")
    backend = VFMBackend(loaded)
    spec = backend.spec
    p = spec.patch_size
    img = _image(3 * p + 5, 5 * p - 3)
    grid = backend([img])
    assert grid.shape == (1, spec.hidden_size, 3, 5) and grid.dtype == torch.float32
    pixels = backend.preprocess([img], (3 * p, 5 * p))
    with torch.no_grad():
        tokens = loaded.model(pixel_values=pixels).last_hidden_state
    assert tokens.shape[1] == 1 + spec.num_registers + 15
    expected = tokens[0, 1 + spec.num_registers:].reshape(3, 5, -1).permute(2, 0, 1)
    torch.testing.assert_close(grid[0], expected)
    # last_hidden_state is after the final LayerNorm: every token is normalised (mean ~ bias mean)
    norm = loaded.model.norm if spec.family == "dinov3" else loaded.model.layernorm
    centred = (grid[0] - norm.bias[:, None, None]) / norm.weight[:, None, None]
    assert centred.mean(0).abs().max() < 1e-4


def test_input_size_and_preprocessing():
    backend = VFMBackend(load_vfm("dinov2-tiny-random-reg"))
    assert backend.input_size(480, 640) == (476, 644)  # rounded to multiples of 14
    assert backend.input_size(480, 640, (420, 560)) == (420, 560)
    with pytest.raises(DitrError, match="multiples of the patch size"):
        backend.input_size(480, 640, (421, 560))
    img = np.zeros((28, 42, 3), np.uint8)
    img[..., 0] = 255
    x = backend.preprocess([img], (28, 42))
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    flipped = backend.preprocess([_image(28, 42)], (28, 42), flip=True)
    torch.testing.assert_close(flipped, backend.preprocess([_image(28, 42)[:, ::-1]], (28, 42)))


def test_position_embedding_interpolation_is_switchable():
    """Antialiased (reference / timm) vs plain bicubic differ off the native grid, agree on it."""
    loaded = load_vfm("dinov2-tiny-random")
    with torch.no_grad():
        loaded.model.embeddings.position_embeddings.normal_(generator=torch.Generator().manual_seed(0))
    anti = VFMBackend(loaded, pos_interpolation="antialias")
    plain = VFMBackend(loaded, pos_interpolation="plain")  # shares the model with `anti`
    img = _image(70, 70)
    small_a, native_a = anti([img], (28, 28)), anti([img], (56, 56))
    small_p, native_p = plain([img], (28, 28)), plain([img], (56, 56))
    assert (small_a - small_p).abs().max() > 1e-3
    torch.testing.assert_close(anti([img], (28, 28)), small_a)
    torch.testing.assert_close(native_a, native_p)
    with pytest.raises(DitrError):
        VFMBackend(loaded, pos_interpolation="bilinear")


def test_precision_and_device_choice():
    loaded = load_vfm("dinov3-tiny-random")
    assert VFMBackend(loaded, device="cpu").precision == "fp32"
    bf16 = VFMBackend(loaded, device="cpu", precision="bf16")
    out = bf16([_image(32, 48)])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert bf16.settings != VFMBackend(loaded).settings  # precision is part of the cache key
    if not torch.cuda.is_available():
        with pytest.raises(DitrError, match="CUDA"):
            VFMBackend(loaded, device="cuda")


def test_antialiased_default_matches_transformers_register_models():
    """transformers' Dinov2WithRegisters resizes antialiased, as Meta's register models do."""
    loaded = load_vfm("dinov2-tiny-random-reg")
    with torch.no_grad():
        loaded.model.embeddings.position_embeddings.normal_(generator=torch.Generator().manual_seed(0))
        pixels = torch.randn(1, 3, 42, 70, generator=torch.Generator().manual_seed(1))
        reference = loaded.model(pixel_values=pixels).last_hidden_state[:, 5:]
    ours = VFMBackend(loaded).forward(pixels)
    torch.testing.assert_close(ours[0].flatten(1).T, reference[0])

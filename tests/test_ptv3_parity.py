"""PTv3 / DITR parity against the reference fixtures in ../shared/checkpoints (see its README)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.models import PTv3Config, PTv3Segmentor, load_reference_state_dict
from ditr.models.serialization import ORDERS, encode, serialization_depth
from ditr.models.point import offset_to_batch

CHECKPOINTS = Path(__file__).parents[1].parent / "shared" / "checkpoints"
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("single_thread")


def _fixture(name: str) -> tuple[dict[str, np.ndarray], dict]:
    npz, meta = CHECKPOINTS / f"{name}.npz", CHECKPOINTS / f"{name}.json"
    if not npz.exists() or not meta.exists():
        pytest.skip(f"reference fixture {npz} not found (expected the shared checkpoints folder next to the repo)")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(meta.read_text())


def _model(arrays: dict[str, np.ndarray], meta: dict) -> PTv3Segmentor:
    b = meta["config"]["backbone"]
    keys = ("in_channels", "order", "stride", "enc_depths", "enc_channels", "enc_num_head", "enc_patch_size",
            "dec_depths", "dec_channels", "dec_num_head", "dec_patch_size", "mlp_ratio", "pre_norm")
    image = arrays.get("input.image_feat")
    config = PTv3Config(
        **{k: b[k] for k in keys}, drop_path=0.0, shuffle_orders=False,
        image_channels=None if image is None else image.shape[1],
    )
    model = PTv3Segmentor(config, meta["config"]["num_classes"])
    state = {k[len("state."):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k.startswith("state.")}
    report = load_reference_state_dict(model, state)
    assert report.ok and len(report.loaded) == len(state)
    assert model.backbone.reference_compat
    # The fixtures' main outputs were made with the pooling re-shuffle switched off (README section 4).
    model.backbone.config.compat_pooling_shuffle = False
    return model.eval()


def _inputs(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    data = {k: torch.from_numpy(arrays[f"input.{k}"]) for k in ("grid_coord", "feat", "offset")}
    if "input.image_feat" in arrays:
        data["image_feat"] = torch.from_numpy(arrays["input.image_feat"])
    return data


FIXTURES = ["ptv3m1_tiny_parity", "ptv3m1_tiny_parity_allorders", "ditr_tiny_parity"]


@pytest.mark.parametrize("name", FIXTURES)
def test_serialization_codes_bitwise(name: str) -> None:
    arrays, _ = _fixture(name)
    grid = torch.from_numpy(arrays["input.grid_coord"])
    batch = offset_to_batch(torch.from_numpy(arrays["input.offset"]))
    formula = "ditr" if name.startswith("ditr") else "pointcept"
    depth = serialization_depth(grid, formula)
    assert depth == int(arrays["inter.embedding.serialized_depth"])
    codes = torch.stack([encode(grid, batch, depth, o) for o in ORDERS])
    assert torch.equal(codes, torch.from_numpy(arrays["inter.embedding.serialized_code"]))


def test_depth_formulas_differ_at_powers_of_two() -> None:
    grid = torch.tensor([[0, 0, 0], [127, 3, 5]])
    assert serialization_depth(grid, "pointcept") == 8
    assert serialization_depth(grid, "ditr") == 7
    codes7 = encode(grid, torch.zeros(2, dtype=torch.long), 7, "hilbert")
    codes8 = encode(grid, torch.zeros(2, dtype=torch.long), 8, "hilbert")
    assert not torch.equal(codes7, codes8)


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_logits(name: str) -> None:
    arrays, meta = _fixture(name)
    model = _model(arrays, meta)
    with torch.no_grad():
        point = model.backbone(_inputs(arrays))
        logits = model.seg_head(point.feat)
    expected = torch.from_numpy(arrays["output.seg_logits"])
    assert (logits - expected).abs().max().item() <= TOL
    # Intermediates (full fixtures only): every level's encoder/decoder output and hierarchy.
    if "inter.embedding.feat" not in arrays:
        return
    for s, level in enumerate(point.levels):
        assert (level.enc_feat - torch.from_numpy(arrays[f"inter.enc{s}.feat"])).abs().max() <= TOL
        if s < len(point.levels) - 1:
            assert (level.dec_feat - torch.from_numpy(arrays[f"inter.dec{s}.feat"])).abs().max() <= TOL
        if s == 0:
            continue
        for key, ours in (("pooling_inverse", level.pooling_inverse), ("grid_coord", level.grid_coord), ("batch", level.batch)):
            assert torch.equal(ours, torch.from_numpy(arrays[f"inter.enc{s}.{key}"])), key
        assert level.depth == int(arrays[f"inter.enc{s}.serialized_depth"])
        if f"inter.enc{s}.image_feat" in arrays:
            assert torch.equal(level.image_feat, torch.from_numpy(arrays[f"inter.enc{s}.image_feat"]))


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_pooling_shuffle(name: str) -> None:
    """Reference default: every pooling re-permutes the order rows from the global RNG, even in eval."""
    arrays, meta = _fixture(name)
    model = _model(arrays, meta)
    model.backbone.config.compat_pooling_shuffle = True
    torch.manual_seed(7)
    with torch.no_grad():
        point = model.backbone(_inputs(arrays))
        logits = model.seg_head(point.feat)
    expected = torch.from_numpy(arrays["output.seg_logits_pool_shuffle_seed7"])
    assert (logits - expected).abs().max().item() <= TOL
    rows = meta["pooling_order_shuffle"]["order_rows_per_level_in_secondary"]
    assert [list(level.orders) for level in point.levels] == rows


def test_stale_cpe_quirk_matters() -> None:
    """Without reference_compat the decoder's first CPE reads the fused features: outputs move."""
    arrays, meta = _fixture("ptv3m1_tiny_parity")
    model = _model(arrays, meta)
    with torch.no_grad():
        compat = model(_inputs(arrays))
        model.backbone.reference_compat = False
        ours = model(_inputs(arrays))
        again = model(_inputs(arrays))
    assert (compat - ours).abs().max() > 0.1
    assert torch.equal(ours, again)

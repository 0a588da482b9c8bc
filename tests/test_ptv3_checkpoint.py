"""Reference manifests and reference state-dict loading reports (ditr.models.reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ditr.models import (
    ReferenceCheckpointError,
    create_segmentor,
    load_reference_state_dict,
    manifest_report,
)
from ditr.models.reference import extract_state_dict

CHECKPOINTS = Path(__file__).parents[1].parent / "shared" / "checkpoints"


pytestmark = pytest.mark.usefixtures("single_thread")


def _manifest(name: str) -> dict:
    path = CHECKPOINTS / name
    if not path.exists():
        pytest.skip(f"reference manifest {path} not found (expected the shared checkpoints folder next to the repo)")
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("config", "manifest", "params"),
    [
        ("scannet", "ptv3m1_scannet_manifest.json", 46_167_572),
        ("ditr-scannet", "ditr_ptv3m1_image_scannet_manifest.json", 46_693_396),
    ],
)
def test_scannet_manifest_maps_exactly(config: str, manifest: str, params: int) -> None:
    data = _manifest(manifest)
    with torch.device("meta"):
        model = create_segmentor(config)
    assert sum(p.numel() for p in model.parameters()) == params == data["total_parameters"]
    report = manifest_report(model, data)
    assert report.ok, str(report)
    assert len(report.loaded) == data["num_state_dict_entries"] == len(model.state_dict())


def test_reference_load_report_lists_missing_and_unexpected() -> None:
    model = create_segmentor("tiny")
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state.pop("module.seg_head.bias")
    state["module.backbone.extra.weight"] = torch.zeros(3)
    state["module.backbone.img_enc.vit.cls_token"] = torch.zeros(1, 1, 4)
    state["module.backbone.embedding.stem.conv.weight"] = torch.zeros(8, 3, 3, 3, 6)
    with pytest.raises(ReferenceCheckpointError, match="missing"):
        load_reference_state_dict(model, {"state_dict": state})
    report = load_reference_state_dict(model, {"state_dict": state}, strict=False)
    assert report.missing == ["seg_head.bias"]
    assert report.unexpected == ["backbone.extra.weight"]
    assert report.ignored == ["backbone.img_enc.vit.cls_token"]
    assert [k for k, _, _ in report.shape_mismatch] == ["backbone.embedding.stem.conv.weight"]
    assert "seg_head.bias" in str(report) and not report.ok
    assert model.backbone.reference_compat


def test_backbone_only_state_dict_loads_into_backbone_and_segmentor_keys_drop() -> None:
    source = create_segmentor("tiny")
    target = create_segmentor("tiny").backbone
    report = load_reference_state_dict(target, source.state_dict())
    assert report.ok and report.ignored == ["seg_head.weight", "seg_head.bias"]
    assert torch.equal(target.embedding.stem["conv"].weight, source.backbone.embedding.stem["conv"].weight)
    assert set(extract_state_dict({"model": {"module.a": 1}})) == {"a"}


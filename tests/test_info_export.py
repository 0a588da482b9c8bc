"""ditr info (checkpoints and bundles) and ditr export: the .ditr bundle, and why not TorchScript / ONNX."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ditr.cli import build_parser, main
from ditr.configs import load_preset
from ditr.data import SceneDataset, collate
from ditr.engine.checkpoint import save_training_state
from ditr.engine.metrics import segmentation_metrics
from ditr.errors import DitrError
from ditr.build import model_from_config
from ditr.model_files import is_bundle, load_model, read_bundle
from ditr.stored_paths import strip_paths
from conftest import small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory.mktemp("info"))


def save_trained_like(path: Path, presets: list[str], *overrides: str, metrics: bool = True) -> Path:
    """A random-init model saved with what the trainer records (step, epoch, best, last metrics)."""
    config = load_preset(presets, list(overrides))
    torch.manual_seed(0)
    model = model_from_config(config)
    state = {"model": model.state_dict(), "config": config.to_dict(), "step": 40, "epoch": 20, "total_steps": 60,
             "world_size": 1, "best": None, "metrics": None}
    if metrics:
        n = config.dataset.num_classes
        conf = torch.eye(n, dtype=torch.int64) * 10 + 1
        state["metrics"] = segmentation_metrics(conf, config.dataset.class_names)
        state["best"] = {"metric": "miou", "value": state["metrics"]["miou"], "step": 40}
    # the optimizer state a training checkpoint carries (AdamW: two moments per weight)
    state["optimizer"] = {"state": {i: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                                    for i, p in enumerate(model.parameters())}}
    save_training_state(path, state)
    return path


def info_json(capsys, path: Path) -> dict:
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_of_a_ditr_checkpoint(world, tmp_path, capsys):
    root, _, vfm = world
    ckpt = save_trained_like(tmp_path / "ditr.pt", ["synthetic", "method/ditr"], f"vfm.cache={root / 'features'}",
                             f"model.image_channels={vfm['feature_dim']}")
    info = info_json(capsys, ckpt)
    model, _ = load_model(ckpt)
    assert info["model"]["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert info["model"]["parameters"]["image_projections"] > 0 and info["model"]["image_channels"] == 32
    assert info["inference"]["needs_images"] is True and info["vfm"]["model"] == "dinov2-tiny-random-reg"
    assert info["data"]["class_names"][:3] == ["wall", "floor", "ceiling"] and info["data"]["in_channels"] == 6
    assert info["training"]["step"] == 40 and info["metrics"]["best"]["metric"] == "miou"
    assert info["model"]["voxel_size_m"] == 0.05 and info["file"]["kind"] == "training checkpoint"
    last = info["metrics"]["last"]  # fractions, per-class values by class name
    assert list(last["iou"])[:3] == ["wall", "floor", "ceiling"] and 0 <= last["miou"] <= 1
    assert main(["info", str(ckpt)]) == 0
    text = capsys.readouterr().out
    assert "needs images at inference: yes" in text and "last evaluation: mIoU" in text and "whiteboard" in text
    assert f"best miou: {100 * last['miou']:.2f}%" in text


def test_info_names_the_per_class_lists_of_older_checkpoints(world, tmp_path, capsys):
    """Checkpoints written before metrics were stored by class name hold lists (and class_names)."""
    ckpt = tmp_path / "old.pt"
    save_trained_like(ckpt, ["synthetic", "method/ptv3"])
    state = torch.load(ckpt, weights_only=True)
    names = list(state["metrics"]["iou"])
    state["metrics"] = {**state["metrics"], "iou": list(state["metrics"]["iou"].values()),
                        "acc": list(state["metrics"]["acc"].values()), "class_names": names}
    save_training_state(ckpt, state)
    last = info_json(capsys, ckpt)["metrics"]["last"]
    assert list(last["iou"]) == list(last["acc"]) == names and "class_names" not in last


def test_info_of_image_free_and_distilled_checkpoints(tmp_path, capsys):
    plain = info_json(capsys, save_trained_like(tmp_path / "ptv3.pt", ["scannet", "method/ptv3"],
                                                "model.backbone=tiny", metrics=False))
    assert plain["inference"]["needs_images"] is False and plain["vfm"] is None
    assert plain["model"]["parameters"]["image_projections"] == 0 and plain["data"]["num_classes"] == 20
    assert plain["metrics"] == {"best": None, "last": None}
    student = info_json(capsys, save_trained_like(tmp_path / "student.pt", ["synthetic", "method/d-ditr"],
                                                  "distill.head_channels=32", metrics=False))
    assert student["model"]["task"] == "distillation" and student["inference"]["needs_images"] is False
    assert student["vfm"]["model"] == "dinov2-tiny-random-reg"  # the teacher, read only in training
    assert "fine-tune" in student["inference"]["predicts"]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["info", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["method/ditr", "method/ptv3"])
def test_bundle_reproduces_the_eager_logits(world, tmp_path, capsys, method):
    root, rooms, vfm = world
    ckpt = save_trained_like(tmp_path / "model.pt", ["synthetic", method], f"vfm.cache={root / 'features'}",
                             *([f"model.image_channels={vfm['feature_dim']}"] if method == "method/ditr" else []))
    assert main(["export", str(ckpt), str(tmp_path / "model.ditr")]) == 0
    report = json.loads(capsys.readouterr().out)
    bundle = tmp_path / "model.ditr"
    assert is_bundle(bundle) and not is_bundle(ckpt)
    assert report["bytes"] < report["checkpoint_bytes"] / 2  # no optimizer state
    eager, config = load_model(ckpt)
    exported, bundled_config = load_model(bundle)
    assert bundled_config.to_dict() == strip_paths(config.to_dict())  # the config, without the machine's paths
    batch = collate([SceneDataset(rooms[:1], None, config, "val").get(0, np.random.default_rng(0))])
    with torch.no_grad():
        assert torch.equal(exported(batch), eager(batch))
    # ditr predict and ditr info take a bundle wherever they take a checkpoint
    for source, out in ((ckpt, "from_ckpt"), (bundle, "from_bundle")):
        assert main(["predict", str(source), str(rooms[0]), "--out", str(tmp_path / out), "--quiet",
                     "--device", "cpu", "--render-views", "0", "--features", str(root / "features")]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(tmp_path / "from_ckpt" / "labels.npy"),
                                  np.load(tmp_path / "from_bundle" / "labels.npy"))
    info = info_json(capsys, bundle)
    assert info["file"]["kind"] == "bundle" and info["training"]["step"] == 40


def test_not_a_bundle_and_export_formats(tmp_path, capsys):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DitrError, match="not a ditr bundle"):
        read_bundle(tmp_path / "plain.safetensors")
    with pytest.raises(DitrError, match="no such bundle"):
        read_bundle(tmp_path / "missing.ditr")
    ckpt = save_trained_like(tmp_path / "ptv3.pt", ["synthetic", "method/ptv3"], metrics=False)
    export = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["export"]
    offered = next(a.choices for a in export._actions if "--format" in a.option_strings)
    for fmt in offered:  # every format the command offers works
        assert main(["export", str(ckpt), str(tmp_path / f"m.{fmt}"), "--format", fmt]) == 0
        assert is_bundle(tmp_path / f"m.{fmt}")
    capsys.readouterr()
    for fmt in ("torchscript", "onnx"):  # formats that cannot capture the network are not offered
        with pytest.raises(SystemExit) as exit_:
            main(["export", str(ckpt), str(tmp_path / f"m.{fmt}"), "--format", fmt])
        assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
        assert not (tmp_path / f"m.{fmt}").exists()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.trace:DeprecationWarning")
def test_tracing_and_torch_export_still_fail(world):
    """docs/predict.md says TorchScript and torch.export cannot capture the forward; if this test
    starts failing, they can, and the export command and the docs should change."""
    root, rooms, _ = world
    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    model = model_from_config(config).eval()
    batch = collate([SceneDataset(rooms[:1], None, config, "val").get(0, np.random.default_rng(0))])

    class Tensors(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, grid_coord, feat, offset):
            return self.inner({"grid_coord": grid_coord, "feat": feat, "offset": offset})

    args = (batch["grid_coord"], batch["feat"], batch["offset"])
    with pytest.raises(RuntimeError):
        torch.jit.trace(Tensors(model), args, check_trace=False)
    with pytest.raises(Exception, match="data-dependent"):
        torch.export.export(Tensors(model), args, strict=False)

"""Config loading: _base_ inheritance, overrides, validation errors; every preset loads and builds."""

from __future__ import annotations

from pathlib import Path

import pytest

import dataclasses

from ditr.configs import INPUT_FEATURES, ModelKind, load_config
from ditr.configs.files import apply_override, merge
from ditr.data.transforms import build_transforms
from ditr.engine.losses import SegmentationCriterion
from ditr.engine.trainer import TrainerConfig
from ditr.errors import ConfigError
from ditr.vfm import get_spec

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "ditr" / "configs"
PRESETS = sorted(p for p in CONFIGS.glob("*.yaml"))


def test_merge_is_deep_and_lists_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    out = merge(base, {"a": {"y": [3]}, "c": 4})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base["a"]["y"] == [1, 2]  # inputs untouched


def test_base_chain_and_overrides(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text("optim: {lr: 0.006, weight_decay: 0.05}\ntrainer: {epochs: 800}\n")
    (tmp_path / "mid.yaml").write_text("_base_: base/root.yaml\noptim: {lr: 0.002}\n")
    (tmp_path / "run.yaml").write_text("_base_: [mid.yaml]\nname: run\n")
    cfg = load_config(str(tmp_path / "run.yaml"), ["optim.lr=1e-3", "trainer.amp=null", "images.resolution=[42, 56]",
                                                   "mix3d.p=0.5"])
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-3, 0.05)
    assert (cfg.trainer.epochs, cfg.trainer.amp) == (800, None)
    assert cfg.images.resolution == [42, 56] and cfg.mix3d.p == 0.5 and cfg.name == "run"


def test_several_files_merge_in_order():
    cfg = load_config([str(CONFIGS / "scannet.yaml"), str(CONFIGS / "method" / "ptv3.yaml")])
    assert cfg.uses_images is False and cfg.kind is ModelKind.PTV3
    assert cfg.dataset.num_classes == 20


def test_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 0.006, learning_rate: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.learning_rate: unknown key"):
        load_config(str(bad))
    bad.write_text("optim: {lr: fast}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lr: must be number, got str 'fast'"):
        load_config(str(bad))
    bad.write_text("images: {pad_views: 1}\n")
    with pytest.raises(ConfigError, match=r"images.pad_views: must be bool"):
        load_config(str(bad))
    bad.write_text("trainer: {batch_size: true}\n")
    with pytest.raises(ConfigError, match=r"trainer.batch_size: must be integer, got bool"):
        load_config(str(bad))
    bad.write_text("colour: 3\n")
    with pytest.raises(ConfigError, match=r"colour: unknown key"):
        load_config(str(bad))
    bad.write_text("_base_: bad.yaml\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(str(bad))
    bad.write_text("optim: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    ok = tmp_path / "ok.yaml"
    ok.write_text("optim: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"overrides.*optim.lr: must be number"):
        load_config(str(ok), ["optim.lr=abc"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_override({}, "optim.lr")
    with pytest.raises(ConfigError, match="optim.lr is a float"):
        apply_override({"optim": {"lr": 0.1}}, "optim.lr.x=1")


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_its_transforms_build(path):
    cfg = load_config(str(path))
    data = cfg.dataset
    names = data.class_names
    assert names is None or len(names) == data.num_classes
    assert all(f in INPUT_FEATURES for f in data.input_features)
    for mode in ("train", "val", "test"):
        build_transforms(cfg.transforms.for_mode(mode), f"{path.name}: transforms.{mode}")
    for variant in cfg.test_time.variants:
        build_transforms(variant)
    assert cfg.optim.lr > 0 and cfg.trainer.epochs > 0
    # the sections are their consumers' own classes
    assert isinstance(cfg.trainer, TrainerConfig)
    SegmentationCriterion(**dataclasses.asdict(cfg.loss))
    resolution = cfg.images.resolution
    patch = get_spec(cfg.vfm.model).patch_size
    assert resolution is None or (resolution[0] % patch == 0 and resolution[1] % patch == 0)
    for method in sorted((CONFIGS / "method").glob("*.yaml")):
        load_config([str(path), str(method)])


def test_reference_numbers_in_presets():
    scannet = load_config(str(CONFIGS / "scannet.yaml"))
    assert scannet.images.views_per_sample == 10 and scannet.images.resolution == [420, 560]
    assert (scannet.projection.min_depth, scannet.projection.max_depth) == (1.0, 4.0)
    assert [(g.keyword, g.lr_scale) for g in scannet.optim.groups] == [("block", 0.1)]
    assert len(scannet.test_time.variants) == 13 and scannet.mix3d.p == 0.8
    s3dis = load_config(str(CONFIGS / "s3dis.yaml"))
    assert s3dis.trainer.epochs == 3000 and s3dis.images.pad_views is True
    assert {"type": "SphereCrop", "point_max": 204800, "mode": "random"} in s3dis.transforms.train
    nus = load_config(str(CONFIGS / "nuscenes.yaml"))
    assert nus.vfm.model == "dinov2-vitg14-reg" and nus.model.image_channels == 1536
    assert (nus.optim.lr, nus.optim.final_div_factor, nus.optim.pct_start) == (0.002, 100.0, 0.04)
    synth = load_config(str(CONFIGS / "synthetic.yaml"))
    assert "color" not in synth.dataset.input_features  # geometry only: images carry appearance
    from ditr.io.synthetic import CLASS_NAMES
    assert synth.dataset.class_names == list(CLASS_NAMES)

"""The typed run configuration: schema derived from the dataclasses, round trips, stored configs,
the model kind, and the two bugs the untyped config had (injection stages, where the VFM runs)."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from ditr.configs import ModelKind, RunConfig, list_presets, load_preset
from ditr.configs.schema import config_fields, schema_keys
from ditr.engine.optim import OptimConfig
from ditr.engine.trainer import TrainerConfig
from ditr.errors import ConfigError
from ditr.projection import ProjectionConfig
from conftest import small_world

DATASETS = [p for p in list_presets() if "/" not in p]
METHODS = [p for p in list_presets() if p.startswith("method/")]


def _sample_value(hint):
    """A non-default value of a field's type, to prove the key is accepted end to end."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Literal:
        return args[-1]
    if args and origin is not list and origin is not dict and origin is not tuple:
        return _sample_value(args[0])  # Optional[X] / unions
    return None


@pytest.mark.parametrize("section,cls", [("projection", ProjectionConfig), ("optim", OptimConfig),
                                         ("trainer", TrainerConfig)])
def test_sections_of_lower_modules_are_their_own_dataclasses(section, cls):
    """Every field a lower module's config class has is a key of the run config: nothing to keep in sync."""
    keys = set(schema_keys(RunConfig))
    for f in config_fields(cls):
        assert f"{section}.{f.name}" in keys
    assert isinstance(getattr(RunConfig(), section), cls)
    # fields the workflow fills in are not keys users can set
    if cls is TrainerConfig:
        for hidden in ("work_dir", "num_classes", "class_names", "ignore_index", "quiet"):
            assert f"trainer.{hidden}" not in keys
        with pytest.raises(ConfigError, match="trainer.work_dir: unknown key"):
            RunConfig.from_dict({"trainer": {"work_dir": "x"}})


def test_every_key_round_trips():
    config = load_preset(["scannet"], ["model.injection.stages=[0, 2]", "vfm.device=cpu", "trainer.grad_clip=1.5",
                                       "optim.betas=[0.8, 0.9]", "model.ptv3.enc_depths=[1, 1, 1, 1, 1]"])
    data = config.to_dict()
    json.dumps(data)  # plain data only
    again = RunConfig.from_dict(data)
    assert again == config
    assert again.optim.betas == (0.8, 0.9) and again.model.ptv3["enc_depths"] == (1, 1, 1, 1, 1)
    assert set(schema_keys(RunConfig)) >= {"model.injection.stages", "vfm.preprocess_device", "vfm.device",
                                          "images.view_strategy", "distill.datasets", "loss.class_weights"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_preset_and_method_types(dataset):
    for method in [None, *METHODS]:
        config = load_preset([dataset] if method is None else [dataset, method])
        assert config == RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert config.uses_images == config.kind.uses_images
        if method == "method/ptv3":
            assert config.kind is ModelKind.PTV3 and not config.uses_images


def test_model_kind_meaning():
    assert [k.uses_images for k in ModelKind] == [False, True, True]
    assert [k.segments for k in ModelKind] == [True, True, False]
    assert [k.needs_images_at_inference for k in ModelKind] == [False, True, False]
    with pytest.raises(ConfigError, match=r"model.name: must be one of 'ptv3', 'ditr', 'd-ditr'"):
        load_preset(["synthetic"], ["model.name=pointnet"])


def test_errors_name_where_and_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model.injection.stagez: unknown key \(known here: dropout"):
        load_preset(["synthetic"], ["model.injection.stagez=[0]"])
    with pytest.raises(ConfigError, match=r"model.ptv3.enc_width: unknown key"):
        load_preset(["synthetic"], ["model.ptv3.enc_width=3"])
    with pytest.raises(ConfigError, match=r"model.ptv3.enc_depths: must be list"):
        load_preset(["synthetic"], ["model.ptv3.enc_depths=deep"])
    with pytest.raises(ConfigError, match=r"images.view_strategy: must be one of 'last'"):
        load_preset(["synthetic"], ["images.view_strategy=first"])
    with pytest.raises(ConfigError, match=r"dataset.input_features"):
        load_preset(["synthetic"], ["dataset.input_features=[colour]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {ptv3: {enc_width: 3}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.ptv3.enc_width: unknown key"):
        load_preset([bad])


def test_stored_configs_of_earlier_versions_load():
    """Checkpoints written before the typed config: images.enabled, and vfm.device meaning the workers."""
    old = load_preset(["synthetic", "method/ptv3"]).to_dict()
    old["images"]["enabled"] = False
    old["vfm"].pop("preprocess_device")
    old["vfm"]["device"] = "cpu"
    old["trainer"]["work_dir"] = "runs/x"
    config = RunConfig.from_stored(old, "old.pt")
    assert config.kind is ModelKind.PTV3
    assert (config.vfm.device, config.vfm.preprocess_device) == ("auto", "cpu")
    with pytest.raises(ConfigError, match="images.enabled: unknown key"):
        RunConfig.from_dict(old, "a user's file")


def test_defaults_live_in_one_place():
    """A config without sections gets the dataclass defaults (no consumer keeps its own)."""
    config = RunConfig.from_dict({"dataset": {"num_classes": 3}})
    assert config.images.view_strategy == "last" and config.vfm.preprocess_device == "cpu"
    assert config.model.injection.stages is None and config.dataset.input_features == ["color", "normal"]
    assert dataclasses.asdict(config.loss) == {"ce_weight": 1.0, "lovasz_weight": 1.0, "class_weights": None,
                                               "label_smoothing": 0.0}


# ------------------------------------------------------------------------------------------ the two bugs
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory.mktemp("runconfig"))


@pytest.mark.usefixtures("single_thread")
def test_injection_stages_from_the_command_line_trains(world, tmp_path):
    """``model.injection.stages=[0,1]`` given on the command line is accepted and used."""
    from ditr.cli import main
    from ditr.model_files import load_model

    root, rooms, vfm = world
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits" / "train.txt").write_text("\n".join(str(r) for r in rooms))
    work = tmp_path / "run"
    code = main(["train", "synthetic", f"dataset.root={root}", "dataset.splits={train: train}",
                 f"vfm.cache={root / 'features'}", f"model.image_channels={vfm['feature_dim']}",
                 "model.injection.stages=[0,1]", "trainer.epochs=null", "trainer.max_steps=3",
                 "trainer.batch_size=1", "mix3d.p=0", "--work-dir", str(work), "--quiet"])
    assert code == 0
    model, config = load_model(work / "last.pt")
    assert config.model.injection.stages == [0, 1]
    keys = set(model.state_dict())
    assert "backbone.dec.dec1.up.proj_image_feat.1.weight" in keys
    assert "backbone.dec.dec2.up.proj_image_feat.1.weight" not in keys


def test_the_vfm_runs_where_the_user_says(monkeypatch):
    """``vfm.device`` places the teacher and the online DITR model's VFM; ``vfm.preprocess_device``
    only the data workers' image preparation (the indoor preset says cpu there)."""
    from ditr.vfm import backends

    placed: list[str] = []
    original = backends.VFMBackend.__init__

    def record(self, handle, device="cpu", *args, **kwargs):
        placed.append(str(device))
        original(self, handle, "cpu", *args, **kwargs)  # run on this machine's CPU whatever was asked

    monkeypatch.setattr(backends.VFMBackend, "__init__", record)
    from ditr.distill import load_teacher
    from ditr.training import model_from_config

    common = ["vfm.model=dinov2-tiny-random-reg", "vfm.online=true", "distill.head_channels=192"]
    teacher_config = load_preset(["scannet", "method/d-ditr"], [*common, "vfm.device=cuda:1"])
    assert teacher_config.vfm.preprocess_device == "cpu"  # the preset's setting for the workers
    load_teacher(teacher_config)
    assert placed == ["cuda:1"]
    placed.clear()
    load_teacher(load_preset(["scannet", "method/d-ditr"], common))
    assert placed == ["auto"]  # the default: wherever is fastest, not the workers' CPU
    placed.clear()
    model_from_config(load_preset(["scannet", "method/ditr-online"],
                                  ["vfm.model=dinov2-tiny-random-reg", "model.image_channels=192",
                                   "model.backbone=tiny", "vfm.device=cuda:2"]))
    assert placed == ["cuda:2"]

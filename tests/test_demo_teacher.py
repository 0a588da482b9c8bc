"""demo-vit-rooms: the packaged, trained 2D teacher loads offline; its training runs; its rooms are not the demo's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.demo import DemoSettings
from ditr.errors import DitrError
from ditr.io.synthetic import room_seed
from ditr.io.synthetic.outdoor import CLASS_NAMES as STREET_CLASSES
from ditr.vfm import loading
from ditr.vfm.backends import VFMBackend
from ditr.vfm.loading import load_vfm
from ditr.vfm.train_teacher import (
    HELDOUT_SET_SEED,
    MIN_TEACHER_SET_SEED,
    TRAIN_SET_SEED,
    TeacherSettings,
    patch_centre_labels,
    train_teacher,
)

RECORD = Path(__file__).resolve().parents[1] / "docs" / "demo-teacher.json"
STREET_RECORD = RECORD.with_name("demo-teacher-streets.json")


@pytest.fixture(autouse=True)
def _no_models_dir(monkeypatch):
    monkeypatch.delenv(loading.MODELS_ENV, raising=False)


def test_packaged_teacher_loads_offline_and_gives_patch_features():
    handle = load_vfm("demo-vit-rooms")
    assert not handle.random_weights
    assert "packaged weights: trained on synthetic rooms (2D labels)" in handle.source
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    features = VFMBackend(handle)([image, image[:, ::-1]])
    assert features.shape == (2, 96, 17, 23)  # 240x320 rounds to 238x322: a 17x23 grid of 14-pixel patches
    assert torch.isfinite(features).all()


def test_packaged_street_teacher_loads_offline():
    handle = load_vfm("demo-vit-streets")
    assert not handle.random_weights
    assert "packaged weights: trained on synthetic streets (2D labels)" in handle.source
    image = np.random.default_rng(0).integers(0, 256, (270, 480, 3), dtype=np.uint8)
    features = VFMBackend(handle)([image])
    assert features.shape == (1, 96, 19, 34)  # 270x480 rounds to 266x476
    assert torch.isfinite(features).all()


def test_missing_packaged_weights_name_the_file_and_the_retraining(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "PACKAGED_WEIGHTS_DIR", tmp_path)
    with pytest.raises(DitrError, match=r"demo-vit-rooms\.safetensors.*train_teacher"):
        load_vfm("demo-vit-rooms")


def test_two_training_steps_write_loadable_weights_and_a_record(tmp_path):
    settings = TeacherSettings(train_scenes=1, heldout_scenes=1, views=1, steps=2, batch_size=1)
    out, record_path = tmp_path / "teacher.safetensors", tmp_path / "teacher.json"
    record = train_teacher(settings, out, record_path)
    assert json.loads(record_path.read_text()) == record
    assert len(record["loss_curve"]) == 2 and 0 <= record["heldout"]["miou"] <= 1
    assert record["scenes"]["train_seeds"] == [room_seed(TRAIN_SET_SEED, 0)]
    handle = load_vfm("demo-vit-rooms", checkpoint=out)
    trained, untrained = handle.model, loading.build_random(handle.spec)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), untrained.state_dict().values()))


def test_street_teacher_trains_on_street_images(tmp_path):
    settings = TeacherSettings.for_subject("streets", train_scenes=1, heldout_scenes=1, views=2, steps=1,
                                           batch_size=1)
    record = train_teacher(settings, tmp_path / "streets.safetensors")
    assert record["model"] == "demo-vit-streets" and record["image_size"] == [270, 480]
    assert record["scenes"]["train_images"] == 2 and set(record["heldout"]["iou"]) <= set(STREET_CLASSES)
    assert load_vfm("demo-vit-streets", checkpoint=tmp_path / "streets.safetensors").spec.name == "demo-vit-streets"


def test_teacher_refuses_demo_room_sets():
    with pytest.raises(DitrError, match="train_set_seed must be >= 100000"):
        TeacherSettings(train_set_seed=0).check()
    with pytest.raises(DitrError, match="must differ"):
        TeacherSettings(heldout_set_seed=TRAIN_SET_SEED).check()
    with pytest.raises(DitrError, match="streets have at most 6 views"):
        TeacherSettings.for_subject("streets", views=7).check()
    with pytest.raises(DitrError, match="subject must be one of rooms, streets"):
        TeacherSettings(subject="forests").check()


def test_patch_centre_labels_pick_the_pixel_under_each_patch_centre():
    labels = torch.arange(12).reshape(1, 3, 4)
    assert patch_centre_labels(labels, (1, 2)).tolist() == [[[5, 7]]]


@pytest.mark.parametrize("settings", [DemoSettings(), DemoSettings.quick(), DemoSettings.quick(distill_rooms=32),
                                      DemoSettings.quick(seed=4)], ids=["full", "quick", "quick-distill32", "seed4"])
def test_teacher_rooms_are_disjoint_from_the_demo_rooms(settings):
    """The demo's room set (its seed, its training, validation, test and distillation rooms) shares no room with
    the teacher's training or held-out rooms, as the shipped training record lists them."""
    record = json.loads(RECORD.read_text())
    teacher = set(record["scenes"]["train_seeds"]) | set(record["scenes"]["heldout_seeds"])
    assert record["settings"]["train_set_seed"] >= MIN_TEACHER_SET_SEED
    assert record["settings"]["heldout_set_seed"] >= MIN_TEACHER_SET_SEED
    assert {TRAIN_SET_SEED, HELDOUT_SET_SEED} == {record["settings"]["train_set_seed"],
                                                  record["settings"]["heldout_set_seed"]}
    assert settings.seed < MIN_TEACHER_SET_SEED
    total = settings.rooms_per_seed
    demo = {room_seed(settings.seed, i) for i in range(total)}
    assert len(teacher) == record["scenes"]["train_images"] // record["settings"]["views"] + \
        record["scenes"]["heldout_images"] // record["settings"]["views"]
    assert not demo & teacher


def test_street_teacher_never_saw_a_study_street():
    """The outdoor occlusion study's streets (street set 0, the first 100) and benchmarks/lidar_occlusion.py's
    (seeds 0-4 for tuning, 100-109 held out) are none of the street teacher's."""
    record = json.loads(STREET_RECORD.read_text())
    teacher = set(record["scenes"]["train_seeds"]) | set(record["scenes"]["heldout_seeds"])
    assert len(teacher) == record["settings"]["train_scenes"] + record["settings"]["heldout_scenes"]
    assert min(record["settings"]["train_set_seed"], record["settings"]["heldout_set_seed"]) >= MIN_TEACHER_SET_SEED
    study = {room_seed(0, i) for i in range(100)} | set(range(5)) | set(range(100, 110))
    assert not study & teacher


def test_command_line_takes_the_subjects_defaults_and_lists_every_option(tmp_path, capsys):
    from ditr.vfm.train_teacher import main

    with pytest.raises(SystemExit):
        main(["--subject", "streets", "--help"])
    usage = capsys.readouterr().out
    assert all(option in usage for option in ("--subject", "--train-scenes", "--views", "--out"))
    out = tmp_path / "streets.safetensors"
    assert main(["--subject", "streets", "--out", str(out), "--record", str(tmp_path / "r.json"), "--train-scenes", "1",
                 "--heldout-scenes", "1", "--steps", "1", "--batch-size", "1"]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["model"] == "demo-vit-streets" and record["settings"]["views"] == 6  # the streets' default

"""ditr.model_files: one reader for training states, .ditr bundles and reference state dicts."""

from __future__ import annotations

import pytest
import torch

from ditr.build import model_from_config
from ditr.configs import load_preset
from ditr.engine.checkpoint import save_training_state
from ditr.errors import DitrError
from ditr.model_files import (BUNDLE, REFERENCE, TRAINING_STATE, checkpoint_requirements, export_bundle, load_init,
                              load_model, read_model_file)
from ditr.models.ptv3 import PTv3Segmentor
from ditr.stored_paths import strip_paths

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3D-only model as a training state, as a bundle and as a reference-format state dict."""
    root = tmp_path_factory.mktemp("model_files")
    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    model = model_from_config(config)
    state = root / "last.pt"
    save_training_state(state, {"model": model.state_dict(), "config": config.to_dict(), "step": 7, "total_steps": 9})
    bundle = root / "model.ditr"
    export_bundle(state, bundle)
    reference = root / "model_best.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, reference)
    return {"config": config, "model": model, "state": state, "bundle": bundle, "reference": reference}


def test_every_format_reads_into_one_shape(files):
    weights = files["model"].state_dict()
    for key, fmt, kind in (("state", TRAINING_STATE, "training checkpoint"), ("bundle", BUNDLE, "bundle"),
                           ("reference", REFERENCE, "reference state dict")):
        file = read_model_file(files[key])
        assert file.format == fmt and file.kind == kind, key
        assert set(file.weights) == set(weights) and all(torch.equal(file.weights[k], weights[k]) for k in weights)
    assert read_model_file(files["state"]).record["step"] == read_model_file(files["bundle"]).record["step"] == 7
    assert read_model_file(files["bundle"]).config == strip_paths(read_model_file(files["state"]).config)
    assert read_model_file(files["reference"]).config is None


def test_load_model_rebuilds_from_training_states_and_bundles_only(files):
    for key in ("state", "bundle"):
        model, config = load_model(files[key])
        assert isinstance(model, PTv3Segmentor) and not model.training
        assert config.uses_images is False  # image-free model: no view is ever loaded
        assert all(torch.equal(v, files["model"].state_dict()[k]) for k, v in model.state_dict().items())
    # A bare reference state dict of a 3D-only model: whether it is DITR's or Pointcept's cannot be told.
    with pytest.raises(DitrError, match="--origin ditr or --origin pointcept"):
        load_model(files["reference"])


def test_load_init_and_requirements_take_a_bundle(files):
    target = model_from_config(files["config"])
    report = load_init(target, files["bundle"])
    assert report["format"] == BUNDLE and report["new"] == [] and report["skipped"] == []
    assert all(torch.equal(v, files["model"].state_dict()[k]) for k, v in target.state_dict().items())
    req = checkpoint_requirements(files["bundle"])
    assert req["format"] == BUNDLE and req["needs_images"] is False and req["step"] == 7
    assert req["num_classes"] == 15 and req == {**checkpoint_requirements(files["state"]),
                                                 "checkpoint": str(files["bundle"]), "format": BUNDLE}


def test_unreadable_files_are_errors_never_reference_weights(files, tmp_path):
    # A training state of a newer ditr holds a "model" mapping: it must not pass as a reference file.
    state = torch.load(files["state"], weights_only=True)
    torch.save({**state, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(DitrError, match="newer"):
        read_model_file(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DitrError, match="junk.pt: not a model file"):
        read_model_file(tmp_path / "junk.pt")
    torch.save({"state_dict": {"a": "text"}}, tmp_path / "strings.pth")
    with pytest.raises(DitrError, match="not a state dict of tensors"):
        read_model_file(tmp_path / "strings.pth")
    with pytest.raises(DitrError, match="not a published model folder"):
        read_model_file(tmp_path)  # a directory without model/*.pth nor best.pt / last.pt
    with pytest.raises(DitrError, match="no such model file"):
        read_model_file(tmp_path / "missing.pt")

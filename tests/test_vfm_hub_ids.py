"""Hugging Face repository ids as model names: registered ids, and any DINO repository of the local cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import constants

from ditr.cli import main
from ditr.errors import DitrError
from ditr.scene import Scene, View
from ditr.vfm import registry
from ditr.vfm.hub import spec_from_config
from ditr.vfm.loading import build_random, load_vfm
from ditr.vfm.registry import get_spec

REPO_ID = "tester/tiny-dino"
REVISION = "0" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that is the default one, offline; known repositories are forgotten after."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(registry, "_HUB_SPECS", {})
    return cache


def tiny_model_dir(path: Path) -> Path:
    """A tiny DINOv2-with-registers in Hugging Face format (config.json + model.safetensors)."""
    build_random(get_spec("dinov2-tiny-random-reg")).save_pretrained(str(path))
    return path


def put_in_cache(cache: Path, repo_id: str, model_dir: Path) -> None:
    """The hub cache's layout: models--owner--name/{refs/main, snapshots/<revision>/<files>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(model_dir, repo / "snapshots" / REVISION)


def test_a_registered_models_id_is_that_model_without_reading_anything(hub_cache):
    assert get_spec("facebook/dinov2-base") is get_spec("dinov2-vitb14")
    assert get_spec("facebook/dinov2-with-registers-large").name == "dinov2-vitl14-reg"
    assert get_spec("facebook/dinov3-vitl16-pretrain-lvd1689m").name == "dinov3-vitl16"
    assert not list(hub_cache.iterdir())


def test_a_cached_repository_loads_offline_with_its_own_architecture(hub_cache, tmp_path):
    put_in_cache(hub_cache, REPO_ID, tiny_model_dir(tmp_path / "model"))
    handle = load_vfm(REPO_ID)
    assert (handle.spec.name, handle.spec.hidden_size, handle.spec.num_registers) == (REPO_ID, 32, 4)
    assert "Hugging Face format" in handle.source and not handle.random_weights
    reference = build_random(get_spec("dinov2-tiny-random-reg"))
    assert all((a == b).all() for a, b in zip(handle.model.state_dict().values(), reference.state_dict().values()))


def test_an_uncached_repository_asks_for_download(hub_cache):
    with pytest.raises(DitrError, match=r"not in the Hugging Face cache .*--download"):
        load_vfm("tester/absent")
    with pytest.raises(DitrError, match="unknown model 'no-such-model'"):
        get_spec("no-such-model")


def test_download_fetches_config_then_weights(hub_cache, tmp_path, monkeypatch):
    """--download goes to the hub: here a fake one that copies files of a local folder into the cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    remote = tiny_model_dir(tmp_path / "remote")
    snapshot = hub_cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / REVISION
    fetched: list[str] = []

    def hf_hub_download(repo_id, filename, local_files_only=False):
        if not local_files_only:
            snapshot.mkdir(parents=True, exist_ok=True)
            shutil.copy(remote / filename, snapshot / filename)
            fetched.append(filename)
        if not (snapshot / filename).exists():
            raise LocalEntryNotFoundError(filename)
        return str(snapshot / filename)

    def snapshot_download(repo_id, allow_patterns=(), local_files_only=False):
        if not local_files_only:
            for path in remote.iterdir():
                hf_hub_download(repo_id, path.name)
        if not snapshot.exists():
            raise LocalEntryNotFoundError(repo_id)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    handle = load_vfm(REPO_ID, allow_download=True)
    assert handle.spec.name == REPO_ID and handle.model is not None
    assert fetched[0] == "config.json" and "model.safetensors" in fetched
    fetched.clear()
    registry._HUB_SPECS.clear()
    load_vfm(REPO_ID, allow_download=True)
    assert fetched == []  # everything is cached now


def test_config_fields_are_checked_by_name(tmp_path):
    config = json.loads((tiny_model_dir(tmp_path / "m") / "config.json").read_text())
    assert spec_from_config("a/b", config, "c.json").mlp_hidden == 4 * 32
    with pytest.raises(DitrError, match="c.json: model_type 'vit'"):
        spec_from_config("a/b", {**config, "model_type": "vit"}, "c.json")
    for bad in ("wide", float("inf"), 0, 31.5):
        with pytest.raises(DitrError, match="c.json: hidden_size must be a whole number >= 1"):
            spec_from_config("a/b", {**config, "hidden_size": bad}, "c.json")
    dinov3 = spec_from_config("a/c", {"model_type": "dinov3_vit", "patch_size": 16, "hidden_size": 32,
                                      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 88,
                                      "use_gated_mlp": True, "num_register_tokens": 4}, "d.json")
    assert (dinov3.family, dinov3.mlp_hidden, dinov3.swiglu) == ("dinov3", 88, True)


def test_ditr_features_takes_a_repository_id(hub_cache, tmp_path, capsys):
    put_in_cache(hub_cache, REPO_ID, tiny_model_dir(tmp_path / "model"))
    rng = np.random.default_rng(0)
    view = View(name="v0", width=56, height=42, intrinsics=np.array([[40.0, 0, 28], [0, 40.0, 21], [0, 0, 1]]),
                cam_to_world=np.eye(4), image=rng.integers(0, 256, (42, 56, 3), dtype=np.uint8))
    coord = np.c_[rng.uniform(-1, 1, (50, 2)), np.full(50, 2.0)].astype(np.float32)
    scene = Scene(coord=coord, views=[view], meta={"name": "s"}).save(tmp_path / "s")
    assert main(["features", str(scene), "--model", REPO_ID, "--cache", str(tmp_path / "feats")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["model"], summary["misses"], summary["random_weights"]) == (REPO_ID, 1, False)

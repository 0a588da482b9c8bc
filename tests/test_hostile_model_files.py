"""Flipped bytes in model files: a clear error naming the file, never changed predictions with exit 0; files
written without a content hash (reference .pth, older ditr files) still load, with one warning line."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.build import model_from_config
from ditr.cli import main
from ditr.configs import load_preset
from ditr.engine.checkpoint import (FORMAT, VERSION, CheckpointManager, TrainingStateError, load_training_state,
                                    save_training_state)
from ditr.errors import DitrError
from ditr.integrity import HASH_KEY, IntegrityError, check_zip, tensor_digest
from ditr.model_files import export_bundle, read_model_file


@pytest.fixture(scope="module")
def model_state(tmp_path_factory):
    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "ptv3.pt"
    save_training_state(path, {"model": model_from_config(config).state_dict(), "config": config.to_dict(),
                               "step": 0, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}}})
    return path


def flip(path: Path, offsets) -> Path:
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def tensor_offsets(path: Path, count: int = 16) -> list[int]:
    """Offsets inside the largest tensor's data of a torch zip file (where a flip changes weights)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as fh:  # the local header: 30 bytes + name + extra, then the member's data
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    return [start + 7 + 13 * i for i in range(count)]


def test_digest_covers_names_dtypes_shapes_and_bytes():
    a = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(1.0)}
    base = tensor_digest(a)
    assert tensor_digest({"b": a["b"], "w": a["w"]}) == base  # order of insertion does not matter
    for changed in ({"w": a["w"].reshape(3, 2), "b": a["b"]}, {"w": a["w"].double(), "b": a["b"]},
                    {"v": a["w"], "b": a["b"]}, {"w": a["w"] + 1e-5 * (a["w"] == 5), "b": a["b"]},
                    {"w": a["w"], "b": torch.tensor(2.0)}):
        assert tensor_digest(changed) != base
    assert tensor_digest({"x": torch.zeros(0, dtype=torch.bfloat16), "y": torch.ones(2, dtype=torch.bool)})


def test_sixteen_flipped_bytes_in_a_training_state_are_a_clear_error(model_state, tmp_path, capsys):
    """Before: torch does not check zip CRCs; the flipped weights were used with exit 0."""
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(model_state.read_bytes())
    flip(damaged, tensor_offsets(damaged))
    with pytest.raises(IntegrityError, match=r"damaged\.pt: damaged file \(the CRC"):
        check_zip(damaged)
    with pytest.raises(DitrError, match="damaged.pt"):
        read_model_file(damaged)
    with pytest.raises(TrainingStateError, match="damaged.pt"):
        load_training_state(damaged)
    assert main(["info", str(damaged)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged.pt" in err[0] and "CRC" in err[0]


def test_a_changed_tensor_with_valid_crcs_fails_the_content_hash(model_state, tmp_path):
    """Content changed and the zip rewritten with fresh CRCs (tampering, or a bad copy tool): the hash."""
    state = torch.load(model_state, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name].clone() + 1
    torch.save(state, tmp_path / "tampered.pt")
    with pytest.raises(DitrError, match=r"tampered\.pt: content hash of its 'model' tensors does not match"):
        read_model_file(tmp_path / "tampered.pt")
    with pytest.raises(TrainingStateError, match="content hash"):
        load_training_state(tmp_path / "tampered.pt")
    # a change in the optimizer only: resuming refuses, reading the model's weights does not need it
    state = torch.load(model_state, weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] += 1
    torch.save(state, tmp_path / "optim.pt")
    with pytest.raises(TrainingStateError, match="'optimizer'"):
        load_training_state(tmp_path / "optim.pt")
    assert read_model_file(tmp_path / "optim.pt").weights


def test_sixteen_flipped_bytes_in_a_bundle_are_a_clear_error(model_state, tmp_path, capsys):
    bundle = tmp_path / "model.ditr"
    export_bundle(model_state, bundle)
    header = 8 + int(np.frombuffer(bundle.read_bytes()[:8], "<u8")[0])
    size = bundle.stat().st_size
    flip(bundle, [header + (size - header) // 2 + 11 * i for i in range(16)])
    with pytest.raises(IntegrityError, match=r"model\.ditr: content hash of its weights and metadata does not match"):
        read_model_file(bundle)
    assert main(["info", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.ditr" in err[0] and "content hash" in err[0]


def test_a_changed_bundle_config_fails_the_content_hash(model_state, tmp_path):
    """The metadata (the run config: classes, voxel size ...) is covered too."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    bundle = tmp_path / "model.ditr"
    export_bundle(model_state, bundle)
    with safe_open(str(bundle), framework="pt") as fh:
        meta = dict(fh.metadata())
    config = json.loads(meta["config"])
    config["data"] = config.get("data")
    config["dataset"]["class_names"][0] = "renamed"
    meta["config"] = json.dumps(config)
    save_file(load_file(str(bundle)), str(tmp_path / "changed.ditr"), metadata=meta)
    with pytest.raises(IntegrityError, match="changed.ditr"):
        read_model_file(tmp_path / "changed.ditr")


def test_files_without_a_hash_load_with_one_warning(model_state, tmp_path):
    """An older ditr's training state and bundle, a reference-style bare state dict: load, one warning."""
    state = torch.load(model_state, weights_only=True)
    state.pop(HASH_KEY)
    torch.save(state, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match=r"old\.pt: no content hash present.*zip CRCs were checked") as record:
        loaded = read_model_file(tmp_path / "old.pt")
    assert len([w for w in record if "no content hash" in str(w.message)]) == 1
    assert all(torch.equal(loaded.weights[k], state["model"][k]) for k in state["model"])
    with pytest.warns(UserWarning, match="no content hash"):
        assert load_training_state(tmp_path / "old.pt")["step"] == 0

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    export_bundle(model_state, tmp_path / "new.ditr")
    with safe_open(str(tmp_path / "new.ditr"), framework="pt") as fh:
        meta = dict(fh.metadata())
    meta.pop(HASH_KEY)
    save_file(load_file(str(tmp_path / "new.ditr")), str(tmp_path / "old.ditr"), metadata=meta)
    with pytest.warns(UserWarning, match=r"old\.ditr: no content hash present"):
        read_model_file(tmp_path / "old.ditr")
    # hashed files load without any warning about it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_model_file(tmp_path / "new.ditr")
        read_model_file(model_state)


def test_a_flipped_last_pt_falls_back_to_the_previous_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save({"step": 1, "model": {"w": torch.zeros(1000)}})
    manager.save({"step": 2, "model": {"w": torch.ones(1000)}})
    flip(manager.last, tensor_offsets(manager.last))
    with pytest.warns(UserWarning, match="CRC"):
        path, state = manager.load_resume()
    assert path == manager.prev and state["step"] == 1


def test_the_format_constants_are_unchanged():
    assert FORMAT == "ditr.train_state" and VERSION == 1


def test_the_no_hash_warning_is_one_line_on_the_command_line(model_state, tmp_path):
    import os
    import subprocess
    import sys

    state = torch.load(model_state, weights_only=True)
    state.pop(HASH_KEY)
    torch.save(state, tmp_path / "old.pt")
    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.run([sys.executable, "-m", "ditr.cli", "info", str(tmp_path / "old.pt")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(src)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"ditr info: warning: {tmp_path / 'old.pt'}: no content hash present (a reference file or one "
                     "written by an older ditr); its zip CRCs were checked"]

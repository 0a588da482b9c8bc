"""Attack cases for the feature cache: flipped bytes in an entry are never served (recomputed and
counted, or an error naming the entry where nothing may be computed), entries of earlier versions
stay valid, and weights overwritten in place with the same size and mtime get new entries."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_save

import ditr.cache as cache_module
from ditr.cache import FeatureCache, file_digest, tensor_checksum
from ditr.errors import DitrError
from ditr.image_features import ImageFeatureSource
from ditr.scene import Scene, View
from ditr.vfm import VFMBackend, get_spec, load_vfm
from ditr.vfm.checkpoints import hf_to_meta
from ditr.vfm.extract import FeatureSource, ImageJob, fill_cache
from ditr.vfm.loading import build_random

MODEL = "dinov2-tiny-random-reg"


def _views(n: int = 2, seed: int = 0) -> list[View]:
    rng = np.random.default_rng(seed)
    k = np.array([[50.0, 0, 30], [0, 50.0, 20], [0, 0, 1]])
    return [View(name=f"v{i}", width=60, height=40, intrinsics=k, cam_to_world=np.eye(4),
                 image=rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)) for i in range(n)]


def _source(tmp_path, checkpoint=None) -> FeatureSource:
    cache = FeatureCache(tmp_path / "cache")
    return FeatureSource(VFMBackend(load_vfm(MODEL, checkpoint, hash_memo=cache.hash_memo)), cache)


def _flip(path, count: int = 16, at: int = -200) -> None:
    """``count`` flipped bytes in the tensor data (the end of the file), as on a failing disk."""
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[at + i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_an_entry_are_recomputed_and_counted(tmp_path):
    views = _views()
    good = _source(tmp_path).grids(views)
    path = _source(tmp_path).cache.path(_source(tmp_path).key(views[0]))
    _flip(path)
    # the data still parses, has the right shape and finite values: only the checksum tells
    source = _source(tmp_path)
    stats = fill_cache([ImageJob("s", v) for v in views], source)
    assert source.forward_calls == 1 and stats.damaged == 1 and stats.misses == 1 and stats.hits == 1
    assert source.cache.stats["corrupt"] == 1
    again = _source(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.grids(views), good)) and again.forward_calls == 0


def test_flipped_bytes_in_the_metadata_are_a_miss(tmp_path):
    views = _views(1)
    source = _source(tmp_path)
    source.grids(views)
    path = source.cache.path(source.key(views[0]))
    data = path.read_bytes()
    at = data.index(b'"checksum":"') + len('"checksum":"')
    path.write_bytes(data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:])
    assert source.cache.read(source.key(views[0])) == (None, "corrupt")


def test_a_training_reader_refuses_a_damaged_entry_by_name(tmp_path, wall_box_dir):
    scene = Scene.load(wall_box_dir)
    settings = {"model": MODEL, "cache": str(tmp_path / "cache")}
    features = ImageFeatureSource(settings)
    grids = np.array([features.patch_grid(scene.views[0])])
    features.grids(scene.views)  # fill the cache
    table = features.cached_table(scene, scene.views, [False], grids)
    _flip(features.cache.path(features.extractor.key(scene.views[0])))
    with pytest.raises(DitrError, match=r"view 'cam0'.*is damaged \(its checksum does not match: never served\)"):
        ImageFeatureSource(settings).cached_table(scene, scene.views, [False], grids)
    assert table.shape[0] == int(grids.prod())


def _legacy_put(cache: FeatureCache, key, tensor: torch.Tensor) -> None:
    """An entry as ditr wrote it before checksums: the same metadata without ``checksum``."""
    path = cache.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_save({"features": tensor.half().contiguous()}, metadata=cache._metadata(key)))


def test_entries_of_earlier_versions_are_served_and_migrated_not_recomputed(tmp_path):
    views = _views()
    first = _source(tmp_path)
    grids = first.grids(views)
    keys = [first.key(v) for v in views]
    for key, grid in zip(keys, grids):
        _legacy_put(first.cache, key, grid)
    reader = FeatureCache(tmp_path / "cache")  # a training reader: serves them, writes nothing
    assert [reader.read(k)[1] for k in keys] == ["legacy", "legacy"]
    assert "checksum" not in json.dumps(_header(reader.path(keys[0])))
    source = _source(tmp_path)  # `ditr features` over the same scenes: all hits, checksums added
    stats = fill_cache([ImageJob("s", v) for v in views], source)
    assert source.forward_calls == 0 and stats.hits == 2 and stats.migrated == 2
    assert [FeatureCache(tmp_path / "cache").read(k)[1] for k in keys] == ["hit", "hit"]
    assert _header(reader.path(keys[0]))["__metadata__"]["checksum"] == tensor_checksum(grids[0].half())
    # from now on a flipped byte is caught
    _flip(reader.path(keys[1]))
    assert FeatureCache(tmp_path / "cache").read(keys[1]) == (None, "corrupt")


def _header(path) -> dict:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size])


# ------------------------------------------------------------------------------------------ weights
def _checkpoint(path, seed: int) -> None:
    spec = get_spec(MODEL)
    model = build_random(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    torch.save(hf_to_meta(model.state_dict(), spec), path)


def _overwrite_in_place(path, other) -> None:
    """Same size, same mtime, same inode: only the content (and the ctime nobody can set) differ."""
    st = os.stat(path)
    data = other.read_bytes()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns and os.stat(path).st_ino == st.st_ino


@pytest.mark.parametrize("new_process", [False, True])
def test_weights_overwritten_in_place_get_new_entries(tmp_path, monkeypatch, new_process):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    weights, other = tmp_path / "a" / "w.pth", tmp_path / "b" / "w.pth"  # one archive name: the same size
    _checkpoint(weights, 1)
    _checkpoint(other, 2)
    views = _views(1)
    first = _source(tmp_path, weights)
    old = first.grids(views)[0]
    assert _source(tmp_path, weights).grids(views) and first.forward_calls == 1
    _overwrite_in_place(weights, other)
    if new_process:
        monkeypatch.setattr(cache_module, "_memo", {})  # only the on-disk memo remains
    source = _source(tmp_path, weights)
    new = source.grids(views)[0]
    assert source.forward_calls == 1 and not torch.equal(new, old)
    assert source.backend.handle.identity == file_digest(other)


def test_weight_digests_are_remembered_across_runs(tmp_path, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(os.urandom(3 << 20))
    memo = tmp_path / "memo.json"
    digest = file_digest(weights, memo)
    stored = json.loads(memo.read_text())
    assert stored["format"].startswith("ditr.file-digests") and len(stored["files"]) == 1
    entry = next(iter(stored["files"].values()))
    entry["sha256"] = "remembered"  # proves the next run reads the memo instead of hashing 3 MB again
    memo.write_text(json.dumps(stored))
    monkeypatch.setattr(cache_module, "_memo", {})
    assert file_digest(weights, memo) == "remembered"
    # a memo of the earlier format (keyed by path, size and mtime alone) is not trusted
    memo.write_text(json.dumps({f"{weights.resolve()}|{weights.stat().st_size}|{weights.stat().st_mtime_ns}": "x"}))
    monkeypatch.setattr(cache_module, "_memo", {})
    assert file_digest(weights, memo) == digest


def test_a_memo_whose_content_sample_differs_is_not_trusted(tmp_path, monkeypatch):
    """Should a file system keep size, mtime, ctime and inode across a rewrite, the sample still differs."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * (3 << 20))
    memo = tmp_path / "memo.json"
    file_digest(weights, memo)
    stored = json.loads(memo.read_text())
    next(iter(stored["files"].values()))["sample"] = "0" * 64
    memo.write_text(json.dumps(stored))
    monkeypatch.setattr(cache_module, "_memo", {})
    import hashlib

    assert file_digest(weights, memo) == hashlib.sha256(b"a" * (3 << 20)).hexdigest()

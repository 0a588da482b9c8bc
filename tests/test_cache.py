"""Feature cache: keys that change with every input, hits without forwards, safe failure modes."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from ditr.cache import FeatureCache, FeatureKey, file_digest
from ditr.scene import View
from ditr.vfm import VFMBackend, get_spec, load_vfm
from ditr.vfm.checkpoints import hf_to_meta
from ditr.vfm.extract import FeatureSource
from ditr.vfm.loading import build_random

KEY = FeatureKey(image="a" * 64, model="dinov2-tiny-random-reg", weights="w" * 64, size=(28, 42), flip=False,
                 settings="precision=fp32;pos=antialias")


def _views(n: int = 3, seed: int = 0, size: tuple[int, int] = (40, 60)) -> list[View]:
    rng = np.random.default_rng(seed)
    k = np.array([[50.0, 0, size[1] / 2], [0, 50.0, size[0] / 2], [0, 0, 1]])
    return [View(name=f"v{i}", width=size[1], height=size[0], intrinsics=k, cam_to_world=np.eye(4),
                 image=rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for i in range(n)]


def _source(tmp_path, name="dinov2-tiny-random-reg", checkpoint=None, resolution=None) -> FeatureSource:
    return FeatureSource(VFMBackend(load_vfm(name, checkpoint)), FeatureCache(tmp_path / "cache"), resolution)


def test_key_changes_with_every_component():
    digests = {KEY.digest()}
    for change in (dict(image="b" * 64), dict(model="dinov3-tiny-random"), dict(weights="x" * 64),
                   dict(size=(42, 28)), dict(flip=True), dict(settings="precision=bf16;pos=antialias")):
        digests.add(dataclasses.replace(KEY, **change).digest())
    assert len(digests) == 7
    assert dataclasses.replace(KEY).digest() == KEY.digest()


def test_round_trip_is_fp16_with_verified_metadata(tmp_path):
    cache = FeatureCache(tmp_path)
    feats = torch.randn(32, 2, 3)
    path = cache.put(KEY, feats)
    assert path.suffix == ".safetensors" and cache.entries() == [path]
    got = cache.get(KEY)
    assert got.dtype == torch.float16 and torch.equal(got, feats.half())
    # a file whose metadata names another key is never served, even at this key's path
    other = dataclasses.replace(KEY, flip=True)
    os.replace(cache.put(other, feats), path)
    assert cache.get(KEY) is None


def test_second_run_hits_without_any_forward(tmp_path):
    views = _views()
    first = _source(tmp_path)
    a = first.grids(views, [False, True, False])
    assert first.forward_calls == 2  # one batch per flip setting
    second = _source(tmp_path)
    b = second.grids(views, [False, True, False])
    assert second.forward_calls == 0
    for x, y in zip(a, b):
        assert torch.equal(x, y)  # computed results are rounded exactly as cached ones


def test_miss_when_model_checkpoint_resolution_or_image_changes(tmp_path):
    views = _views(2)
    _source(tmp_path).grids(views)

    def forwards(source: FeatureSource, vs=views) -> int:
        source.grids(vs)
        return source.forward_calls

    assert forwards(_source(tmp_path)) == 0
    assert forwards(_source(tmp_path, "dinov2-tiny-random")) == 1  # other model
    assert forwards(_source(tmp_path, resolution=(28, 56))) == 1  # other resolution
    changed = _views(2)
    changed[1].image = changed[1].image.copy()
    changed[1].image[0, 0, 0] ^= 1  # one pixel
    source = _source(tmp_path)
    source.grids(changed)
    assert source.forward_calls == 1 and source.cache.contains(source.key(changed[0]))
    spec = get_spec("dinov2-tiny-random-reg")
    for seed in (1, 2):  # two checkpoints of the same model
        model = build_random(spec)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        torch.save(hf_to_meta(model.state_dict(), spec), tmp_path / f"ckpt{seed}.pth")
    assert forwards(_source(tmp_path, checkpoint=tmp_path / "ckpt1.pth")) == 1
    assert forwards(_source(tmp_path, checkpoint=tmp_path / "ckpt2.pth")) == 1
    again = _source(tmp_path, checkpoint=tmp_path / "ckpt1.pth")
    assert forwards(again) == 0 and not again.backend.handle.is_loaded  # all hits: weights never read


def test_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)

    def crash(fd: int) -> None:  # the process dies after the bytes were written, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put(KEY, torch.randn(32, 2, 3))
    monkeypatch.undo()
    assert cache.get(KEY) is None and cache.entries() == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no temporary left behind


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan"])
def test_partial_or_corrupted_entry_is_a_miss_and_recomputed(tmp_path, damage):
    views = _views(1)
    source = _source(tmp_path)
    good = source.grids(views)[0]
    path = source.cache.path(source.key(views[0]))
    data = path.read_bytes()
    if damage == "truncate":  # e.g. copied by a tool that is not atomic, or a full disk
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * len(data))
    else:
        source.cache.put(source.key(views[0]), torch.full_like(good, float("nan")))
    assert source.cache.get(source.key(views[0])) is None
    again = _source(tmp_path)
    assert torch.equal(again.grids(views)[0], good) and again.forward_calls == 1
    assert torch.equal(source.cache.get(source.key(views[0])).float(), good)


def test_file_digest_is_remembered_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "weights.pth"
    f.write_bytes(b"x" * 1000)
    memo = tmp_path / "memo.json"
    d1 = file_digest(f, memo)
    assert memo.is_file() and d1 in memo.read_text()
    f.write_bytes(b"y" * 1001)
    assert file_digest(f, memo) != d1


def test_jitter_variants_have_their_own_keys_and_plain_images_keep_theirs():
    from ditr.vfm.color_jitter import ColorJitter

    # the digest of a key without jitter is the one every cache filled before variants existed uses
    assert KEY.digest() == "b86f44fcceb8fee281f9f4fb43bf02456e653036ba99f607a74d08f19046ccca"
    reference, weaker = ColorJitter((0.4, 0.4, 0.2, 0.1)), ColorJitter((0.2, 0.4, 0.2, 0.1))
    tags = [reference.variant(1).tag, reference.variant(2).tag, weaker.variant(1).tag]
    digests = {KEY.digest()} | {dataclasses.replace(KEY, jitter=t).digest() for t in tags}
    assert len(digests) == 4
    # the probability and the number of variants choose entries, they never change one
    assert ColorJitter((0.4, 0.4, 0.2, 0.1), p=0.9, variants=8).variant(1).tag == tags[0]
    assert reference.variant(0) is None


def test_a_variant_entry_is_never_served_for_another(tmp_path):
    from ditr.vfm.color_jitter import ColorJitter

    cache = FeatureCache(tmp_path)
    jittered = dataclasses.replace(KEY, jitter=ColorJitter().variant(1).tag)
    cache.put(jittered, torch.randn(32, 2, 3))
    assert cache.get(KEY) is None and cache.get(jittered) is not None
    cache.path(KEY).parent.mkdir(parents=True, exist_ok=True)
    os.replace(cache.path(jittered), cache.path(KEY))  # the variant's file under the plain image's name
    assert cache.read(KEY) == (None, "corrupt")

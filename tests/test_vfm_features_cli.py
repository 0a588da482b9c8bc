"""``ditr features``: fills the cache, computes nothing the second time, draws the PCA pictures."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ditr.cache import FeatureCache
from ditr.commands import features
from ditr.errors import DitrError
from ditr.io.ply import read_ply_points
from ditr.scene import Scene, View


def _run(argv: list[str], capsys) -> dict:
    parser = argparse.ArgumentParser()
    features.add_arguments(parser)
    args = parser.parse_args(argv)
    args.command = features.NAME
    assert features.run(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _scene(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    coord = np.c_[np.full(300, 1.0), rng.uniform(-1, 1, 300), rng.uniform(0, 1.5, 300)].astype(np.float32)
    c2w = np.eye(4)
    c2w[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    c2w[:3, 3] = [-1.0, 0.0, 0.75]
    k = np.array([[60.0, 0, 40], [0, 60.0, 30], [0, 0, 1]])
    views = [View(name=f"v{i}", width=80, height=60, intrinsics=k, cam_to_world=c2w,
                  image=rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for i in range(2)]
    return str(Scene(coord=coord, views=views, meta={"name": path.name}).save(path))


def test_fill_then_all_hits_then_pictures(tmp_path, capsys):
    scenes = [_scene(tmp_path / "a", 0), _scene(tmp_path / "b", 1)]
    base = [*scenes, "--model", "dinov2-tiny-random-reg", "--cache", str(tmp_path / "cache"), "--flip",
            "--resolution", "42x56", "--batch-size", "3"]
    first = _run(base, capsys)
    assert (first["images"], first["hits"], first["misses"]) == (8, 0, 8)
    assert first["random_weights"] is True and first["weights"].startswith("random weights")
    assert len(FeatureCache(tmp_path / "cache").entries()) == 8
    second = _run([*base, "--render", str(tmp_path / "pics")], capsys)
    assert (second["hits"], second["misses"]) == (8, 0)
    renders = second["renders"]
    assert len(renders) == 2 * (2 + 2)  # per scene: two view pictures, a PLY and its render
    coord, color = read_ply_points(tmp_path / "pics" / "a" / "points_pca.ply")
    assert coord.shape == (300, 3) and color is not None and len(np.unique(color, axis=0)) > 10
    assert (tmp_path / "pics" / "b" / "v1_pca.png").stat().st_size > 1000


def test_jitter_variants_are_cached_beside_the_images(tmp_path, capsys):
    scene = _scene(tmp_path / "a", 0)
    base = [scene, "--model", "dinov2-tiny-random-reg", "--cache", str(tmp_path / "cache"), "--flip"]
    first = _run([*base, "--jitter-variants", "2"], capsys)
    assert (first["images"], first["misses"], first["jitter_variants"]) == (2 * 2 * 3, 12, 2)
    assert first["color_jitter"] == [0.4, 0.4, 0.2, 0.1]  # the reference's strength by default
    assert _run(base, capsys)["hits"] == 4  # the images as they are were among them
    weaker = _run([*base, "--jitter-variants", "1", "--color-jitter", "0.2,0.2,0.1,0.05"], capsys)
    assert (weaker["hits"], weaker["misses"]) == (4, 4)  # another strength: new variants
    with pytest.raises(DitrError, match="--color-jitter must be"):
        _run([*base, "--jitter-variants", "1", "--color-jitter", "0.4,0.4,0.2"], capsys)
    with pytest.raises(DitrError, match="--jitter-variants must be >= 0"):
        _run([*base, "--jitter-variants", "-1"], capsys)


def test_user_errors_are_ditr_errors(tmp_path, capsys, monkeypatch):
    scene = _scene(tmp_path / "a", 0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DitrError, match="multiples of the patch size"):
        _run([scene, "--model", "dinov2-tiny-random-reg", "--cache", str(tmp_path / "c"), "--resolution", "40x56"],
             capsys)
    with pytest.raises(DitrError, match="HEIGHTxWIDTH"):
        _run([scene, "--model", "dinov2-tiny-random-reg", "--cache", str(tmp_path / "c"), "--resolution", "big"],
             capsys)
    with pytest.raises(DitrError, match="unknown model"):
        _run([scene, "--model", "dino-xl", "--cache", str(tmp_path / "c")], capsys)

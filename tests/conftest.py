"""Shared fixtures: paths to ../shared, and a small analytic scene with a known occluder."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see ditr/cli.py

from pathlib import Path  # noqa: E402

import numpy as np
import pytest

from ditr.scene import Scene, View

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a clear message where it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data samples are not next to this checkout")
    return path


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """cam_to_world (OpenCV: x right, y down, z forward) of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, eye
    return pose


def wall_and_box_scene(width: int = 64, height: int = 48, spacing: float = 0.02) -> Scene:
    """A camera at the origin looking along +y at a wall (y = 4) with a box face (y = 2) in front.

    Points: a grid on the wall (label 0) and on the box's front face (label 1). The depth map and the
    label image are rendered analytically, so the right visibility is known exactly: wall points
    behind the box are occluded.
    """
    f = 50.0
    k = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    pose = look_at([0, 0, 0], [0, 1, 0])
    xs, zs = np.meshgrid(np.arange(-3, 3, spacing), np.arange(-2, 2, spacing))
    wall = np.stack([xs.ravel(), np.full(xs.size, 4.0), zs.ravel()], 1)
    side = np.linspace(-0.5, 0.5, int(round(1 / spacing)) + 1)
    bx, bz = np.meshgrid(side, side)
    box = np.stack([bx.ravel(), np.full(bx.size, 2.0), bz.ravel()], 1)
    coord = np.concatenate([wall, box]).astype(np.float32)
    segment = np.concatenate([np.zeros(len(wall)), np.ones(len(box))]).astype(np.int64)
    # Analytic render: pixel centre rays through the box face hit it at depth 2, else the wall at 4.
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x_at_box = (u - width / 2) / f * 2.0
    z_at_box = -(v - height / 2) / f * 2.0
    on_box = (np.abs(x_at_box) <= 0.5) & (np.abs(z_at_box) <= 0.5)
    depth = np.where(on_box, 2.0, 4.0).astype(np.float32)
    label = on_box.astype(np.int64)
    image = np.zeros((height, width, 3), np.uint8)
    image[on_box] = (200, 30, 30)
    image[~on_box] = (30, 30, 200)
    color = np.where(segment[:, None] == 1, [200, 30, 30], [30, 30, 200]).astype(np.uint8)
    view = View(name="cam0", width=width, height=height, intrinsics=k, cam_to_world=pose,
                image=image, depth=depth, label=label)
    return Scene(coord=coord, attributes={"color": color, "segment": segment}, views=[view],
                 meta={"class_names": ["wall", "box"], "ignore_index": -1})


@pytest.fixture
def single_thread():
    """For tests on tiny inputs: one thread is fastest and avoids OpenMP stalls on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Training override without augmentation, for tests that must overfit quickly.
NO_AUGMENTATION = ("transforms.train=[{type: CenterShift, apply_z: true}, {type: GridSample, grid_size: 0.05, "
                   "mode: train}, {type: CenterShift, apply_z: false}]")


def small_world(root: Path) -> tuple[Path, list[Path], dict]:
    """Two small synthetic rooms with cached features of the tiny random DINOv2 under ``root``."""
    from ditr.io.synthetic import ensure_rooms
    from ditr.vfm.extract import fill_scene_features

    rooms = ensure_rooms(root / "rooms", 2, 0, points=3000, views=4)
    return root, rooms, fill_scene_features(rooms, "dinov2-tiny-random-reg", root / "features")


@pytest.fixture
def wall_box_dir(tmp_path) -> Path:
    return wall_and_box_scene().save(tmp_path / "wall_box")


@pytest.fixture
def scannet_copy(tmp_path) -> Path:
    """A writable copy of the shared ScanNet sample (the shared folder is read-only on CI)."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(shared_path("data", "scannet"), src)
    for p in src.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return src


@pytest.fixture(scope="session")
def scannet_scene(tmp_path_factory) -> Scene:
    from ditr.io.scannet import import_scannet

    src = shared_path("data", "scannet")
    out = tmp_path_factory.mktemp("scannet")
    import_scannet(src, out)
    return Scene.load(out / "scene0000_00")

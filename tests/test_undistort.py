"""Undistortion at import: the lens models round-trip, and a distorted grid pattern imports as the pinhole image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ditr.errors import SceneError
from ditr.io.colmap import import_colmap
from ditr.io.nerfstudio import import_nerfstudio
from ditr.io.undistort import LensDistortion, pinhole_camera, undistort_views
from ditr.scene import Scene, View
from test_colmap_import import sparse_project, synthetic_room
from test_nerfstudio_import import capture_with_points

pytestmark = pytest.mark.usefixtures("single_thread")

LENSES = {
    "opencv": LensDistortion(radial=(-0.25, 0.06), tangential=(0.002, -0.001)),
    "full_opencv": LensDistortion(radial=(-0.2, 0.05, 0.01), tangential=(0.001, 0.001), denominator=(0.05, 0.01, 0.0)),
    "pincushion": LensDistortion(radial=(0.15,)),
    "fisheye": LensDistortion(radial=(0.05, -0.01, 0.002, 0.0), fisheye=True),
}
#: Grid lines per unit of the ideal image plane: a period of 12 pixels at a focal length of 140 (the
#: synthetic room's cameras), smooth enough for bilinear reading, fine enough to show a one-pixel shift.
FREQUENCY = 140 / 12


@pytest.mark.parametrize("name", sorted(LENSES))
def test_distortion_round_trip(name):
    lens = LENSES[name]
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.6, 0.6, (2, 1000))
    xd, yd = lens.distort(x, y)
    assert float(np.abs(np.hypot(xd - x, yd - y)).max()) > 1e-3  # a real distortion
    back = lens.undistort(xd, yd)
    np.testing.assert_allclose(back, (x, y), atol=1e-9)
    np.testing.assert_allclose(lens.distort(*back), (xd, yd), atol=1e-9)


def grid(k: np.ndarray, width: int, height: int, lens: LensDistortion | None = None) -> np.ndarray:
    """The image of a smooth grid pattern on the ideal image plane, seen through ``lens`` (None: a pinhole)."""
    v, u = np.mgrid[0:height, 0:width] + 0.5
    x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    if lens is not None:
        x, y = lens.undistort(x, y)
    value = 128 + 80 * np.cos(2 * np.pi * x * FREQUENCY) * np.cos(2 * np.pi * y * FREQUENCY)
    return np.repeat(np.round(value).astype(np.uint8)[..., None], 3, axis=2)


def within_a_pixel(got: np.ndarray, truth: np.ndarray) -> None:
    """``got`` is closer to ``truth`` than ``truth`` moved by one pixel (away from the one-pixel border)."""
    inner = (slice(1, -1), slice(1, -1))
    error = np.abs(got.astype(float) - truth)[inner].mean()
    shifted = np.abs(np.roll(truth, 1, axis=1).astype(float) - truth)[inner].mean()
    assert error < 0.5 * shifted, (error, shifted)


def test_distorted_colmap_cameras_import_as_pinhole_images(tmp_path):
    views = synthetic_room().views
    k = views[0].intrinsics
    lens = LENSES["opencv"]
    cameras = [("OPENCV", [k[0, 0], k[1, 1], k[0, 2], k[1, 2], *lens.radial, *lens.tangential]) for _ in views]
    root = sparse_project(tmp_path, cameras=cameras)
    for v in views:  # what the distorted camera photographed
        Image.fromarray(grid(k, v.width, v.height, lens)).save(root / "images" / f"{v.name}.png")
    report = import_colmap(root, tmp_path / "out", scale=1.0)
    assert report.undistorted_views == 4 and report.distortion_ignored_views == 0
    imported = Scene.load(tmp_path / "out")
    for v in imported.views:
        np.testing.assert_allclose(v.intrinsics, k)  # a barrel lens keeps its focal length
        within_a_pixel(v.read_image(), grid(k, v.width, v.height))
    distorted = np.asarray(Image.open(root / "images" / f"{views[0].name}.png"))
    with pytest.raises(AssertionError):  # the check above tells a distorted image from the pinhole one
        within_a_pixel(distorted, grid(k, views[0].width, views[0].height))


def test_pincushion_lens_zooms_in_and_fisheye_depth_and_labels_follow(tmp_path):
    k = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    pose = np.eye(4)
    depth = np.tile(np.arange(160, dtype=np.float32) / 100 + 1, (120, 1))  # one depth per column
    label = np.tile(np.arange(160) // 20, (120, 1)).astype(np.int64)
    views = [View(name=name, width=160, height=120, intrinsics=k, cam_to_world=pose,
                  image=grid(k, 160, 120, LENSES[name]), depth=depth, label=label)
             for name in ("pincushion", "fisheye")]
    assert undistort_views(views, [LENSES["pincushion"], LENSES["fisheye"]], tmp_path) == 2
    pincushion, fisheye = views
    assert pincushion.intrinsics[0, 0] > 100 and pincushion.image_path is not None
    np.testing.assert_allclose(fisheye.intrinsics, k)
    for view in views:
        image = view.read_image()
        assert image.min() >= 40  # no black border: every pixel comes from inside the original
        within_a_pixel(image, grid(view.intrinsics, 160, 120))
        assert set(np.unique(view.depth)) <= set(np.unique(depth))  # nearest: no blended depths or labels
        assert set(np.unique(view.label)) <= set(np.unique(label))
    assert pinhole_camera(k, LENSES["opencv"], 160, 120)[0, 0] == 100


def test_nerfstudio_distortion_is_undone(tmp_path):
    scene, root, doc = capture_with_points(tmp_path)
    doc = json.loads((root / "transforms.json").read_text())
    lens = LENSES["opencv"]
    (root / "transforms.json").write_text(json.dumps({**doc, "k1": lens.radial[0], "k2": lens.radial[1],
                                                      "p1": lens.tangential[0], "p2": lens.tangential[1]}))
    report = import_nerfstudio(root, tmp_path / "out")
    assert report.undistorted_views == 4
    imported = Scene.load(tmp_path / "out")
    assert imported.views[0].read_image().shape == (120, 160, 3)
    (root / "transforms.json").write_text(json.dumps({**doc, "k1": 4.0, "k2": -9.0}))  # folds inside the image
    with pytest.raises(SceneError, match=r"frames\[0\].k1..p2: the lens distortion .* cannot be undone"):
        import_nerfstudio(root, tmp_path / "out2")


def test_colmap_without_scale_says_the_unit_is_unknown(tmp_path, capsys):
    from ditr.cli import main

    root = sparse_project(tmp_path)
    assert main(["import", "colmap", str(root), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "ditr import: note: no --scale" in err and "--scale TRUE_METRES/MEASURED_UNITS" in err
    assert Scene.load(tmp_path / "out").meta["units"] == "unknown"
    assert main(["inspect", str(tmp_path / "out")]) == 0
    assert "in unknown units" in capsys.readouterr().out
    import_colmap(root, tmp_path / "metric", scale=0.5)
    assert "units" not in Scene.load(tmp_path / "metric").meta

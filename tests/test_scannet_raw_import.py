"""Raw ScanNet importer: .sens streams, meshes, labels, axis alignment, splits, bad input, real sample."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from plyfile import PlyData, PlyElement

from conftest import look_at, shared_path
from ditr.cli import main
from ditr.errors import DitrError, SceneError
from ditr.io.scannet import SCANNET20_CLASSES, import_scannet, read_matrix
from ditr.io.scannet200 import SCANNET200_CLASSES
from ditr.io.scannet_raw import import_scannet_raw, vertex_normals
from ditr.io.scannet_sens import SensFile
from ditr.scene import Scene

SCENE = "scene0001_00"
K_COLOR = np.array([[30.0, 0, 16, 0], [0, 30.0, 12, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
K_DEPTH = np.array([[15.0, 0, 8, 0], [0, 15.0, 6, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


# ------------------------------------------------------------------ native-format writers (test helpers)
def jpeg_bytes(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_sens(path: Path, frames: list[tuple[np.ndarray, bytes, np.ndarray | None]], *, color_size=(32, 24),
               depth_size=(16, 12), k_color=K_COLOR, k_depth=K_DEPTH, depth_shift=1000.0) -> None:
    """Write a version-4 .sens file: frames are (camera_to_world, JPEG bytes, uint16 depth or None)."""
    out = bytearray(struct.pack("<I", 4))
    name = b"StructureSensor"
    out += struct.pack("<Q", len(name)) + name
    for m in (k_color, np.eye(4), k_depth, np.eye(4)):
        out += struct.pack("<16f", *np.asarray(m, dtype=np.float32).ravel())
    out += struct.pack("<ii", 2, 1) + struct.pack("<4I", *color_size, *depth_size)
    out += struct.pack("<f", depth_shift) + struct.pack("<Q", len(frames))
    for i, (pose, color, depth) in enumerate(frames):
        depth_data = zlib.compress(np.ascontiguousarray(depth, dtype="<u2").tobytes()) if depth is not None else b""
        out += struct.pack("<16f", *np.asarray(pose, dtype=np.float32).ravel())
        out += struct.pack("<4Q", 1000 * i, 1000 * i, len(color), len(depth_data)) + color + depth_data
    path.write_bytes(bytes(out))


def octahedra() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two octahedra (12 vertices, 16 triangles, counter-clockwise seen from outside) and their centres."""
    unit = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    faces = []
    for sx in (0, 1):
        for sy in (2, 3):
            for sz in (4, 5):
                tri = [sx, sy, sz]
                normal = np.cross(unit[sy] - unit[sx], unit[sz] - unit[sx])
                if normal @ (unit[sx] + unit[sy] + unit[sz]) < 0:
                    tri = [sx, sz, sy]
                faces.append(tri)
    faces = np.array(faces)
    centres = np.array([[1.0, 2.0, 0.5], [-1.0, 3.0, 1.0]])
    coord = np.concatenate([unit * 0.4 + centres[0], unit * 0.3 + centres[1]])
    return coord, np.concatenate([faces, faces + 6]), centres


def write_mesh(path: Path, coord: np.ndarray, faces: np.ndarray) -> None:
    v = np.zeros(len(coord), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                    ("blue", "u1"), ("alpha", "u1")])
    v["x"], v["y"], v["z"] = coord.T
    v["red"], v["green"], v["blue"], v["alpha"] = 10, np.arange(len(coord)), 200, 255
    f = np.zeros(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    f["vertex_indices"] = faces
    PlyData([PlyElement.describe(v, "vertex"),
             PlyElement.describe(f, "face", len_types={"vertex_indices": "u1"})]).write(str(path))


SEG_INDICES = [10, 10, 20, 20, 30, 30, 40, 40, 50, 50, 60, 70]
GROUPS = [("wall", [10]), ("chair", [20, 99]), ("kitchen cabinets", [30]), ("box", [40]), ("rug", [50]),
          ("mystery", [60])]
TSV = """id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class
1\twall\twall\t8277\t1\t12\twall\twall
2\tchair\tchair\t4646\t5\t4\tchair\tchair
7\tkitchen cabinets\tcabinet\t310\t3\t6\tcabinet\tcabinet
26\tbox\tbox\t775\t29\t14\tbox\tbox
12\trug\trug\t40\t40\t14\trug\totherprop
"""
EXPECTED_20 = [0, 0, 4, 4, 2, 2, -1, -1, -1, -1, -1, -1]
EXPECTED_200 = [0, 0, 1, 1, 6, 6, 22, 22, -1, -1, -1, -1]
EXPECTED_INSTANCE = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, -1]
ALIGN = np.array([[0.0, -1, 0, 2.5], [1, 0, 0, -1.0], [0, 0, 1, 0.25], [0, 0, 0, 1]])


def sens_frames(n: int = 3, invalid: tuple[int, ...] = (1,)) -> list:
    frames = []
    for i in range(n):
        pose = look_at([0.2 * i, -2.0, 1.0], [0.0, 2.0, 0.5])
        if i in invalid:
            pose = np.full((4, 4), -np.inf)
        depth = (1500 + np.arange(16 * 12).reshape(12, 16) + i).astype(np.uint16)
        frames.append((pose, jpeg_bytes(32, 24, seed=i), depth))
    return frames


def write_scan(root: Path, name: str = SCENE, *, labelled: bool = True, frames: list | None = None) -> Path:
    scan = root / ("scans" if labelled else "scans_test") / name
    scan.mkdir(parents=True)
    coord, faces, _ = octahedra()
    write_mesh(scan / f"{name}_vh_clean_2.ply", coord, faces)
    write_sens(scan / f"{name}.sens", frames if frames is not None else sens_frames())
    matrix = " ".join(str(x) for x in ALIGN.ravel())
    (scan / f"{name}.txt").write_text(f"axisAlignment = {matrix}\ncolorHeight = 968\nnumColorFrames = 3\n")
    if labelled:
        (scan / f"{name}_vh_clean_2.0.010000.segs.json").write_text(
            json.dumps({"sceneId": name, "segIndices": SEG_INDICES}))
        groups = [{"id": i, "objectId": i, "segments": segs, "label": label} for i, (label, segs) in enumerate(GROUPS)]
        (scan / f"{name}.aggregation.json").write_text(json.dumps({"sceneId": name, "segGroups": groups}))
    return scan


@pytest.fixture
def src(tmp_path) -> Path:
    root = tmp_path / "scannet"
    write_scan(root)
    (root / "scannetv2-labels.combined.tsv").write_text(TSV)
    return root


# ------------------------------------------------------------------ .sens reader
def test_sens_reader_yields_every_kth_frame_with_header(tmp_path):
    frames = sens_frames(7, invalid=())
    write_sens(tmp_path / "a.sens", frames)
    with SensFile(tmp_path / "a.sens") as sens:
        h = sens.header
        assert (h.version, h.sensor_name, h.num_frames, h.depth_shift) == (4, "StructureSensor", 7, 1000.0)
        assert (h.color_width, h.color_height, h.depth_width, h.depth_height) == (32, 24, 16, 12)
        np.testing.assert_allclose(h.intrinsic_depth, K_DEPTH)
        got = list(sens.frames(3))
        assert [f.index for f in got] == [0, 3, 6]
        assert got[1].color_bytes == frames[3][1]
        np.testing.assert_array_equal(sens.depth_units(got[2]), frames[6][2])
        np.testing.assert_allclose(got[1].camera_to_world, frames[3][0], atol=1e-6)


def test_truncated_sens_names_file_and_frame(tmp_path):
    write_sens(tmp_path / "a.sens", sens_frames(3, invalid=()))
    data = (tmp_path / "a.sens").read_bytes()
    (tmp_path / "a.sens").write_bytes(data[:-10])
    with SensFile(tmp_path / "a.sens") as sens, pytest.raises(SceneError, match=r"a\.sens: frame 2 of 3: truncated"):
        list(sens.frames(1))
    (tmp_path / "a.sens").write_bytes(data[:30])
    with pytest.raises(SceneError, match=r"a\.sens: header\.intrinsic_color: truncated"):
        SensFile(tmp_path / "a.sens")


def test_sens_with_wrong_version_or_compression_is_an_error(tmp_path):
    write_sens(tmp_path / "a.sens", sens_frames(1, invalid=()))
    data = bytearray((tmp_path / "a.sens").read_bytes())
    (tmp_path / "b.sens").write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(SceneError, match="version"):
        SensFile(tmp_path / "b.sens")
    comp_at = 4 + 8 + len("StructureSensor") + 4 * 64
    data[comp_at:comp_at + 4] = struct.pack("<i", 0)
    (tmp_path / "c.sens").write_bytes(bytes(data))
    with pytest.raises(SceneError, match="color_compression_type"):
        SensFile(tmp_path / "c.sens")


# ------------------------------------------------------------------ import
def test_import_writes_points_labels_and_views(src, tmp_path):
    report = import_scannet_raw(src, tmp_path / "out", frame_step=1)
    assert report.scenes == [SCENE] and report.frames == 2 and report.skipped_invalid_pose == 1
    assert report.frames_in_streams == 3 and report.unknown_labels == ["mystery"]
    scene = Scene.load(tmp_path / "out" / SCENE)
    coord, _, _ = octahedra()
    np.testing.assert_allclose(scene.coord, coord, atol=1e-6)
    np.testing.assert_array_equal(scene.attributes["color"][:, 1], np.arange(12))
    np.testing.assert_array_equal(scene.attributes["segment20"], EXPECTED_20)
    np.testing.assert_array_equal(scene.attributes["segment200"], EXPECTED_200)
    np.testing.assert_array_equal(scene.attributes["instance"], EXPECTED_INSTANCE)
    assert scene.meta["class_names"] == SCANNET20_CLASSES and scene.meta["segment"] == "segment20"
    assert scene.meta["class_names_200"] == list(SCANNET200_CLASSES) and scene.meta["axis_aligned"] is False
    np.testing.assert_allclose(scene.meta["axis_align_matrix"], ALIGN)

    frames = sens_frames()
    assert [v.name for v in scene.views] == ["00000", "00002"]
    for view, (pose, color, depth) in zip(scene.views, [frames[0], frames[2]]):
        assert view.image_path.read_bytes() == color  # JPEG bytes unchanged
        assert (view.width, view.height) == (32, 24)
        np.testing.assert_allclose(view.intrinsics, K_COLOR[:3, :3])
        np.testing.assert_allclose(view.cam_to_world, pose, atol=1e-6)
        k, w, h = view.depth_camera
        assert (w, h) == (16, 12) and view.depth_scale == 1000.0
        np.testing.assert_allclose(k, K_DEPTH[:3, :3])
        np.testing.assert_allclose(view.read_depth(), depth / 1000.0, rtol=1e-6)  # metres


def test_normals_are_unit_and_outward(src, tmp_path):
    import_scannet_raw(src, tmp_path / "out")
    scene = Scene.load(tmp_path / "out" / SCENE)
    normal = scene.attributes["normal"]
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-6)
    _, _, centres = octahedra()
    outward = scene.coord - np.repeat(centres, 6, axis=0)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    np.testing.assert_allclose(normal, outward, atol=1e-6)  # symmetric solid: exactly radial


def test_area_weighting_of_vertex_normals():
    # a vertex shared by a large triangle in the plane z=0 and a small one in the plane x=0
    coord = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 3, 4]])
    n = vertex_normals(coord, faces)
    expected = np.array([0.5, 0, 8.0]) / np.linalg.norm([0.5, 0, 8.0])  # cross products: (0,0,16) and (1,0,0)
    np.testing.assert_allclose(n[0], expected, atol=1e-6)
    np.testing.assert_allclose(n[1], [0, 0, 1], atol=1e-6)


def test_frame_step_and_max_frames(src, tmp_path):
    (src / "scans" / SCENE / f"{SCENE}.sens").unlink()
    write_sens(src / "scans" / SCENE / f"{SCENE}.sens", sens_frames(7, invalid=(2,)))
    report = import_scannet_raw(src, tmp_path / "a", frame_step=2)
    assert [v.name for v in Scene.load(tmp_path / "a" / SCENE).views] == ["00000", "00004", "00006"]
    assert report.skipped_invalid_pose == 1
    import_scannet_raw(src, tmp_path / "b", frame_step=1, max_frames=2)
    assert [v.name for v in Scene.load(tmp_path / "b" / SCENE).views] == ["00000", "00001"]


def test_axis_align_moves_points_and_cameras_together(src, tmp_path):
    import_scannet_raw(src, tmp_path / "raw")
    import_scannet_raw(src, tmp_path / "aligned", axis_align=True)
    raw, aligned = Scene.load(tmp_path / "raw" / SCENE), Scene.load(tmp_path / "aligned" / SCENE)
    np.testing.assert_allclose(aligned.coord, raw.coord @ ALIGN[:3, :3].T + ALIGN[:3, 3], atol=1e-5)
    np.testing.assert_allclose(aligned.attributes["normal"], raw.attributes["normal"] @ ALIGN[:3, :3].T, atol=1e-6)
    assert aligned.meta["axis_aligned"] is True
    for a, b in zip(raw.views, aligned.views):  # points seen from each camera: unchanged
        cam_a = (a.world_to_cam @ np.c_[raw.coord, np.ones(12)].T)[:3]
        cam_b = (b.world_to_cam @ np.c_[aligned.coord, np.ones(12)].T)[:3]
        np.testing.assert_allclose(cam_a, cam_b, atol=1e-5)


def test_axis_align_without_matrix_is_an_error(src, tmp_path):
    (src / "scans" / SCENE / f"{SCENE}.txt").write_text("colorHeight = 968\n")
    with pytest.raises(SceneError, match=rf"{SCENE}\.txt: axisAlignment: missing"):
        import_scannet_raw(src, tmp_path / "out", axis_align=True)


def test_test_scans_import_without_labels_or_table(tmp_path):
    root = tmp_path / "scannet"
    write_scan(root, "scene0707_00", labelled=False)
    report = import_scannet_raw(root, tmp_path / "out")
    assert report.scenes_without_labels == ["scene0707_00"]
    scene = Scene.load(tmp_path / "out" / "scene0707_00")
    assert set(scene.attributes) == {"color", "normal"} and "segment" not in scene.meta
    assert len(scene.views) == 1  # frames 0 (kept), 1 (invalid), 2 (not a 10th frame)


def test_missing_label_table_is_an_error(src, tmp_path):
    (src / "scannetv2-labels.combined.tsv").unlink()
    with pytest.raises(DitrError, match="scannetv2-labels.combined.tsv.*--labels-tsv"):
        import_scannet_raw(src, tmp_path / "out")
    other = tmp_path / "labels.tsv"
    other.write_text(TSV)
    assert import_scannet_raw(src, tmp_path / "out", labels_tsv=other).scenes == [SCENE]


def test_segment_count_mismatch_is_an_error(src, tmp_path):
    segs = src / "scans" / SCENE / f"{SCENE}_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": SEG_INDICES[:-1]}))
    with pytest.raises(SceneError, match=r"segs\.json: segIndices: has 11 entries, the mesh has 12 vertices"):
        import_scannet_raw(src, tmp_path / "out")


def test_missing_aggregation_and_bad_frames_are_errors(src, tmp_path):
    scan = src / "scans" / SCENE
    (scan / f"{SCENE}.aggregation.json").rename(tmp_path / "agg.json")
    with pytest.raises(SceneError, match=r"aggregation\.json: missing"):
        import_scannet_raw(src, tmp_path / "out")
    (tmp_path / "agg.json").rename(scan / f"{SCENE}.aggregation.json")
    frames = sens_frames()
    frames[2] = (frames[2][0], b"not a jpeg", frames[2][2])
    write_sens(scan / f"{SCENE}.sens", frames)
    with pytest.raises(SceneError, match=r"\.sens: frame 2 colour: cannot be decoded"):
        import_scannet_raw(src, tmp_path / "out", frame_step=1)
    frames = sens_frames()
    frames[0] = (frames[0][0], frames[0][1], np.zeros((12, 15), np.uint16))
    write_sens(scan / f"{SCENE}.sens", frames)
    with pytest.raises(SceneError, match=r"frame 0 depth: holds 360 bytes, expected 384"):
        import_scannet_raw(src, tmp_path / "out")


def test_cli_writes_splits_and_skips_existing(src, tmp_path, capsys):
    write_scan(src, "scene0002_00")
    splits = tmp_path / "benchmark"
    splits.mkdir()
    (splits / "scannetv2_train.txt").write_text(f"{SCENE}\nscene0999_00\n")
    (splits / "scannetv2_val.txt").write_text("scene0002_00\n")
    out = tmp_path / "out"
    assert main(["import", "scannet-raw", str(src), str(out), "--splits-dir", str(splits)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "scannet-raw" and report["scenes"] == [SCENE, "scene0002_00"]
    assert report["splits"] == {"train": 1, "val": 1}
    assert (out / "splits" / "train.txt").read_text() == f"{SCENE}\n"
    assert (out / "splits" / "val.txt").read_text() == "scene0002_00\n"
    assert main(["import", "scannet-raw", str(src), str(out), "--skip-existing", "--scenes", SCENE]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped_existing"] == [SCENE] and report["scenes"] == []
    assert main(["import", "scannet-raw", str(src), str(out), "--scenes", "scene0404_00"]) == 2
    assert "scene0404_00" in capsys.readouterr().err


def test_scannet200_preset_names_match_the_benchmark_table():
    from ditr.configs import __file__ as configs_init

    preset = yaml.safe_load((Path(configs_init).parent / "scannet200.yaml").read_text())
    assert preset["dataset"]["class_names"] == list(SCANNET200_CLASSES)
    assert preset["dataset"]["num_classes"] == 200


# ------------------------------------------------------------------ real sample
def test_sens_of_the_real_sample_gives_the_preprocessed_importers_views(tmp_path):
    """A .sens holding the sample's three frames (0, 11, 102; the 100 others with -inf poses) must give
    the same views as the importer of ScanNet's exported frames."""
    sample = shared_path("data", "scannet")
    frames_dir = sample / "frames" / "scene0000_00"
    k = read_matrix(frames_dir / "intrinsic" / "intrinsic_color.txt")
    real = {int(p.stem): p for p in (frames_dir / "color").glob("*.jpg")}
    no_depth = np.zeros((480, 640), np.uint16)
    frames = [(read_matrix(frames_dir / "pose" / f"{i:05d}.txt"), real[i].read_bytes(), no_depth) if i in real
              else (np.full((4, 4), -np.inf), b"", None) for i in range(103)]
    root = tmp_path / "raw"
    scan = write_scan(root, "scene0000_00", frames=[])
    (root / "scannetv2-labels.combined.tsv").write_text(TSV)
    write_sens(scan / "scene0000_00.sens", frames, color_size=(1296, 968), depth_size=(640, 480), k_color=k)
    report = import_scannet_raw(root, tmp_path / "out", frame_step=1)
    assert report.skipped_invalid_pose == 100 and report.frames == 3
    ours = Scene.load(tmp_path / "out" / "scene0000_00")
    import_scannet(sample, tmp_path / "pre")
    theirs = Scene.load(tmp_path / "pre" / "scene0000_00")
    assert [v.name for v in ours.views] == [v.name for v in theirs.views] == ["00000", "00011", "00102"]
    for a, b in zip(ours.views, theirs.views):
        assert (a.width, a.height) == (b.width, b.height) == (1296, 968)
        np.testing.assert_allclose(a.intrinsics, b.intrinsics, rtol=1e-6)
        np.testing.assert_allclose(a.cam_to_world, b.cam_to_world, atol=2e-6)
        assert a.image_path.read_bytes() == b.image_path.read_bytes()

"""Point files of own scans: PLY, PCD (ascii / binary / binary_compressed), LAS/LAZ, E57, npy, text.

Each fixture is written in the format's own layout (plyfile, a hand-written PCD header, laspy,
pye57), read back with ``read_point_file`` and compared with the values written.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from ditr.errors import DitrError, SceneError
from ditr.io.pointfile import lzf_decompress, read_point_file, read_points

RNG = np.random.default_rng(0)
N = 200
XYZ = RNG.uniform(-5, 5, (N, 3)).astype(np.float32)
RGB = RNG.integers(0, 256, (N, 3)).astype(np.uint8)
NORMAL = RNG.normal(size=(N, 3)).astype(np.float32)
INTENSITY = RNG.uniform(0, 1000, N).astype(np.float32)


# ------------------------------------------------------------------------------------------- PLY
def _ply(path, fields: dict[str, np.ndarray], text: bool) -> None:
    vertex = np.empty(N, dtype=[(name, values.dtype) for name, values in fields.items()])
    for name, values in fields.items():
        vertex[name] = values
    PlyData([PlyElement.describe(vertex, "vertex")], text=text).write(str(path))


@pytest.mark.parametrize("text", [True, False])
def test_ply_colours_normals_intensity(tmp_path, text):
    fields = {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2], "red": RGB[:, 0], "green": RGB[:, 1],
              "blue": RGB[:, 2], "nx": NORMAL[:, 0], "ny": NORMAL[:, 1], "nz": NORMAL[:, 2],
              "scalar_Intensity": INTENSITY}
    _ply(tmp_path / "a.ply", fields, text)
    arrays = read_points(tmp_path / "a.ply")
    np.testing.assert_allclose(arrays["coord"], XYZ, rtol=1e-6)
    np.testing.assert_array_equal(arrays["color"], RGB)
    np.testing.assert_allclose(arrays["normal"], NORMAL, rtol=1e-6)
    np.testing.assert_allclose(arrays["strength"], INTENSITY, rtol=1e-6)


def test_ply_rgb_names_float_and_16bit_colours(tmp_path):
    _ply(tmp_path / "f.ply", {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2], "r": RGB[:, 0] / 255.0,
                              "g": RGB[:, 1] / 255.0, "b": RGB[:, 2] / 255.0}, False)
    np.testing.assert_array_equal(read_points(tmp_path / "f.ply")["color"], RGB)
    wide = RGB.astype(np.uint16) * 257
    _ply(tmp_path / "w.ply", {"x": XYZ[:, 0], "y": XYZ[:, 1], "z": XYZ[:, 2], "red": wide[:, 0],
                              "green": wide[:, 1], "blue": wide[:, 2]}, False)
    np.testing.assert_array_equal(read_points(tmp_path / "w.ply")["color"], RGB)


def test_ply_nan_points_are_dropped_and_counted(tmp_path):
    xyz, normal = XYZ.copy(), NORMAL.copy()
    xyz[[3, 7], 1] = np.nan
    normal[11, 0] = np.inf
    _ply(tmp_path / "n.ply", {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "nx": normal[:, 0],
                              "ny": normal[:, 1], "nz": normal[:, 2]}, False)
    cloud = read_point_file(tmp_path / "n.ply")
    assert cloud.dropped_nonfinite == 3 and cloud.num_points == N - 3
    assert np.isfinite(cloud.coord).all() and np.isfinite(cloud.attributes["normal"]).all()


def test_ply_missing_coordinate_names_field(tmp_path):
    _ply(tmp_path / "bad.ply", {"x": XYZ[:, 0], "y": XYZ[:, 1]}, False)
    with pytest.raises(SceneError, match=r"bad.ply: vertex.z: missing"):
        read_point_file(tmp_path / "bad.ply")


# ------------------------------------------------------------------------------------------- PCD
def _packed_rgb() -> np.ndarray:
    bits = (RGB[:, 0].astype(np.uint32) << 16) | (RGB[:, 1].astype(np.uint32) << 8) | RGB[:, 2]
    return bits.view(np.float32)


def _pcd_header(fields, sizes, types, counts, points, data, width=None, height=1) -> bytes:
    width = width or points
    return ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
            f"FIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\nTYPE {' '.join(types)}\n"
            f"COUNT {' '.join(map(str, counts))}\nWIDTH {width}\nHEIGHT {height}\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n").encode()


PCD_FIELDS = (["x", "y", "z", "rgb", "intensity", "_", "normal_x", "normal_y", "normal_z", "_"],
              [4, 4, 4, 4, 4, 1, 4, 4, 4, 1], ["F", "F", "F", "F", "F", "U", "F", "F", "F", "U"],
              [1, 1, 1, 1, 1, 3, 1, 1, 1, 1])


def _pcd_record() -> np.ndarray:
    record = np.zeros(N, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("intensity", "<f4"),
                                ("pad", "u1", (3,)), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"), ("pad2", "u1")])
    record["x"], record["y"], record["z"] = XYZ.T
    record["rgb"], record["intensity"] = _packed_rgb(), INTENSITY
    record["nx"], record["ny"], record["nz"] = NORMAL.T
    record["x"][[5, 9]] = np.nan  # organised clouds mark missing returns with NaN
    return record


def _check_pcd(path, nan_rows=(5, 9)):
    cloud = read_point_file(path)
    keep = np.setdiff1d(np.arange(N), nan_rows)
    assert cloud.dropped_nonfinite == len(nan_rows) and cloud.num_points == len(keep)
    np.testing.assert_allclose(cloud.coord, XYZ[keep], rtol=1e-6)
    np.testing.assert_array_equal(cloud.attributes["color"], RGB[keep])
    np.testing.assert_allclose(cloud.attributes["normal"], NORMAL[keep], rtol=1e-6)
    np.testing.assert_allclose(cloud.attributes["strength"], INTENSITY[keep], rtol=1e-6)


def test_pcd_binary(tmp_path):
    (tmp_path / "b.pcd").write_bytes(_pcd_header(*PCD_FIELDS, N, "binary") + _pcd_record().tobytes())
    _check_pcd(tmp_path / "b.pcd")


def test_pcd_ascii_with_packed_float_rgb(tmp_path):
    r = _pcd_record()
    rows = [f"{a!r} {b!r} {c!r} {np.float32(d)!r} {e!r} 0 0 0 {f!r} {g!r} {h!r} 0"
            for a, b, c, d, e, f, g, h in zip(*(r[k].tolist() for k in ("x", "y", "z")), r["rgb"],
                                              r["intensity"].tolist(), r["nx"].tolist(), r["ny"].tolist(),
                                              r["nz"].tolist())]
    rows = [row.replace("np.float32(", "").replace(")", "") for row in rows]
    (tmp_path / "a.pcd").write_bytes(_pcd_header(*PCD_FIELDS, N, "ascii") + "\n".join(rows).encode() + b"\n")
    _check_pcd(tmp_path / "a.pcd")


def lzf_compress(data: bytes) -> bytes:
    """A small greedy LZF encoder (test only), with literal runs and overlapping back-references."""
    out, literal, last, i = bytearray(), bytearray(), {}, 0

    def flush():
        for k in range(0, len(literal), 32):
            chunk = literal[k:k + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literal.clear()

    while i < len(data):
        key = data[i:i + 3]
        ref = last.get(key) if len(key) == 3 else None
        if len(key) == 3:
            last[key] = i
        if ref is None or i - ref - 1 >= 8192:
            literal.append(data[i])
            i += 1
            continue
        length, limit = 3, min(264, len(data) - i)
        while length < limit and data[ref + length] == data[i + length]:
            length += 1
        flush()
        offset, code = i - ref - 1, length - 2
        out.append((min(code, 7) << 5) | (offset >> 8))
        if code >= 7:
            out.append(code - 7)
        out.append(offset & 255)
        i += length
    flush()
    return bytes(out)


def test_lzf_round_trip_with_overlapping_matches():
    data = b"abcabcabcabcabcXYZ" + bytes(600) + bytes(range(256)) * 3 + b"tail"
    packed = lzf_compress(data)
    assert len(packed) < len(data) / 2
    assert lzf_decompress(packed, len(data), "x.pcd") == data
    with pytest.raises(SceneError, match="decompressed to"):
        lzf_decompress(packed, len(data) + 1, "x.pcd")
    with pytest.raises(SceneError, match="back-reference before the start"):
        lzf_decompress(bytes([0x20, 0x05]), 10, "x.pcd")


def test_pcd_binary_compressed(tmp_path):
    record = _pcd_record()
    soa = b"".join(np.ascontiguousarray(record[name]).tobytes() for name in record.dtype.names)
    packed = lzf_compress(soa)
    body = np.array([len(packed), len(soa)], dtype="<u4").tobytes() + packed
    (tmp_path / "c.pcd").write_bytes(_pcd_header(*PCD_FIELDS, N, "binary_compressed") + body)
    _check_pcd(tmp_path / "c.pcd")


def test_pcd_errors_name_file_and_field(tmp_path):
    data = _pcd_header(*PCD_FIELDS, N, "binary") + _pcd_record().tobytes()
    (tmp_path / "t.pcd").write_bytes(data[:-100])
    with pytest.raises(SceneError, match=r"t.pcd: DATA binary: truncated"):
        read_point_file(tmp_path / "t.pcd")
    (tmp_path / "s.pcd").write_bytes(_pcd_header(["x", "y"], [4, 4], ["F", "F"], [1, 1], 1, "ascii") + b"1 2\n")
    with pytest.raises(SceneError, match=r"s.pcd: FIELDS z: missing"):
        read_point_file(tmp_path / "s.pcd")
    (tmp_path / "u.pcd").write_bytes(_pcd_header(["x"], [2], ["F"], [1], 1, "ascii") + b"1\n")
    with pytest.raises(SceneError, match=r"u.pcd: TYPE/SIZE of x: unsupported combination F 2"):
        read_point_file(tmp_path / "u.pcd")
    (tmp_path / "v.pcd").write_bytes(_pcd_header(["x"], ["four"], ["F"], [1], 1, "ascii") + b"1\n")
    with pytest.raises(SceneError, match=r"v.pcd: SIZE of x: must be a whole number, got 'four'"):
        read_point_file(tmp_path / "v.pcd")


# ------------------------------------------------------------------------------------------- LAS
@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_scaled_georeferenced_16bit_colour(tmp_path, suffix):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.offsets = [500000.0, 4000000.0, 100.0]
    header.scales = [0.001, 0.001, 0.001]
    las = laspy.LasData(header)
    xyz = np.round(XYZ.astype(np.float64), 3) + header.offsets
    las.x, las.y, las.z = xyz.T
    las.red, las.green, las.blue = (RGB.astype(np.uint16) * 257).T
    las.intensity = INTENSITY.astype(np.uint16)
    las.write(str(tmp_path / f"scan{suffix}"))
    arrays = read_points(tmp_path / f"scan{suffix}")
    np.testing.assert_allclose(arrays["coord"], xyz, atol=1e-6)  # float64: millimetres survive at 4000 km
    np.testing.assert_array_equal(arrays["color"], RGB)
    np.testing.assert_array_equal(arrays["strength"], INTENSITY.astype(np.uint16).astype(np.float32))


def test_missing_optional_library_tells_the_extra(tmp_path, monkeypatch):
    (tmp_path / "a.las").write_bytes(b"LASF")
    (tmp_path / "a.e57").write_bytes(b"ASTM")
    monkeypatch.setitem(sys.modules, "laspy", None)
    monkeypatch.setitem(sys.modules, "pye57", None)
    with pytest.raises(DitrError, match=r"a.las: reading LAS/LAZ needs laspy.*pip install 'ditr\[scans\]'"):
        read_point_file(tmp_path / "a.las")
    with pytest.raises(DitrError, match=r"a.e57: reading E57 needs pye57: pip install 'ditr\[scans\]'"):
        read_point_file(tmp_path / "a.e57")


# ------------------------------------------------------------------------------------------- E57
def test_e57_scans_merged_with_their_poses(tmp_path):
    pye57 = pytest.importorskip("pye57")
    from ditr.io.capture import quaternion_to_rotation

    half = N // 2
    invalid = np.zeros(N, dtype=np.int8)
    invalid[[4, 150]] = 2  # scanner marked these returns invalid
    xyz = XYZ.astype(np.float64)  # (pye57 cannot write NaN coordinates; NaN dropping is shared, tested above)
    q, t = np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)]), np.array([10.0, -2.0, 0.5])
    path = tmp_path / "scan.e57"
    with pye57.E57(str(path), mode="w") as e57:
        for part, rotation, translation in ((slice(0, half), np.array([1.0, 0, 0, 0]), np.zeros(3)),
                                            (slice(half, N), q, t)):
            fields = {"cartesianX": xyz[part, 0], "cartesianY": xyz[part, 1], "cartesianZ": xyz[part, 2],
                      "colorRed": RGB[part, 0], "colorGreen": RGB[part, 1], "colorBlue": RGB[part, 2],
                      "intensity": INTENSITY[part], "cartesianInvalidState": invalid[part]}
            e57.write_scan_raw({k: np.ascontiguousarray(v) for k, v in fields.items()},  # libE57 needs contiguous
                               rotation=rotation, translation=translation)
    cloud = read_point_file(path)
    expected = xyz.copy()
    expected[half:] = xyz[half:] @ quaternion_to_rotation(q).T + t
    keep = np.setdiff1d(np.arange(N), [4, 150])
    assert cloud.dropped_invalid == 2 and cloud.dropped_nonfinite == 0 and cloud.num_points == N - 2
    np.testing.assert_allclose(cloud.coord, expected[keep], atol=1e-9)
    np.testing.assert_array_equal(cloud.attributes["color"], RGB[keep])
    np.testing.assert_allclose(cloud.attributes["strength"], INTENSITY[keep], rtol=1e-6)


# ------------------------------------------------------------------------------------------- npy / text
def test_npy_and_text_columns(tmp_path):
    np.save(tmp_path / "p.npy", np.column_stack([XYZ, RGB, INTENSITY]).astype(np.float64))
    arrays = read_points(tmp_path / "p.npy")
    np.testing.assert_array_equal(arrays["color"], RGB)
    np.testing.assert_allclose(arrays["strength"], INTENSITY)
    np.save(tmp_path / "q.npy", XYZ[:, :2])
    with pytest.raises(SceneError, match=r"q.npy: array: shape \(200, 2\)"):
        read_point_file(tmp_path / "q.npy")
    rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in np.column_stack([XYZ, RGB]))
    (tmp_path / "p.csv").write_text("// exported\nx,y,z,r,g,b\n" + rows + "\n")
    arrays = read_points(tmp_path / "p.csv")
    np.testing.assert_allclose(arrays["coord"], XYZ, atol=1e-6)
    np.testing.assert_array_equal(arrays["color"], RGB)
    (tmp_path / "p.xyz").write_text("1 2 3\nnan 1 1\n4 5 6\n")
    cloud = read_point_file(tmp_path / "p.xyz")
    assert cloud.dropped_nonfinite == 1 and cloud.coord.tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "z.xyz").write_text("nan 1 1\n")
    with pytest.raises(SceneError, match=r"z.xyz: points: no valid points left"):
        read_point_file(tmp_path / "z.xyz")


def test_unknown_or_missing_file(tmp_path):
    with pytest.raises(SceneError, match="point file not found"):
        read_point_file(tmp_path / "nothing.ply")
    (tmp_path / "a.obj").write_text("v 1 2 3\n")
    with pytest.raises(SceneError, match=r"a.obj: unknown point file type '.obj'"):
        read_point_file(tmp_path / "a.obj")

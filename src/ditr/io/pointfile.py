"""Point files of your own scans: PLY, PCD, LAS/LAZ, E57, ``.npy`` and whitespace text columns.

Every reader returns the same per-point arrays, so that importers need not care where the points
came from: ``coord`` (float64, kept in double precision until the importer has moved a
georeferenced cloud near the origin), and where the file has them ``color`` (uint8 RGB),
``normal`` (float32) and ``strength`` (float32, the scanner's intensity, raw values).

Points with NaN or infinite values are dropped and counted, never kept: organised clouds (PCD,
E57) mark missing returns with NaN, and one NaN coordinate would poison every later stage. E57's
own "invalid" flags are dropped and counted separately. Colours are brought to 8 bits: 16-bit
colours (LAS, some PLY) are divided by 257, float colours in [0, 1] are multiplied by 255.
LAS/LAZ and E57 need the optional libraries of ``pip install 'ditr[scans]'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DitrError, SceneError

SCANS_EXTRA = "pip install 'ditr[scans]'"


@dataclass
class PointFile:
    """The points of one file: coordinates, attributes and what was dropped on the way."""

    path: Path
    coord: np.ndarray  # (N, 3) float64
    attributes: dict[str, np.ndarray] = field(default_factory=dict)  # color / normal / strength
    dropped_nonfinite: int = 0
    dropped_invalid: int = 0

    @property
    def num_points(self) -> int:
        return int(self.coord.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coord": self.coord, **self.attributes}


def read_points(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays ``coord`` / ``color`` / ``normal`` / ``strength`` of a point file (see module doc)."""
    return read_point_file(path).arrays()


def read_point_file(path: str | Path) -> PointFile:
    """Read any supported point file (chosen by its extension), dropping and counting non-finite points."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(path, None, "point file not found")
    suffix = path.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise SceneError(path, None, f"unknown point file type {suffix!r}; supported: {', '.join(sorted(_READERS))}")
    coord, attributes, invalid = reader(path)
    cloud = _drop_nonfinite(path, np.asarray(coord, dtype=np.float64), attributes)
    cloud.dropped_invalid = invalid
    if cloud.num_points == 0:
        raise SceneError(path, "points", "no valid points left after dropping non-finite and invalid ones")
    return cloud


def _drop_nonfinite(path: Path, coord: np.ndarray, attributes: dict[str, np.ndarray]) -> PointFile:
    """Drop points with a non-finite coordinate, normal or intensity (counted, never kept)."""
    good = np.isfinite(coord).all(axis=1)
    for values in attributes.values():
        if np.issubdtype(values.dtype, np.floating):
            good &= np.isfinite(values).reshape(len(values), -1).all(axis=1)
    dropped = int((~good).sum())
    if dropped:
        coord = coord[good]
        attributes = {name: values[good] for name, values in attributes.items()}
    return PointFile(path=path, coord=coord, attributes=attributes, dropped_nonfinite=dropped)


def to_uint8_color(rgb: np.ndarray, path: Path, field_name: str) -> np.ndarray:
    """(N, 3) colours of any numeric type as uint8: 16-bit values / 257, floats in [0, 1] * 255."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        finite = rgb[np.isfinite(rgb)]
        top = float(finite.max()) if finite.size else 0.0
        scaled = rgb * 255.0 if top <= 1.0 else rgb
        return np.clip(np.round(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
    if not np.issubdtype(rgb.dtype, np.integer):
        raise SceneError(path, field_name, f"colour values of type {rgb.dtype} are not numbers")
    if rgb.size and int(rgb.min()) < 0:
        raise SceneError(path, field_name, f"negative colour value {int(rgb.min())}")
    if rgb.size and int(rgb.max()) > 255:  # 16-bit colour (LAS stores 0-65535)
        if int(rgb.max()) > 65535:
            raise SceneError(path, field_name, f"colour value {int(rgb.max())} exceeds 16 bits")
        return np.round(rgb / 257.0).astype(np.uint8)
    return rgb.astype(np.uint8)


# ---------------------------------------------------------------------------------------------- PLY
_PLY_COLOR = [("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")]
_PLY_NORMAL = [("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")]
_PLY_INTENSITY = ["intensity", "scalar_intensity", "reflectance", "scalar_reflectance"]


def _read_ply(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
    except Exception as exc:  # plyfile raises several types for damaged headers and bodies
        raise SceneError(path, None, f"cannot be read as PLY ({exc})") from None
    if "vertex" not in ply:
        raise SceneError(path, "vertex", "the PLY file has no vertex element")
    v = ply["vertex"].data
    names = {n.lower(): n for n in (v.dtype.names or ())}
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise SceneError(path, f"vertex.{missing[0]}", f"missing; the vertex properties are {list(names.values())}")

    def column(*keys: str) -> np.ndarray:
        return np.stack([v[names[k]] for k in keys], axis=1)

    coord = column("x", "y", "z").astype(np.float64)
    attributes: dict[str, np.ndarray] = {}
    color_keys = next((keys for keys in _PLY_COLOR if all(k in names for k in keys)), None)
    if color_keys:
        attributes["color"] = to_uint8_color(column(*color_keys), path, "vertex." + "/".join(color_keys))
    normal_keys = next((keys for keys in _PLY_NORMAL if all(k in names for k in keys)), None)
    if normal_keys:
        attributes["normal"] = column(*normal_keys).astype(np.float32)
    intensity = next((k for k in _PLY_INTENSITY if k in names), None)
    if intensity:
        attributes["strength"] = np.asarray(v[names[intensity]], dtype=np.float32)
    return coord, attributes, 0


# ---------------------------------------------------------------------------------------------- PCD
_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
              ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}


@dataclass
class _PcdHeader:
    names: list[str]  # unique column names: PCL repeats "_" for padding fields
    dtypes: list[np.dtype]  # one per field, a sub-array dtype where COUNT > 1
    points: int
    data: str
    offset: int  # byte offset of the data after the DATA line


def _pcd_header(path: Path, raw: bytes) -> _PcdHeader:
    """Parse the PCD v0.7 header (FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS, DATA)."""
    keys: dict[str, list[str]] = {}
    pos = 0
    while "DATA" not in keys:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise SceneError(path, "DATA", "header ends without a DATA line")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if line and not line.startswith("#"):
            key, *values = line.split()
            keys[key.upper()] = values
    for key in ("FIELDS", "SIZE", "TYPE"):
        if key not in keys:
            raise SceneError(path, key, "missing from the PCD header")
    fields = keys["FIELDS"]
    sizes, types = keys["SIZE"], keys["TYPE"]
    counts = keys.get("COUNT", ["1"] * len(fields))
    if not len(sizes) == len(types) == len(counts) == len(fields):
        raise SceneError(path, "FIELDS", f"{len(fields)} fields but {len(sizes)} SIZE, {len(types)} TYPE, "
                                         f"{len(counts)} COUNT entries")
    dtypes = []
    for name, size, kind, count in zip(fields, sizes, types, counts):
        base = _PCD_TYPES.get((kind.upper(), _header_int(size, path, f"SIZE of {name}")))
        if base is None:
            raise SceneError(path, f"TYPE/SIZE of {name}", f"unsupported combination {kind} {size}")
        count = _header_int(count, path, f"COUNT of {name}")
        dtypes.append(np.dtype((base, (count,))) if count > 1 else np.dtype(base))
    if "POINTS" in keys:
        points = _header_int(keys["POINTS"][0] if keys["POINTS"] else "", path, "POINTS")
    elif "WIDTH" in keys:
        points = (_header_int(keys["WIDTH"][0], path, "WIDTH")
                  * _header_int(keys.get("HEIGHT", ["1"])[0], path, "HEIGHT"))
    else:
        raise SceneError(path, "POINTS", "missing from the PCD header (and no WIDTH x HEIGHT)")
    data = keys["DATA"][0].lower() if keys["DATA"] else ""
    names = [f if f not in fields[:i] else f"{f}_{i}" for i, f in enumerate(fields)]
    return _PcdHeader(names=names, dtypes=dtypes, points=points, data=data, offset=pos)


def _header_int(value: str, path: Path, field_name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SceneError(path, field_name, f"must be a whole number, got {value!r}") from None
    if number < 0:
        raise SceneError(path, field_name, f"must not be negative, got {number}")
    return number


def _read_pcd(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    raw = path.read_bytes()
    header = _pcd_header(path, raw)
    if header.data == "ascii":
        columns = _pcd_ascii(path, raw[header.offset:], header)
    elif header.data == "binary":
        record = np.dtype(list(zip(header.names, header.dtypes)))
        need = header.points * record.itemsize
        if len(raw) - header.offset < need:
            raise SceneError(path, "DATA binary", f"truncated: {len(raw) - header.offset} bytes of data, "
                                                  f"{header.points} points need {need}")
        table = np.frombuffer(raw, dtype=record, count=header.points, offset=header.offset)
        columns = {name: table[name] for name in header.names}
    elif header.data == "binary_compressed":
        columns = _pcd_compressed(path, raw[header.offset:], header)
    else:
        raise SceneError(path, "DATA", f"unknown data encoding {header.data!r} (ascii, binary, binary_compressed)")
    return _pcd_arrays(path, {n.lower(): c for n, c in columns.items()})


def _pcd_ascii(path: Path, body: bytes, header: _PcdHeader) -> dict[str, np.ndarray]:
    width = sum(int(np.prod(d.shape)) if d.shape else 1 for d in header.dtypes)
    try:
        table = np.loadtxt(body.decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise SceneError(path, "DATA ascii", f"not a table of numbers ({exc})") from None
    if table.shape[1:] != (width,) or table.shape[0] != header.points:
        raise SceneError(path, "DATA ascii", f"{table.shape[0]} rows of {table.shape[1]} values, the header declares "
                                             f"{header.points} points of {width} values")
    columns, col = {}, 0
    for name, dtype in zip(header.names, header.dtypes):
        n = int(np.prod(dtype.shape)) if dtype.shape else 1
        values = table[:, col:col + n].astype(dtype.base)  # a packed float rgb keeps its float32 bits
        columns[name] = values if n > 1 else values[:, 0]
        col += n
    return columns


def _pcd_compressed(path: Path, body: bytes, header: _PcdHeader) -> dict[str, np.ndarray]:
    """binary_compressed: two uint32 sizes, then LZF-compressed data stored field by field."""
    if len(body) < 8:
        raise SceneError(path, "DATA binary_compressed", "truncated before the compressed size fields")
    packed, unpacked = np.frombuffer(body[:8], dtype="<u4").tolist()
    if len(body) - 8 < packed:
        raise SceneError(path, "DATA binary_compressed", f"truncated: {len(body) - 8} of {packed} compressed bytes")
    data = lzf_decompress(body[8:8 + packed], unpacked, path)
    columns, offset = {}, 0
    for name, dtype in zip(header.names, header.dtypes):
        size = header.points * dtype.itemsize
        if offset + size > len(data):
            raise SceneError(path, "DATA binary_compressed", f"decompressed data too short for field {name}")
        columns[name] = np.frombuffer(data, dtype=dtype, count=header.points, offset=offset)
        offset += size
    return columns


def lzf_decompress(data: bytes, size: int, path: Path) -> bytes:
    """Decode an LZF stream (the compression of PCD's binary_compressed) of known decoded ``size``.

    LZF is a sequence of tokens: a control byte below 32 starts a literal run of ``ctrl + 1`` bytes;
    otherwise its top three bits (plus an extra byte when they are all set) give a match length and
    the low five bits with the next byte a backward distance into the output. Tokens depend on the
    output before them, so this is a loop over tokens (a few MB/s in Python; PCL's other encodings
    load at numpy speed).
    """
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            out += data[i:i + ctrl + 1]
            i += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            length += data[i]
            i += 1
        if i >= n:
            raise SceneError(path, "DATA binary_compressed", "LZF stream ends inside a back-reference")
        start = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        length += 2
        if start < 0:
            raise SceneError(path, "DATA binary_compressed", "LZF back-reference before the start of the data")
        period = len(out) - start  # a match may overlap its own output: repeat the period
        chunk = bytes(out[start:start + min(length, period)])
        out += (chunk * (length // len(chunk) + 1))[:length]
    if len(out) != size:
        raise SceneError(path, "DATA binary_compressed", f"decompressed to {len(out)} bytes, the header says {size}")
    return bytes(out)


def _pcd_arrays(path: Path, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    missing = [c for c in "xyz" if c not in columns]
    if missing:
        raise SceneError(path, f"FIELDS {missing[0]}", f"missing; the fields are {list(columns)}")
    coord = np.stack([columns[c] for c in "xyz"], axis=1).astype(np.float64)
    attributes: dict[str, np.ndarray] = {}
    packed = columns.get("rgb", columns.get("rgba"))
    if packed is not None:  # 0x00RRGGBB packed in a float32's (or a uint32's) bits
        bits = packed.astype(np.float32).view(np.uint32) if packed.dtype.kind == "f" else packed.astype(np.uint32)
        attributes["color"] = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)
    elif all(c in columns for c in ("r", "g", "b")):
        attributes["color"] = to_uint8_color(np.stack([columns[c] for c in "rgb"], axis=1), path, "FIELDS r/g/b")
    if all(f"normal_{c}" in columns for c in "xyz"):
        attributes["normal"] = np.stack([columns[f"normal_{c}"] for c in "xyz"], axis=1).astype(np.float32)
    if "intensity" in columns:
        attributes["strength"] = columns["intensity"].astype(np.float32)
    return coord, attributes, 0


# ---------------------------------------------------------------------------------------------- LAS
def _read_las(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    try:
        import laspy
    except ImportError:
        raise DitrError(f"{path}: reading LAS/LAZ needs laspy (with lazrs for .laz): {SCANS_EXTRA}") from None
    try:
        las = laspy.read(str(path))
    except Exception as exc:  # laspy raises LaspyException and OSError subclasses; LAZ without a backend too
        hint = f" (LAZ needs the lazrs backend: {SCANS_EXTRA})" if "laz" in str(exc).lower() else ""
        raise SceneError(path, None, f"cannot be read as LAS/LAZ ({exc}){hint}") from None
    coord = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)  # scaled and offset
    dims = set(las.point_format.dimension_names)
    attributes: dict[str, np.ndarray] = {}
    if {"red", "green", "blue"} <= dims:
        attributes["color"] = to_uint8_color(np.stack([las.red, las.green, las.blue], axis=1), path, "red/green/blue")
    if "intensity" in dims:
        attributes["strength"] = np.asarray(las.intensity, dtype=np.float32)
    return coord, attributes, 0


# ---------------------------------------------------------------------------------------------- E57
def _read_e57(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """All scans of an E57 file, each moved into the file's frame by its pose, merged into one cloud.

    Colour and intensity are kept when every scan has them. Points flagged invalid by the scanner
    (``cartesianInvalidState``) are dropped and counted. Embedded 2D images are not read.
    """
    try:
        import pye57
    except ImportError:
        raise DitrError(f"{path}: reading E57 needs pye57: {SCANS_EXTRA}") from None
    try:
        e57 = pye57.E57(str(path))
    except Exception as exc:  # libE57 raises its own exception type
        raise SceneError(path, None, f"cannot be read as E57 ({exc})") from None
    scans, invalid = [], 0
    try:
        for index in range(e57.scan_count):
            header = e57.get_header(index)
            scan = e57.read_scan(index, intensity=True, colors=True, transform=True, ignore_missing_fields=True)
            invalid += int(header.point_count) - len(scan["cartesianX"])
            scans.append(scan)
    except Exception as exc:
        raise SceneError(path, f"data3D[{len(scans)}]", f"cannot be read ({exc})") from None
    finally:
        e57.close()
    if not scans:
        raise SceneError(path, "data3D", "the E57 file holds no scans")

    def merged(*keys: str) -> np.ndarray | None:
        if not all(k in s for s in scans for k in keys):
            return None
        return np.concatenate([np.stack([s[k] for k in keys], axis=1) for s in scans])

    coord = merged("cartesianX", "cartesianY", "cartesianZ")
    attributes: dict[str, np.ndarray] = {}
    color = merged("colorRed", "colorGreen", "colorBlue")
    if color is not None:
        attributes["color"] = to_uint8_color(color, path, "colorRed/colorGreen/colorBlue")
    intensity = merged("intensity")
    if intensity is not None:
        attributes["strength"] = intensity[:, 0].astype(np.float32)
    return coord, attributes, invalid


# ------------------------------------------------------------------------------------ npy and text
def _columns_to_arrays(path: Path, table: np.ndarray, where: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Columns ``x y z [r g b] [intensity]``: 3, 4, 6 or 7 of them."""
    if table.ndim != 2 or table.shape[1] not in (3, 4, 6, 7):
        raise SceneError(path, where, f"shape {table.shape}: expected (N, 3|4|6|7) columns x y z [r g b] [intensity]")
    coord = table[:, :3].astype(np.float64)
    attributes: dict[str, np.ndarray] = {}
    if table.shape[1] >= 6:
        attributes["color"] = to_uint8_color(table[:, 3:6], path, f"{where} columns 4-6 (r g b)")
    if table.shape[1] in (4, 7):
        attributes["strength"] = table[:, -1].astype(np.float32)
    return coord, attributes, 0


def _read_npy(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise SceneError(path, None, f"cannot be read as a .npy array ({exc})") from None
    if not np.issubdtype(table.dtype, np.number):
        raise SceneError(path, None, f"dtype {table.dtype}: expected a numeric (N, 3+) array")
    return _columns_to_arrays(path, table, "array")


_COMMENT = re.compile(rb"^\s*(#|//).*$", re.M)


def _read_text(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    lines = _COMMENT.sub(b"", path.read_bytes()).replace(b",", b" ").decode("utf-8").splitlines()
    lines = [line for line in lines if line.strip()]
    if lines and not _is_numeric_row(lines[0]):  # a header row such as "x y z r g b"
        lines = lines[1:]
    try:
        table = np.loadtxt(lines, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise SceneError(path, "columns", f"not a table of numbers ({exc})") from None
    return _columns_to_arrays(path, table, "columns")


def _is_numeric_row(line: str) -> bool:
    try:
        [float(token) for token in line.split()]
    except ValueError:
        return False
    return True


_READERS: dict[str, Callable[[Path], tuple[np.ndarray, dict[str, np.ndarray], int]]] = {
    ".ply": _read_ply, ".pcd": _read_pcd, ".las": _read_las, ".laz": _read_las, ".e57": _read_e57,
    ".npy": _read_npy, ".txt": _read_text, ".xyz": _read_text, ".csv": _read_text,
}

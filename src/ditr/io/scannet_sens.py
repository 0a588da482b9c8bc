"""Streaming reader of ScanNet's ``.sens`` sensor files (RGB-D stream, format version 4).

A ``.sens`` file is one little-endian binary stream: a header (camera calibration, image sizes,
compression types, depth units, frame count) followed by the frames, each a small fixed header
(camera-to-world pose, two timestamps, two byte counts) and then the compressed colour and depth
bytes. Files are several GB, so :class:`SensFile` reads the frame headers in order and *seeks past*
the image bytes of frames that are not wanted: importing every 10th frame reads about a tenth of
the file. Truncated or inconsistent files raise :class:`~ditr.errors.SceneError` naming the file
and the frame.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..errors import SceneError

SENS_VERSION = 4
#: Colour compression types that hold encoded images (stored unchanged); raw RGB (0) is not read.
COLOR_PNG, COLOR_JPEG = 1, 2
COLOR_SUFFIX = {COLOR_PNG: ".png", COLOR_JPEG: ".jpg"}
#: Depth compression types: raw or zlib-compressed little-endian uint16 (the third, OCCI, is not read).
DEPTH_RAW_USHORT, DEPTH_ZLIB_USHORT = 0, 1

_MATRIX = struct.Struct("<16f")
_FRAME_TAIL = struct.Struct("<4Q")  # timestamp_color, timestamp_depth, color_size_bytes, depth_size_bytes
FRAME_HEADER_BYTES = _MATRIX.size + _FRAME_TAIL.size


@dataclass(frozen=True)
class SensHeader:
    """Calibration and stream layout of a ``.sens`` file (4x4 matrices as float64)."""

    version: int
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_compression: int
    depth_compression: int
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float  # depth units per metre (1000: millimetres)
    num_frames: int


@dataclass
class SensFrame:
    """One frame: its index in the stream, pose, timestamps and the still-encoded image bytes."""

    index: int
    camera_to_world: np.ndarray
    timestamp_color: int
    timestamp_depth: int
    color_bytes: bytes
    depth_bytes: bytes

    @property
    def has_valid_pose(self) -> bool:
        """ScanNet marks frames whose tracking failed with ``-inf`` (sometimes NaN) poses."""
        return bool(np.isfinite(self.camera_to_world).all())


class SensFile:
    """An open ``.sens`` file: the header on opening, frames on demand (use as a context manager)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SceneError(self.path, None, "missing (the scene's .sens sensor stream)")
        self._fh: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close()/__exit__)
        self._size = os.fstat(self._fh.fileno()).st_size
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise
        self._frames_start = self._fh.tell()

    def __enter__(self) -> SensFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    # ------------------------------------------------------------------ header
    def _read(self, n: int, what: str) -> bytes:
        data = self._fh.read(n)
        if len(data) != n:
            raise SceneError(self.path, what, f"truncated: needs {n} bytes at offset {self._fh.tell() - len(data)}, "
                                              f"the file ends after {len(data)} (size {self._size} bytes)")
        return data

    def _unpack(self, fmt: str, what: str) -> tuple:
        s = struct.Struct(fmt)
        return s.unpack(self._read(s.size, what))

    def _matrix(self, what: str) -> np.ndarray:
        return np.array(_MATRIX.unpack(self._read(_MATRIX.size, what)), dtype=np.float64).reshape(4, 4)

    def _read_header(self) -> SensHeader:
        (version,) = self._unpack("<I", "header.version")
        if version != SENS_VERSION:
            raise SceneError(self.path, "header.version",
                             f"is {version}; this reader reads .sens version {SENS_VERSION}")
        (name_len,) = self._unpack("<Q", "header.sensor_name")
        if name_len > 4096:
            raise SceneError(self.path, "header.sensor_name", f"length {name_len} is implausible: not a .sens file?")
        name = self._read(name_len, "header.sensor_name").decode("utf-8", errors="replace")
        k_color, e_color = self._matrix("header.intrinsic_color"), self._matrix("header.extrinsic_color")
        k_depth, e_depth = self._matrix("header.intrinsic_depth"), self._matrix("header.extrinsic_depth")
        color_comp, depth_comp = self._unpack("<ii", "header.compression_type")
        cw, ch, dw, dh = self._unpack("<4I", "header.image_size")
        (depth_shift,) = self._unpack("<f", "header.depth_shift")
        (num_frames,) = self._unpack("<Q", "header.num_frames")
        header = SensHeader(version, name, k_color, e_color, k_depth, e_depth, color_comp, depth_comp,
                            cw, ch, dw, dh, float(depth_shift), num_frames)
        self._check_header(header)
        return header

    def _check_header(self, h: SensHeader) -> None:
        if h.color_compression not in COLOR_SUFFIX:
            raise SceneError(self.path, "header.color_compression_type",
                             f"is {h.color_compression}; supported: {COLOR_JPEG} (JPEG) and {COLOR_PNG} (PNG)")
        if h.depth_compression not in (DEPTH_RAW_USHORT, DEPTH_ZLIB_USHORT):
            raise SceneError(self.path, "header.depth_compression_type",
                             f"is {h.depth_compression}; supported: {DEPTH_ZLIB_USHORT} (zlib uint16) and "
                             f"{DEPTH_RAW_USHORT} (raw uint16)")
        if min(h.color_width, h.color_height, h.depth_width, h.depth_height) == 0:
            raise SceneError(self.path, "header.image_size", "an image width or height is 0")
        if not (np.isfinite(h.depth_shift) and h.depth_shift > 0):
            raise SceneError(self.path, "header.depth_shift", f"must be a positive number, got {h.depth_shift}")
        for field_name in ("intrinsic_color", "intrinsic_depth"):
            k = getattr(h, field_name)
            if not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
                raise SceneError(self.path, f"header.{field_name}",
                                 f"is not a valid camera matrix: {k[:3, :3].tolist()}")

    # ------------------------------------------------------------------ frames
    def frames(self, step: int = 1) -> Iterator[SensFrame]:
        """Yield frames 0, step, 2*step, ...; the image bytes of all other frames are skipped by seeking."""
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self._fh.seek(self._frames_start)
        n = self.header.num_frames
        for index in range(n):
            where = f"frame {index} of {n}"
            pose = self._matrix(where)
            ts_color, ts_depth, color_size, depth_size = _FRAME_TAIL.unpack(self._read(_FRAME_TAIL.size, where))
            end = self._fh.tell() + color_size + depth_size
            if end > self._size:
                raise SceneError(self.path, where, f"truncated: its images ({color_size} + {depth_size} bytes) end at "
                                                   f"byte {end}, the file has {self._size}")
            if index % step:
                self._fh.seek(end)
                continue
            color = self._read(color_size, f"{where} colour")
            depth = self._read(depth_size, f"{where} depth")
            yield SensFrame(index, pose, ts_color, ts_depth, color, depth)

    def depth_units(self, frame: SensFrame) -> np.ndarray:
        """The frame's depth map as uint16 (depth_height, depth_width) in units of 1/depth_shift metres."""
        h = self.header
        data = frame.depth_bytes
        if h.depth_compression == DEPTH_ZLIB_USHORT:
            try:
                data = zlib.decompress(data)
            except zlib.error as exc:
                raise SceneError(self.path, f"frame {frame.index} depth", f"is not valid zlib data ({exc})") from None
        expected = h.depth_width * h.depth_height * 2
        if len(data) != expected:
            raise SceneError(self.path, f"frame {frame.index} depth",
                             f"holds {len(data)} bytes, expected {expected} ({h.depth_width}x{h.depth_height} uint16)")
        return np.frombuffer(data, dtype="<u2").reshape(h.depth_height, h.depth_width)

    def check_color(self, frame: SensFrame) -> None:
        """Check that the colour bytes decode to an image of the header's size (reads the image header only)."""
        h = self.header
        try:
            with Image.open(io.BytesIO(frame.color_bytes)) as im:
                size = im.size
        except Exception as exc:  # PIL raises several types for damaged data
            raise SceneError(self.path, f"frame {frame.index} colour", f"cannot be decoded ({exc})") from None
        if size != (h.color_width, h.color_height):
            raise SceneError(self.path, f"frame {frame.index} colour",
                             f"is {size[0]}x{size[1]}, the header declares {h.color_width}x{h.color_height}")

"""Small helpers the dataset importers share: progress callbacks, sampling checks, JSON and image files.

Importers report progress through a plain ``progress(done, total)`` callback (the commands draw
the bar, see ``ditr/commands/import_/_progress.py``), so that this package stays free of
terminal code and its functions are easy to call from scripts and tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from ..errors import DitrError, SceneError

#: ``progress(done, total)``: called after each unit of work (a frame, a scene, a segment...).
Progress = Callable[[int, int], None]
T = TypeVar("T")


def tracked(items: Sequence[T], progress: Progress | None) -> Iterator[T]:
    """The items one by one; ``progress(done, len(items))`` is called once the loop body has finished each."""
    for done, item in enumerate(items, start=1):
        yield item
        if progress is not None:
            progress(done, len(items))


def check_sampling(frame_step: int, max_frames: int | None) -> None:
    """Refuse frame subsampling that would select nothing (named as the command-line options)."""
    if frame_step < 1 or (max_frames is not None and max_frames < 1):
        raise DitrError(f"--frame-step ({frame_step}) and --max-frames ({max_frames}) must be >= 1")


def read_json(path: Path, field: str | None = None, missing: str = "missing") -> Any:
    """The parsed content of a JSON file; a missing or damaged file is an error naming the file
    (``field`` and ``missing`` say what the importer needed it for)."""
    if not path.is_file():
        raise SceneError(path, field, missing)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(path, None, f"is not valid JSON ({exc})") from None


def read_json_object(path: Path, field: str | None = None, missing: str = "missing",
                     expected: str = "a JSON object") -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object (``expected`` describes it in the error)."""
    doc = read_json(path, field, missing)
    if not isinstance(doc, dict):
        raise SceneError(path, None, f"must hold {expected}")
    return doc


def image_size(path: Path, field: str) -> tuple[int, int]:
    """(width, height) of an image, from its header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # PIL raises several types for damaged or unknown files
        raise SceneError(path, field, f"cannot be read as an image ({exc})") from None


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) of Hamilton quaternions (..., 4) in (w, x, y, z) order, normalised.

    (w, x, y, z) is the order of COLMAP, nuScenes and most capture tools.
    """
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)

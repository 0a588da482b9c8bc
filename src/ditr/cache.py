"""On-disk cache of patch-feature grids, so training reads features instead of re-running the ViT.

One entry per (image content, model + weights identity, network input size, horizontal flip, and the
settings that change the numbers: compute precision and position-embedding interpolation). The
entry's file name is a SHA-256 over all of them plus :data:`FEATURE_FORMAT_VERSION`, so anything that
changes the result changes the name, and stale entries are simply never looked up again.

Entries are fp16 safetensors files written atomically (temporary sibling + ``os.replace``); every
read re-checks the stored metadata and the tensor, and anything unreadable or inconsistent is a miss
(recomputed and overwritten), never served. Entries are independent files, so processes writing the
same cache (e.g. torchrun ranks) merge without coordination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from .fileio import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from .scene import View

#: Bump when the meaning of a cached tensor changes (layout, normalisation, token selection, ...).
FEATURE_FORMAT_VERSION = 1
CACHE_FORMAT = "ditr.features"
CACHE_DTYPE = torch.float16
_TENSOR = "features"
_HASH_CHUNK = 1 << 22
_memo: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_digest(path: str | Path, memo_file: Path | None = None) -> str:
    """SHA-256 of a file's bytes, remembered by (path, size, mtime) in-process and in ``memo_file``.

    The on-disk memo is for multi-GB checkpoints that would otherwise be re-hashed on every run.
    """
    path = Path(path)
    key = _stat_key(path)
    if key in _memo:
        return _memo[key]
    stored = _read_memo(memo_file)
    memo_key = "|".join(map(str, key))
    if memo_key in stored:
        _memo[key] = stored[memo_key]
        return stored[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    _memo[key] = h.hexdigest()
    if memo_file is not None:
        stored[memo_key] = _memo[key]
        atomic_write_json(memo_file, stored)
    return _memo[key]


def _read_memo(memo_file: Path | None) -> dict[str, str]:
    if memo_file is None or not memo_file.is_file():
        return {}
    try:
        data = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def files_digest(files: Iterable[Path], memo_file: Path | None = None) -> str:
    """One digest over several files (e.g. a Hugging Face directory's config and weight shards)."""
    h = hashlib.sha256()
    for f in sorted(Path(f) for f in files):
        h.update(f"{f.name}:{file_digest(f, memo_file)}\n".encode())
    return h.hexdigest()


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (images held in memory rather than in files)."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def image_digest(view: View) -> str:
    """Content identity of a view's image: its file's bytes, or the pixels of an in-memory image."""
    if view.image is not None:
        return array_digest(view.image)
    if view.image_path is None:
        raise ValueError(f"view {view.name!r} has no image")
    return file_digest(view.image_path)


@dataclass(frozen=True)
class FeatureKey:
    """Everything that determines one cached feature grid."""

    image: str  # image content digest
    model: str  # registry name (architecture)
    weights: str  # identity of the loaded weights (file / directory digest, or random-init digest)
    size: tuple[int, int]  # (height, width) fed to the network
    flip: bool  # features of the horizontally mirrored image
    settings: str = ""  # other result-affecting settings: precision, position-embedding interpolation

    def digest(self) -> str:
        fields = {**asdict(self), "size": list(self.size), "version": FEATURE_FORMAT_VERSION,
                  "dtype": str(CACHE_DTYPE)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """A directory of feature grids, one safetensors file per :class:`FeatureKey`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def hash_memo(self) -> Path:
        """Where checkpoint file digests are remembered between runs."""
        return self.root / "file-digests.json"

    def path(self, key: FeatureKey) -> Path:
        d = key.digest()
        return self.root / f"v{FEATURE_FORMAT_VERSION}" / d[:2] / f"{d}.safetensors"

    def get(self, key: FeatureKey) -> torch.Tensor | None:
        """The cached (D, h, w) fp16 grid, or None when absent, partial, corrupted or mismatched."""
        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                if not self._metadata_ok(f.metadata(), key) or list(f.keys()) != [_TENSOR]:
                    return None
                tensor = f.get_tensor(_TENSOR)
        except Exception:  # missing file, truncated header or data, not safetensors at all
            return None
        if tensor.dtype != CACHE_DTYPE or tensor.ndim != 3 or not torch.isfinite(tensor).all():
            return None
        return tensor

    def contains(self, key: FeatureKey) -> bool:
        return self.get(key) is not None

    def put(self, key: FeatureKey, features: torch.Tensor) -> Path:
        """Store a (D, h, w) grid as fp16; atomic, so readers never see a partial entry."""
        if features.ndim != 3:
            raise ValueError(f"expected a (D, h, w) feature grid, got shape {tuple(features.shape)}")
        tensor = features.detach().to("cpu", CACHE_DTYPE).contiguous()
        data = safetensors_save({_TENSOR: tensor}, metadata=self._metadata(key))
        return atomic_write_bytes(self.path(key), data)

    @staticmethod
    def _metadata(key: FeatureKey) -> dict[str, str]:
        return {"format": CACHE_FORMAT, "version": str(FEATURE_FORMAT_VERSION), "key": key.digest(),
                "model": key.model, "weights": key.weights, "image": key.image,
                "size": f"{key.size[0]}x{key.size[1]}", "flip": str(int(key.flip)), "settings": key.settings}

    def _metadata_ok(self, meta: dict[str, str] | None, key: FeatureKey) -> bool:
        return meta == self._metadata(key)

    def entries(self) -> list[Path]:
        """All entry files of the current format version (for statistics and clean-up)."""
        return sorted((self.root / f"v{FEATURE_FORMAT_VERSION}").glob("*/*.safetensors"))


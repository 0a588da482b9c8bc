"""On-disk cache of patch-feature grids, so training reads features instead of re-running the ViT.

One entry per (image content, model + weights identity, network input size, horizontal flip,
colour-jitter variant, and the settings that change the numbers: compute precision and
position-embedding interpolation). The
entry's file name is a SHA-256 over all of them plus :data:`FEATURE_FORMAT_VERSION`, so anything that
changes the result changes the name, and stale entries are simply never looked up again.

Entries are fp16 safetensors files written atomically (temporary sibling + ``os.replace``); every
read re-checks the stored metadata, the tensor, and the SHA-256 ``checksum`` of the tensor's bytes
stored in the metadata: anything unreadable, inconsistent or damaged is a miss (recomputed and
overwritten where the reader computes, an error naming the entry where it only reads), counted in
:attr:`FeatureCache.stats`, never served. Entries are independent files, so processes writing the
same cache (e.g. torchrun ranks) merge without coordination.

Entries written before checksums existed (no ``checksum`` in their metadata) are not recomputed:
they pass the checks they always had (key metadata, dtype, shape, finite values), are served and
counted as ``legacy``; a reader that computes features (:class:`~ditr.vfm.extract.FeatureSource`,
which ``ditr features`` runs: re-running it over the same scenes is all hits) adds their checksum in
place (``migrated``). Damage done to an entry before it got its checksum cannot be detected.

The weights' identity in every key is the SHA-256 of their files' content (:func:`file_digest`),
remembered per file by its full stat identity (path, size, mtime, ctime, inode) and re-checked
against a sample of the content, so that multi-GB checkpoints are hashed once, and weights
overwritten in place (same size, even the same mtime) are hashed again and get new keys.
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
#: The content sample re-read on every use of a remembered digest: this many blocks of _SAMPLE_BLOCK bytes.
_SAMPLE_BLOCKS = 16
_SAMPLE_BLOCK = 1 << 16
#: Memo format: entries of earlier ditr versions (keyed by path, size and mtime alone) are not trusted.
_MEMO_FORMAT = "ditr.file-digests.v2"
StatKey = tuple[str, int, int, int, int, int]
_memo: dict[StatKey, str] = {}


def _stat_key(path: Path) -> StatKey:
    """Everything a write changes: size, mtime, ctime (which no user can set back) and the file's identity."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def _content_sample(path: Path, size: int) -> str:
    """SHA-256 of evenly spaced blocks (first and last included): about 1 MB read of any file."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _SAMPLE_BLOCKS * _SAMPLE_BLOCK:
            h.update(fh.read())
        else:
            for i in range(_SAMPLE_BLOCKS):
                fh.seek((size - _SAMPLE_BLOCK) * i // (_SAMPLE_BLOCKS - 1))
                h.update(fh.read(_SAMPLE_BLOCK))
    return h.hexdigest()


def file_digest(path: str | Path, memo_file: Path | None = None) -> str:
    """SHA-256 of a file's bytes, remembered in-process and in ``memo_file`` (multi-GB checkpoints
    would otherwise be re-hashed on every run).

    A remembered digest is used only while the file's stat identity (path, size, mtime, ctime,
    inode, device) is unchanged; the on-disk memo also keeps a sample of the content, re-read and
    compared on every use. Anything else hashes the whole file again.
    """
    path = Path(path)
    key = _stat_key(path)
    if key in _memo:
        return _memo[key]
    stored = _read_memo(memo_file)
    memo_key = "|".join(map(str, key))
    entry = stored.get(memo_key)
    if (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and entry.get("sample") == _content_sample(path, key[1])):
        _memo[key] = entry["sha256"]
        return entry["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    _memo[key] = h.hexdigest()
    if memo_file is not None:
        stored = {k: v for k, v in stored.items() if not k.startswith(str(key[0]) + "|")}  # this file's old entries
        stored[memo_key] = {"sha256": _memo[key], "sample": _content_sample(path, key[1])}
        atomic_write_json(memo_file, {"format": _MEMO_FORMAT, "files": stored})
    return _memo[key]


def _read_memo(memo_file: Path | None) -> dict[str, dict]:
    if memo_file is None or not memo_file.is_file():
        return {}
    try:
        data = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _MEMO_FORMAT or not isinstance(data.get("files"), dict):
        return {}  # an earlier format (path, size and mtime alone): every file is hashed once more
    return data["files"]


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
    #: The colour-jitter variant's tag (:attr:`ditr.vfm.color_jitter.JitterVariant.tag`: strength, index and the
    #: jitter code's version); "" for the image as it is.
    jitter: str = ""

    def digest(self) -> str:
        fields = {**asdict(self), "size": list(self.size), "version": FEATURE_FORMAT_VERSION,
                  "dtype": str(CACHE_DTYPE)}
        if not self.jitter:  # unjittered images keep the keys they had before variants existed
            del fields["jitter"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


#: What :meth:`FeatureCache.read` found: served (``hit``, ``legacy``) or not (``absent``, ``corrupt``).
ENTRY_STATES = ("hit", "legacy", "absent", "corrupt")


def tensor_checksum(tensor: torch.Tensor) -> str:
    """SHA-256 of a CPU tensor's bytes (as stored: contiguous, little-endian)."""
    data = tensor.detach().cpu().contiguous()
    return hashlib.sha256(data.view(torch.uint8).numpy().data if data.numel() else b"").hexdigest()


class FeatureCache:
    """A directory of feature grids, one safetensors file per :class:`FeatureKey`.

    :attr:`stats` counts what reads found (``hit``, ``legacy``, ``absent``, ``corrupt``) and how many
    entries got their checksum added (``migrated``), so damage is reported, not just skipped.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stats: dict[str, int] = {state: 0 for state in (*ENTRY_STATES, "migrated")}

    @property
    def hash_memo(self) -> Path:
        """Where checkpoint file digests are remembered between runs."""
        return self.root / "file-digests.json"

    def exists(self) -> bool:
        """Whether the folder holds a cache of this format (``ditr features`` made it), not just any folder."""
        return (self.root / f"v{FEATURE_FORMAT_VERSION}").is_dir()

    def path(self, key: FeatureKey) -> Path:
        d = key.digest()
        return self.root / f"v{FEATURE_FORMAT_VERSION}" / d[:2] / f"{d}.safetensors"

    def get(self, key: FeatureKey, migrate: bool = False) -> torch.Tensor | None:
        """The cached (D, h, w) fp16 grid, or None when absent, partial, corrupted or mismatched.

        ``migrate``: give an entry written before checksums its checksum now (see the module docs).
        """
        return self.read(key, migrate)[0]

    def read(self, key: FeatureKey, migrate: bool = False) -> tuple[torch.Tensor | None, str]:
        """The grid (or None) and what was found, one of :data:`ENTRY_STATES` (counted in :attr:`stats`)."""
        tensor, state = self._read(key)
        if state == "legacy" and migrate and tensor is not None:
            try:
                self.put(key, tensor)
                self.stats["migrated"] += 1
            except OSError:  # a read-only cache: the entry stays as it is, and is counted as legacy
                pass
        self.stats[state] += 1
        return tensor, state

    def _read(self, key: FeatureKey) -> tuple[torch.Tensor | None, str]:
        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                checksum = meta.pop("checksum", None)
                if meta != self._metadata(key) or list(f.keys()) != [_TENSOR]:
                    return None, "corrupt"
                tensor = f.get_tensor(_TENSOR)
        except FileNotFoundError:
            return None, "absent"
        except Exception:  # truncated header or data, not safetensors at all
            return None, "corrupt"
        if tensor.dtype != CACHE_DTYPE or tensor.ndim != 3 or not bool(torch.isfinite(tensor).all()):
            return None, "corrupt"
        if checksum is None:
            return tensor, "legacy"
        return (tensor, "hit") if checksum == tensor_checksum(tensor) else (None, "corrupt")

    def contains(self, key: FeatureKey) -> bool:
        return self._read(key)[0] is not None

    def put(self, key: FeatureKey, features: torch.Tensor) -> Path:
        """Store a (D, h, w) grid as fp16; atomic, so readers never see a partial entry."""
        if features.ndim != 3:
            raise ValueError(f"expected a (D, h, w) feature grid, got shape {tuple(features.shape)}")
        tensor = features.detach().to("cpu", CACHE_DTYPE).contiguous()
        metadata = {**self._metadata(key), "checksum": tensor_checksum(tensor)}
        data = safetensors_save({_TENSOR: tensor}, metadata=metadata)
        return atomic_write_bytes(self.path(key), data)

    @staticmethod
    def _metadata(key: FeatureKey) -> dict[str, str]:
        return {"format": CACHE_FORMAT, "version": str(FEATURE_FORMAT_VERSION), "key": key.digest(),
                "model": key.model, "weights": key.weights, "image": key.image,
                "size": f"{key.size[0]}x{key.size[1]}", "flip": str(int(key.flip)), "settings": key.settings,
                **({"jitter": key.jitter} if key.jitter else {})}

    def entries(self) -> list[Path]:
        """All entry files of the current format version (for statistics and clean-up)."""
        return sorted((self.root / f"v{FEATURE_FORMAT_VERSION}").glob("*/*.safetensors"))


"""Integrity of model files: a content hash of their tensors, and the zip CRCs torch does not check.

Training states (``last.pt`` / ``best.pt``) carry ``content_sha256``: for each top-level entry that
holds tensors (``model``, ``optimizer``, ``rng`` ...), a SHA-256 over every tensor's name, dtype,
shape and bytes in a fixed order (:func:`tensor_digest`). ``.ditr`` bundles carry one in their
header metadata, over the weights and the other metadata (the run config). Both are checked on
loading; a mismatch is a one-line error naming the file. A torch file in the zip format also has
every member's CRC-32 checked (:func:`check_zip`: ``torch.load`` reads the members without), which
catches damage in its pickled part (config, step) as well.

Files written without a hash (the reference's published ``.pth``, ditr files written before this
check) still load: their zip CRCs are checked where they are zip files, and one warning line says
that no hash was present (:func:`warn_no_hash`), never a refusal for that reason alone.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import DitrError

#: The key (training states) and metadata entry (bundles) holding the content hash.
HASH_KEY = "content_sha256"


class IntegrityError(DitrError):
    """A model file whose content does not match its hash or its zip CRCs: damaged or changed."""


def _tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every tensor in nested dicts / lists / tuples, in a fixed order."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, Mapping):
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            yield from _tensors(value[key], f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}.{i}" if name else str(i))


def has_tensors(value: Any) -> bool:
    return next(_tensors(value, ""), None) is not None


def tensor_digest(value: Any, extra: Mapping[str, str] | None = None) -> str:
    """SHA-256 (hex) over the names, dtypes, shapes and bytes of every tensor in ``value`` (nested
    dicts / lists), and the ``extra`` strings (a bundle's metadata), in a fixed order. Memory-mapped
    tensors are hashed in place (no copy)."""
    sha = hashlib.sha256()
    for name, tensor in _tensors(value, ""):
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        sha.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            sha.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    for key in sorted(extra or {}):
        sha.update(f"{key}\0{(extra or {})[key]}\0".encode())
    return sha.hexdigest()


def check_zip(path: str | Path) -> bool:
    """Check every member's CRC-32 of a zip-format file (a torch file since torch 1.6); whether it is a
    zip file at all. A mismatch (or a broken archive) raises :class:`IntegrityError` naming the file."""
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise IntegrityError(f"{path}: damaged file (its zip structure cannot be read: {exc})") from None
    if bad is not None:
        raise IntegrityError(f"{path}: damaged file (the CRC of its member {bad} does not match: it was changed "
                             "after it was written); use another copy")
    return True


def warn_no_hash(path: str | Path, zip_checked: bool | None) -> None:
    """The one warning line for a file written without a content hash (``zip_checked`` None: not a
    torch file, a bundle)."""
    checked = {True: "its zip CRCs were checked", False: "not a zip file: its content could not be checked",
               None: "its content could not be checked"}[zip_checked]
    warnings.warn(f"{path}: no content hash present (a reference file or one written by an older ditr); "
                  f"{checked}", stacklevel=3)


def mismatch(path: str | Path, what: str) -> IntegrityError:
    return IntegrityError(f"{path}: content hash of {what} does not match (the file was damaged or changed after "
                          "it was written); use another copy")

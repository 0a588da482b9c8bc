"""Atomic file and directory writes.

A reader must never see a half-written file: everything is written to a temporary sibling and moved
into place with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: tempfile creates private (0600 / 0700) entries; what we move into place gets the permissions a
#: plain ``open`` / ``mkdir`` would give, so that datasets and caches can be shared with others.
_UMASK = _process_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


#: When this process started (about: when ditr was imported); temporary files older than this whose
#: writer may still run are left alone only if that writer is alive.
PROCESS_START = time.time()
#: ``.NAME.PID.RANDOM.tmp``: the temporary sibling of an atomic write (``tempfile``'s 8 random characters,
#: or 32 hex digits); older ditr versions wrote ``.NAME.RANDOM.tmp`` without the writer's pid.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?(?P<random>[a-z0-9_]{8}|[0-9a-f]{32})\.tmp$")


def temp_prefix(name: str) -> str:
    """The start of the name of a temporary sibling of ``name`` written by this process."""
    return f".{name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes in ``directory`` (not below it); the removed.

    Only ditr's own temporaries count (the exact name pattern of :func:`atomic_write`, a file, not a
    folder), and only those whose writer is gone: its pid (in the name) is not running, or, for a name
    without a pid (an older ditr's), the file is older than this process.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        found = _TEMP_NAME.match(entry.name)
        if found is None or not entry.is_file() or entry.is_symlink():
            continue
        pid = found.group("pid")
        try:
            older = entry.stat().st_mtime < PROCESS_START
        except FileNotFoundError:
            continue
        if pid is not None:
            stale = int(pid) != os.getpid() and not _pid_alive(int(pid))
        else:
            stale = older
        if stale:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path`` and move it into place when done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc  # name the file (full disk)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole once the block succeeds.

    An existing ``path`` is moved aside first and deleted only after the new one is in place, so an
    interruption leaves either the old or the new directory, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(DIR_MODE)
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: NumPy scalar types a checkpoint's numbers may have (their dtypes are rebuilt when it is read).
NUMPY_SCALAR_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                      "float16", "float32", "float64")


def numpy_scalar_globals() -> list[Any]:
    """Pickle globals a reference trainer checkpoint (Pointcept / DITR ``model_best.pth``) holds besides
    tensors and plain Python values: ``best_metric_value`` is a NumPy scalar (``np.mean`` of the IoUs),
    pickled as ``numpy.core.multiarray.scalar`` by NumPy 1 and ``numpy._core.multiarray.scalar`` by
    NumPy 2, with its ``numpy.dtype`` (an instance of the dtype's class, e.g. ``Float64DType``).
    These build numbers, never run code; nothing else is allowed."""
    from numpy._core.multiarray import scalar  # type: ignore[attr-defined]  # NumPy >= 2: the one home

    dtype_classes = [type(np.dtype(name)) for name in NUMPY_SCALAR_TYPES]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtype_classes]


def read_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` that also reads NumPy scalars (:func:`numpy_scalar_globals`).

    Never unpickles arbitrary objects; a file that needs more raises ``pickle.UnpicklingError``
    (see :func:`torch_load_problem` for a one-line description). The file is memory-mapped where
    its format allows, so tensors nobody uses (a trainer checkpoint's optimizer moments, twice the
    weights) are never read into memory. The zip CRCs are checked first (:func:`ditr.integrity.check_zip`:
    a damaged file is an :class:`~ditr.integrity.IntegrityError` naming it).
    """
    import torch

    from .integrity import check_zip

    check_zip(path)  # torch reads zip members without checking their CRCs
    with torch.serialization.safe_globals(numpy_scalar_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as exc:  # the legacy (non-zip) format cannot be mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location=map_location, weights_only=True)


def torch_load_problem(exc: BaseException) -> str:
    """One line for a failed weights-only load (torch's own text spans a dozen lines)."""
    import re

    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"it pickles the Python object {found.group(1)}, which ditr never unpickles "
                "(model files are read as data, torch.load(weights_only=True))")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}"

"""Training state on disk: atomic writes, rotation, best-by-metric and a fallback for bad files.

A run directory holds ``last.pt`` (newest state), ``last.prev.pt`` (the one before, kept so that a
damaged ``last.pt`` costs one checkpoint interval, not the run) and ``best.pt`` (the state with the
best validation metric). Every file is written to a temporary sibling and moved into place, and
the previous ``last.pt`` is hard-linked to ``last.prev.pt`` before the new one replaces it, so at
every instant at least one complete checkpoint exists. Files are loaded with
``torch.load(weights_only=True)``: a checkpoint is data, never code, so RNG states are stored as
tensors and plain Python values.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..errors import DitrError
from ..integrity import HASH_KEY, IntegrityError, check_zip, has_tensors, mismatch, tensor_digest, warn_no_hash
from ..fileio import atomic_write, clean_stale_temporaries, temp_prefix, torch_load_problem

FORMAT = "ditr.train_state"
VERSION = 1
LAST, PREV, BEST = "last.pt", "last.prev.pt", "best.pt"


class TrainingStateError(DitrError):
    """A file that cannot be read or is not a ditr training state."""


def content_hashes(state: Mapping[str, Any]) -> dict[str, str]:
    """The content hash of each top-level entry of ``state`` that holds tensors (:mod:`ditr.integrity`)."""
    return {key: tensor_digest(value) for key, value in state.items() if key != HASH_KEY and has_tensors(value)}


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus format tag, version and the content hash of its tensors) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload[HASH_KEY] = content_hashes(payload)
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training state; any damage (truncation, wrong file, a zip CRC or content hash that does
    not match) raises :class:`TrainingStateError`."""
    path = Path(path)
    try:
        zipped = check_zip(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainingStateError(f"{path}: no such checkpoint") from None
    except IntegrityError as exc:
        raise TrainingStateError(str(exc)) from None
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, UnpicklingError...
        raise TrainingStateError(f"{path}: unreadable checkpoint ({torch_load_problem(exc)})") from None
    return check_training_state(state, path, zip_checked=zipped)


def check_training_state(state: Any, path: str | Path, keys: Sequence[str] | None = None,
                         zip_checked: bool = True) -> dict[str, Any]:
    """``state`` (a file's content, already read) if it is a training state this ditr can read whose
    content hash matches (of ``keys`` only, e.g. ``("model",)`` where the rest is not used; default
    all). A state written without a hash (an older ditr) passes with one warning line."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingStateError(f"{path}: not a ditr training state (format tag missing)")
    if state.get("version", 0) > VERSION:
        raise TrainingStateError(f"{path}: checkpoint version {state['version']} is newer than "
                              f"this ditr ({VERSION})")
    stored = state.get(HASH_KEY)
    if stored is None:
        warn_no_hash(path, zip_checked)
        return state
    if not isinstance(stored, dict):
        raise TrainingStateError(f"{path}: damaged checkpoint (its content hash entry is not a mapping)")
    for key in stored if keys is None else [k for k in keys if k in stored]:
        if key not in state or tensor_digest(state[key]) != stored[key]:
            raise TrainingStateError(str(mismatch(path, f"its {key!r} tensors")))
    return state


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (hard link when the file system allows)."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # already the same file: renaming one hard link onto another would do nothing
    tmp = dst.parent / f"{temp_prefix(dst.name)}{uuid.uuid4().hex}.tmp"
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class CheckpointManager:
    """Saves and finds the checkpoints of one run directory."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        #: False while ``last.pt`` is known to be damaged: the next save must not rotate it over a good
        #: ``last.prev.pt``.
        self.rotate = True

    @property
    def last(self) -> Path:
        return self.directory / LAST

    @property
    def prev(self) -> Path:
        return self.directory / PREV

    @property
    def best(self) -> Path:
        return self.directory / BEST

    def save(self, state: dict[str, Any], is_best: bool = False) -> Path:
        """Rotate ``last.pt`` to ``last.prev.pt``, write the new ``last.pt``, link ``best.pt``.

        The state records the folder training runs in and the run directory (``paths``): the
        run config's relative paths (feature cache, dataset root) are relative to the first, and
        their place beside the second finds them again after a move (:mod:`ditr.stored_paths`).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.last.exists() and self.rotate:
            _link_or_copy(self.last, self.prev)
        paths = {"ran_in": os.getcwd(), "work_dir": os.path.abspath(self.directory)}
        save_training_state(self.last, {**state, "paths": paths})
        self.rotate = True
        if is_best:
            _link_or_copy(self.last, self.best)
        return self.last

    def clean(self) -> list[Path]:
        """Remove the temporary files of interrupted writes in the run directory (a run starting)."""
        removed = clean_stale_temporaries(self.directory)
        if removed:
            warnings.warn(f"{self.directory}: removed {len(removed)} temporary file(s) of interrupted "
                          "checkpoint writes", stacklevel=2)
        return removed

    def load_resume(self, map_location: str | torch.device = "cpu", restart: bool = False
                    ) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable state as ``(path, state)``, or None when there is none.

        A damaged ``last.pt`` (killed mid-copy, disk full, ...) is reported with a warning and
        ``last.prev.pt`` is used instead (the next save then writes ``last.pt`` without rotating the
        damaged file over the good one). Damaged files keep their names. When checkpoints exist but
        none is readable it is an error saying which and how to go on, since silently starting over
        would throw the run away; with ``restart`` a warning, and None (the run starts over and its
        saves replace the damaged files).
        """
        problems = []
        for path in (self.last, self.prev):
            if not path.exists():
                continue
            try:
                found = path, load_training_state(path, map_location)
            except TrainingStateError as exc:
                problems.append(str(exc))
                if path == self.last:
                    self.rotate = False
                continue
            for problem in problems:
                warnings.warn(f"skipping damaged checkpoint: {problem}", stacklevel=2)
            return found
        if problems:
            detail = "; ".join(problems)
            if restart:
                warnings.warn(f"starting over (restart): no readable checkpoint in {self.directory}: {detail}",
                              stacklevel=2)
                return None
            raise TrainingStateError(
                f"no readable checkpoint to resume from in {self.directory}: {detail}. Run again with --restart "
                "(restart=True) to start over from step 0 (the damaged files are then overwritten), or put a good "
                f"checkpoint at {self.last}")
        return None
def find_resume(directory: str | Path) -> Path | None:
    """Path of the checkpoint a run in ``directory`` would resume from (validated by loading)."""
    found = CheckpointManager(directory).load_resume()
    return None if found is None else found[0]


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training step may draw from, as weights-only data."""
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())  # the legacy tuple form
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (evaluation, plotting) without moving any random generator forward.

    Training then draws the same numbers whether or not the block ran, which keeps a resumed run
    identical to an uninterrupted one.
    """
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)

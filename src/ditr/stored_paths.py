"""Paths a model file recorded at training (feature cache, dataset root): hints for finding them here, never orders.

A run config keeps ``vfm.cache`` and ``dataset.root`` as they were typed, usually relative to the
folder training ran in. Read from another folder, or after the run was moved or copied, they point
nowhere, or worse at an unrelated folder of the same name. So a command that needs one of them
(``ditr evaluate`` and ``ditr distill --evaluate`` read cached features, the distillation
evaluation the validation scenes) looks for it:

1. what the user gives on the command line (``--set vfm.cache=DIR``, ``--features DIR``) always wins,
   used as given;
2. the recorded path itself, when it is absolute;
3. the recorded path relative to the folder training ran in (checkpoints record it, see
   :meth:`ditr.engine.checkpoint.CheckpointManager.save`);
4. the recorded path relative to the checkpoint's own folder, keeping the place it had next to the
   run directory at training (a project folder moved or copied whole), then plainly inside it.

The first candidate that exists and is valid (a feature cache holds ``ditr features`` entries, a
dataset root is a folder) is used and one line says which. When none is, it is an error naming the
recorded path, the places looked at and the option to pass: a command never fills or creates a
cache nobody named. Bundles keep none of these paths (:func:`strip_paths`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import FeatureCache
from .configs import RunConfig
from .errors import DitrError

#: The run-config fields that name folders of the training machine, with what they are and how to check one.
PATH_FIELDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "vfm.cache": ("feature cache", lambda path: FeatureCache(path).exists()),
    "dataset.root": ("dataset root", Path.is_dir),
}


@dataclass(frozen=True)
class TrainingPlace:
    """Where a model file was trained: its own path now, and the folders its training state recorded."""

    checkpoint: Path | None = None
    #: The folder training ran in (absolute), when recorded.
    ran_in: str | None = None
    #: The run directory as recorded (absolute in newer checkpoints, as typed in older ones).
    work_dir: str | None = None

    @classmethod
    def of(cls, path: Path | None, record: Mapping[str, Any]) -> TrainingPlace:
        """The place of a model file at ``path`` whose training record is ``record`` (its ``paths`` entry)."""
        paths = record.get("paths") or {}
        return cls(path, paths.get("ran_in"), paths.get("work_dir"))

    def _at_training(self, path: str) -> str | None:
        """``path`` as an absolute path of the training machine, or None where that is unknown."""
        if os.path.isabs(path):
            return path
        return os.path.join(self.ran_in, path) if self.ran_in else None

    def candidates(self, recorded: str) -> list[tuple[Path, str]]:
        """Where a recorded path may be on this machine, in order, each with how it was derived."""
        found: list[tuple[Path, str]] = []
        path = os.path.expanduser(recorded)
        if os.path.isabs(path):
            found.append((Path(path), "as recorded"))
        elif self.ran_in:
            found.append((Path(self.ran_in) / path, "relative to the folder training ran in"))
        if self.checkpoint is not None:
            folder = self.checkpoint.parent
            if self.work_dir:
                stored, work = self._at_training(path), self._at_training(self.work_dir)
                if stored is None and work is None:  # both relative to the same unknown folder
                    stored, work = path, self.work_dir
                if stored is not None and work is not None:
                    found.append((folder / os.path.relpath(stored, work),
                                  "in the same place relative to the checkpoint as at training"))
            if not os.path.isabs(path):
                found.append((folder / path, "in the checkpoint's folder"))
        unique: dict[str, tuple[Path, str]] = {}
        for candidate, how in found:
            unique.setdefault(os.path.normpath(candidate), (Path(os.path.normpath(candidate)), how))
        return list(unique.values())

    def find(self, key: str, recorded: str) -> tuple[Path | None, str, list[Path]]:
        """(the first valid candidate or None, how it was derived, every candidate)."""
        valid = PATH_FIELDS[key][1]
        candidates = self.candidates(recorded)
        for path, how in candidates:
            if valid(path):
                return path, how, [p for p, _ in candidates]
        return None, "", [p for p, _ in candidates]


def _get(config: RunConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _set(config: RunConfig, key: str, value: str) -> None:
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)


def given_keys(overrides: Sequence[str]) -> set[str]:
    """The config keys set by ``key=value`` overrides (the user's paths, used as given)."""
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def cache_needed(config: RunConfig, teacher: bool = False) -> list[str]:
    """``["vfm.cache"]`` when cached image features are read (not online): by a model that needs images
    at inference, or with ``teacher`` by a distillation's teacher; else nothing."""
    reads = config.uses_images if teacher else config.kind.needs_images_at_inference
    return ["vfm.cache"] if reads and not config.vfm.online else []


def locate(config: RunConfig, place: TrainingPlace, keys: Sequence[str], given: Collection[str] = (),
           source: str = "the model", say: Callable[[str], None] | None = None) -> RunConfig:
    """A copy of ``config`` whose recorded paths ``keys`` point at what was found on this machine.

    Keys in ``given`` (set on the command line) and unset keys are left as they are. ``say`` gets the
    one line naming the path used when it is not the recorded one as read from here (default: printed
    on stderr). An error when a recorded path is found nowhere.
    """
    out = config.copy()
    say = say or (lambda line: print(f"ditr: {line}", file=sys.stderr))
    for key in keys:
        recorded = _get(config, key)
        if key in given or not recorded:
            continue
        found, how, looked = place.find(key, str(recorded))
        what = PATH_FIELDS[key][0]
        if found is None:
            where = ", ".join(map(str, looked)) if looked else "nowhere (no training folder recorded)"
            raise DitrError(f"{source}: the {what} recorded at training ({key}: {recorded}) is not on this "
                            f"machine; looked in {where}. Pass it with --set {key}=DIR")
        _set(out, key, str(found))
        if found.resolve() != Path(str(recorded)).resolve():  # quiet where the recorded path reads as it is
            say(f"{what}: {found} ({how}; recorded at training as {key}: {recorded})")
    return out


def describe(config: RunConfig, place: TrainingPlace) -> dict[str, dict[str, Any]]:
    """Each recorded path of ``config`` with where it is on this machine (None: not here), for ``ditr info``."""
    out: dict[str, dict[str, Any]] = {}
    for key in PATH_FIELDS:
        recorded = _get(config, key)
        if recorded:
            found, how, _ = place.find(key, str(recorded))
            out[key] = {"recorded": recorded, "here": None if found is None else str(found), "how": how or None}
    return out


def _without_paths(sections: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping (or a distillation source's) without folder names and path-like split entries."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in sections.items()}
    if isinstance(out.get("vfm"), dict):
        out["vfm"].update({k: None for k in ("cache", "checkpoint") if k in out["vfm"]})
    if isinstance(out.get("dataset"), dict):
        data = out["dataset"]
        if "root" in data:
            data["root"] = None
        if isinstance(data.get("splits"), Mapping):  # split names stay; files and scene lists are paths
            data["splits"] = {mode: split if isinstance(split, str) and "/" not in split and os.sep not in split
                              else None for mode, split in data["splits"].items()}
    return out


def strip_paths(values: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run config without any path of the machine it was trained on (what a bundle carries):
    feature cache, VFM weights file, dataset root, split files and scene lists, the ``--init`` file,
    in the run and in every distillation source."""
    out = _without_paths(values)
    if isinstance(out.get("init"), dict):
        out["init"] = {k: v for k, v in out["init"].items() if k not in ("path", "source")}
    distill = out.get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("datasets"), list):
        distill["datasets"] = [_without_paths(entry) if isinstance(entry, Mapping) else entry
                               for entry in distill["datasets"]]
    return out

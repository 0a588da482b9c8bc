"""Split lists ``OUT/splits/<name>.txt`` that importers write next to the scenes they import.

Each importer decides which scenes belong to which split (a dataset's official lists, sequence
or scene-number ranges, source directories); writing the lists is shared. A list names only the
scenes present under OUT, so that imports of parts of a dataset (one download archive, one
sequence at a time) add up and a list never names a scene that is not there.
``ditr.data.dataset.resolve_scenes`` reads the lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..fileio import atomic_write_text


def split_file(out: Path, name: str) -> Path:
    return out / "splits" / f"{name}.txt"


def listed_scenes(out: Path, name: str) -> list[str]:
    """The scene names an earlier import wrote to ``OUT/splits/<name>.txt`` (none when it has no such file)."""
    path = split_file(out, name)
    return path.read_text().split() if path.is_file() else []


def write_split(out: Path, name: str, scenes: Iterable[str]) -> int:
    """Write ``OUT/splits/<name>.txt`` listing those of ``scenes`` present under OUT, in the given order.

    Returns how many scenes it lists. An empty split gets no file, so that training on it fails
    with a clear "no such split" error instead of finding no scenes; the file is replaced
    atomically, so a training run reading it never sees half a list.
    """
    present = [s for s in scenes if (out / s).is_dir()]
    if present:
        atomic_write_text(split_file(out, name), "".join(f"{s}\n" for s in present))
    return len(present)

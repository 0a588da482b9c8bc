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

from ..errors import DitrError
from ..fileio import atomic_write_text

#: The official ScanNet v2 scene lists (``Tasks/Benchmark`` in the ScanNet repository) by split.
SCANNET_SPLIT_FILES = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"}
#: What to do where a source holds no split information (the import reports it, the docs repeat it).
HOW_TO_WRITE_SPLITS = ("to train, write OUT/splits/train.txt and val.txt (one scene folder name per line), or "
                       "name the scenes when training: dataset.splits.train=[scene_a,scene_b] "
                       "dataset.splits.val=[scene_c] (docs/datasets.md#split-lists)")
#: The same for own captures, where OUT is one scene rather than a folder of scenes.
CAPTURE_SPLITS = ("no split lists written: a capture is one scene (OUT itself); to train on several, import each into "
                  "DATA/<name>/ and write DATA/splits/train.txt and val.txt (one capture folder name per line), or "
                  "name them when training: dataset.root=DATA dataset.splits.train=[a,b] dataset.splits.val=[c] "
                  "(docs/datasets.md#split-lists)")


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


def write_listed_splits(out: Path, lists: dict[str, Path]) -> dict[str, int]:
    """``OUT/splits/<split>.txt`` from a dataset's own scene lists (one name per line), keeping the scenes in OUT."""
    counts = {}
    for split, path in lists.items():
        if not path.is_file():
            raise DitrError(f"{path}: split file missing")
        counts[split] = write_split(out, split, path.read_text().split())
    return counts


def scannet_lists(splits_dir: Path) -> dict[str, Path]:
    """The official ScanNet lists of a ``--splits-dir``: train and val must be there, test is optional."""
    return {s: splits_dir / f for s, f in SCANNET_SPLIT_FILES.items() if s != "test" or (splits_dir / f).is_file()}

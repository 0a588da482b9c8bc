"""The models the DITR authors published: one registry entry each, and where their files are.

The authors release their trained DITR and D-DITR models in the Hugging Face repository
``rwthvision/ditr``, one experiment folder per model (the reference trainer's layout: a dumped
``config.py`` and ``model/model_best.pth`` or ``model/model_last.pth``, besides logs). An entry
here names one of them: a short name (``ditr-scannet200-dinov2-l``), the dataset preset its
classes and input come from, the method, the VFM (and the name of its weights in
:mod:`ditr.vfm.registry`), the validation mIoU the authors report, the folder in the repository
and whether it is there yet (some are listed by the authors as still uploading).

Nothing here touches the network unless asked: :func:`local_folder` looks in the Hugging Face cache
only (``huggingface_hub.snapshot_download(..., local_files_only=True)``); :func:`download` fetches
one entry's whole folder (an ``allow_patterns`` filter for that folder) into the same cache.
Reading what a folder holds is :mod:`ditr.published`.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import DitrError

#: The authors' weights repository on the Hugging Face hub.
REPO_ID = "rwthvision/ditr"
HUB_URL = f"https://huggingface.co/{REPO_ID}"

Status = Literal["available", "uploading"]


@dataclass(frozen=True)
class ZooEntry:
    """One published model.

    ``method`` is what ditr builds for it (``ditr``: images in the decoder, ``ptv3``: 3D only,
    ``d-ditr``: a distilled student that predicts 2D features); ``vfm_model`` the VFM whose
    features a DITR model reads at inference or a student was distilled from (a
    :mod:`ditr.vfm.registry` name); ``path`` the folder in :data:`REPO_ID` (None while uploading).
    Every published model comes from the DITR release (its serialization-depth rule, see
    docs/ptv3.md), hence ``origin``.
    """

    name: str
    group: str                 # "DITR", "D-DITR distilled" or "D-DITR fine-tuned"
    dataset: str               # in words, as the authors' table says it
    preset: str                # the ditr preset of its classes and input (ditr.configs.load_preset)
    method: str                # ditr.configs.ModelKind value
    backbone: str              # "PTv3" (loadable) or "MinkUNet" (not implemented here)
    vfm: str                   # in words ("DINOv2 ViT-L"); "" for a 3D-only model
    vfm_model: str | None      # ditr.vfm.registry name of the VFM it reads / was distilled from
    miou: float | None         # validation mIoU reported by the authors (None: a distilled backbone)
    path: str | None           # folder in REPO_ID; None while the authors list it as uploading
    num_classes: int | None = None
    origin: str = "ditr"

    @property
    def status(self) -> Status:
        return "available" if self.path else "uploading"

    @property
    def supported(self) -> bool:
        """Whether ditr can build this model (the MinkUNet fine-tune is a sparse-conv UNet, not a PTv3)."""
        return self.backbone == "PTv3"

    @property
    def needs_images(self) -> bool:
        """Whether predicting with it needs the scene's posed images (and the VFM weights)."""
        return self.method == "ditr"

    @property
    def allow_patterns(self) -> list[str]:
        """The ``snapshot_download`` filter that fetches this entry's folder and nothing else."""
        if self.path is None:
            raise DitrError(f"{self.name}: not published yet (the authors list it as uploading)")
        return [f"{self.path}/*"]

    def fetch_command(self) -> str:
        """The command line that fetches this entry by hand (the Hugging Face CLI)."""
        return f"hf download {REPO_ID} --include '{self.path}/*'"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "supported": self.supported, "repo": REPO_ID}


def _ditr(dataset: str, preset: str, classes: int, size: str, family: str, miou: float, path: str | None) -> ZooEntry:
    """A DITR entry; ``size`` s / b / l / g, ``family`` dinov2 / dinov3."""
    words = {"s": "ViT-S", "b": "ViT-B", "l": "ViT-L", "g": "ViT-g"}[size]
    vfm_model = f"dinov2-vit{size}14-reg" if family == "dinov2" else f"dinov3-vit{size}16"
    return ZooEntry(f"ditr-{preset}-{family}-{size}", "DITR", dataset, preset, "ditr", "PTv3",
                    f"{'DINOv2' if family == 'dinov2' else 'DINOv3'} {words}", vfm_model, miou, path, classes)


def _distilled(name: str, dataset: str, preset: str, path: str) -> ZooEntry:
    return ZooEntry(name, "D-DITR distilled", dataset, preset, "d-ditr", "PTv3", "DINOv2 ViT-L",
                    "dinov2-vitl14-reg", None, path)


def _finetuned(name: str, dataset: str, preset: str, classes: int, miou: float, path: str | None,
               backbone: str = "PTv3") -> ZooEntry:
    return ZooEntry(name, "D-DITR fine-tuned", dataset, preset, "ptv3", backbone, "", None, miou, path, classes)


_ST = "distill-ptv3_scannet200+structured3d_dino-L"
#: Every model of the authors' model-zoo table, in its order (mIoU: their validation numbers).
ENTRIES: tuple[ZooEntry, ...] = (
    _ditr("ScanNet", "scannet", 20, "l", "dinov2", 80.5, None),
    _ditr("ScanNet200", "scannet200", 200, "l", "dinov2", 41.2, "scannet200/semseg-ptv3_dino-L"),
    _ditr("ScanNet200", "scannet200", 200, "l", "dinov3", 42.3, "scannet200/semseg-ptv3_dinov3-L"),
    _ditr("S3DIS", "s3dis", 13, "l", "dinov2", 74.1, "s3dis/semseg-ptv3_dino-L"),
    _ditr("nuScenes", "nuscenes", 16, "s", "dinov2", 82.8, "nuscenes/semseg-ptv3_dino-S"),
    _ditr("nuScenes", "nuscenes", 16, "b", "dinov2", 83.0, "nuscenes/semseg-ptv3_dino-B"),
    _ditr("nuScenes", "nuscenes", 16, "l", "dinov2", 83.1, "nuscenes/semseg-ptv3_dino-L"),
    _ditr("nuScenes", "nuscenes", 16, "g", "dinov2", 84.2, "nuscenes/semseg-ptv3_dino-g"),
    _ditr("nuScenes", "nuscenes", 16, "l", "dinov3", 83.9, None),
    _ditr("SemanticKITTI", "semantickitti", 19, "l", "dinov2", 69.0, "semantic_kitti/semseg-ptv3_dino-L"),
    _distilled("d-ditr-distill-scannet-dinov2-l", "ScanNet", "scannet200",
               "scannet200/distill-ptv3_scannet200_dino-L"),
    _distilled("d-ditr-distill-scannet-structured3d-dinov2-l", "ScanNet + Structured3D", "scannet",
               f"scannet200/{_ST}"),
    _distilled("d-ditr-distill-nuscenes-dinov2-l", "nuScenes", "nuscenes", "nuscenes/distill-ptv3_nuscenes_dino-L"),
    _finetuned("d-ditr-scannet-ptv3", "ScanNet", "scannet", 20, 79.2, f"scannet/semseg-ptv3_weight={_ST}"),
    _finetuned("d-ditr-scannet200-ptv3", "ScanNet200", "scannet200", 200, 37.7,
               f"scannet200/semseg-ptv3_weight={_ST}"),
    _finetuned("d-ditr-s3dis-ptv3", "S3DIS", "s3dis", 13, 75.0, None),
    _finetuned("d-ditr-scannet-minkunet", "ScanNet", "scannet", 20, 76.2, None, backbone="MinkUNet"),
    _finetuned("d-ditr-nuscenes-ptv3", "nuScenes", "nuscenes", 16, 80.9,
               "nuscenes/semseg-ptv3_weight=distill-ptv3_nuscenes_dino-L"),
)
_BY_NAME = {e.name: e for e in ENTRIES}


def list_entries() -> list[ZooEntry]:
    return list(ENTRIES)


def names() -> list[str]:
    return [e.name for e in ENTRIES]


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``; an error naming the closest names and ``ditr models``."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    close = difflib.get_close_matches(name, list(_BY_NAME), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise DitrError(f"{name}: neither a file, a folder nor a published model name{hint} (ditr models lists them)")


def entry_for_path(path: str | Path) -> ZooEntry | None:
    """The entry whose repository folder ``path`` is (or lies in): a copy of a downloaded folder
    keeps its last two path components (``scannet200/semseg-ptv3_dino-L``)."""
    parts = Path(path).resolve().parts
    for entry in ENTRIES:
        if entry.path is None:
            continue
        want = tuple(entry.path.split("/"))
        for end in range(len(want), len(parts) + 1):
            if parts[end - len(want):end] == want:
                return entry
    return None


# ------------------------------------------------------------------------------------------ the HF cache
def _snapshot(entry: ZooEntry, *, download: bool, cache_dir: str | Path | None) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(REPO_ID, allow_patterns=entry.allow_patterns, cache_dir=cache_dir,
                                   local_files_only=not download)
    except (LocalEntryNotFoundError, IncompleteSnapshotError, FileNotFoundError):
        if download:
            raise DitrError(f"{entry.name}: download of {REPO_ID}/{entry.path} failed: the hub cannot be reached "
                            "(offline, or HF_HUB_OFFLINE=1) and the folder is not in the Hugging Face cache") from None
        return None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DitrError(f"{entry.name}: download of {REPO_ID}/{entry.path} failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    local = Path(folder) / str(entry.path)
    return local if _has_weights(local) else None


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.pth"))


def local_folder(entry: ZooEntry, cache_dir: str | Path | None = None) -> Path | None:
    """The entry's folder in the Hugging Face cache, or None when it has not been fetched (offline)."""
    if entry.path is None:
        return None
    return _snapshot(entry, download=False, cache_dir=cache_dir)


def download(entry: ZooEntry, cache_dir: str | Path | None = None) -> Path:
    """Fetch the entry's whole folder into the Hugging Face cache: what is missing is downloaded,
    what is there is kept (offline, or with ``HF_HUB_OFFLINE=1``, the cached folder is used)."""
    if not entry.supported:
        raise DitrError(f"{entry.name}: a {entry.backbone} model; ditr implements PTv3 only")
    folder = _snapshot(entry, download=True, cache_dir=cache_dir)
    if folder is None:
        from huggingface_hub.constants import is_offline_mode

        if is_offline_mode():
            raise DitrError(f"{entry.name}: download of {REPO_ID}/{entry.path} failed: HF_HUB_OFFLINE=1 forbids it "
                            "and the folder is not in the Hugging Face cache")
        raise DitrError(f"{entry.name}: {REPO_ID}/{entry.path} was fetched but holds no model/*.pth")
    return folder


def resolve_entry(entry: ZooEntry, *, allow_download: bool = False, cache_dir: str | Path | None = None) -> Path:
    """The folder of a published model: from the cache, else fetched when allowed, else one line
    that names what to fetch."""
    if entry.path is None:
        raise DitrError(f"{entry.name}: not published yet (the authors list it as uploading; {HUB_URL})")
    if not entry.supported:
        raise DitrError(f"{entry.name}: a {entry.backbone} model; ditr implements PTv3 only")
    if allow_download:
        return download(entry, cache_dir)
    found = local_folder(entry, cache_dir)
    if found is None:
        raise DitrError(f"{entry.name} is not in the Hugging Face cache: add --download (fetches {REPO_ID}/"
                        f"{entry.path}), or run: {entry.fetch_command()}")
    return found


def cache_status(cache_dir: str | Path | None = None) -> dict[str, Path | None]:
    """Name -> local folder (None: not fetched) for every entry, read from the cache only."""
    return {e.name: local_folder(e, cache_dir) if e.supported else None for e in ENTRIES}

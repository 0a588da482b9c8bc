"""On-disk cache of per-view correspondences, so training projects each (scene, view) once.

Projection is a pure function of the scene's points, one view and the projection settings: a view's
visibility does not depend on which other views are projected with it (tested). The LiDAR scan test
costs about as much per sample as the rest of loading it, and training loads every scene once per
epoch, so the data workers keep each view's result here and read it in later epochs.

One entry per (points and what the occlusion test reads of the scene: normals, acquisition, sensor
pose; the view's pose, intrinsics, size, depth map and stored pixels; the projection settings; the
projection code itself and the torch version). The entry's file name is a SHA-256 over all of them,
so anything that changes the result changes the name and stale entries are never looked up again.
Entries hold the in-frame points of one view only (their indices, pixels, depths and visibility),
are written atomically (temporary sibling + ``os.replace``) and carry a SHA-256 checksum of their
tensors: anything unreadable, inconsistent or damaged is a miss (recomputed and overwritten,
counted in :attr:`CorrespondenceCache.stats`), never served.

Correspondences assembled from entries carry zeros for pixel and depth where a point is not in
frame (those values mean nothing); :func:`project_cached` assembles freshly computed views the same
way and returns what it stores, so a run gives the same samples whether the cache was cold or warm.
(Views computed in another batch may differ in the last bit of a pixel coordinate: a matrix library
rounds a batch of views differently from one view alone; what each view decides does not change.)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from . import projection
from .cache import array_digest, file_digest, tensor_checksum
from .fileio import atomic_write_bytes
from .projection import Correspondences, ProjectionConfig, project_scene, sparse_warning
from .errors import SceneError
from .scene import Scene, View

#: Bump when the meaning of a stored tensor changes.
CORRESPONDENCE_FORMAT_VERSION = 1
CACHE_FORMAT = "ditr.correspondences"
#: The sub-folder of a feature cache that holds correspondences (:class:`SceneDataset` puts them there).
SUBFOLDER = "correspondences"
_TENSORS = ("index", "uv", "depth", "visible")
#: What :meth:`CorrespondenceCache.read` found, and ``written`` / ``unwritable`` for stores.
STATES = ("hit", "absent", "corrupt", "written", "unwritable")


@dataclass
class ViewCorrespondences:
    """One view's correspondences, in-frame points only: their indices (K,) int64 in increasing
    order, pixels (K, 2), depths (K,) and visibility (K,); the occlusion rule that ran and whether
    the view's points were too sparse for it."""

    index: torch.Tensor
    uv: torch.Tensor
    depth: torch.Tensor
    visible: torch.Tensor
    rule: str
    sparse: bool


@functools.cache
def _code_identity() -> str:
    """The projection code and the torch version: a changed algorithm or numerics changes every key."""
    source = Path(projection.__file__).read_bytes()
    return hashlib.sha256(source + torch.__version__.encode()).hexdigest()


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def scene_identity(scene: Scene, config: ProjectionConfig, device: str) -> str:
    """Everything of the scene and the settings that a view's correspondences depend on."""
    normal = scene.attributes.get("normal")
    sensor = scene.sensor_to_scene
    return _digest({
        "version": CORRESPONDENCE_FORMAT_VERSION, "code": _code_identity(), "device": device,
        "config": dataclasses.asdict(config), "points": array_digest(np.ascontiguousarray(scene.coord, np.float32)),
        "normal": None if normal is None else array_digest(np.ascontiguousarray(normal)),
        "acquisition": scene.acquisition, "sensor": None if sensor is None else np.asarray(sensor).tolist(),
    })


def view_identity(view: View, config: ProjectionConfig) -> str:
    """Everything of one view that its correspondences depend on (its depth map only where read)."""
    depth = None
    if config.occlusion in ("auto", "depth"):
        if view.depth is not None:
            depth = array_digest(np.ascontiguousarray(view.depth))
        elif view.depth_path is not None:
            try:
                depth = file_digest(view.depth_path)
            except OSError as exc:
                field = f"views[{view.name}].depth"
                raise SceneError(view.depth_path, field, f"cannot be read ({exc.strerror})") from None
    return _digest({
        "world_to_cam": np.asarray(view.world_to_cam).tolist(), "intrinsics": np.asarray(view.intrinsics).tolist(),
        "size": [view.height, view.width], "depth": depth, "depth_scale": view.depth_scale,
        "depth_intrinsics": None if view.depth_intrinsics is None else np.asarray(view.depth_intrinsics).tolist(),
        "pixels": None if view.pixels is None else array_digest(np.ascontiguousarray(view.pixels)),
    })


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    return hashlib.sha256("".join(tensor_checksum(tensors[name]) for name in _TENSORS).encode()).hexdigest()


class CorrespondenceCache:
    """A directory of per-view correspondences, one safetensors file per key.

    :attr:`stats` counts what reads found (``hit``, ``absent``, ``corrupt``) and what stores did
    (``written``, ``unwritable``: a read-only folder, which is warned about once and then computed
    around).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.stats: dict[str, int] = {state: 0 for state in STATES}

    def path(self, key: str) -> Path:
        return self.root / f"v{CORRESPONDENCE_FORMAT_VERSION}" / key[:2] / f"{key}.safetensors"

    def read(self, key: str, num_points: int) -> ViewCorrespondences | None:
        """The entry of ``key`` for a scene of ``num_points`` points, or None (absent or damaged)."""
        entry, state = self._read(key, num_points)
        self.stats[state] += 1
        return entry

    def _read(self, key: str, num_points: int) -> tuple[ViewCorrespondences | None, str]:
        try:
            with safe_open(str(self.path(key)), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if sorted(f.keys()) != sorted(_TENSORS):
                    return None, "corrupt"
                tensors = {name: f.get_tensor(name) for name in _TENSORS}
        except FileNotFoundError:
            return None, "absent"
        except Exception:  # truncated header or data, not safetensors at all
            return None, "corrupt"
        index, uv, depth, visible = (tensors[name] for name in _TENSORS)
        k = index.shape[0] if index.ndim == 1 else -1
        if (meta.get("format") != CACHE_FORMAT or meta.get("key") != key or meta.get("points") != str(num_points)
                or meta.get("rule") not in ("depth", "surface", "scan", "sparse", "none")
                or meta.get("sparse") not in ("0", "1") or meta.get("checksum") != _checksum(tensors)
                or index.dtype != torch.int64 or tuple(uv.shape) != (k, 2) or tuple(depth.shape) != (k,)
                or tuple(visible.shape) != (k,) or visible.dtype != torch.bool
                or not bool(torch.isfinite(uv).all() and torch.isfinite(depth).all())
                or (k and not (int(index[0]) >= 0 and int(index[-1]) < num_points and bool((index.diff() > 0).all())))):
            return None, "corrupt"
        return ViewCorrespondences(index, uv, depth, visible, meta["rule"], meta["sparse"] == "1"), "hit"

    def write(self, key: str, num_points: int, entry: ViewCorrespondences) -> None:
        """Store an entry atomically; a folder that cannot be written is warned about once, not fatal."""
        tensors = {"index": entry.index.to("cpu", torch.int64).contiguous(),
                   "uv": entry.uv.to("cpu", torch.float32).contiguous(),
                   "depth": entry.depth.to("cpu", torch.float32).contiguous(),
                   "visible": entry.visible.to("cpu", torch.bool).contiguous()}
        metadata = {"format": CACHE_FORMAT, "version": str(CORRESPONDENCE_FORMAT_VERSION), "key": key,
                    "points": str(num_points), "rule": entry.rule, "sparse": str(int(entry.sparse)),
                    "checksum": _checksum(tensors)}
        try:
            atomic_write_bytes(self.path(key), safetensors_save(tensors, metadata=metadata))
        except OSError as exc:
            if not self.stats["unwritable"]:
                warnings.warn(f"correspondence cache {self.root} cannot be written ({exc}); projecting every "
                              "sample afresh", stacklevel=2)
            self.stats["unwritable"] += 1
            return
        self.stats["written"] += 1


def split_views(corr: Correspondences) -> list[ViewCorrespondences]:
    """Per view, the in-frame part of ``corr`` (on the CPU)."""
    sparse = set(corr.sparse_views)
    out = []
    for i, name in enumerate(corr.view_names):
        index = torch.nonzero(corr.in_frame[i]).flatten().cpu()
        out.append(ViewCorrespondences(index=index, uv=corr.uv[i].cpu()[index], depth=corr.depth[i].cpu()[index],
                                       visible=corr.visible[i].cpu()[index], rule=corr.rules[i],
                                       sparse=name in sparse))
    return out


def assemble(entries: list[ViewCorrespondences], views: list[View], num_points: int) -> Correspondences:
    """Correspondences of ``views`` from their entries (zeros for pixel and depth out of frame)."""
    nv = len(views)
    uv = torch.zeros((nv, num_points, 2))
    depth = torch.zeros((nv, num_points))
    in_frame = torch.zeros((nv, num_points), dtype=torch.bool)
    visible = torch.zeros((nv, num_points), dtype=torch.bool)
    for i, e in enumerate(entries):
        uv[i, e.index], depth[i, e.index] = e.uv, e.depth
        in_frame[i, e.index], visible[i, e.index] = True, e.visible
    names = [v.name for v in views]
    sparse = [name for name, e in zip(names, entries) if e.sparse]
    sizes = torch.tensor([[v.height, v.width] for v in views], dtype=torch.long).reshape(-1, 2)
    return Correspondences(uv=uv, depth=depth, in_frame=in_frame, visible=visible, view_names=names, image_sizes=sizes,
                           rules=[e.rule for e in entries], sparse_views=sparse,
                           warnings=[sparse_warning(sparse, nv)] if sparse else [])


def project_cached(scene: Scene, config: ProjectionConfig, cache: CorrespondenceCache | None) -> Correspondences:
    """:func:`~ditr.projection.project_scene` on the CPU, reading the views it has projected before
    from ``cache`` and storing the rest (no cache: computed, assembled alike)."""
    views = list(scene.views)
    n = scene.num_points
    keys: list[str] = []
    entries: list[ViewCorrespondences | None] = [None] * len(views)
    if cache is not None and views:
        base = scene_identity(scene, config, "cpu")
        keys = [_digest({"scene": base, "view": view_identity(v, config)}) for v in views]
        entries = [cache.read(key, n) for key in keys]
    missing = [i for i, e in enumerate(entries) if e is None]
    if missing:  # together: a view decides the same with or without the others (tested), and faster
        fresh = split_views(project_scene(dataclasses.replace(scene, views=[views[i] for i in missing]), config))
        for i, entry in zip(missing, fresh):
            entries[i] = entry
            if cache is not None:
                cache.write(keys[i], n, entry)
    return assemble([e for e in entries if e is not None], views, n)

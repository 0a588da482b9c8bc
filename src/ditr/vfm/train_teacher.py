"""Train the demo teachers: tiny DINOv2-architecture ViTs that know synthetic scenes' classes from images.

A random-weight VFM mostly passes colour through; a teacher trained on 2D label images gives DITR
and D-DITR features that carry semantics learnt from images alone. Two subjects: ``demo-vit-rooms``
(the indoor rooms of :mod:`ditr.io.synthetic`, the demo's teacher) and ``demo-vit-streets`` (the
streets of :mod:`ditr.io.synthetic.outdoor`, the outdoor occlusion study's). The ViT is trained with
a linear per-patch head (logits upsampled to the pixels, cross-entropy, AdamW) on scenes of its own
scene sets (``TRAIN_SET_SEED``, ``HELDOUT_SET_SEED``), which share no scene with the demo's or the
study's (theirs use set seeds below ``MIN_TEACHER_SET_SEED``). The head is thrown away: DITR uses
only the backbone's patch features, read through the normal :class:`~ditr.vfm.backends.VFMBackend`
path. docs/demo-teacher.md gives the numbers and the commands::

    python -m ditr.vfm.train_teacher --out src/ditr/vfm/weights/demo-vit-rooms.safetensors \\
        --record docs/demo-teacher.json
    python -m ditr.vfm.train_teacher --subject streets \\
        --out src/ditr/vfm/weights/demo-vit-streets.safetensors --record docs/demo-teacher-streets.json
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DitrError
from ..fileio import atomic_write_bytes, atomic_write_json
from ..io import synthetic
from ..io.synthetic import outdoor, room_seed
from .backends import VFMBackend, _interpolate_pos_encoding
from .loading import VFMHandle, build_random
from .registry import get_spec

#: Scene sets of the teachers (scenes ``room_seed(set, i)``); every demo and study set uses a smaller set seed.
MIN_TEACHER_SET_SEED = 100000
TRAIN_SET_SEED = 100000
HELDOUT_SET_SEED = 100001


@dataclass
class SceneImages:
    """Rendered views of a scene set: uint8 RGB (N, H, W, 3), class ids (N, H, W) (-1: nothing hit)."""

    images: np.ndarray
    labels: np.ndarray
    scene_seeds: list[int]


def _room_views(seed: int, views: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    scene = synthetic.generate_room(seed, num_points=1, num_views=views, width=size[1], height=size[0])
    return np.stack([v.read_image() for v in scene.views]), np.stack([np.asarray(v.label) for v in scene.views])


def _street_views(seed: int, views: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return outdoor.render_street_views(seed, width=size[1], height=size[0], views=views)


@dataclass(frozen=True)
class Subject:
    """What a teacher learns: its model name, its scenes' classes, their image size (H, W) (the size the
    scenes' users render at) and how to render ``views`` views of the scene of a seed."""

    name: str
    model: str
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    max_views: int | None  # None: any number
    views_of: Callable[[int, int, tuple[int, int]], tuple[np.ndarray, np.ndarray]]


SUBJECTS = {
    # rooms at the demo's size (ditr.io.synthetic.generate_room's default)
    "rooms": Subject("rooms", "demo-vit-rooms", tuple(synthetic.CLASS_NAMES), (240, 320), None, _room_views),
    # streets at the outdoor occlusion study's size (benchmarks/occlusion_study.py), all six rig cameras
    "streets": Subject("streets", "demo-vit-streets", tuple(outdoor.CLASS_NAMES), (270, 480), len(outdoor.CAMERA_RIG),
                       _street_views),
}


@dataclass(frozen=True)
class TeacherSettings:
    """Scenes and budget of one teacher training run (the defaults, per subject, made the shipped weights)."""

    subject: str = "rooms"
    train_scenes: int = 160
    heldout_scenes: int = 8
    views: int = 4  # many scenes with few views each generalise better than few scenes seen from many sides
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 25
    seed: int = 0
    train_set_seed: int = TRAIN_SET_SEED
    heldout_set_seed: int = HELDOUT_SET_SEED

    @classmethod
    def for_subject(cls, subject: str, **changes: Any) -> TeacherSettings:
        """The shipped teacher's settings for ``subject``: streets use all six rig cameras of 120 streets."""
        base = {"streets": {"train_scenes": 120, "views": len(outdoor.CAMERA_RIG)}}.get(subject, {})
        return cls(subject=subject, **{**base, **changes})

    def check(self) -> None:
        """Refuse settings that would train on demo or study scenes or cannot run."""
        if self.subject not in SUBJECTS:
            raise DitrError(f"teacher settings: subject must be one of {', '.join(SUBJECTS)}, got {self.subject!r}")
        for field in ("train_set_seed", "heldout_set_seed"):
            if getattr(self, field) < MIN_TEACHER_SET_SEED:
                raise DitrError(f"teacher settings: {field} must be >= {MIN_TEACHER_SET_SEED} "
                                f"(smaller scene-set seeds belong to the demo and the studies), "
                                f"got {getattr(self, field)}")
        if self.train_set_seed == self.heldout_set_seed:
            raise DitrError("teacher settings: train_set_seed and heldout_set_seed must differ")
        for field in ("train_scenes", "heldout_scenes", "views", "steps", "batch_size"):
            if getattr(self, field) < 1:
                raise DitrError(f"teacher settings: {field} must be >= 1, got {getattr(self, field)}")
        most = SUBJECTS[self.subject].max_views
        if most is not None and self.views > most:
            raise DitrError(f"teacher settings: {self.subject} have at most {most} views, got views={self.views}")


def render_scenes(subject: Subject, set_seed: int, scenes: int, views: int) -> SceneImages:
    """Views and label images of scenes ``room_seed(set_seed, 0..scenes-1)`` (points are not needed)."""
    seeds = [room_seed(set_seed, i) for i in range(scenes)]
    images, labels = zip(*(subject.views_of(seed, views, subject.image_size) for seed in seeds))
    return SceneImages(np.concatenate(images), np.concatenate(labels).astype(np.int8), seeds)


def patch_centre_labels(labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) pixel labels -> (N, gh, gw) label at each patch's centre (what a point there looks up)."""
    h, w = labels.shape[-2:]
    rows = ((torch.arange(grid[0]) + 0.5) * h / grid[0]).long()
    cols = ((torch.arange(grid[1]) + 0.5) * w / grid[1]).long()
    return labels[:, rows][:, :, cols]


class _Trainee(torch.nn.Module):
    """The ViT plus its throw-away linear head; forwards like :meth:`VFMBackend.forward`, with gradients."""

    def __init__(self, model: torch.nn.Module, feature_dim: int, num_classes: int, patch: int):
        super().__init__()
        self.model = model
        self.head = torch.nn.Conv2d(feature_dim, num_classes, 1)
        self.patch = patch
        embeddings: Any = model.embeddings  # the backend's position-embedding resizing, exactly
        embeddings.interpolate_pos_encoding = functools.partial(_interpolate_pos_encoding, embeddings,
                                                                antialias=True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H', W') -> per-patch logits (B, C, H'/p, W'/p)."""
        b, _, h, w = pixels.shape
        tokens = self.model(pixel_values=pixels).last_hidden_state[:, 1:]
        grid = tokens.reshape(b, h // self.patch, w // self.patch, -1).permute(0, 3, 1, 2)
        return self.head(grid)


def _lr_factor(step: int, settings: TeacherSettings) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate_head(trainee: _Trainee, backend: VFMBackend, scenes: SceneImages, subject: Subject,
                  batch_size: int = 8) -> dict[str, Any]:
    """Held-out 2D scores of the ViT + head: pixel accuracy and mIoU (logits upsampled), patch accuracy."""
    trainee.eval()
    num_classes = len(subject.class_names)
    size = backend.input_size(*subject.image_size)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    patch_hits = patch_total = 0
    for start in range(0, len(scenes.images), batch_size):
        labels = torch.from_numpy(scenes.labels[start:start + batch_size]).long()
        logits = trainee(backend.preprocess(list(scenes.images[start:start + batch_size]), size))
        pixel_pred = F.interpolate(logits, size=subject.image_size, mode="bilinear", align_corners=False).argmax(1)
        valid = labels >= 0
        confusion += torch.bincount(labels[valid] * num_classes + pixel_pred[valid],
                                    minlength=num_classes ** 2).reshape(num_classes, num_classes)
        centre = patch_centre_labels(labels, tuple(logits.shape[-2:]))
        patch_hits += int(((logits.argmax(1) == centre) & (centre >= 0)).sum())
        patch_total += int((centre >= 0).sum())
    trainee.train()
    tp = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - tp
    present = confusion.sum(1) > 0
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))
    return {"pixel_accuracy": round(float(tp.sum() / confusion.sum()), 4),
            "miou": round(float(iou[present].mean()), 4),
            "patch_accuracy": round(patch_hits / max(1, patch_total), 4),
            "iou": {name: round(float(v), 4) for name, v, p in zip(subject.class_names, iou, present) if p}}


def _loss_summary(losses: list[float], parts: int = 10) -> list[dict[str, float]]:
    """Mean training loss over ``parts`` equal stretches of the run (the curve, small enough for a record)."""
    chunks = np.array_split(np.asarray(losses), min(parts, len(losses)))
    ends = np.cumsum([len(c) for c in chunks])
    return [{"until_step": int(e), "loss": round(float(c.mean()), 4)} for c, e in zip(chunks, ends)]


def train_teacher(settings: TeacherSettings, out: str | Path, record: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the teacher, write its backbone weights (safetensors, transformers names) to ``out`` and
    the training record to ``record``; returns the record. Reproducible for a seed on one thread."""
    from safetensors.torch import save

    settings.check()
    subject = SUBJECTS[settings.subject]
    log = log or (lambda message: None)
    t0 = time.perf_counter()
    spec = get_spec(subject.model)
    log(f"rendering {settings.train_scenes} training and {settings.heldout_scenes} held-out {subject.name}")
    train_set = render_scenes(subject, settings.train_set_seed, settings.train_scenes, settings.views)
    heldout_set = render_scenes(subject, settings.heldout_set_seed, settings.heldout_scenes, settings.views)
    render_seconds = time.perf_counter() - t0
    torch.manual_seed(settings.seed)
    model = build_random(spec).train()
    trainee = _Trainee(model, spec.feature_dim, len(subject.class_names), spec.patch_size)
    backend = VFMBackend(VFMHandle(spec, "in training", "in training", lambda: model))
    size = backend.input_size(*subject.image_size)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, settings))
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    for step in range(settings.steps):
        idx = torch.randint(len(train_set.images), (settings.batch_size,), generator=generator)
        flip = torch.rand(settings.batch_size, generator=generator) < 0.5  # the demo also reads mirrored views
        pixels = backend.preprocess(list(train_set.images[idx.numpy()]), size)
        labels = torch.from_numpy(train_set.labels[idx.numpy()]).long()
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
        labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
        logits = F.interpolate(trainee(pixels), size=subject.image_size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, labels, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == settings.steps:
            log(f"step {step + 1}/{settings.steps}: loss {np.mean(losses[-25:]):.3f}")
    train_seconds = time.perf_counter() - t0 - render_seconds
    scores = evaluate_head(trainee, backend, heldout_set, subject, settings.batch_size)
    log(f"held-out {subject.name}: pixel accuracy {scores['pixel_accuracy']:.3f}, mIoU {scores['miou']:.3f}")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata={"model": subject.model, "trained_on": spec.weights_note})
    atomic_write_bytes(out, data)
    result = {
        "model": subject.model, "weights": spec.weights_note, "weights_file": Path(out).name,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "architecture": {"family": spec.family, "patch_size": spec.patch_size, "width": spec.hidden_size,
                         "depth": spec.num_layers, "heads": spec.num_heads,
                         "parameters": sum(v.numel() for v in state.values())},
        "settings": asdict(settings), "image_size": list(subject.image_size), "input_size": list(size),
        "scenes": {"train_seeds": train_set.scene_seeds, "heldout_seeds": heldout_set.scene_seeds,
                   "train_images": len(train_set.images), "heldout_images": len(heldout_set.images),
                   "rule": f"scene sets with seed >= {MIN_TEACHER_SET_SEED}; the demo's and the studies' "
                           "scene sets use smaller seeds"},
        "loss_curve": _loss_summary(losses), "heldout": scores,
        "seconds": {"render": round(render_seconds, 1), "train": round(train_seconds, 1)},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if record is not None:
        atomic_write_json(record, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Retrain a shipped teacher (the defaults of a subject reproduce it; one thread keeps the run deterministic)."""
    subject = argparse.ArgumentParser(add_help=False)  # read first: the other options' defaults depend on it
    subject.add_argument("--subject", choices=list(SUBJECTS), default="rooms",
                         help="rooms: demo-vit-rooms (the demo's teacher); streets: demo-vit-streets")
    defaults = TeacherSettings.for_subject(subject.parse_known_args(argv)[0].subject)
    p = argparse.ArgumentParser(prog="python -m ditr.vfm.train_teacher", description=main.__doc__, parents=[subject])
    p.add_argument("--out", type=Path, required=True, help="safetensors file to write the ViT's weights to")
    p.add_argument("--record", type=Path, default=None,
                   help="JSON training record (scenes, loss curve, held-out scores)")
    for field in ("train_scenes", "heldout_scenes", "views", "steps", "batch_size", "seed"):
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(defaults, field))
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: reproducible)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TeacherSettings(subject=args.subject, train_scenes=args.train_scenes,
                               heldout_scenes=args.heldout_scenes, views=args.views, steps=args.steps,
                               batch_size=args.batch_size, seed=args.seed, lr=args.lr)
    try:
        train_teacher(settings, args.out, args.record, log=lambda message: print(message, flush=True))
    except DitrError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

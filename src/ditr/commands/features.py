"""``ditr features``: run a frozen DINOv2 / DINOv3 over scenes' images and fill the feature cache."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DitrError
from ..vfm.registry import POS_INTERPOLATIONS, PRECISIONS, list_models
from ._options import add_projection_arguments, projection_config

if TYPE_CHECKING:
    from ..scene import Scene
    from ..vfm.extract import FeatureSource, FillStats, ImageJob

NAME = "features"
HELP = "Compute DINOv2 / DINOv3 patch features of scenes' images into an on-disk cache (and PCA pictures)."
EXAMPLES = f"""examples:
  ditr features rooms/room_0000 --model dinov2-tiny-random-reg --cache feats/ --render pics/
  ditr features scans/* --model dinov2-vitl14-reg --checkpoint ~/weights/dinov2_vitl14_reg4_pretrain.pth \\
      --cache feats/ --resolution 420x560 --flip
  ditr features scans/* --model dinov2-vitl14-reg --checkpoint W.pth --cache feats/ --resolution 420x560 \\
      --flip --jitter-variants 4          # + 4 colour-jittered variants per image (images.jitter_variants: 4)
  ditr features scans/* --model dinov3-vitl16 --checkpoint ~/hf/dinov3-vitl16-pretrain-lvd1689m --cache feats/
  ditr features scans/* --model dinov2-vitb14-reg --download --cache feats/      # fetch from the hub once
  ditr features scans/* --model facebook/dinov2-base --cache feats/   # a Hugging Face id (local cache; --download)
  torchrun --nproc-per-node 8 -m ditr.cli features scans/* --model dinov2-vitl14-reg --checkpoint W.pth --cache feats/

Weights are looked up offline first: --checkpoint (a Hugging Face directory or Meta's .pth), then
$DITR_MODELS/<model>[.pth], then the local Hugging Face cache; --download allows the hub.
--model also takes a Hugging Face repository id: a listed model's id is that model, and any other
DINOv2 / DINOv3 repository is described by its own config.json.
A second run with the same settings computes nothing (all hits). Under torchrun each rank takes
every WORLD_SIZE-th image. Prints one JSON summary line.

models: {', '.join(list_models())}"""

#: The default of --color-jitter as the help shows it: ditr.vfm.color_jitter.REFERENCE_STRENGTH (a test keeps them
#: equal), written out because that module imports torch, which would slow every command's --help by seconds.
REFERENCE_JITTER = "0.4,0.4,0.2,0.1"


def _resolution(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise DitrError(f"--resolution must look like HEIGHTxWIDTH (e.g. 420x560), got {text!r}") from None
    return h, w


def _strength(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(0 <= v <= 1 for v in values) or values[3] > 0.5:
        raise DitrError(f"--color-jitter must be BRIGHTNESS,CONTRAST,SATURATION,HUE in [0, 1] (hue <= 0.5), "
                        f"e.g. 0.4,0.4,0.2,0.1; got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenes", type=Path, nargs="+", metavar="SCENE",
                   help="scene directories (format: docs/design.md#scene-format)")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="model name, e.g. dinov2-vitl14-reg (see below), or a Hugging Face repository id "
                        "(facebook/dinov2-base)")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="weights: Hugging Face directory, or Meta's official .pth (keys converted)")
    p.add_argument("--download", action="store_true", help="allow downloading the weights from the Hugging Face hub")
    p.add_argument("--cache", type=Path, required=True, metavar="DIR", help="feature cache directory")
    p.add_argument("--resolution", default=None, metavar="HxW",
                   help="network input size, multiples of the patch size (default: image size rounded to it)")
    p.add_argument("--flip", action="store_true", help="also cache the horizontally flipped images' features")
    p.add_argument("--jitter-variants", type=int, default=0, metavar="K",
                   help="also cache K colour-jittered variants of every image (and of its mirror with --flip), "
                        "for training with images.jitter_variants: K (default 0)")
    p.add_argument("--color-jitter", default=REFERENCE_JITTER, metavar="B,C,S,H",
                   help="the variants' jitter strength, as images.color_jitter (default: the reference's "
                        "%(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16/fp16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--pos-interpolation", choices=POS_INTERPOLATIONS, default="antialias",
                   help="DINOv2 position-embedding resize: antialiased bicubic (reference) or plain bicubic")
    p.add_argument("--render", type=Path, default=None, metavar="DIR",
                   help="write PCA pictures of each view's patch features and of the lifted point features")
    p.add_argument("--view-strategy", choices=["last", "random", "nearest", "mean"], default="last",
                   help="how --render's point features combine views (default: last, the reference)")
    add_projection_arguments(p)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from ..cache import FeatureCache
    from ..scene import Scene
    from ..vfm.backends import build_backend
    from ..vfm.color_jitter import ColorJitter
    from ..vfm.extract import FeatureSource, distributed_rank_world, image_jobs

    hf_logging.disable_progress_bar()
    resolution = _resolution(args.resolution)
    if args.jitter_variants < 0:
        raise DitrError(f"--jitter-variants must be >= 0, got {args.jitter_variants}")
    jitter = ColorJitter(_strength(args.color_jitter), variants=args.jitter_variants) if args.jitter_variants else None
    cache = FeatureCache(args.cache)
    settings = {"model": args.model, "checkpoint": args.checkpoint, "download": args.download,
                "precision": args.precision, "pos_interpolation": args.pos_interpolation}
    backend = build_backend(settings, args.device, hash_memo=cache.hash_memo)
    handle = backend.handle
    source = FeatureSource(backend, cache, resolution, args.batch_size)
    scenes = [Scene.load(path) for path in args.scenes]
    for scene in scenes:
        if not scene.views:
            print(f"ditr features: warning: {scene.path} has no views (3D-only scene), skipped", file=sys.stderr)
    flips = (False, True) if args.flip else (False,)
    jobs = [job for scene in scenes for job in image_jobs(scene.name, scene.views, flips, jitter)]
    rank, world = distributed_rank_world()
    if handle.random_weights and rank == 0:
        print(f"ditr features: note: {args.model} has random weights: its features are not real DINO features",
              file=sys.stderr)
    stats = _fill_with_progress(jobs, source, rank, world)
    summary = {"model": args.model, "weights": handle.source, "random_weights": handle.random_weights,
               "device": str(backend.device), "precision": backend.precision, "cache": str(args.cache),
               "jitter_variants": args.jitter_variants, "rank": rank, "world_size": world, **stats.as_dict()}
    if jitter is not None:
        summary["color_jitter"] = list(jitter.strength)
    if args.render is not None and rank == 0:
        summary["renders"] = [str(p) for p in _render(scenes, source, args)]
    print(json.dumps(summary))
    return 0


def _fill_with_progress(jobs: list[ImageJob], source: FeatureSource, rank: int, world: int) -> FillStats:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..vfm.extract import fill_cache

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"features (rank {rank}/{world})", total=len(jobs[rank::world]))
        return fill_cache(jobs, source, rank, world, on_progress=lambda n: progress.advance(task, n))


def _render(scenes: list[Scene], source: FeatureSource, args: argparse.Namespace) -> list[Path]:
    import torch

    from ..image_features import point_features
    from ..viz.pca import RANDOM_WEIGHTS_NOTE, pca_basis, save_patch_pca, save_point_pca

    handle = source.backend.handle
    tag = f"{args.model}" + (f" - {RANDOM_WEIGHTS_NOTE}" if handle.random_weights else "")
    written: list[Path] = []
    for scene in scenes:
        if not scene.views:
            continue
        out = args.render / scene.name
        grids = source.grids(scene.views)
        basis = pca_basis(torch.cat([g.flatten(1).T for g in grids]))  # one basis: colours agree across views
        for view, grid in zip(scene.views, grids):
            written.append(save_patch_pca(out / f"{view.name}_pca.png", view.read_image(), grid,
                                          f"{scene.name} / {view.name} - {tag}", basis))
        lifted = point_features(scene, source, args.view_strategy, projection_config(args))
        written += save_point_pca(out / "points_pca.ply", out / "points_pca.png", scene.coord, lifted.features,
                                  lifted.seen,
                                  f"{scene.name}: lifted point features ({args.view_strategy} view) - {tag}", basis)
    return written

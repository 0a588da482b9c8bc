"""``ditr project``: point-to-pixel correspondences of a scene, as arrays and as pictures."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._options import add_projection_arguments, projection_config

NAME = "project"
HELP = "Project a scene's points into its views (visibility with occlusion) and save the correspondences."
EXAMPLES = """examples:
  ditr project rooms/room_0000 --out corr.npz
  ditr project scannet/scene0000_00 --out corr.npz --render overlays/ --max-depth 4
  ditr project my_scan --out corr.npz --occlusion splat --point-spacing 0.01

corr.npz holds uv (V,N,2) float32 (u = column, v = row, pixels of the original image),
visible (V,N) bool, depth (V,N) float32, in_frame (V,N) bool, views (names), image_sizes (V,2).
A JSON summary line is printed to stdout."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene directory (format: docs/design.md#scene-format)")
    p.add_argument("--out", type=Path, required=True, help="output .npz file")
    p.add_argument("--render", type=Path, default=None, metavar="DIR",
                   help="also write one PNG per view: points over the image, coloured by depth")
    add_projection_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..projection import project_scene
    from ..scene import Scene

    scene = Scene.load(args.scene)
    if not scene.views:
        print(f"ditr project: {args.scene} has no views.json: it is a 3D-only scene, nothing to project",
              file=sys.stderr)
        return 1
    start = time.perf_counter()
    corr = project_scene(scene, projection_config(args), device=resolve_device(args.device))
    seconds = time.perf_counter() - start
    corr.save_npz(args.out)
    summary = {"scene": str(args.scene), "out": str(args.out), "occlusion": args.occlusion, **corr.summary(),
               "seconds": round(seconds, 4)}
    if args.render is not None:
        from ..viz.overlay import render_overlays

        summary["renders"] = [str(p) for p in render_overlays(scene, corr, args.render)]
    print(json.dumps(summary))
    for warning in corr.warnings:
        print(f"ditr project: warning: {warning}", file=sys.stderr)
    blind = [name for name, count in summary["visible_per_view"].items() if count == 0]
    if summary["visible_point_views"] == 0:
        print(f"ditr project: warning: no view sees any point of {args.scene}: check the poses "
              "(cam_to_world, OpenCV convention) and the intrinsics", file=sys.stderr)
    elif blind:
        print(f"ditr project: warning: views that see no point: {', '.join(blind)}", file=sys.stderr)
    return 0

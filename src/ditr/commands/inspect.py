"""``ditr inspect``: what a scene holds, and how much of it the cameras see."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..scene import Scene
from ._options import add_projection_arguments, projection_config

NAME = "inspect"
HELP = "Summarise a scene: points, attributes, classes, views, fraction of points seen by a view."
EXAMPLES = """examples:
  ditr inspect rooms/room_0000
  ditr inspect scannet/scene0000_00 --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scene", type=Path, help="scene directory")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object instead")
    add_projection_arguments(p)


def scene_summary(scene: Scene, args: argparse.Namespace) -> dict:
    lo, hi = scene.coord.min(0), scene.coord.max(0)
    summary: dict = {
        "scene": str(scene.path), "points": scene.num_points,
        "extent_m": [round(float(x), 3) for x in hi - lo],
        "attributes": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in scene.attributes.items()},
        "views": len(scene.views),
        # "unknown": imported without a scale (docs/scene-format.md#metajson-units); absent: metres
        "units": scene.meta.get("units", "metres"),
    }
    seg = scene.segment()
    if seg is not None:
        ids, counts = np.unique(seg, return_counts=True)
        names = scene.class_names or []
        summary["classes"] = {("ignore (-1)" if i < 0 else names[i] if i < len(names) else str(int(i))): int(c)
                              for i, c in zip(ids, counts)}
    if scene.views:
        from ..device import resolve_device
        from ..projection import project_scene

        corr = project_scene(scene, projection_config(args), device=resolve_device(args.device))
        s = corr.summary()
        summary.update(seen_fraction=round(s["seen_fraction"], 4), visible_per_view=s["visible_per_view"],
                       view_sizes=sorted({f"{v.width}x{v.height}" for v in scene.views}),
                       views_with_depth=sum(v.has_depth for v in scene.views),
                       views_with_labels=sum(v.has_label for v in scene.views))
    return summary


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    scene = Scene.load(args.scene)
    summary = scene_summary(scene, args)
    if args.json:
        print(json.dumps(summary))
        return 0
    console = Console()
    t = Table(title=f"scene {scene.name}", show_header=False)
    t.add_row("directory", str(scene.path))
    t.add_row("points", f"{summary['points']:,}")
    extent = " x ".join(f"{x:.2f}" for x in summary["extent_m"])
    if summary["units"] == "unknown":
        t.add_row("extent", f"[bold yellow]{extent} in unknown units[/bold yellow] (imported without --scale: "
                            "voxel sizes and depth tolerances assume metres; see docs/own-scans.md)")
    else:
        t.add_row("extent (m)", extent)
    t.add_row("attributes",
              ", ".join(f"{k} {v['dtype']}{tuple(v['shape'])}" for k, v in summary["attributes"].items()) or "-")
    t.add_row("views", str(summary["views"]) + (f" ({', '.join(summary['view_sizes'])}; "
                                               f"{summary['views_with_depth']} with depth, "
                                               f"{summary['views_with_labels']} with labels)"
                                               if scene.views else " (3D only)"))
    if scene.views:
        seen = summary["seen_fraction"]
        style = "bold red" if seen == 0 else ""
        t.add_row("seen by >= 1 view",
                  f"[{style}]{100 * seen:.1f}% of points[/{style}]" if style else f"{100 * seen:.1f}% of points")
    console.print(t)
    if "classes" in summary:
        ct = Table(title="classes")
        ct.add_column("class")
        ct.add_column("points", justify="right")
        ct.add_column("%", justify="right")
        for name, count in sorted(summary["classes"].items(), key=lambda kv: -kv[1]):
            ct.add_row(name, f"{count:,}", f"{100 * count / summary['points']:.1f}")
        console.print(ct)
    if scene.views:
        vt = Table(title="views")
        vt.add_column("view")
        vt.add_column("visible points", justify="right")
        for name, count in summary["visible_per_view"].items():
            vt.add_row(name, f"[red]{count}[/red]" if count == 0 else f"{count:,}")
        console.print(vt)
        if summary["seen_fraction"] == 0:
            console.print("[bold red]No camera sees any point of this scene: check cam_to_world (OpenCV "
                          "camera -> scene frame) and the intrinsics.[/bold red]")
    return 0

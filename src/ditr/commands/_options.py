"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..projection import ProjectionConfig


def add_projection_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("visibility")
    g.add_argument("--occlusion", choices=["auto", "depth", "splat", "none"], default="auto",
                   help="occlusion test: depth maps where present, else points splatted into a z-buffer (auto)")
    g.add_argument("--depth-tolerance", type=float, default=0.2, metavar="M",
                   help="metres a point may lie behind the observed surface (default 0.2)")
    g.add_argument("--min-depth", type=float, default=0.0, metavar="M", help="depth gate, near (default 0)")
    g.add_argument("--max-depth", type=float, default=None, metavar="M", help="depth gate, far (default none)")
    g.add_argument("--point-spacing", type=float, default=None, metavar="M",
                   help="neighbour spacing of the points for the splat footprint (default: estimated)")
    g.add_argument("--splat-radius-px", type=float, default=None, metavar="PX",
                   help="fixed splat radius in pixels instead (LiDAR)")
    g.add_argument("--device", default="auto", help="torch device: cpu, cuda or auto")


def projection_config(args: argparse.Namespace) -> ProjectionConfig:
    from ..projection import ProjectionConfig

    return ProjectionConfig(occlusion=args.occlusion, depth_tolerance=args.depth_tolerance,
                            min_depth=args.min_depth, max_depth=args.max_depth,
                            point_spacing=args.point_spacing, splat_radius_px=args.splat_radius_px)

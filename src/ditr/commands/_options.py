"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..scene import ACQUISITION_KINDS

if TYPE_CHECKING:
    from ..projection import ProjectionConfig
    from ..published import LoadOptions


def add_projection_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("visibility")
    g.add_argument("--occlusion", choices=["auto", "depth", "splat", "none"], default="auto",
                   help="occlusion test: depth maps where present, else the test that suits the points "
                        "(auto: see --acquisition); splat: footprints from the surface spacing")
    g.add_argument("--depth-tolerance", type=float, default=0.2, metavar="M",
                   help="metres a point may lie behind the observed surface (default 0.2)")
    g.add_argument("--min-depth", type=float, default=0.0, metavar="M", help="depth gate, near (default 0)")
    g.add_argument("--max-depth", type=float, default=None, metavar="M", help="depth gate, far (default none)")
    g.add_argument("--point-spacing", type=float, default=None, metavar="M",
                   help="neighbour spacing of the points for the splat footprint (default: estimated)")
    g.add_argument("--splat-radius-px", type=float, default=None, metavar="PX",
                   help="fixed splat radius in pixels instead")
    g.add_argument("--acquisition", choices=ACQUISITION_KINDS, default=None,
                   help="what made the points, which picks the occlusion test of views without depth maps "
                        "(docs/projection.md): lidar, sfm, rgbd, mesh, mvs or unknown (default: the scene's "
                        "meta.json, else unknown)")
    add_device_argument(g)


#: Every command's --device: one default and one meaning (ditr.device.resolve_device).
DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N (default: auto)"


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        purpose: str = "torch device") -> None:
    """``--device``, default ``auto``; ``purpose`` says what runs there when that is not the whole command."""
    parser.add_argument("--device", default="auto", metavar="DEVICE", help=f"{purpose}: {DEVICE_HELP}")


def projection_config(args: argparse.Namespace) -> ProjectionConfig:
    from ..projection import ProjectionConfig

    return ProjectionConfig(occlusion=args.occlusion, depth_tolerance=args.depth_tolerance,
                            min_depth=args.min_depth, max_depth=args.max_depth,
                            point_spacing=args.point_spacing, splat_radius_px=args.splat_radius_px,
                            acquisition=args.acquisition)


#: The help of a command's model argument: everything ditr.model_files.read_model_file reads.
MODEL_HELP = ("the model: a ditr train / distill checkpoint (best.pt / last.pt) or run directory, a .ditr bundle, "
              "a published model's name (ditr models), a published folder (config.py + model/model_best.pth) or a "
              "reference .pth")


def add_model_arguments(parser: argparse.ArgumentParser, deterministic: bool = False) -> None:
    """``--download``, ``--origin``, ``--vfm`` (and ``--deterministic``): how to read a published model."""
    g = parser.add_argument_group("published models (docs/models.md)")
    g.add_argument("--download", action="store_true",
                   help="fetch what is missing from the Hugging Face hub into its cache: a published model's folder, "
                        "a DITR model's VFM weights (default: offline, a missing file is an error naming it)")
    g.add_argument("--origin", choices=["ditr", "pointcept"], default=None,
                   help="where a reference model without config.py comes from (sets its serialization depth rule; "
                        "asked for only where the weights cannot tell)")
    g.add_argument("--vfm", default=None, metavar="NAME",
                   help="the VFM of a reference DITR model without config.py, e.g. dinov3-vitl16 (asked for only "
                        "where the feature width cannot tell: DINOv2 and DINOv3 ViT-L are both 1024 wide)")
    if deterministic:
        g.add_argument("--deterministic", action="store_true",
                       help="a published model without the reference's random serialization-order shuffles "
                            "(level 0 and every pooling): repeated runs give identical results (docs/models.md)")


def load_options(args: argparse.Namespace) -> LoadOptions:
    from ..published import LoadOptions

    return LoadOptions(origin=getattr(args, "origin", None), vfm=getattr(args, "vfm", None),
                       download=bool(getattr(args, "download", False)),
                       deterministic=bool(getattr(args, "deterministic", False)))

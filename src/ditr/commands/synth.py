"""``ditr synth``: write procedural indoor rooms (points + posed RGB-D images with labels) or, with
``--outdoor``, streets (a spinning-LiDAR scan + six posed cameras + ground-truth visibility) as scenes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DitrError

NAME = "synth"
HELP = ("Generate synthetic rooms (points, RGB, metric depth and label images) or, with --outdoor, streets "
        "(LiDAR scan, six cameras, ground-truth visibility) in the scene format.")
EXAMPLES = """examples:
  ditr synth rooms --scenes 10 --seed 0
  ditr synth rooms_hd --scenes 2 --seed 3 --points 50000 --views 12 --width 640 --height 480
  ditr synth rooms_small --scenes 100 --seed 1 --image-format jpg
  ditr synth streets --outdoor --scenes 5 --seed 0
  ditr synth streets64 --outdoor --beams 64 --azimuth-step 0.17 --width 1600 --height 900

Scene i is generated from a seed derived from (--seed, i): the same command writes identical scenes,
and asking for more scenes keeps the first ones unchanged. Class names are in each scene's meta.json.
Rooms are written to OUT/room_0000, ...; streets to OUT/street_0000, ..., each with visibility_gt.npz
(see docs/synthetic.md)."""

#: Image size per mode when --width / --height are not given.
DEFAULT_SIZE = {"rooms": (320, 240), "streets": (800, 450)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="output directory; scenes are written to OUT/room_0000 (or street_0000), ...")
    p.add_argument("--scenes", type=int, default=1, metavar="N", help="number of scenes (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the scene set (default 0)")
    p.add_argument("--width", type=int, default=None, metavar="W",
                   help="image width in pixels (default 320 for rooms, 800 for streets)")
    p.add_argument("--height", type=int, default=None, metavar="H",
                   help="image height in pixels (default 240 for rooms, 450 for streets)")
    p.add_argument("--image-format", choices=["png", "jpg"], default="png",
                   help="RGB encoding: png keeps pixel colours exact (default); jpg files are ~2x smaller")
    rooms = p.add_argument_group("rooms (the default)")
    rooms.add_argument("--points", type=int, default=None, metavar="P", help="surface points per room (default 20000)")
    rooms.add_argument("--views", type=int, default=None, metavar="V", help="camera views per room (default 8)")
    streets = p.add_argument_group("streets (--outdoor)")
    streets.add_argument("--outdoor", action="store_true",
                         help="generate streets scanned by a spinning LiDAR, seen by six cameras")
    streets.add_argument("--beams", type=int, choices=[32, 64], default=None,
                         help="LiDAR beams: 32 (like an HDL-32E, default) or 64 (like an HDL-64E)")
    streets.add_argument("--azimuth-step", type=float, default=None, metavar="DEG",
                         help="horizontal angle between firings in degrees (default 0.2)")
    streets.add_argument("--max-range", type=float, default=None, metavar="M",
                         help="LiDAR range in metres (default 100)")
    streets.add_argument("--range-noise", type=float, default=None, metavar="M",
                         help="standard deviation of the range noise in metres (default 0.02)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    _check(args)
    mode = "streets" if args.outdoor else "rooms"
    width, height = (args.width or DEFAULT_SIZE[mode][0]), (args.height or DEFAULT_SIZE[mode][1])
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn(mode),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(mode, total=args.scenes)
        if args.outdoor:
            from ..io.synthetic.lidar import LidarConfig  # imported here so `ditr --help` stays fast
            from ..io.synthetic.outdoor import write_streets

            given = {"azimuth_step_deg": args.azimuth_step, "max_range": args.max_range,
                     "range_noise": args.range_noise}
            lidar = LidarConfig.velodyne(args.beams or 32, **{k: v for k, v in given.items() if v is not None})
            write_streets(args.out, args.scenes, args.seed, image_format=args.image_format, lidar=lidar,
                          width=width, height=height, on_scene=lambda i, path: progress.advance(task))
            stem = "street"
        else:
            from ..io.synthetic import write_rooms

            write_rooms(args.out, args.scenes, args.seed, image_format=args.image_format,
                        on_room=lambda i, path: progress.advance(task), num_points=args.points or 20000,
                        num_views=args.views or 8, width=width, height=height)
            stem = "room"
    seconds = time.perf_counter() - start
    noun = stem if args.scenes == 1 else f"{stem}s"
    print(f"wrote {args.scenes} {noun} to {args.out.resolve()} "
          f"({stem}_0000 ... {stem}_{args.scenes - 1:04d}, {seconds:.1f} s)")
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse values and option mixes that cannot mean what the user wants, before any work."""
    for name in ("scenes", "points", "views", "width", "height"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise DitrError(f"--{name} must be at least 1, got {value}")
    if args.seed < 0:
        raise DitrError(f"--seed must be >= 0, got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        raise DitrError(f"{args.out}: exists and is not a directory")
    lidar_options = {"--beams": args.beams, "--azimuth-step": args.azimuth_step, "--max-range": args.max_range,
                     "--range-noise": args.range_noise}
    if args.outdoor:
        mixed = [name for name, value in (("--points", args.points), ("--views", args.views)) if value is not None]
        if mixed:
            raise DitrError(f"{', '.join(mixed)}: rooms only; a street's points come from the LiDAR scan and its "
                            "views from the six-camera rig")
        if args.azimuth_step is not None and not 0 < args.azimuth_step <= 360:
            raise DitrError(f"--azimuth-step must be in (0, 360] degrees, got {args.azimuth_step}")
        if args.max_range is not None and not args.max_range > 0:
            raise DitrError(f"--max-range must be positive, got {args.max_range}")
        if args.range_noise is not None and not args.range_noise >= 0:
            raise DitrError(f"--range-noise must be >= 0, got {args.range_noise}")
    else:
        mixed = [name for name, value in lidar_options.items() if value is not None]
        if mixed:
            raise DitrError(f"{', '.join(mixed)}: streets only (add --outdoor)")

"""``ditr synth``: write procedural indoor rooms (points + posed RGB-D images with labels) as scenes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import DitrError

NAME = "synth"
HELP = "Generate synthetic rooms (points, RGB, metric depth and label images) in the scene format."
EXAMPLES = """examples:
  ditr synth rooms --scenes 10 --seed 0
  ditr synth rooms_hd --scenes 2 --seed 3 --points 50000 --views 12 --width 640 --height 480
  ditr synth rooms_small --scenes 100 --seed 1 --image-format jpg

Room i is generated from a seed derived from (--seed, i): the same command writes identical rooms,
and asking for more rooms keeps the first ones unchanged. Class names are in each room's meta.json."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="output directory; rooms are written to OUT/room_0000, OUT/room_0001, ...")
    p.add_argument("--scenes", type=int, default=1, metavar="N", help="number of rooms (default 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the room set (default 0)")
    p.add_argument("--points", type=int, default=20000, metavar="P", help="surface points per room (default 20000)")
    p.add_argument("--views", type=int, default=8, metavar="V", help="camera views per room (default 8)")
    p.add_argument("--width", type=int, default=320, metavar="W", help="image width in pixels (default 320)")
    p.add_argument("--height", type=int, default=240, metavar="H", help="image height in pixels (default 240)")
    p.add_argument("--image-format", choices=["png", "jpg"], default="png",
                   help="RGB encoding: png keeps pixel colours equal to point colours (default); "
                        "jpg files are ~2x smaller")


def run(args: argparse.Namespace) -> int:
    from ..io.synthetic import write_rooms  # imported here so `ditr --help` stays fast

    for name in ("scenes", "points", "views", "width", "height"):
        if getattr(args, name) < 1:
            raise DitrError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise DitrError(f"--seed must be >= 0, got {args.seed}")
    if args.out.exists() and not args.out.is_dir():
        raise DitrError(f"{args.out}: exists and is not a directory")
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn("rooms"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("rooms", total=args.scenes)
        write_rooms(args.out, args.scenes, args.seed, image_format=args.image_format,
                    on_room=lambda i, path: progress.advance(task),
                    num_points=args.points, num_views=args.views, width=args.width, height=args.height)
    seconds = time.perf_counter() - start
    print(f"wrote {args.scenes} room{'s' if args.scenes != 1 else ''} to {args.out.resolve()} "
          f"(room_0000 ... room_{args.scenes - 1:04d}, {seconds:.1f} s)")
    return 0

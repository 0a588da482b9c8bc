"""``ditr models``: the published DITR / D-DITR models, and which of them are on this machine."""

from __future__ import annotations

import argparse
import json

NAME = "models"
HELP = "List the published DITR / D-DITR models (name, dataset, method, VFM, reported mIoU) and which are on disk."
EXAMPLES = """examples:
  ditr models
  ditr models --json | jq '.[] | select(.local != null) | .name'
  ditr info ditr-scannet200-dinov2-l --download        # fetch one into the Hugging Face cache and describe it
  ditr predict d-ditr-scannet-ptv3 my_scan --out pred   # use it by name (offline once fetched)

The models are the authors' (Hugging Face repository rwthvision/ditr); mIoU is their validation
figure. "on disk" is read from the Hugging Face cache only (nothing is downloaded here); entries
the authors list as still uploading show as such. See docs/models.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def model_list() -> list[dict]:
    """Every zoo entry as data, with ``local``: its folder in the Hugging Face cache, or None."""
    from .. import zoo

    local = zoo.cache_status()
    return [{**e.to_dict(), "local": str(local[e.name]) if local[e.name] else None} for e in zoo.list_entries()]


def run(args: argparse.Namespace) -> int:
    entries = model_list()
    if args.json:
        print(json.dumps(entries))
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ..zoo import HUB_URL

    console = Console()
    # A narrow terminal gets the columns that decide which model to fetch; names never wrap (they are typed).
    wide = console.width >= 140
    columns = (("name", "group", "dataset", "classes", "VFM", "mIoU", "status", "on disk") if wide
               else ("name", "mIoU", "status", "on disk"))
    table = Table(title=f"published models ({HUB_URL})" + ("" if wide else "; --json or a wider terminal for more"),
                  title_justify="left", box=None if not wide else box.HEAVY_HEAD)
    for column in columns:
        table.add_column(column, justify="right" if column in ("classes", "mIoU") else "left",
                         no_wrap=column in ("name", "mIoU"))
    for e in entries:
        status = e["status"] if e["supported"] else f"{e['status']}, {e['backbone']}: not supported"
        cells = {"name": e["name"], "group": e["group"], "dataset": e["dataset"],
                 "classes": str(e["num_classes"] or "-"), "VFM": e["vfm"] or "-",
                 "mIoU": f"{e['miou']:.1f}" if e["miou"] is not None else "-", "status": status,
                 "on disk": "yes" if e["local"] else "-"}
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
    return 0

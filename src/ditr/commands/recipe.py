"""``ditr recipe [PRESET] [--method M] [--json]``: a preset's resolved configuration next to the reference's."""

from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "recipe"
HELP = "Compare a preset with the reference's recipe, key by key, with a reason for every difference."
EXAMPLES = """examples:
  ditr recipe                          # every card: how many keys differ, all with reasons?
  ditr recipe scannet                  # DITR on ScanNet vs the reference's ScanNet image config
  ditr recipe nuscenes --method ptv3   # the 3D-only baseline vs the reference's base config
  ditr recipe scannet --method d-ditr  # the distillation preset behind ScanNet's D-DITR
  ditr recipe semantickitti --json | jq '.differences[] | .key'
  ditr recipe scannet --differences    # only the rows that differ
  ditr recipe scannet vfm.online=true images.color_jitter=[0.4,0.4,0.2,0.1]   # what an override changes

Each difference shows its declared reason; one without a reason is a bug (the test suite fails on
it), and --check makes the command exit with status 1 on one. See docs/recipe.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", nargs="?", default=None,
                   help="a dataset preset (scannet, nuscenes ...) or a distillation preset (distill/...)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings to change first, as on the ditr train command line (to see what they move)")
    p.add_argument("--method", choices=("ditr", "ptv3", "d-ditr"), default=None,
                   help="ditr (images injected), ptv3 (3D only) or d-ditr (stage 1, distillation); "
                        "default: the preset's own")
    p.add_argument("--json", action="store_true",
                   help="print {preset, method, runs, follows, config, differences: [{key, ours, reference, reason}]}")
    p.add_argument("--differences", action="store_true", help="show only the keys that differ")
    p.add_argument("--check", action="store_true", help="exit with status 1 if a difference has no declared reason")


def show(value: Any) -> str:
    """A setting as one readable cell: a transform list one step per line, a test-time variant list
    one variant per line."""
    if isinstance(value, list) and value and all(isinstance(v, dict) and "type" in v for v in value):
        return "\n".join(_step(v) for v in value)
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return "\n".join(" + ".join(_step(s) for s in v) or "(as is)" for v in value)
    if value is None:
        return "null"
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def _step(step: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={json.dumps(v)}" for k, v in step.items() if k != "type")
    return f"{step['type']}({args})"


def _mark(row: Any, declared: str) -> str:
    """The difference column: the declared reason, or a loud mark where there is none."""
    if row.status == declared:
        return f"[yellow]{row.reason}[/yellow]"
    return "" if not row.reason and row.status != "undeclared" else "[bold red]UNDECLARED[/bold red]"


def _summary() -> int:
    from rich.console import Console
    from rich.table import Table

    from ..recipe import build_card, card_names, methods_of

    table = Table(title="recipe cards (ditr recipe PRESET --method M for one)", title_justify="left", box=None)
    for column in ("preset", "method", "reference entry", "keys", "differ", "undeclared"):
        table.add_column(column, justify="right" if column in ("keys", "differ", "undeclared") else "left")
    bad = 0
    for preset in card_names():
        for method in methods_of(preset):
            card = build_card(preset, method)
            bad += len(card.undeclared)
            table.add_row(preset, method, card.spec.entry, str(len(card.rows)), str(len(card.differences)),
                          str(len(card.undeclared)))
    Console().print(table)
    return bad


def run(args: argparse.Namespace) -> int:
    from ..recipe import DECLARED, SAME, build_card

    if args.preset is None:
        bad = _summary()
        return 1 if args.check and bad else 0
    card = build_card(args.preset, args.method, args.overrides)
    if args.json:
        print(json.dumps(card.to_json()))
        return 1 if args.check and card.undeclared else 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{card.name}[/bold]: runs [bold]{card.spec.run_preset}[/bold]; follows the reference's "
                  f"{card.entry_config} ({card.reports})")
    if card.spec.note:
        console.print(card.spec.note)
    rows = [r for r in card.rows if not (args.differences and r.status == SAME)]
    if console.width >= 150:
        table = Table(show_lines=True, box=None, pad_edge=False)
        for column in ("key", "ours", "reference", "difference"):
            table.add_column(column, no_wrap=column == "key")
        for row in rows:
            key = row.key if row.status == SAME else f"[bold]{row.key}[/bold]"
            table.add_row(key, show(row.ours), show(row.reference), _mark(row, DECLARED))
        console.print(table)
    else:  # one block per key: a four-column table would wrap every cell on a narrow terminal
        for row in rows:
            value = show(row.ours)
            if row.status == SAME:
                console.print(f"{row.key} = {value}" if "\n" not in value else
                              f"{row.key} =\n    " + value.replace("\n", "\n    "), highlight=False)
                continue
            block = Table.grid(padding=(0, 1))
            block.add_column(no_wrap=True)
            block.add_column()
            block.add_row("  ours:", value)
            block.add_row("  reference:", show(row.reference))
            block.add_row("  why:", _mark(row, DECLARED))
            console.print(f"[bold]{row.key}[/bold]", highlight=False)
            console.print(block, highlight=False)
    for note in card.notes:
        console.print(f"reference: {note}")
    if card.spec.method == "d-ditr":
        console.print("stage 2 fine-tunes the student with the ptv3 recipe of the target dataset "
                      "(ditr recipe DATASET --method ptv3) from the distilled backbone (ditr train --init)")
    console.print(f"{len(card.rows)} keys compared, {len(card.differences)} differ, "
                  f"{len(card.undeclared)} without a declared reason")
    return 1 if args.check and card.undeclared else 0

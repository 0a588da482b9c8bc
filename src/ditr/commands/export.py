"""``ditr export CHECKPOINT OUT``: a trained model as one portable ``.ditr`` bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._options import MODEL_HELP, add_model_arguments, load_options

NAME = "export"
HELP = "Export a trained model as a .ditr bundle (safetensors weights + run config), for ditr predict."
EXAMPLES = """examples:
  ditr export runs/ditr-scannet/best.pt ditr-scannet.ditr
  ditr predict ditr-scannet.ditr data/scannet/scene0011_00 --out pred/scene0011_00

A bundle is a safetensors file whose metadata holds the run config as JSON: readable without
pickle by any safetensors reader, about a third of a training checkpoint (no optimizer state).
It is the one export format: TorchScript and ONNX cannot capture the PTv3 forward, which builds its
rulebooks with data-dependent shapes (docs/predict.md)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("out", type=Path, help="the bundle to write (e.g. model.ditr)")
    p.add_argument("--format", default="bundle", choices=["bundle"],
                   help="bundle, the one format (TorchScript and ONNX cannot capture this network: see below)")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..model_files import export_bundle

    print(json.dumps(export_bundle(args.checkpoint, args.out, load_options(args))))
    return 0

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
--format torchscript / onnx are refused with the reason: the PTv3 forward builds its rulebooks
with data-dependent shapes that tracing, scripting and torch.export cannot capture (docs/predict.md)."""

#: Why the other formats are refused (the command prints it; docs/predict.md has the details).
UNSUPPORTED = (
    "{fmt} export of the PTv3 / DITR forward does not work: the network builds its sparse-conv "
    "rulebooks, serialization orders and pooling clusters from the points with data-dependent shapes "
    "(unique, nonzero, .tolist()), which tracing freezes to the example cloud and torch.export / the "
    "ONNX exporter cannot capture. Use --format bundle (a safetensors file with the config, loadable "
    "by ditr predict and ditr.model_files.load_model); see docs/predict.md."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("out", type=Path, help="the bundle to write (e.g. model.ditr)")
    p.add_argument("--format", default="bundle", choices=["bundle", "torchscript", "onnx"],
                   help="bundle (default); torchscript and onnx do not work for this network (see above)")
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..errors import DitrError
    from ..model_files import export_bundle

    if args.format != "bundle":
        raise DitrError(UNSUPPORTED.format(fmt={"torchscript": "TorchScript", "onnx": "ONNX"}[args.format]))
    print(json.dumps(export_bundle(args.checkpoint, args.out, load_options(args))))
    return 0

"""``ditr train CONFIG... [key=value ...]``: train PTv3 or DITR from a preset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ._options import add_model_arguments, load_options

if TYPE_CHECKING:
    from ..configs import RunConfig

NAME = "train"
HELP = "Train a model (DITR or 3D-only PTv3) from YAML presets with key=value overrides."
EXAMPLES = """examples:
  ditr train scannet dataset.root=data/scannet vfm.cache=feats --work-dir runs/ditr-scannet
  ditr train scannet method/ptv3 dataset.root=data/scannet --work-dir runs/ptv3-scannet
  ditr train synthetic dataset.root=rooms trainer.epochs=5 trainer.batch_size=2
  ditr train scannet method/ptv3 dataset.root=data/scannet --init d-ditr-scannet-ptv3 --download   # fine-tune
  ditr train scannet trainer.batch_size=8 --print-config > my-run.yaml   # the resolved config; edit, then:
  ditr train my-run.yaml dataset.root=data/scannet
  torchrun --nproc_per_node 8 -m ditr.cli train scannet dataset.root=data/scannet trainer.batch_size=16
      (trainer.batch_size is the global batch: it must divide by the number of processes)

CONFIG is a preset name (scannet, scannet200, s3dis, nuscenes, semantickitti, waymo, synthetic,
method/ptv3, method/ditr, method/d-ditr, method/ditr-online) or a YAML file; several are merged
in order. Training resumes from WORK_DIR/last.pt when it exists (--no-resume starts afresh).
Metrics go to WORK_DIR/metrics.jsonl, plots to WORK_DIR/*.png."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("items", nargs="+", metavar="CONFIG|key=value",
                   help="presets / YAML files, then dotted key=value overrides")
    p.add_argument("--work-dir", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="initialise from this model's matching weights (a checkpoint, bundle, published model name "
                        "or folder, reference .pth); a published model's reference behaviour is carried over")
    p.add_argument("--no-resume", action="store_true", help="do not resume from WORK_DIR/last.pt")
    p.add_argument("--restart", action="store_true",
                   help="start over from step 0 when WORK_DIR's checkpoints are all damaged (else an error)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved run configuration (YAML, every key; a file ditr train reads back) "
                        "and exit without training")
    add_model_arguments(p)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """Presets / files (no '=') and overrides (with '=')."""
    return [i for i in items if "=" not in i], [i for i in items if "=" in i]


def run(args: argparse.Namespace) -> int:
    from ..configs import load_preset
    from ..errors import DitrError
    from ..model_files import init_behaviour, read_model_file
    from ..training import train

    presets, overrides = split_items(args.items)
    if not presets:
        raise DitrError("name at least one preset or YAML file before the key=value overrides")
    config = load_preset(presets, overrides)
    if args.print_config:
        print_config(config if args.init is None else init_behaviour(config, read_model_file(args.init,
                                                                                             load_options(args))))
        return 0
    work_dir = args.work_dir or Path("runs") / config.name or Path(presets[0]).stem
    init = read_model_file(args.init, load_options(args)) if args.init is not None else None
    summary = train(config, work_dir, init=init, resume=not args.no_resume,
                    quiet=args.quiet, restart=getattr(args, "restart", False))
    from ..engine import distributed
    from ..engine.logging import to_jsonable

    if distributed.is_main():
        print(json.dumps(to_jsonable({"work_dir": str(work_dir), **summary})))
    return 0


def print_config(config: RunConfig) -> None:
    """The whole configuration as YAML, in the sections' order; lists of plain values on one line."""
    import yaml

    from ..engine.logging import to_jsonable

    class Dumper(yaml.SafeDumper):
        pass

    def represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
        flat = all(not isinstance(v, (dict, list)) for v in value)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)

    Dumper.add_representer(list, represent_list)
    print(yaml.dump(to_jsonable(config.to_dict()), Dumper=Dumper, sort_keys=False, width=110), end="")

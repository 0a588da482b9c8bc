"""``ditr info CHECKPOINT``: what a checkpoint or bundle holds and what it needs at inference."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NAME = "info"
HELP = "Describe a checkpoint or .ditr bundle: model, parameters, VFM, classes, training state, metrics."
EXAMPLES = """examples:
  ditr info runs/ditr-scannet/best.pt
  ditr info model.ditr --json | jq .inference

The --json object has the sections file, model, vfm, data, training, metrics and inference
(inference.needs_images: whether ditr predict / evaluate need the scene's images)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a ditr train / distill checkpoint or a .ditr bundle")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _parameters(config: Mapping[str, Any]) -> dict[str, int]:
    """Parameter counts by part, from the model built on the meta device (no memory, no weights)."""
    import torch

    from ..build import model_from_config
    from ..data.config import merge

    with torch.device("meta"):
        model = model_from_config(merge(config, {"vfm": {"online": False}}))
    parts = {"total": 0, "backbone": 0, "image_projections": 0, "head": 0}
    for name, p in model.named_parameters():
        parts["total"] += p.numel()
        part = ("image_projections" if "image" in name or name == "missing_embedding"
                else "backbone" if name.startswith("backbone.") else "head")
        parts[part] += p.numel()
    return parts


def checkpoint_info(path: Path) -> dict[str, Any]:
    """Everything ``ditr info`` shows, as JSON-ready data."""
    from ..build import needs_images
    from ..data.dataset import input_channels
    from ..engine.logging import to_jsonable
    from ..model_files import read_model_file
    from ..models.ptv3 import get_config

    file = read_model_file(path)
    kind, config, record = file.kind, file.run_config(), file.record
    model_cfg = config.get("model") or {}
    data = config.get("dataset") or {}
    vfm = config.get("vfm") or {}
    images = config.get("images") or {}
    name = model_cfg.get("name", "ditr")
    backbone, _ = get_config(model_cfg.get("backbone", "scannet"), **(model_cfg.get("ptv3") or {}))
    val = (config.get("transforms") or {}).get("val", [])
    grid = [t.get("grid_size") for t in val if t.get("type") == "GridSample"]
    features = list(data.get("input_features", ["color", "normal"]))
    reads_images = name in ("ditr", "d-ditr")
    info = {
        "file": {"path": str(path), "kind": kind, "bytes": path.stat().st_size},
        "model": {"name": name, "task": "distillation" if name == "d-ditr" else "segmentation",
                  "backbone": model_cfg.get("backbone", "scannet"), "parameters": _parameters(config),
                  "enc_channels": list(backbone.enc_channels), "enc_depths": list(backbone.enc_depths),
                  "dec_channels": list(backbone.dec_channels), "dec_depths": list(backbone.dec_depths),
                  "image_channels": model_cfg.get("image_channels") if name == "ditr" else None,
                  "injection": model_cfg.get("injection") if name == "ditr" else None,
                  "voxel_size_m": grid[0] if grid else None},
        "vfm": None if not reads_images else {
            "model": vfm.get("model"), "checkpoint": vfm.get("checkpoint"), "cache": vfm.get("cache"),
            "precision": vfm.get("precision"), "online": bool(vfm.get("online", False)),
            "views_per_sample": images.get("views_per_sample"), "eval_views": images.get("eval_views"),
            "resolution": images.get("resolution"), "view_strategy": images.get("view_strategy", "last")},
        "data": {"dataset": data.get("name"), "root": data.get("root"), "splits": data.get("splits"),
                 "segment": data.get("segment"), "num_classes": data.get("num_classes"),
                 "class_names": data.get("class_names"), "ignore_index": data.get("ignore_index", -1),
                 "input_features": features, "in_channels": input_channels(features)},
        "training": {**{k: record.get(k) for k in ("step", "epoch", "total_steps", "world_size")},
                     "epochs": (config.get("trainer") or {}).get("epochs"),
                     "batch_size": (config.get("trainer") or {}).get("batch_size"),
                     "lr": (config.get("optim") or {}).get("lr"), "init": config.get("init"),
                     "scenes": "not recorded in checkpoints; see dataset root / splits"},
        "metrics": {"best": record.get("best"), "last": record.get("metrics")},
        "inference": {"needs_images": needs_images(config),
                      "needs": ("posed images of the scene + features of " + str(vfm.get("model"))
                                if needs_images(config) else "points only (" + ", ".join(features) + ")"),
                      "predicts": "2D features (distillation student: fine-tune before predicting classes)"
                      if name == "d-ditr" else f"{data.get('num_classes')} classes"},
    }
    return to_jsonable(info)


def _table(title: str, rows: Mapping[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for key, value in rows.items():
        if value is None or value == []:
            continue
        t.add_row(key, value if isinstance(value, str) else json.dumps(value))
    return t


def _print(info: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    model, data, training = info["model"], info["data"], info["training"]
    params = model["parameters"]
    needs = info["inference"]
    console.print(f"[bold]{info['file']['path']}[/bold]: {info['file']['kind']}, "
                  f"{info['file']['bytes'] / 2**20:.1f} MiB")
    console.print(f"needs images at inference: [bold]{'yes' if needs['needs_images'] else 'no'}[/bold] "
                  f"({needs['needs']}); predicts {needs['predicts']}")
    console.print(_table("model", {
        "name": f"{model['name']} ({model['task']})", "backbone": model["backbone"],
        "parameters": f"{params['total']:,} (backbone {params['backbone']:,}, image projections "
                      f"{params['image_projections']:,}, head {params['head']:,})",
        "encoder": f"channels {model['enc_channels']}, depths {model['enc_depths']}",
        "decoder": f"channels {model['dec_channels']}, depths {model['dec_depths']}",
        "image channels": model["image_channels"], "injection": model["injection"],
        "voxel size (m)": model["voxel_size_m"]}))
    if info["vfm"]:
        console.print(_table("2D foundation model", {k.replace("_", " "): v for k, v in info["vfm"].items()}))
    console.print(_table("data", {
        "dataset": data["dataset"], "root": data["root"], "splits": data["splits"], "segment": data["segment"],
        "input": f"{', '.join(data['input_features'])} ({data['in_channels']} channels)",
        "classes": f"{data['num_classes']}: {', '.join(data['class_names'] or [])}"}))
    console.print(_table("training", {k.replace("_", " "): v for k, v in training.items()}))
    best, last = info["metrics"]["best"], info["metrics"]["last"] or {}
    if best:
        console.print(f"best {best['metric']}: [bold]{best['value']:.4f}[/bold] at step {best['step']}")
    if last.get("iou"):
        t = Table(title=f"last evaluation: mIoU {100 * last['miou']:.2f}, mAcc {100 * last['macc']:.2f}, "
                        f"allAcc {100 * last['allacc']:.2f}", title_justify="left")
        t.add_column("class")
        t.add_column("IoU %", justify="right")
        names = last.get("class_names") or data["class_names"] or [str(i) for i in range(len(last["iou"]))]
        for cls, iou in zip(names, last["iou"]):
            t.add_row(cls, "n/a" if iou is None else f"{100 * iou:.1f}")
        console.print(t)
    elif not best:
        console.print("no evaluation recorded")


def run(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.checkpoint)
    if args.json:
        print(json.dumps(info))
    else:
        _print(info)
    return 0

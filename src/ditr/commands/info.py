"""``ditr info MODEL``: what a checkpoint, bundle or published model holds and what it needs at inference."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._options import MODEL_HELP, add_model_arguments, load_options

if TYPE_CHECKING:
    from ..configs import RunConfig
    from ..published import LoadOptions

NAME = "info"
HELP = ("Describe a checkpoint, .ditr bundle or published model: model, parameters, VFM, classes, training state, "
        "metrics.")
EXAMPLES = """examples:
  ditr info runs/ditr-scannet/best.pt
  ditr info model.ditr --json | jq .inference
  ditr info ditr-scannet200-dinov2-l --download          # a published model (ditr models lists them)
  ditr info exp/scannet/semseg-ptv3/                      # a published folder: config.py + model/model_best.pth

The --json object has the sections file, model, vfm, data, training, metrics, inference
(inference.needs_images: whether ditr predict / evaluate need the scene's images), paths (each
folder the run config names: recorded at training, and here: where it is on this machine, null
when it is not; docs/predict.md#paths-recorded-in-a-model) and, for a published model, published
(zoo entry, origin, how each setting was decided; docs/models.md)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_model_arguments(p)


#: Metrics stored as fractions that tables print in percent.
PERCENT_METRICS = ("miou", "macc", "allacc")


def _by_class(metrics: Mapping[str, Any] | None, class_names: list[str] | None) -> dict[str, Any] | None:
    """A checkpoint's metrics with per-class values by class name, as every ditr JSON file has them
    (checkpoints written before that hold lists, named here by the run's classes)."""
    from ..engine.metrics import per_class

    if metrics is None:
        return None
    out = {k: v for k, v in metrics.items() if k != "class_names"}
    for key in ("iou", "acc"):
        if key in out:
            out[key] = per_class(out[key], metrics.get("class_names") or class_names)
    return out


def _parameters(config: RunConfig) -> dict[str, int]:
    """Parameter counts by part, from the model built on the meta device (no memory, no weights)."""
    import torch

    from ..build import model_from_config

    offline = config.copy()
    offline.vfm.online = False  # count the point model only, never load a VFM for that
    with torch.device("meta"):
        model = model_from_config(offline)
    parts = {"total": 0, "backbone": 0, "image_projections": 0, "head": 0}
    for name, p in model.named_parameters():
        parts["total"] += p.numel()
        part = ("image_projections" if "image" in name or name == "missing_embedding"
                else "backbone" if name.startswith("backbone.") else "head")
        parts[part] += p.numel()
    return parts


def checkpoint_info(path: str | Path, options: LoadOptions | None = None) -> dict[str, Any]:
    """Everything ``ditr info`` shows, as JSON-ready data (``path``: anything ``read_model_file`` reads)."""
    from ..configs import ModelKind
    from ..engine.logging import to_jsonable
    from ..model_files import read_model_file
    from ..models.ptv3 import get_config
    from ..stored_paths import describe

    file = read_model_file(path, options)
    kind, config, record = file.kind, file.run_config(), file.record
    model_cfg, data, vfm, images = config.model, config.dataset, config.vfm, config.images
    model_kind = config.kind
    backbone, _ = get_config(model_cfg.backbone, **model_cfg.ptv3)
    grid = [t.get("grid_size") for t in config.transforms.val if t.get("type") == "GridSample"]
    is_ditr = model_kind is ModelKind.DITR
    needs_images = model_kind.needs_images_at_inference
    info = {
        "file": {"path": str(file.path), "source": file.source, "kind": kind, "bytes": file.path.stat().st_size},
        "model": {"name": model_kind.value, "task": "segmentation" if model_kind.segments else "distillation",
                  "backbone": model_cfg.backbone, "parameters": _parameters(config),
                  "enc_channels": list(backbone.enc_channels), "enc_depths": list(backbone.enc_depths),
                  "dec_channels": list(backbone.dec_channels), "dec_depths": list(backbone.dec_depths),
                  "image_channels": model_cfg.image_channels if is_ditr else None,
                  "injection": dataclasses.asdict(model_cfg.injection) if is_ditr else None,
                  "voxel_size_m": grid[0] if grid else None},
        "vfm": None if not model_kind.uses_images else {
            "model": vfm.model, "checkpoint": vfm.checkpoint, "cache": vfm.cache,
            "precision": vfm.precision, "online": vfm.online,
            "views_per_sample": images.views_per_sample, "eval_views": images.eval_views,
            "resolution": images.resolution, "view_strategy": images.view_strategy},
        "data": {"dataset": data.name, "root": data.root, "splits": data.splits,
                 "segment": data.segment, "num_classes": data.num_classes,
                 "class_names": data.class_names, "ignore_index": data.ignore_index,
                 "input_features": list(data.input_features), "in_channels": data.in_channels},
        "training": {**{k: record.get(k) for k in ("step", "epoch", "total_steps", "world_size")},
                     "epochs": config.trainer.epochs, "batch_size": config.trainer.batch_size,
                     "lr": config.optim.lr, "init": config.init,
                     "scenes": "not recorded in checkpoints; see dataset root / splits"},
        "metrics": {"best": record.get("best"), "last": _by_class(record.get("metrics"), data.class_names)},
        "inference": {"needs_images": needs_images,
                      "needs": ("posed images of the scene + features of " + vfm.model
                                if needs_images else "points only (" + ", ".join(data.input_features) + ")"),
                      "predicts": f"{data.num_classes} classes" if model_kind.segments
                      else "2D features (distillation student: fine-tune before predicting classes)"},
        "published": _published(file.published, config) if file.published is not None else None,
        # the folders the run config names, as recorded at training, and where each is on this machine
        "paths": describe(config, file.place),
    }
    return to_jsonable(info)


def _published(published: Any, config: RunConfig) -> dict[str, Any]:
    """The provenance of a published model, plus what to fetch for its VFM."""
    from ..vfm.registry import get_spec

    out = published.to_dict()
    ptv3 = config.model.ptv3
    out["behaviour"] = {"reference_compat": ptv3.get("reference_compat", False),
                        "depth_formula": ptv3.get("depth_formula", "pointcept"),
                        "order_shuffles": not published.deterministic}
    if config.kind.needs_images_at_inference:
        spec = get_spec(config.vfm.model)
        out["vfm_weights"] = {"model": spec.name, "hub": spec.hub_id,
                              "fetch": "ditr predict ... --download (into the Hugging Face cache), or "
                                       "--set vfm.checkpoint=PATH"}
    return out


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


def _recorded(path: Mapping[str, Any]) -> str:
    """A recorded path in words: as recorded at training, and whether (where) it is on this machine."""
    here = path["here"]
    where = ("not on this machine" if here is None else "here" if here == path["recorded"]
             else f"found here at {here}")
    return f"recorded at training: {path['recorded']} ({where})"


def _print(info: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    model, data, training = info["model"], info["data"], info["training"]
    params = model["parameters"]
    needs = info["inference"]
    console.print(f"[bold]{info['file']['path']}[/bold]: {info['file']['kind']}, "
                  f"{info['file']['bytes'] / 2**20:.1f} MiB")
    published = info.get("published")
    if published:
        console.print(_table("published model", {
            "name": published["zoo"], "source": published["source"], "config.py": published["config_py"],
            "reported mIoU": published["reported_miou"], "origin": published["origin"],
            "behaviour": ("reference-compatible (order shuffles on)" if published["behaviour"]["order_shuffles"]
                          else "reference-compatible, --deterministic (no order shuffles)")
            + f", depth rule {published['behaviour']['depth_formula']}",
            "VFM weights needed": (f"{published['vfm_weights']['model']} ({published['vfm_weights']['hub']}); "
                                   + published["vfm_weights"]["fetch"]) if published.get("vfm_weights") else None,
            "decided by": "; ".join(f"{k}: {v}" for k, v in published["decided"].items()),
            "notes": "; ".join(published["notes"]) or None,
            "config.py not read": ", ".join(published["config_ignored"]) or None}))
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
    paths = {key: _recorded(value) for key, value in info["paths"].items()}
    if info["vfm"]:
        console.print(_table("2D foundation model", {k.replace("_", " "): paths.get(f"vfm.{k}", v)
                                                    for k, v in info["vfm"].items()}))
    console.print(_table("data", {
        "dataset": data["dataset"], "root": paths.get("dataset.root"), "splits": data["splits"],
        "segment": data["segment"],
        "input": f"{', '.join(data['input_features'])} ({data['in_channels']} channels)",
        "classes": f"{data['num_classes']}: {', '.join(data['class_names'] or [])}"}))
    console.print(_table("training", {k.replace("_", " "): v for k, v in training.items()}))
    best, last = info["metrics"]["best"], info["metrics"]["last"] or {}
    if best:
        at = f" at step {best['step']}" if best.get("step") is not None else ""
        value = f"{100 * best['value']:.2f}%" if best["metric"] in PERCENT_METRICS else f"{best['value']:.4f}"
        console.print(f"best {best['metric']}: [bold]{value}[/bold]{at}")
    if last.get("iou"):
        t = Table(title=f"last evaluation: mIoU {100 * last['miou']:.2f}%, mAcc {100 * last['macc']:.2f}%, "
                        f"allAcc {100 * last['allacc']:.2f}%", title_justify="left")
        t.add_column("class")
        t.add_column("IoU %", justify="right")
        for cls, iou in last["iou"].items():
            t.add_row(cls, "n/a" if iou is None else f"{100 * iou:.1f}")
        console.print(t)
    elif not best:
        console.print("no evaluation recorded")


def run(args: argparse.Namespace) -> int:
    info = checkpoint_info(args.checkpoint, load_options(args))
    if args.json:
        print(json.dumps(info))
    else:
        _print(info)
    return 0

"""The demo's sizes and budgets (:class:`DemoSettings`), its three modes and the run config of each method.

The methods compared and their settings are the demo's experiment; this module only states them,
so that the orchestration (:mod:`ditr.demo.pipeline`) and the runs (:mod:`ditr.demo.runs`) read
one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configs import RunConfig, load_preset
from ..errors import DitrError

#: The methods compared, with the preset fragment each merges onto ``synthetic``.
#: d-ditr fine-tunes with method/ptv3 from a student distilled first (ditr.distill).
METHODS = {"3d-only": "method/ptv3", "ditr": "method/ditr", "d-ditr": "method/ptv3"}


@dataclass
class DemoSettings:
    """Sizes and budget of a demo run (:data:`MODES` names three)."""

    train_rooms: int = 24
    val_rooms: int = 6
    points: int = 20000
    views: int = 8
    steps: int = 1200
    batch_size: int = 2
    lr: float = 0.004
    seed: int = 0
    vfm_model: str = "dinov2-tiny-random-reg"
    vfm_checkpoint: str | None = None
    #: D-DITR pretraining needs no labels: it may also distil on this many extra, unlabelled rooms,
    #: for ``distill_steps`` steps (default: ``steps``), with targets fused over views as
    #: ``distill_views`` ("last" = the reference's choice, "mean" = every view that sees a voxel).
    distill_rooms: int = 0
    distill_steps: int | None = None
    distill_views: str = "last"

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        return cls(**{**QUICK, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoSettings:
        return cls(**{**SMOKE, **overrides})


QUICK: dict[str, Any] = dict(train_rooms=16, val_rooms=4, points=12000, steps=400)
#: A first look at every stage in a few minutes: too few rooms and steps for the numbers to mean anything.
SMOKE: dict[str, Any] = dict(train_rooms=6, val_rooms=2, points=6000, views=4, steps=60)


@dataclass(frozen=True)
class Mode:
    """A named size of the demo: what it runs, how long it took here, whether its numbers are a result."""

    name: str
    settings: dict[str, Any]
    #: The time to expect, as docs/demo.md#time derives it.
    expected: str
    is_result: bool


MODES = {
    "smoke": Mode("smoke", SMOKE, "about 2-3 minutes on 2 CPU cores (3 CPU-minutes of work)", is_result=False),
    "quick": Mode("quick", QUICK, "about 12-13 minutes on 2 CPU cores (measured with little other load, "
                  "docs/demo.md#time)", is_result=True),
    "full": Mode("full", {}, "roughly 3x the quick demo (not measured)", is_result=True),
}


def method_config(method: str, settings: DemoSettings, cache_dir: Path, feature_dim: int, precision: str,
                  steps_per_epoch: int) -> RunConfig:
    """The synthetic preset + the method's fragment, with the demo's budget (equal for all methods)."""
    epochs = max(1, settings.steps // steps_per_epoch)
    overrides = [
        f"vfm.model={settings.vfm_model}", f"vfm.cache={cache_dir}", f"vfm.precision={precision}",
        f"trainer.batch_size={settings.batch_size}", f"trainer.epochs={epochs}",
        f"trainer.eval_every_epochs={max(1, epochs // 5)}", f"trainer.seed={settings.seed}",
        f"optim.lr={settings.lr}", "trainer.num_workers=0",
    ]
    if settings.vfm_checkpoint:
        overrides.append(f"vfm.checkpoint={settings.vfm_checkpoint}")
    if method == "ditr":
        overrides.append(f"model.image_channels={feature_dim}")
    return load_preset(["synthetic", METHODS[method]], overrides)


def demo_distill_config(base: RunConfig, feature_dim: int, rooms: int | None = None,
                        steps: int | None = None, view_strategy: str = "last") -> RunConfig:
    """The demo's distillation config: a 3D-only demo config + method/d-ditr.

    The budget is the base config's unless ``steps`` (with the number of distillation ``rooms``,
    which sets the steps per epoch) asks for another; ``view_strategy`` fuses the teacher's targets.
    """
    from ..configs import preset_path
    from ..configs.files import read_config_files

    config = base.merged(read_config_files([preset_path("method/d-ditr")]), "method/d-ditr over the demo config")
    config.distill.head_channels = int(feature_dim)
    config.images.view_strategy = view_strategy  # type: ignore[assignment]
    config.model.image_channels = None
    if steps is not None:
        if rooms is None:
            raise DitrError("demo_distill_config: steps needs the number of distillation rooms")
        per_epoch = -(-rooms // config.trainer.batch_size)
        config.trainer.epochs = max(1, steps // per_epoch)
        config.trainer.eval_every_epochs = max(1, config.trainer.epochs // 5)
    return config

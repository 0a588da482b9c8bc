"""What the demo compares: its runs (:data:`RUNS`), the comparisons it reports (:data:`COMPARISONS`),
its sizes and budgets (:class:`DemoSettings`, three named :data:`MODES`) and the run config of each run.

The runs and their settings are the demo's experiment; this module only states them, so that the
orchestration (:mod:`ditr.demo.pipeline`) and the work (:mod:`ditr.demo.runs`) read one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DitrError

if TYPE_CHECKING:  # the command line reads the run names without importing torch
    from ..configs import RunConfig

#: The 3D input of every run unless it says otherwise: colour and normal, as the paper's PTv3, and the
#: position, which the geometry-only input has too (so that the two differ by the colour alone).
COLOUR_AND_NORMAL = ("coord", "color", "normal")
GEOMETRY_ONLY = ("coord", "normal")


@dataclass(frozen=True)
class RunSpec:
    """One arm of the demo: a model trained with the demo's budget and evaluated on the test rooms.

    ``teacher`` is the 2D model whose features DITR reads or D-DITR distils ("trained": the demo's
    teacher, ``DemoSettings.teacher``; "random": the random-weight control, ``DemoSettings.random_teacher``).
    A D-DITR run distils for ``distill_share`` x ``steps`` and then fine-tunes for ``finetune_share`` x
    ``steps`` with the 3D-only recipe, needing no images at test time.
    """

    name: str
    model: Literal["ptv3", "ditr", "d-ditr"]
    description: str
    teacher: Literal["trained", "random"] | None = None
    input_features: tuple[str, ...] = COLOUR_AND_NORMAL
    distill_share: float = 0.0
    finetune_share: float = 1.0

    @property
    def distils(self) -> bool:
        return self.model == "d-ditr"

    @property
    def needs_images(self) -> bool:
        """Only DITR reads images at test time; D-DITR's student and the PTv3 runs see 3D alone."""
        return self.model == "ditr"

    def finetune_steps(self, steps: int) -> int:
        return max(1, round(steps * self.finetune_share))

    def distill_steps(self, steps: int) -> int:
        return max(1, round(steps * self.distill_share))


RUNS = {spec.name: spec for spec in [
    RunSpec("3d-only", "ptv3", "PTv3 on colour + normal, no images (the paper's 3D baseline)"),
    RunSpec("ditr", "ditr", "PTv3 + the trained teacher's 2D features in every decoder stage", teacher="trained"),
    RunSpec("d-ditr", "d-ditr", "PTv3 distilled from the trained teacher, then fine-tuned with the 3D-only "
            "budget; no images at test time", teacher="trained", distill_share=1.0),
    RunSpec("3d-geometry-only", "ptv3", "PTv3 on position + normal only, no colour, no images",
            input_features=GEOMETRY_ONLY),
    RunSpec("ditr-random-teacher", "ditr", "DITR with the random-weight ViT's features", teacher="random"),
    RunSpec("d-ditr-random-teacher", "d-ditr", "D-DITR distilled from the random-weight ViT", teacher="random",
            distill_share=1.0),
    RunSpec("d-ditr-same-total", "d-ditr", "D-DITR with half the budget distilling and half fine-tuning: the "
            "same total steps as 3d-only", teacher="trained", distill_share=0.5, finetune_share=0.5),
]}
#: The runs of one demo (``make demo``) and of the study (``ditr demo --seeds N``).
DEMO_RUNS = ("3d-only", "ditr", "d-ditr")
STUDY_RUNS = tuple(RUNS)
#: (run, baseline) pairs whose paired difference the results report, when both ran.
COMPARISONS = (
    ("ditr", "3d-only"), ("d-ditr", "3d-only"), ("d-ditr-same-total", "3d-only"), ("3d-only", "3d-geometry-only"),
    ("ditr", "ditr-random-teacher"), ("d-ditr", "d-ditr-random-teacher"), ("ditr-random-teacher", "3d-only"),
    ("d-ditr-random-teacher", "3d-only"),
)


#: The learning rates chosen on seed 0's validation rooms at the quick settings, among 0.004, 0.008,
#: 0.016 and 0.032 for every kind of run (docs/demo.md#how-the-settings-were-chosen).
TUNED_LR = {"ptv3": 0.032, "ditr": 0.032, "d-ditr": 0.016}


def uniform_lr(value: float) -> dict[str, float]:
    """One peak learning rate for every kind of run (``DemoSettings.lr``)."""
    return dict.fromkeys(TUNED_LR, float(value))


@dataclass
class DemoSettings:
    """Sizes and budget of a demo run (:data:`MODES` names three)."""

    train_rooms: int = 24
    #: Rooms the training curves are drawn on and the demo's settings were chosen on.
    val_rooms: int = 6
    #: Rooms the reported numbers come from: nothing is tuned or picked on them.
    test_rooms: int = 8
    points: int = 20000
    views: int = 8
    steps: int = 600
    batch_size: int = 2
    #: Peak learning rate by kind of run (RunSpec.model): each kind's best of the four tried on the
    #: validation rooms (docs/demo.md#how-the-settings-were-chosen); a D-DITR run's for both stages.
    lr: dict[str, float] = field(default_factory=lambda: dict(TUNED_LR))
    seed: int = 0
    #: The 2D model of the runs with teacher "trained" and of those with teacher "random".
    teacher: str = "demo-vit-rooms"
    teacher_checkpoint: str | None = None
    random_teacher: str = "dinov2-tiny-random-reg"
    #: D-DITR pretraining needs no labels: it may also distil on this many extra, unlabelled rooms,
    #: with targets fused over views as ``distill_views`` ("last" = the reference's choice, "mean" =
    #: every view that sees a voxel).
    distill_rooms: int = 0
    distill_views: str = "last"

    @classmethod
    def quick(cls, **overrides: Any) -> DemoSettings:
        return cls(**{**QUICK, **overrides})

    @classmethod
    def smoke(cls, **overrides: Any) -> DemoSettings:
        return cls(**{**SMOKE, **overrides})

    def vfm_of(self, spec: RunSpec) -> str | None:
        """The 2D model ``spec`` reads or distils (None for the runs without images)."""
        return {"trained": self.teacher, "random": self.random_teacher, None: None}[spec.teacher]

    @property
    def rooms_per_seed(self) -> int:
        return self.train_rooms + self.val_rooms + self.test_rooms + self.distill_rooms

    def room_split(self) -> dict[str, range]:
        """Room indices of the demo's room set by role: train, val, test, then unlabelled."""
        bounds, start = {}, 0
        for role, count in [("train", self.train_rooms), ("val", self.val_rooms), ("test", self.test_rooms),
                            ("unlabelled", self.distill_rooms)]:
            bounds[role], start = range(start, start + count), start + count
        return bounds


QUICK: dict[str, Any] = dict(train_rooms=16, val_rooms=4, test_rooms=6, points=12000, steps=200)
#: A first look at every stage in a few minutes: too few rooms and steps for the numbers to mean anything.
SMOKE: dict[str, Any] = dict(train_rooms=6, val_rooms=2, test_rooms=2, points=6000, views=4, steps=40)


@dataclass(frozen=True)
class Mode:
    """A named size of the demo: what it runs, how long it took here, whether its numbers are a result."""

    name: str
    settings: dict[str, Any]
    #: The time to expect, as docs/demo.md#time derives it.
    expected: str
    is_result: bool
    #: The time to expect for the study (every run) per seed, where measured.
    study_expected: str | None = None


MODES = {
    "smoke": Mode("smoke", SMOKE, "about 1 minute on 2 idle CPU cores", is_result=False),
    "quick": Mode("quick", QUICK, "about 6 minutes on 2 idle CPU cores (docs/demo.md#time)", is_result=True,
                  study_expected="about 10-11 minutes per seed on 2 idle CPU cores (docs/demo.md#time)"),
    "full": Mode("full", {}, "roughly 5x the quick demo (not measured)", is_result=True),
}


def _eval_every(steps: int, rooms: int, batch_size: int) -> int:
    """Epochs between validations so that a run of ``steps`` on ``rooms`` is validated about five times."""
    return max(1, steps // -(-rooms // batch_size) // 5)


def run_config(spec: RunSpec, settings: DemoSettings, cache_dir: Path, feature_dims: dict[str, int],
               precision: str) -> RunConfig:
    """The synthetic preset (``synthetic-color`` for an input with colour) + the run's method
    fragment, with the demo's budget.

    For a D-DITR run this is the fine-tuning config (method/ptv3 over the student);
    :func:`distill_config` derives its distillation from it.
    """
    from ..configs import load_preset

    steps = spec.finetune_steps(settings.steps)
    overrides = [
        f"vfm.cache={cache_dir}", f"vfm.precision={precision}",
        f"trainer.batch_size={settings.batch_size}", "trainer.epochs=null", f"trainer.max_steps={steps}",
        f"trainer.eval_every_epochs={_eval_every(steps, settings.train_rooms, settings.batch_size)}",
        f"trainer.seed={settings.seed}",
        f"optim.lr={settings.lr[spec.model]}", "trainer.num_workers=0",
        f"dataset.input_features=[{', '.join(spec.input_features)}]",
    ]
    vfm = settings.vfm_of(spec)
    if vfm is not None:
        overrides.append(f"vfm.model={vfm}")
        if spec.teacher == "trained" and settings.teacher_checkpoint:
            overrides.append(f"vfm.checkpoint={settings.teacher_checkpoint}")
    if spec.model == "ditr":
        assert vfm is not None
        overrides.append(f"model.image_channels={feature_dims[vfm]}")
    rooms = "synthetic-color" if "color" in spec.input_features else "synthetic"
    return load_preset([rooms, "method/ditr" if spec.model == "ditr" else "method/ptv3"], overrides)


def distill_config(finetune: RunConfig, feature_dim: int, rooms: int, steps: int,
                   view_strategy: str = "last") -> RunConfig:
    """D-DITR's distillation: the run's fine-tuning config + method/d-ditr, for ``steps`` steps on
    ``rooms`` rooms (which set the steps per epoch), teacher targets fused by ``view_strategy``."""
    from ..configs import preset_path
    from ..configs.files import read_config_files

    if rooms < 1:
        raise DitrError("distill_config: no rooms to distil on")
    config = finetune.merged(read_config_files([preset_path("method/d-ditr")]), "method/d-ditr over the demo config")
    config.distill.head_channels = int(feature_dim)
    config.images.view_strategy = view_strategy  # type: ignore[assignment]
    config.model.image_channels = None
    config.trainer.max_steps = steps
    config.trainer.eval_every_epochs = _eval_every(steps, rooms, config.trainer.batch_size)
    return config

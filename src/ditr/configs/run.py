"""The typed run configuration: one dataclass per section, and :class:`RunConfig` over them.

Everything a run reads (data, views, VFM, projection, transforms, model, optimizer, trainer, loss,
distillation) is a field here with its one default; nothing else in the package keeps a default
of its own for a configuration key. The YAML presets and ``key=value`` overrides are plain
mappings (:mod:`ditr.configs.files`) typed by :meth:`RunConfig.from_dict`, which checks them
against these classes (:mod:`ditr.configs.schema`): the schema cannot drift from the code.

Sections that configure one object of a lower module are that module's own dataclass
(``projection``: :class:`~ditr.projection.ProjectionConfig`, ``optim``:
:class:`~ditr.engine.optim.OptimConfig`, ``trainer``: :class:`~ditr.engine.trainer.TrainerConfig`,
``loss``: :class:`~ditr.engine.losses.LossConfig`); ``model.ptv3`` holds overrides of
:class:`~ditr.models.ptv3.PTv3Config` fields, checked against that class.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engine.losses import LossConfig
from ..engine.optim import OptimConfig
from ..engine.trainer import TrainerConfig
from ..errors import ConfigError
from ..models.ptv3 import PTv3Config
from ..lifting import ViewFusion
from ..projection import ProjectionConfig
from .files import apply_override, merge, read_config_files
from .schema import check_fields, config_fields, from_mapping, to_mapping

#: Per-point input features a dataset can feed the model, with their widths.
INPUT_FEATURES = {"color": 3, "normal": 3, "strength": 1, "coord": 3}

#: How a sample picks its frames: ``random`` (training), ``evenly`` spaced, ``all`` (fixed rigs).
FrameSelection = Literal["random", "evenly", "all"]


class ModelKind(str, enum.Enum):
    """What a run trains: the 3D-only PTv3, DITR (images in the decoder), or the D-DITR student."""

    PTV3 = "ptv3"
    DITR = "ditr"
    D_DITR = "d-ditr"

    @property
    def uses_images(self) -> bool:
        """Whether the run's samples carry views: DITR reads their features, the D-DITR student
        regresses them (its teacher's targets). The 3D-only PTv3 never loads an image."""
        return self is not ModelKind.PTV3

    @property
    def segments(self) -> bool:
        """Whether the model predicts classes (the D-DITR student predicts 2D features instead)."""
        return self is not ModelKind.D_DITR

    @property
    def needs_images_at_inference(self) -> bool:
        """Whether predicting with a trained model of this kind needs the scene's posed images."""
        return self is ModelKind.DITR


def input_channels(names: Sequence[str]) -> int:
    """Width of the model input ``feat`` for a list of input features (color + normal -> 6)."""
    return sum(INPUT_FEATURES[n] for n in names)


# ------------------------------------------------------------------------------------------ sections
@dataclass
class DatasetConfig:
    """Where the scenes are and what is learnt from them.

    ``splits`` maps a mode (train / val / test) to a split: a name looked up as
    ``ROOT/splits/<name>.txt`` or ``ROOT/<name>/``, a file, or a list of entries.
    """

    name: str = ""
    root: str | None = None
    splits: dict[str, Any] = field(default_factory=dict)
    segment: str | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    ignore_index: int = -1
    input_features: list[str] = field(default_factory=lambda: ["color", "normal"])
    loop: int = 1

    def __post_init__(self) -> None:
        unknown = [n for n in self.input_features if n not in INPUT_FEATURES]
        if unknown:
            raise ValueError(f"input_features: unknown {unknown}; choose from {sorted(INPUT_FEATURES)}")

    @property
    def in_channels(self) -> int:
        return input_channels(self.input_features)


@dataclass
class ImagesConfig:
    """Which frames a sample uses (``train_views`` / ``eval_views`` select them, up to
    ``views_per_sample``) and which of those a point reads its feature from (``view_strategy``),
    at what network input size (``resolution``, H x W)."""

    views_per_sample: int | None = None
    train_views: FrameSelection = "random"
    eval_views: FrameSelection = "evenly"
    pad_views: bool = False
    resolution: list[int] | None = None
    view_strategy: ViewFusion = "last"
    color_jitter: list[float] | None = None


@dataclass
class VFMConfig:
    """The frozen 2D foundation model and where its features come from.

    ``device`` is where the VFM network runs when it runs during a run: the online DITR model,
    the D-DITR teacher, ``ditr predict`` (``auto``: the GPU when there is one).
    ``preprocess_device`` is where data-loader workers resize and normalise images for an online
    VFM (the CPU: workers must not hold GPU memory).
    """

    model: str = "dinov2-vitl14-reg"
    checkpoint: str | None = None
    cache: str | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    pos_interpolation: str = "antialias"
    online: bool = False
    device: str = "auto"
    preprocess_device: str = "cpu"
    download: bool = False


@dataclass
class TransformsConfig:
    """The 3D transform pipelines by mode: lists of ``{type: Name, ...}`` (see ``ditr.data.transforms``)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)

    def for_mode(self, mode: str) -> list[dict[str, Any]]:
        return {"train": self.train, "val": self.val, "test": self.test}[mode]


@dataclass
class Mix3DConfig:
    p: float = 0.0


@dataclass
class TestTimeConfig:
    """Test-time augmentation: each variant is a list of transforms run before voxelisation."""

    variants: list[list[dict[str, Any]]] = field(default_factory=list)


@dataclass
class InjectionConfig:
    """How DITR adds image features to the decoder: which decoder ``stages`` (None: all),
    how they are pooled with the 3D clusters, dropout, and what unseen points get."""

    stages: list[int] | None = None
    missing: Literal["zeros", "learned"] = "zeros"
    pool_reduce: Literal["max", "mean", "sum", "min"] = "max"
    dropout: float = 0.0


@dataclass
class ModelConfig:
    """The network: its kind, a registered PTv3 backbone (``ditr.models.get_config`` name) with
    field overrides in ``ptv3``, the image feature width D and the injection options."""

    name: ModelKind = ModelKind.DITR
    backbone: str = "scannet"
    image_channels: int | None = None
    injection: InjectionConfig = field(default_factory=InjectionConfig)
    ptv3: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ptv3 = check_fields(PTv3Config, self.ptv3, "", "model.ptv3.")  # from_mapping names the file

    @property
    def kind(self) -> ModelKind:
        return self.name


@dataclass
class DistillConfig:
    """D-DITR stage 1: the student's head width (the teacher's D; default ``model.image_channels``),
    the loss, and optional extra sources (preset names or mappings of data sections)."""

    head_channels: int | None = None
    loss: Literal["cosine"] = "cosine"
    datasets: list[str | dict[str, Any]] | None = None


# ------------------------------------------------------------------------------------------ run
@dataclass
class RunConfig:
    """A whole run configuration. Build it with :func:`load_config` / ``load_preset`` or
    :meth:`from_dict`; store it with :meth:`to_dict`."""

    name: str = ""
    description: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    vfm: VFMConfig = field(default_factory=VFMConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    transforms: TransformsConfig = field(default_factory=TransformsConfig)
    mix3d: Mix3DConfig = field(default_factory=Mix3DConfig)
    test_time: TestTimeConfig = field(default_factory=TestTimeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    #: Written by training, never by users: where a fine-tuned model started (a model file's report).
    init: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> RunConfig:
        """Type a plain mapping; unknown keys and wrong types are a ConfigError naming ``where``."""
        return from_mapping(cls, values, where)

    @classmethod
    def coerce(cls, config: RunConfig | Mapping[str, Any], where: str = "config") -> RunConfig:
        """``config`` itself, or the typed form of a mapping (library callers may pass either)."""
        return config if isinstance(config, RunConfig) else cls.from_dict(config, where)

    @classmethod
    def check_keys(cls, values: Mapping[str, Any], where: str) -> None:
        """Raise a ConfigError for unknown keys or wrong types in (a part of) a run config."""
        cls.from_dict(values, where)

    @classmethod
    def from_stored(cls, values: Mapping[str, Any], where: str) -> RunConfig:
        """The run config stored in a model file, written by this or an earlier ditr.

        Earlier configs had ``images.enabled`` (now the model kind says whether a run uses images)
        and used ``vfm.device`` for where data workers preprocess images (now ``preprocess_device``;
        ``device`` is where the VFM runs, by default wherever is fastest).
        """
        stored: dict[str, Any] = copy.deepcopy(dict(values))
        images = stored.get("images")
        if isinstance(images, dict) and "enabled" in images:
            images.pop("enabled")
            vfm = stored.get("vfm")
            if isinstance(vfm, dict) and "device" in vfm and "preprocess_device" not in vfm:
                vfm["preprocess_device"] = vfm.pop("device")
        trainer = stored.get("trainer")
        if isinstance(trainer, dict):
            keep = {f.name for f in config_fields(TrainerConfig)}
            stored["trainer"] = {k: v for k, v in trainer.items() if k in keep}
        return cls.from_dict(stored, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for checkpoints, bundles and ``--print-config``); :meth:`from_dict` reads it back."""
        return to_mapping(self)

    def with_overrides(self, overrides: Sequence[str], where: str = "override") -> RunConfig:
        """A copy with ``section.key=value`` overrides applied (values parsed as YAML)."""
        values = self.to_dict()
        for item in overrides:
            apply_override(values, item)
        return RunConfig.from_dict(values, f"{where} {list(overrides)}")

    def merged(self, fragment: Mapping[str, Any], where: str = "config") -> RunConfig:
        """A copy with a mapping of sections merged over it (mappings key by key)."""
        return RunConfig.from_dict(merge(self.to_dict(), fragment), where)

    def copy(self) -> RunConfig:
        return copy.deepcopy(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(copy.deepcopy(self), **changes)

    # -------------------------------------------------------------------------------- meaning
    @property
    def kind(self) -> ModelKind:
        return self.model.name

    @property
    def uses_images(self) -> bool:
        """Whether this run's samples carry views (see :attr:`ModelKind.uses_images`)."""
        return self.model.name.uses_images

    def num_classes(self) -> int:
        """``dataset.num_classes``; a ConfigError when it is not set."""
        if not self.dataset.num_classes:
            raise ConfigError("config", "dataset.num_classes", "is not set")
        return int(self.dataset.num_classes)


def load_config(paths: str | Sequence[str], overrides: Sequence[str] = ()) -> RunConfig:
    """The typed run config of YAML files (merged in order, with ``_base_`` chains) plus overrides.

    Each file and the overrides are checked on their own first, so an error names the file (or
    ``overrides``) and the dotted key.
    """
    files = [paths] if isinstance(paths, str) or not isinstance(paths, Sequence) else list(paths)
    values = read_config_files(files, check=RunConfig.check_keys)
    for item in overrides:
        apply_override(values, item)
    where = f"overrides {list(overrides)}" if overrides else ", ".join(str(f) for f in files)
    return RunConfig.from_dict(values, where)

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
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .. import checks
from ..engine.losses import LossConfig
from ..engine.optim import OptimConfig
from ..engine.trainer import TrainerConfig
from ..errors import ConfigError, DitrError
from ..models.ptv3 import MAX_CHANNELS, PTv3Config, get_config
from ..lifting import ViewFusion
from ..projection import ProjectionConfig
from ..vfm.color_jitter import ColorJitter
from ..vfm.registry import POS_INTERPOLATIONS, get_spec
from .files import apply_override, merge, read_config_files
from .schema import check_fields, config_fields, from_mapping, to_mapping

#: Per-point input features a dataset can feed the model, with their widths.
INPUT_FEATURES = {"color": 3, "normal": 3, "strength": 1, "coord": 3}

#: How a sample picks its frames: ``random`` (training), ``strided`` (the reference's evaluation
#: rule: every ``n // count``-th frame from the first), ``evenly`` spaced from first to last, ``all``
#: (fixed rigs). Implemented by :func:`ditr.data.dataset.pick_frames`.
FrameSelection = Literal["random", "strided", "evenly", "all"]
#: Dataset modes a split can be given for.
SPLIT_MODES = ("train", "val", "test")
#: The scene format's ignore label (docs/scene-format.md): the only ``dataset.ignore_index``.
IGNORE_LABEL = -1
#: Most classes a label set can have: 16-bit label images keep 65535 for "ignore".
MAX_CLASSES = 65535
#: Largest network input side (pixels) and views per sample: sanity limits against typos.
MAX_RESOLUTION = 8192
MAX_VIEWS = 4096
#: Most cached colour-jitter variants per image (each costs one more cache-full of features).
MAX_JITTER_VARIANTS = 256


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
    ``ROOT/splits/<name>.txt`` or ``ROOT/<name>/``, a file, or a list of entries (scenes, or any of
    those: ``[train, val, test]`` is the union of three split files).
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
            raise ConfigError("", "input_features", f"unknown {unknown}; choose from {sorted(INPUT_FEATURES)}")
        if not self.input_features:
            raise ConfigError("", "input_features", f"is empty: give at least one of {sorted(INPUT_FEATURES)}")
        checks.distinct("input_features", self.input_features)
        checks.non_empty("root", self.root, optional=True)
        for mode, split in self.splits.items():
            if mode not in SPLIT_MODES:
                raise ConfigError("", f"splits.{mode}", f"unknown mode; splits are given for {', '.join(SPLIT_MODES)}")
            if isinstance(split, list):
                if not split:
                    raise ConfigError("", f"splits.{mode}", "is an empty list of scenes")
                for i, entry in enumerate(split):
                    checks.non_empty(f"splits.{mode}[{i}]", entry)
            else:
                checks.non_empty(f"splits.{mode}", split, optional=True)
        if self.segment is not None and not re.fullmatch(r"segment[A-Za-z0-9_-]*", self.segment):
            raise ConfigError("", "segment", f"must name a label array of the scenes (segment, segment20, ...: a "
                                             f"segment*.npy file), got {self.segment!r}")
        checks.positive_int("num_classes", self.num_classes, optional=True, high=MAX_CLASSES)
        if self.class_names is not None:
            if not self.class_names:
                raise ConfigError("", "class_names", "is an empty list (give one name per class, or null)")
            checks.distinct("class_names", self.class_names)
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ConfigError("", "class_names", f"has {len(self.class_names)} names for num_classes = "
                                                     f"{self.num_classes}: give one name per class")
        if self.ignore_index != IGNORE_LABEL or isinstance(self.ignore_index, bool):
            raise ConfigError("", "ignore_index", f"must be {IGNORE_LABEL} (the scene format's ignore label; another "
                                                  f"value would drop a real class or crash on -1), "
                                                  f"got {self.ignore_index!r}")
        checks.positive_int("loop", self.loop, high=10_000)

    @property
    def in_channels(self) -> int:
        return input_channels(self.input_features)


@dataclass
class ImagesConfig:
    """Which frames a sample uses (``train_views`` / ``eval_views`` select them, up to
    ``views_per_sample``) and which of those a point reads its feature from (``view_strategy``),
    at what network input size (``resolution``, H x W).

    Training colour jitter (docs/features.md#colour-jitter): ``color_jitter`` = (brightness,
    contrast, saturation, hue) strengths or null, applied to a view with probability
    ``color_jitter_p``; ``jitter_variants`` = K draws the jittered views from K fixed variants per
    image, which the feature cache holds (``ditr features --jitter-variants K``); 0 jitters afresh on
    every draw, which needs ``vfm.online``."""

    views_per_sample: int | None = None
    train_views: FrameSelection = "random"
    eval_views: FrameSelection = "evenly"
    pad_views: bool = False
    resolution: list[int] | None = None
    view_strategy: ViewFusion = "last"
    color_jitter: list[float] | None = None
    color_jitter_p: float = 0.5
    jitter_variants: int = 0

    def __post_init__(self) -> None:
        checks.positive_int("views_per_sample", self.views_per_sample, optional=True, high=MAX_VIEWS)
        if self.resolution is not None:
            checks.numbers("resolution", self.resolution, length=2, low=1, high=MAX_RESOLUTION, integer=True)
        if self.color_jitter is not None:  # (brightness, contrast, saturation, hue) as torchvision's ColorJitter
            checks.numbers("color_jitter", self.color_jitter, length=4, low=0, high=1)
            checks.number("color_jitter[3]", self.color_jitter[3], low=0, high=0.5)
        checks.number("color_jitter_p", self.color_jitter_p, low=0, high=1)
        checks.number("jitter_variants", self.jitter_variants, low=0, high=MAX_JITTER_VARIANTS, integer=True)
        if self.jitter_variants and self.color_jitter is None:
            raise ConfigError("", "jitter_variants", f"is {self.jitter_variants} but color_jitter is null: give the "
                                                     "variants' strength (e.g. [0.4, 0.4, 0.2, 0.1]), or 0")

    def jitter(self) -> ColorJitter | None:
        """The training colour jitter these settings ask for; None without ``color_jitter``."""
        if self.color_jitter is None:
            return None
        return ColorJitter(tuple(self.color_jitter), self.color_jitter_p, self.jitter_variants)


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

    def __post_init__(self) -> None:
        try:
            get_spec(self.model)
        except DitrError as exc:
            raise ConfigError("", "model", str(exc)) from None
        checks.non_empty("checkpoint", self.checkpoint, optional=True)
        checks.non_empty("cache", self.cache, optional=True)
        checks.one_of("pos_interpolation", self.pos_interpolation, POS_INTERPOLATIONS)
        for key in ("device", "preprocess_device"):
            _check_device(key, getattr(self, key))


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

    def __post_init__(self) -> None:
        checks.number("p", self.p, low=0, high=1)


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

    def __post_init__(self) -> None:
        if self.stages is not None:
            if not self.stages:
                raise ConfigError("", "stages", "is empty: no decoder stage would see an image (null means all "
                                                "stages; a model without images is model.name: ptv3)")
            for i, stage in enumerate(self.stages):
                checks.number(f"stages[{i}]", stage, low=0, integer=True)
            checks.distinct("stages", self.stages)
        checks.number("dropout", self.dropout, low=0, high=1, high_open=True)


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
        self.ptv3 = check_fields(PTv3Config, self.ptv3, "", "ptv3.")  # from_mapping names the file and section
        checks.positive_int("image_channels", self.image_channels, optional=True, high=MAX_CHANNELS)
        try:  # the backbone with its overrides: every field's range and the stages' relations
            backbone, _ = get_config(self.backbone, **self.ptv3)
        except KeyError as exc:
            raise ConfigError("", "backbone", str(exc.args[0])) from None
        except ConfigError as exc:
            raise ConfigError("", f"ptv3.{exc.key}" if exc.key else "ptv3", exc.problem) from None
        stages = len(backbone.dec_depths)
        if self.injection.stages is not None and any(s >= stages for s in self.injection.stages):
            raise ConfigError("", "injection.stages", f"{list(self.injection.stages)}: backbone {self.backbone!r} "
                                                      f"has decoder stages 0..{stages - 1}")

    @property
    def kind(self) -> ModelKind:
        return self.name


@dataclass
class DistillConfig:
    """D-DITR stage 1: the student's head width (the teacher's D; default ``model.image_channels``),
    the loss, and optional extra sources (preset names, or mappings of data sections with an
    optional ``preset`` they start from).

    With several sources, ``batching: per_dataset`` (the reference's way) draws every batch from one
    source, cycling through them in order with ``ratios[s]`` consecutive batches of source ``s``
    (default 1 each); the first source's data epoch is the run's epoch. ``mixed`` shuffles all
    sources together, so a batch mixes them.
    """

    head_channels: int | None = None
    loss: Literal["cosine"] = "cosine"
    datasets: list[str | dict[str, Any]] | None = None
    batching: Literal["per_dataset", "mixed"] = "per_dataset"
    ratios: list[int] | None = None

    def __post_init__(self) -> None:
        checks.positive_int("head_channels", self.head_channels, optional=True, high=MAX_CHANNELS)
        for i, source in enumerate(self.datasets or []):
            if isinstance(source, str):
                checks.non_empty(f"datasets[{i}]", source)
            elif "preset" in source:
                checks.non_empty(f"datasets[{i}].preset", source["preset"])
        if self.ratios is not None:
            sources = len(self.datasets) if self.datasets else 1  # none: the run's own data
            if self.batching != "per_dataset":
                raise ConfigError("", "ratios", f"apply to batching: per_dataset, not {self.batching!r} "
                                                "(set distill.ratios=null)")
            if len(self.ratios) != sources:
                raise ConfigError("", "ratios", f"has {len(self.ratios)} entries for {sources} source(s) "
                                                "(distill.datasets): give one per source")
            for i, ratio in enumerate(self.ratios):
                checks.positive_int(f"ratios[{i}]", ratio, high=10_000)


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

    def __post_init__(self) -> None:
        """Relations between sections (each section checks its own ranges)."""
        classes, weights = self.dataset.num_classes, self.loss.class_weights
        if classes is not None and weights is not None and len(weights) != classes:
            raise ConfigError("", "loss.class_weights", f"has {len(weights)} weights for dataset.num_classes = "
                                                        f"{classes}: give one weight per class")
        resolution = self.images.resolution
        if resolution is not None and self.model.name.uses_images:
            patch = get_spec(self.vfm.model).patch_size
            if resolution[0] % patch or resolution[1] % patch:
                fit = [max(patch, round(r / patch) * patch) for r in resolution]
                raise ConfigError("", "images.resolution", f"{list(resolution)} must be multiples of the patch size "
                                                           f"{patch} of vfm.model {self.vfm.model!r} (e.g. {fit})")

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


def _check_device(key: str, value: str) -> None:
    """``auto`` or a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    if value == "auto":
        return
    try:
        torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError("", key, f"must be auto or a torch device (cpu, cuda, cuda:1, mps), got {value!r}") from None


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

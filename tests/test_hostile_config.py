"""Attack cases for the run configuration: values that type-check but would train a bad model.

Every schema key (and every backbone field under ``model.ptv3``, and the fields of an optimizer
group) is set to a wrong type, a negative, zero, NaN, infinity, a huge value and an empty value.
Each case must end in a one-line :class:`ConfigError` naming the key, or in a valid config: one
that round-trips, holds no NaN or infinity, and whose optimizer, schedule and loss work.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch

from ditr.configs import RunConfig, load_preset
from ditr.configs.schema import config_fields, schema_keys
from ditr.data.transforms import build_transforms
from ditr.engine.losses import SegmentationCriterion
from ditr.engine.optim import build
from ditr.engine.trainer import TrainerConfig
from ditr.errors import ConfigError
from ditr.models.ptv3 import PTv3Config
from ditr.projection import ProjectionConfig

NAN = float("nan")
INF = float("inf")
#: (label, value): a wrong type, negatives, zero, NaN, infinities, huge and empty values.
HOSTILE: list[tuple[str, Any]] = [
    ("text", "text"), ("mapping", {"a": 1}), ("bool", True), ("null", None),
    ("negative", -1), ("negative float", -0.5), ("zero", 0), ("zero float", 0.0),
    ("nan", NAN), ("inf", INF), ("-inf", -INF), ("huge int", 10**12), ("huge float", 1e300),
    ("empty string", ""), ("empty list", []), ("empty mapping", {}),
    ("list of nan", [NAN, NAN]), ("list of negatives", [-1, -1]), ("list of zeros", [0, 0]),
    ("list of huge", [10**12, 10**12]), ("list of text", ["", "x"]),
]


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return load_preset(["synthetic", "method/ditr"]).to_dict()


def _set(values: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    values = copy.deepcopy(values)
    *sections, leaf = key.split(".")
    node = values
    for part in sections:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)
    return values


def _finite(value: Any, path: str = "") -> None:
    if isinstance(value, float):
        assert math.isfinite(value), f"{path} = {value} passed the checks"
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")


def _works(config: RunConfig) -> None:
    """What a run does with the sections first: optimizer and schedule steps, a loss, the transforms."""
    data = config.to_dict()
    _finite(data)
    assert RunConfig.from_dict(data) == config
    model = torch.nn.Linear(3, 4)
    optimizer, scheduler = build(model, config.optim, 10)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert all(math.isfinite(g["lr"]) and g["lr"] >= 0 for g in optimizer.param_groups)
    classes = config.dataset.num_classes or 4
    criterion = SegmentationCriterion(**dataclasses.asdict(config.loss), ignore_index=config.dataset.ignore_index)
    loss = criterion({"logits": torch.randn(16, classes)}, {"segment": torch.randint(0, classes, (16,))})["loss"]
    assert torch.isfinite(loss)
    for mode in ("train", "val", "test"):
        build_transforms(config.transforms.for_mode(mode), f"transforms.{mode}")


def _check(values: dict[str, Any], key: str, label: str) -> str:
    try:
        config = RunConfig.from_dict(values, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message, f"{key}={label}: a multi-line error: {message!r}"
        assert message.startswith("fuzz.yaml: "), f"{key}={label}: the error does not name the file: {message}"
        leaf = key.split(".")[-1].split("[")[0]
        assert leaf in message, f"{key}={label}: the error does not name the key: {message}"
        return "error"
    _works(config)
    return "valid"


def test_every_schema_key_survives_every_hostile_value(base):
    keys = schema_keys(RunConfig)
    assert len(keys) > 70
    outcomes: dict[str, dict[str, str]] = {}
    for key in keys:
        outcomes[key] = {label: _check(_set(base, key, value), key, label) for label, value in HOSTILE}
    # NaN and infinity are never a valid number anywhere
    for key, results in outcomes.items():
        for label in ("nan", "inf", "-inf"):
            assert results[label] == "error" or key in ("init",), (key, label)


def test_every_backbone_field_survives_every_hostile_value(base):
    for f in config_fields(PTv3Config):
        key = f"model.ptv3.{f.name}"
        for label, value in HOSTILE:
            _check(_set(base, key, value), key, label)


def test_every_optimizer_group_field_survives_every_hostile_value(base):
    for name in ("keyword", "lr_scale", "weight_decay"):
        for label, value in HOSTILE:
            values = copy.deepcopy(base)
            values["optim"]["groups"] = [{"keyword": "block", "lr_scale": 0.1, name: value}]
            _check(values, f"optim.groups[0].{name}", label)


# ------------------------------------------------------------------------------------------ the issue's cases
@pytest.mark.parametrize("override,key", [
    ("trainer.grad_clip=-1", "trainer.grad_clip"),  # flipped the gradient's sign: the loss rose
    ("trainer.grad_clip=0", "trainer.grad_clip"),  # zeroed the gradient
    ("trainer.grad_clip=.nan", "trainer.grad_clip"),
    ("projection.depth_tolerance=-1", "projection.depth_tolerance"),  # every point invisible
    ("projection.depth_tolerance=.nan", "projection.depth_tolerance"),
    ("projection.max_depth=.nan", "projection.max_depth"),
    ("dataset.class_names=[a, b]", "dataset.class_names"),  # fewer names than classes
    ("dataset.ignore_index=3", "dataset.ignore_index"),  # would silently drop class 3
    ("dataset.segment=''", "dataset.segment"),
    ("dataset.segment=../labels", "dataset.segment"),
    ("trainer.epochs=0", "trainer.epochs"),
    ("trainer.max_steps=-5", "trainer.max_steps"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.log_every_steps=0", "trainer.log_every_steps"),  # a ZeroDivisionError at the first step
    ("trainer.seed=-1", "trainer.seed"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.weight_decay=.inf", "optim.weight_decay"),
    ("optim.anneal_strategy=cosine", "optim.anneal_strategy"),
    ("images.views_per_sample=0", "images.views_per_sample"),
    ("images.resolution=[100, 100]", "images.resolution"),  # not a multiple of the patch size 14
    ("images.resolution=[0, 14]", "images.resolution[0]"),
    ("loss.ce_weight=0", "loss.ce_weight"),  # with lovasz_weight 0 below: a loss of 0
    ("loss.class_weights=[1, 2]", "loss.class_weights"),
    ("loss.label_smoothing=1", "loss.label_smoothing"),
    ("model.injection.stages=[]", "model.injection.stages"),
    ("model.injection.stages=[7]", "model.injection.stages"),
    ("model.backbone=huge", "model.backbone"),
    ("model.ptv3.enc_num_head=[3, 3, 3, 3, 3]", "model.ptv3.enc_num_head[0]"),
    ("vfm.model=dinov9", "vfm.model"),
    ("vfm.device=gpu", "vfm.device"),
    ("mix3d.p=2", "mix3d.p"),
])
def test_issue_cases_are_one_line_errors_naming_the_key(override, key):
    overrides = [override] + (["loss.lovasz_weight=0"] if override == "loss.ce_weight=0" else [])
    with pytest.raises(ConfigError) as info:
        load_preset(["synthetic", "method/ditr"], overrides)
    message = str(info.value)
    assert f": {key}: " in message and "\n" not in message, message


def test_sections_check_themselves_outside_a_run_config():
    """Library callers building the lower modules' configs directly get the same checks."""
    with pytest.raises(ConfigError, match=r"^grad_clip: must be a finite number > 0 or null, got -1"):
        TrainerConfig(grad_clip=-1)
    with pytest.raises(ConfigError, match=r"^depth_tolerance: .*got nan"):
        ProjectionConfig(depth_tolerance=NAN)
    with pytest.raises(ConfigError, match=r"^enc_channels\[0\]"):
        PTv3Config(enc_channels=(0, 64, 128, 256, 512))
    assert TrainerConfig(grad_clip=1.0).grad_clip == 1.0

"""Reference PTv3 / DITR state dicts (Pointcept ``model_best.pth``, manifests) mapped onto our models.

Our module names equal the reference's, so converting a reference state dict is a matter of
unwrapping (``state_dict`` / ``model`` nesting, ``module.`` prefixes from DDP), adding or dropping
the ``backbone.`` prefix to suit the target module, setting aside weights that never belong to the
target module (a non-frozen DINOv2 under ``backbone.img_enc.``; the ``seg_head.*`` of a segmentor
loaded into a bare backbone) and checking shapes. Everything that does not fit is listed in a
:class:`LoadReport` rather than silently skipped; a non-strict load that skipped something says so
in one warning line.

BatchNorm's ``num_batches_tracked`` counters may be absent (older checkpoints, hand-made state
dicts): torch's own strict load accepts that, and so do we (``report.defaulted`` lists them; they
keep the model's value and play no part at inference, the momentum being fixed).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import nn

from ..errors import DitrError
from ..fileio import read_torch_file, torch_load_problem
from .ptv3 import PointTransformerV3, PTv3Segmentor

# Keys of the image encoder that the reference may store next to the point model; not ours to load.
IGNORED_PREFIXES = ("backbone.img_enc.",)
#: The segmentation head: set aside (not an error) when a segmentor's state dict meets a bare backbone.
HEAD_PREFIX = "seg_head."
#: BatchNorm's batch counters: torch fills them in when a state dict lacks them, so do we.
COUNTER_SUFFIX = ".num_batches_tracked"


class ReferenceCheckpointError(DitrError):
    """A reference checkpoint that cannot be read or does not fit the requested model."""


@dataclass
class LoadReport:
    """What happened to every key when a state dict met a model."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    #: Keys set aside on purpose: the image encoder's and, into a bare backbone, the head's.
    ignored: list[str] = field(default_factory=list)
    #: BatchNorm ``num_batches_tracked`` counters the state dict lacks (left at the model's value).
    defaulted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model key was found with the right shape and nothing was left over."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    @property
    def head_keys(self) -> list[str]:
        """Set-aside keys of the segmentation head (a segmentor's state dict into a bare backbone)."""
        return [k for k in self.ignored if k.startswith(HEAD_PREFIX)]

    @property
    def image_encoder_keys(self) -> list[str]:
        """Set-aside keys of a non-frozen image encoder stored with the point model."""
        return [k for k in self.ignored if not k.startswith(HEAD_PREFIX)]

    def summary(self) -> str:
        """The counts in one line (``str(report)`` lists every key)."""
        total = len(self.loaded) + len(self.missing) + len(self.shape_mismatch)
        parts = [f"loaded {len(self.loaded)} of {total} model tensors"]
        parts += [f"{len(items)} {what}" for what, items in (
            ("missing", self.missing), ("unexpected", self.unexpected), ("of another shape", self.shape_mismatch),
            ("head tensors set aside", self.head_keys), ("image-encoder tensors set aside", self.image_encoder_keys),
            ("BatchNorm counters absent (defaulted)", self.defaulted)) if items]
        return ", ".join(parts)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.head_keys:
            lines.append(f"set aside {len(self.head_keys)} head tensors ({HEAD_PREFIX}*: the target has no head)")
        if self.image_encoder_keys:
            lines.append(f"ignored {len(self.image_encoder_keys)} image-encoder tensors ({IGNORED_PREFIXES[0]}*)")
        if self.defaulted:
            lines.append(f"{len(self.defaulted)} BatchNorm num_batches_tracked absent (defaulted)")
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items))
        if self.shape_mismatch:
            lines.append(
                f"shape mismatch ({len(self.shape_mismatch)}): "
                + ", ".join(f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatch)
            )
        return "; ".join(lines)


def extract_state_dict(obj: Any) -> dict[str, Any]:
    """Unwrap Pointcept / DDP style checkpoints into a flat ``{key: tensor}`` dict."""
    for nest in ("state_dict", "model"):
        if isinstance(obj, Mapping) and nest in obj and isinstance(obj[nest], Mapping):
            obj = obj[nest]
    if not isinstance(obj, Mapping):
        raise ReferenceCheckpointError(f"expected a state dict (mapping), got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def convert_reference_state_dict(
    state: Mapping[str, Any], model: nn.Module
) -> tuple[dict[str, Any], list[str]]:
    """Map reference keys onto ``model``'s naming. Returns (converted state, ignored keys)."""
    state = extract_state_dict(state)
    is_segmentor = isinstance(model, PTv3Segmentor)
    has_prefix = any(k.startswith("backbone.") for k in state)
    converted: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in state.items():
        full = key if has_prefix or key.startswith("seg_head.") else "backbone." + key
        if full.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        if not is_segmentor:
            if full.startswith("seg_head."):
                ignored.append(key)
                continue
            full = full[len("backbone."):]
        converted[full] = value
    return converted, ignored


def compare_state(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]) -> LoadReport:
    """Report for ``given`` key -> shape against the ``expected`` key -> shape of a model."""
    report = LoadReport()
    for key, shape in given.items():
        if key not in expected:
            report.unexpected.append(key)
        elif tuple(expected[key]) != tuple(shape):
            report.shape_mismatch.append((key, tuple(shape), tuple(expected[key])))
        else:
            report.loaded.append(key)
    absent = [k for k in expected if k not in given]
    report.defaulted = [k for k in absent if k.endswith(COUNTER_SUFFIX)]
    report.missing = [k for k in absent if not k.endswith(COUNTER_SUFFIX)]
    return report


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_reference_state_dict(
    model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True, reference_compat: bool = True
) -> LoadReport:
    """Load a reference PT-v3m1 / DITR PT-v3m1-image checkpoint (file or state dict) into ``model``.

    Loading turns on ``reference_compat`` (the checkpoint was trained with the reference's
    behaviour); a DITR checkpoint (image projections present) also selects DITR's depth formula.
    With ``strict`` any missing / unexpected / mis-shaped key raises :class:`ReferenceCheckpointError`
    carrying the report; otherwise the matching tensors are loaded, what was skipped is said in one
    warning line (:meth:`LoadReport.summary`) and the full report returned. Absent BatchNorm
    ``num_batches_tracked`` counters are never an error (``report.defaulted``). A file is read as
    data (``weights_only``) with the NumPy scalars of a reference trainer checkpoint allowed.
    """
    if isinstance(source, (str, Path)):
        try:
            source = cast("Mapping[str, Any]", read_torch_file(source))
        except Exception as exc:  # unreadable or pickled with non-tensor objects
            raise ReferenceCheckpointError(f"{source}: cannot read checkpoint: {torch_load_problem(exc)}") from None
    state, ignored = convert_reference_state_dict(source, model)
    report = compare_state(_shapes(model.state_dict()), _shapes(state))
    report.ignored = ignored
    if strict and not report.ok:
        raise ReferenceCheckpointError(f"reference checkpoint does not fit the model: {report}")
    if not report.ok:
        warnings.warn(f"reference checkpoint loaded partially: {report.summary()} (the returned report lists them)",
                      stacklevel=2)
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    backbone = cast(PointTransformerV3, model.backbone if isinstance(model, PTv3Segmentor) else model)
    backbone.reference_compat = reference_compat
    if any(".proj_image_feat." in k for k in report.loaded):
        backbone.config.depth_formula = "ditr"
    return report


def manifest_report(model: nn.Module, manifest: str | Path | Mapping[str, Any]) -> LoadReport:
    """Check a reference manifest (``[key, shape, dtype]`` entries) against a model, by name and shape."""
    if isinstance(manifest, (str, Path)):
        manifest = cast("Mapping[str, Any]", json.loads(Path(manifest).read_text()))
    shapes = {key: tuple(shape) for key, shape, _dtype in manifest["state_dict"]}
    converted, ignored = convert_reference_state_dict(shapes, model)
    report = compare_state(_shapes(model.state_dict()), converted)
    report.ignored = ignored
    return report


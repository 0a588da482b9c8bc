"""Models published by the reference trainers (the DITR release, Pointcept), read without running their code.

A published model is an experiment folder of the reference trainer (``config.py`` + ``model/
model_best.pth`` or ``model/model_last.pth``; the authors' zoo, :mod:`ditr.zoo`), or one of its
``.pth`` files alone. Reading one gives the weights in ditr's naming and a ditr run configuration
(:class:`~ditr.configs.RunConfig`) that rebuilds the model, from three sources that are
cross-checked against each other:

* the **weights** (the authority on shapes): the classes (rows of ``seg_head``), the input width
  (the stem conv), DITR or not (``proj_image_feat`` layers) and the width of the image features
  (hence the VFM size), a distilled student (a ``Linear`` head that is not ``seg_head``), the
  encoder / decoder widths and depths;
* ``config.py``, the reference trainer's dump of its configuration: Python, but **never executed**.
  :func:`read_reference_config` walks its syntax tree and keeps the top-level assignments whose
  values are literals (numbers, strings, ``None``, lists, tuples, dicts and ``dict(...)`` calls,
  names assigned earlier); everything else (imports, calls, expressions) is ignored and listed;
* the **zoo entry** when the folder is one of the authors' published models.

A contradiction between them (``config.py`` says 20 classes, the head has 200; DINOv2 ViT-L, the
image projections take 768 channels) is an error naming both. What the weights cannot tell is
taken from ``config.py`` or the zoo entry, else :attr:`PublishedInfo.unresolved` holds the one line
that asks for it: DINOv2 ViT-L from DINOv3 ViT-L (both 1024 wide: ``--vfm``), and a 3D-only model
of the DITR release from a Pointcept one (``--origin ditr|pointcept``: their serialization-depth
rules differ, ``docs/ptv3.md``).

A published model is rebuilt with the reference's behaviour (``model.ptv3.reference_compat``: the
stale decoder CPE input and the order shuffles of the reference forward, docs/ptv3.md) and its
origin's depth rule; ``deterministic`` turns both order shuffles off (:class:`LoadOptions`).
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from . import zoo
from .configs import ModelKind, RunConfig, input_channels, load_preset
from .errors import DitrError
from .models.ptv3 import PTv3Config
from .models.reference import IGNORED_PREFIXES, extract_state_dict

#: Where a reference model comes from, which fixes its serialization-depth rule (docs/ptv3.md).
ORIGINS = ("ditr", "pointcept")
#: ``PTv3Config.depth_formula`` of each origin.
DEPTH_FORMULA = {"ditr": "ditr", "pointcept": "pointcept"}
#: The weight files of a published folder, in order of preference.
WEIGHT_NAMES = ("model_best.pth", "model_last.pth")
#: Largest config.py read (a dumped config is tens of kB).
MAX_CONFIG_BYTES = 4 * 2**20


@dataclass(frozen=True)
class LoadOptions:
    """How to read a model file (``ditr info / predict / evaluate / export / train --init /
    distill --evaluate``): the command-line options ``--origin``, ``--vfm``, ``--download`` and
    ``--deterministic``.

    ``origin`` (``ditr`` / ``pointcept``) and ``vfm`` (a :mod:`ditr.vfm.registry` name) settle what
    a reference model's weights cannot tell; ``download`` allows fetching a zoo entry's folder and
    a DITR model's VFM weights from the Hugging Face hub (into its cache); ``deterministic`` turns
    off both serialization-order shuffles of the reference forward (level 0 and at every pooling),
    so that repeated predictions are identical; ``hub_cache`` overrides the Hugging Face cache
    directory.
    """

    origin: str | None = None
    vfm: str | None = None
    download: bool = False
    deterministic: bool = False
    hub_cache: str | None = None

    def __post_init__(self) -> None:
        if self.origin is not None and self.origin not in ORIGINS:
            raise DitrError(f"--origin must be one of {', '.join(ORIGINS)}, not {self.origin!r}")


# ------------------------------------------------------------------------------------------ config.py
@dataclass
class ReferenceConfig:
    """The literal assignments of a reference ``config.py`` (read, never run) and what was skipped."""

    path: Path
    values: dict[str, Any]
    #: Assignments (dotted names) whose value is not a literal: neither read nor run.
    ignored: list[str] = field(default_factory=list)
    #: Top-level statements that are not assignments (imports, calls, definitions): never run.
    skipped_statements: int = 0


class _NotLiteral(Exception):
    pass


def _literal(node: ast.AST, known: Mapping[str, Any], ignored: list[str], where: str) -> Any:
    """The value of a literal expression; ``_NotLiteral`` for anything that would need running code."""
    if isinstance(node, ast.Constant) and not isinstance(node.value, type(Ellipsis)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, known, ignored, where)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
        raise _NotLiteral
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e, known, ignored, f"{where}[{i}]") for i, e in enumerate(node.elts)]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                ignored.append(f"{where}.**")
                continue
            key = _literal(k, known, ignored, where)
            if not isinstance(key, (str, int, float, bool, tuple)) and key is not None:
                raise _NotLiteral
            try:
                out[key] = _literal(v, known, ignored, f"{where}.{key}")
            except _NotLiteral:
                ignored.append(f"{where}.{key}")
        return out
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"
            and not node.args):
        out = {}
        for kw in node.keywords:
            if kw.arg is None:  # dict(**other)
                ignored.append(f"{where}.**")
                continue
            try:
                out[kw.arg] = _literal(kw.value, known, ignored, f"{where}.{kw.arg}")
            except _NotLiteral:
                ignored.append(f"{where}.{kw.arg}")
        return out
    if isinstance(node, ast.Name) and node.id in known:
        return copy.deepcopy(known[node.id])
    raise _NotLiteral


def read_reference_config(path: str | Path) -> ReferenceConfig:
    """Read a reference ``config.py`` WITHOUT executing it: its syntax tree, literal assignments only.

    Top-level ``name = <literal>`` statements are kept, where a literal is a number, string,
    ``None`` / ``True`` / ``False``, a list / tuple / set / dict of literals, a ``dict(key=literal,
    ...)`` call, or a name assigned a literal above. A dict entry that is not a literal is dropped
    (its dotted name listed in ``ignored``), as is an assignment whose value is not; imports,
    function definitions, calls and every other statement are never evaluated.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise DitrError(f"{path}: {size} bytes, too large for a dumped reference config")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DitrError(f"{path}: cannot be read ({exc})") from None
    try:
        tree = ast.parse(text, str(path))
    except (SyntaxError, ValueError) as exc:
        raise DitrError(f"{path}: not a Python config file ({exc})") from None
    values: dict[str, Any] = {}
    ignored: list[str] = []
    skipped = 0
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            skipped += 1
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if len(names) != len(targets):  # a[0] = ..., a.b = ..., unpacking: not a config entry
            skipped += 1
            continue
        try:
            result = _literal(value, values, ignored, names[0])
        except (_NotLiteral, RecursionError):
            ignored.append(names[0])
            for name in names:
                values.pop(name, None)
            continue
        for name in names:
            values[name] = copy.deepcopy(result)
    return ReferenceConfig(path, values, ignored, skipped)


# ------------------------------------------------------------------------------------------ weights
@dataclass
class WeightFacts:
    """What a reference state dict (in ditr's naming) says about its model."""

    kind: ModelKind | None          # None: a backbone without a head
    in_channels: int
    num_classes: int | None         # rows of seg_head
    image_channels: int | None      # input width of the decoder's image projections (DITR)
    image_stages: list[int]         # decoder stages with an image projection
    head_channels: int | None       # a distilled student's head width (the teacher's D)
    enc_channels: tuple[int, ...]
    enc_depths: tuple[int, ...]
    dec_channels: tuple[int, ...]
    dec_depths: tuple[int, ...]
    mlp_ratio: float | None

    def geometry(self) -> dict[str, Any]:
        return {"enc_channels": self.enc_channels, "enc_depths": self.enc_depths,
                "dec_channels": self.dec_channels, "dec_depths": self.dec_depths}


_BLOCK = re.compile(r"^backbone\.(enc|dec)\.(enc|dec)(\d+)\.block(\d+)\.attn\.qkv\.weight$")
_IMAGE = re.compile(r"^backbone\.dec\.dec(\d+)\.up\.proj_image_feat\.1\.weight$")
_STEM = "backbone.embedding.stem.conv.weight"


def reference_weights(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """A reference state dict in ditr's naming, and the keys set aside (a stored image encoder).

    ``module.`` prefixes are stripped, a backbone-only dict gets ``backbone.``, and a distilled
    student's head (its one ``Linear`` outside the backbone, ``proj`` in the DITR release) becomes
    ``distill_head``. Every other key keeps its name: the reference's module names are ditr's.
    """
    flat = extract_state_dict(state)
    if not any(k.startswith(("backbone.", "seg_head.")) for k in flat):
        flat = {f"backbone.{k}": v for k, v in flat.items()}
    weights: dict[str, Tensor] = {}
    aside: list[str] = []
    for key, value in flat.items():
        if key.startswith(IGNORED_PREFIXES):
            aside.append(key)
        else:
            weights[key] = value
    if "seg_head.weight" not in weights:
        heads = {k.rsplit(".", 1)[0] for k, v in weights.items()
                 if not k.startswith("backbone.") and k.endswith(".weight") and getattr(v, "ndim", 0) == 2}
        if len(heads) == 1:
            head = heads.pop()
            weights = {("distill_head." + k[len(head) + 1:] if k.startswith(head + ".") else k): v
                       for k, v in weights.items()}
    return weights, aside


def weight_facts(weights: Mapping[str, Tensor], where: str) -> WeightFacts:
    """Read the model's shape off its weights (:func:`reference_weights` naming)."""
    if _STEM not in weights:
        raise DitrError(f"{where}: not a model file ditr reads (a state dict without {_STEM}: not a PT-v3m1 / "
                        "PT-v3m1-image model)")
    stem = weights[_STEM]
    blocks: dict[tuple[str, int], dict[int, int]] = {}
    for key, value in weights.items():
        m = _BLOCK.match(key)
        if m:
            blocks.setdefault((m.group(1), int(m.group(3))), {})[int(m.group(4))] = int(value.shape[1])

    def stages(part: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        found = sorted(s for p, s in blocks if p == part)
        if found != list(range(len(found))):
            raise DitrError(f"{where}: {part}oder stages {found} are not numbered 0..n-1")
        chans = tuple(next(iter(blocks[(part, s)].values())) for s in found)
        depths = tuple(max(blocks[(part, s)]) + 1 for s in found)
        return chans, depths

    enc_channels, enc_depths = stages("enc")
    dec_channels, dec_depths = stages("dec")
    fc1 = weights.get("backbone.enc.enc0.block0.mlp.0.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / float(fc1.shape[1]) if fc1 is not None else None
    image = {int(m.group(1)): int(v.shape[1]) for k, v in weights.items() if (m := _IMAGE.match(k))}
    widths = set(image.values())
    if len(widths) > 1:
        raise DitrError(f"{where}: the decoder's image projections take different widths {sorted(widths)}")
    head = weights.get("seg_head.weight")
    student = weights.get("distill_head.weight")
    kind: ModelKind | None
    if head is not None:
        kind = ModelKind.DITR if image else ModelKind.PTV3
    elif student is not None:
        kind = ModelKind.D_DITR
    else:
        kind = None
    return WeightFacts(kind=kind, in_channels=int(stem.shape[-1]),
                       num_classes=int(head.shape[0]) if head is not None else None,
                       image_channels=widths.pop() if widths else None, image_stages=sorted(image),
                       head_channels=int(student.shape[0]) if student is not None else None,
                       enc_channels=enc_channels, enc_depths=enc_depths, dec_channels=dec_channels,
                       dec_depths=dec_depths, mlp_ratio=mlp_ratio)


# ------------------------------------------------------------------------------------------ the published model
@dataclass
class PublishedInfo:
    """Where a reference model came from and how each of its settings was decided (``ditr info``)."""

    source: str                           # what the user named: a zoo name, a folder, a file
    weights: str                          # the .pth read
    config_py: str | None = None
    zoo: str | None = None                # the zoo entry's name
    reported_miou: float | None = None    # the authors' validation mIoU (zoo)
    origin: str | None = None
    vfm: str | None = None
    preset: str | None = None
    decided: dict[str, str] = field(default_factory=dict)    # setting -> what decided it
    unresolved: dict[str, str] = field(default_factory=dict)  # what -> the one line asking for it
    notes: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)       # weight keys not loaded (an image encoder)
    config_ignored: list[str] = field(default_factory=list)  # config.py entries not read (not literals)
    reference_compat: bool = True
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}


def _contradiction(where: str, what: str, one: str, other: str) -> DitrError:
    return DitrError(f"{where}: contradictory {what}: {one}, but {other}")


_DATASETS = (("scannet200", "scannet200"), ("scannetpp", None), ("scannet", "scannet"), ("s3dis", "s3dis"),
             ("nuscenes", "nuscenes"), ("semantickitti", "semantickitti"), ("kitti", "semantickitti"),
             ("waymo", "waymo"), ("structured3d", "structured3d"))
#: (classes, input channels) -> preset, for a state dict without config.py or zoo entry.
_BY_SHAPE = {(20, 6): "scannet", (200, 6): "scannet200", (13, 6): "s3dis", (16, 4): "nuscenes",
             (19, 4): "semantickitti", (22, 4): "waymo"}
#: Backbone options of the reference that ditr does not implement (a truthy value is an error).
_UNSUPPORTED = ("enable_rpe", "pdnorm_bn", "pdnorm_ln", "init_values", "layer_scale")
_PTV3_FIELDS = ("order", "stride", "enc_depths", "enc_channels", "enc_num_head", "enc_patch_size",
                "dec_depths", "dec_channels", "dec_num_head", "dec_patch_size", "mlp_ratio", "qkv_bias", "qk_scale",
                "attn_drop", "proj_drop", "drop_path", "pre_norm", "shuffle_orders")


def _find_backbone(model: Any) -> dict[str, Any] | None:
    """The PTv3 backbone dict of a reference ``model = dict(...)`` (segmentor or distiller), breadth first."""
    queue = [model]
    while queue:
        item = queue.pop(0)
        if isinstance(item, dict):
            kind = str(item.get("type", ""))
            if kind.lower().startswith("pt-v3"):
                return item
            queue += [v for v in item.values() if isinstance(v, (dict, list, tuple))]
        elif isinstance(item, (list, tuple)):
            queue += list(item)
    return None


def _other_backbone(model: Any) -> str | None:
    """The type of a non-PTv3 backbone (SpUNet, MinkUNet ...) in a reference model dict."""
    if isinstance(model, dict):
        backbone = model.get("backbone")
        if isinstance(backbone, dict) and backbone.get("type"):
            return str(backbone["type"])
    return None


class _Reader:
    """Decides every setting of one reference model (weights + config.py + zoo entry + options)."""

    def __init__(self, weights: Mapping[str, Tensor], ref: ReferenceConfig | None, entry: zoo.ZooEntry | None,
                 options: LoadOptions, info: PublishedInfo):
        self.ref, self.entry, self.options, self.info = ref, entry, options, info
        self.where = info.config_py or info.weights
        self.facts = weight_facts(weights, info.weights)
        values = ref.values if ref else {}
        model = values.get("model") if isinstance(values.get("model"), dict) else {}
        self.model: dict[str, Any] = model or {}
        self.backbone = _find_backbone(self.model) if ref else None
        if ref and self.backbone is None and _other_backbone(self.model):
            raise DitrError(f"{ref.path}: a {_other_backbone(self.model)} model; ditr implements PTv3 "
                            "(PT-v3m1 / PT-v3m1-image) only")

    # -------------------------------------------------------------------------- each setting
    def kind(self) -> ModelKind | None:
        facts, kind = self.facts, self.facts.kind
        if self.backbone is not None:
            image = str(self.backbone.get("type", "")).lower().endswith("-image")
            if image != bool(facts.image_channels):
                raise _contradiction(self.where, "model", f"config.py builds a {self.backbone.get('type')} backbone",
                                     "the weights " + ("have" if facts.image_channels else "have no")
                                     + " image projections (proj_image_feat)")
        if self.entry is not None and kind is not None and kind.value != self.entry.method:
            raise _contradiction(self.where, "model", f"the zoo lists {self.entry.name} as a {self.entry.method} model",
                                 f"the weights hold a {kind.value} model")
        return kind

    def origin(self) -> str | None:
        votes: list[tuple[str, str]] = []
        if self.facts.image_channels:
            votes.append(("ditr", "the weights have DITR's image projections"))
        if self.backbone is not None:
            keys = set(self.backbone)
            if any(str(k).startswith("dinov2") for k in keys):
                votes.append(("ditr", "config.py has DITR's dinov2 options"))
            elif "enc_mode" in keys:
                votes.append(("pointcept", "config.py names enc_mode (Pointcept after its cls_mode rename)"))
        if "distill" in str(self.model.get("type", "")).lower():
            votes.append(("ditr", "config.py trains a distiller (D-DITR is the DITR release's)"))
        weight = self.ref.values.get("weight") if self.ref else None
        if isinstance(weight, str) and "distill" in weight.lower():
            votes.append(("ditr", "config.py starts from a D-DITR distillation checkpoint"))
        if self.entry is not None:
            votes.append((self.entry.origin, f"the DITR release publishes {self.entry.name}"))
        given = self.options.origin
        for origin, how in votes:
            if given is not None and origin != given:
                raise _contradiction(self.where, "origin", f"--origin {given}", f"{how} (origin {origin})")
        if given is not None:
            self.info.decided["origin"] = "--origin"
            return given
        if len({o for o, _ in votes}) > 1:
            (a, how_a), (b, how_b) = votes[0], next(v for v in votes if v[0] != votes[0][0])
            raise _contradiction(self.where, "origin", f"{how_a} ({a})", f"{how_b} ({b})")
        if votes:
            self.info.decided["origin"] = votes[0][1]
            return votes[0][0]
        self.info.unresolved["origin"] = (
            f"{self.info.source}: cannot tell whether this 3D-only model comes from the DITR release or from "
            "Pointcept (their serialization depths differ, docs/ptv3.md): pass --origin ditr or --origin pointcept")
        return None

    def vfm(self, kind: ModelKind | None) -> str | None:
        from .vfm.registry import get_spec, list_models

        width = self.facts.image_channels if kind is ModelKind.DITR else self.facts.head_channels
        if kind not in (ModelKind.DITR, ModelKind.D_DITR) or width is None:
            return None
        what = "image features" if kind is ModelKind.DITR else "teacher features (its head's width)"
        config_name = _config_vfm(self.backbone) if self.backbone is not None else None
        named: list[tuple[str, str]] = []
        if self.options.vfm:
            named.append((get_spec(self.options.vfm).name, "--vfm"))
        if self.entry is not None and self.entry.vfm_model:
            named.append((self.entry.vfm_model, f"the zoo lists {self.entry.name} with {self.entry.vfm}"))
        if config_name:
            named.append((config_name, f"config.py names dinov2={self.backbone.get('dinov2')!r}"))  # type: ignore[union-attr]
        for name, how in named:
            spec = get_spec(name)
            if spec.hidden_size != width:
                raise _contradiction(self.where, "VFM", f"{how} ({name}, {spec.hidden_size} wide)",
                                     f"the weights take {width}-wide {what}")
        if named:
            # The first is the authority: --vfm, else the authors' zoo table, else config.py.
            (name, how), rest = named[0], named[1:]
            if how == "--vfm" and rest and rest[0][0] != name:
                raise _contradiction(self.where, "VFM", f"--vfm {name}", f"{rest[0][1]} ({rest[0][0]})")
            if config_name and config_name != name:
                self.info.notes.append(f"config.py suggests {config_name}; {name} ({how}) is used")
            self.info.decided["vfm"] = how
            return name
        candidates = [s.name for s in (get_spec(n) for n in list_models())
                      if s.hidden_size == width and not s.random_weights
                      and (s.family == "dinov3" or s.num_registers)]
        if len(candidates) == 1:
            self.info.decided["vfm"] = f"the only VFM with {width}-wide features"
            return candidates[0]
        options = (" or ".join(f"--vfm {c}" for c in candidates) if candidates
                   else "--vfm NAME (ditr features --help lists the names)")
        self.info.unresolved["vfm"] = (f"{self.info.source}: cannot tell which VFM its {width}-wide {what} come "
                                       f"from: pass {options}")
        return None

    def num_classes(self) -> int | None:
        classes = self.facts.num_classes
        values = self.ref.values if self.ref else {}
        data = values.get("data") if isinstance(values.get("data"), dict) else {}
        stated = [(self.model.get("num_classes"), "config.py model.num_classes"),
                  (values.get("num_classes"), "config.py num_classes"),
                  (data.get("num_classes"), "config.py data.num_classes")]  # type: ignore[union-attr]
        if self.entry is not None and self.entry.num_classes:
            stated.append((self.entry.num_classes, f"the zoo lists {self.entry.name} with"))
        for value, how in stated:
            if classes is not None and isinstance(value, int) and value != classes:
                raise _contradiction(self.where, "classes", f"{how} {value}", f"the head (seg_head) has {classes} rows")
        return classes

    def class_names(self, classes: int | None, preset: str) -> list[str] | None:
        """config.py's ``data.names``; the preset's own spelling where they are the same names
        (Pointcept writes "refridgerator"), so that scenes imported by ditr are scored."""
        own = load_preset([preset]).dataset.class_names
        data = self.ref.values.get("data") if self.ref else None
        names = data.get("names") if isinstance(data, dict) else None
        if classes and isinstance(names, (list, tuple)) and len(names) == classes and all(
                isinstance(n, str) for n in names):
            if own and len(own) == classes and list(own) != list(names) and all(
                    difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() >= 0.85 for a, b in zip(own, names)):
                differ = [f"{a!r} for {b!r}" for a, b in zip(names, own) if a != b]
                self.info.notes.append(f"config.py spells {', '.join(differ)}: the {preset} preset's names are used")
                self.info.decided["class_names"] = f"config.py data.names (as the {preset} preset spells them)"
                return list(own)
            self.info.decided["class_names"] = "config.py data.names"
            return list(names)
        if own and len(own) == classes:
            self.info.decided["class_names"] = f"the {preset} preset"
            return list(own)
        return None

    def preset(self, classes: int | None) -> str:
        facts = self.facts
        choice: tuple[str, str] | None = None
        if self.entry is not None:
            choice = (self.entry.preset, f"the zoo entry {self.entry.name}")
        elif self.ref is not None:
            name = _config_dataset(self.ref.values)
            if name:
                preset = next((p for key, p in _DATASETS if key in name.lower().replace("_", "").replace("-", "")),
                              None)
                if preset:
                    choice = (preset, f"config.py dataset {name}")
        if choice is None and classes is not None and (classes, facts.in_channels) in _BY_SHAPE:
            choice = (_BY_SHAPE[(classes, facts.in_channels)],
                      f"{classes} classes and {facts.in_channels} input channels")
        if choice is None:
            fallback = {6: "scannet", 4: "nuscenes"}.get(facts.in_channels)
            if fallback is None:
                raise DitrError(f"{self.where}: cannot tell the input features of a model with "
                                f"{facts.in_channels} input channels (ditr's presets read 6: colour + normal, "
                                "or 4: xyz + strength)")
            choice = (fallback, f"{facts.in_channels} input channels (no dataset named)")
            self.info.notes.append(f"dataset settings (voxel size, views, transforms) taken from the {fallback} "
                                   "preset; give the model's config.py for its own")
        preset, how = choice
        width = input_channels(load_preset([preset]).dataset.input_features)
        if width != facts.in_channels:
            raise _contradiction(self.where, "input", f"{how} means {width} input channels",
                                 f"the stem conv takes {facts.in_channels}")
        self.info.decided["preset"] = how
        return preset

    def ptv3(self) -> dict[str, Any] | None:
        """``model.ptv3`` overrides of the reference default backbone, or None (recorded as unresolved)."""
        facts, default = self.facts, PTv3Config()
        overrides: dict[str, Any] = {}
        if self.backbone is not None:
            bb = self.backbone
            if isinstance(bb.get("in_channels"), int) and bb["in_channels"] != facts.in_channels:
                raise _contradiction(self.where, "input", f"config.py in_channels={bb['in_channels']}",
                                     f"the stem conv takes {facts.in_channels}")
            bad = [k for k in _UNSUPPORTED if bb.get(k)]
            if bad:
                raise DitrError(f"{self.where}: the backbone uses {', '.join(f'{k}={bb[k]!r}' for k in bad)}, "
                                "which ditr's PTv3 does not implement")
            for name in _PTV3_FIELDS:
                if name in bb:
                    value = tuple(bb[name]) if isinstance(bb[name], list) else bb[name]
                    if value != getattr(default, name):
                        overrides[name] = list(value) if isinstance(value, tuple) else value
            enc_mode = bb.get("enc_mode", bb.get("cls_mode", False))
            if enc_mode:
                raise DitrError(f"{self.where}: an encoder-only (classification) backbone; ditr segments points")
            stated = {k: tuple(overrides.get(k, getattr(default, k))) for k in facts.geometry()}
            for key, value in facts.geometry().items():
                if stated[key] != value:
                    raise _contradiction(self.where, "backbone", f"config.py {key}={list(stated[key])}",
                                         f"the weights have {list(value)}")
            self.info.decided["backbone"] = "config.py"
        else:
            same = all(tuple(getattr(default, k)) == v for k, v in facts.geometry().items())
            if not same or (facts.mlp_ratio is not None and facts.mlp_ratio != default.mlp_ratio):
                self.info.unresolved["backbone"] = (
                    f"{self.info.source}: a PTv3 of non-standard size ({facts.geometry()}) without its config.py: "
                    "attention heads and patch sizes are not in the weights; put the reference config.py next to "
                    "it (in its folder, or the one above model/)")
                return None
            self.info.decided["backbone"] = ("the weights (the reference PT-v3m1 sizes; heads, patch sizes and "
                                             "strides assumed the reference's)")
        return overrides


def _config_vfm(backbone: Mapping[str, Any]) -> str | None:
    """The ditr VFM name that DITR's ``dinov2=...`` backbone option names (a size or a timm name)."""
    value = backbone.get("dinov2")
    if not isinstance(value, str):
        return None
    text = value.lower()
    sizes = {"small": "s", "base": "b", "large": "l", "giant": "g", "huge": "h"}
    if "dinov3" in text:
        for word, size in (*sizes.items(), ("vits", "s"), ("vitb", "b"), ("vitl", "l"), ("vith", "h"), ("7b", "7b")):
            if word in text:
                return {"h": "dinov3-vith16plus", "7b": "dinov3-vit7b16"}.get(size, f"dinov3-vit{size}16")
        return None
    for word, size in sizes.items():
        if word in text or re.search(rf"vit{size}\b|vit{size}14", text):
            return f"dinov2-vit{size}14-reg" if size != "h" else None
    return None


def _config_resolution(values: Mapping[str, Any]) -> list[int] | None:
    """(H, W) of the image resize in a reference config's validation / test pipeline, if it has one."""
    data = values.get("data")
    queue: list[Any] = [data.get(k) for k in ("val", "test")] if isinstance(data, dict) else []
    while queue:
        item = queue.pop(0)
        if isinstance(item, dict):
            kind = str(item.get("type", "")).lower()
            if "image" in kind and "resize" in kind:
                h, w = item.get("height"), item.get("width")
                if isinstance(h, int) and isinstance(w, int):
                    return [h, w]
                size = item.get("size")
                if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
                    return [int(size[0]), int(size[1])]
            queue += [v for v in item.values() if isinstance(v, (dict, list, tuple))]
        elif isinstance(item, (list, tuple)):
            queue += list(item)
    return None


def _config_dataset(values: Mapping[str, Any]) -> str | None:
    """The dataset class a reference config trains on (``dataset_type`` or ``data.train.type``)."""
    if isinstance(values.get("dataset_type"), str):
        return str(values["dataset_type"])
    data = values.get("data")
    train = data.get("train") if isinstance(data, dict) else None
    if isinstance(train, dict):
        if isinstance(train.get("type"), str) and "concat" not in train["type"].lower():
            return str(train["type"])
        for item in train.get("datasets", []) if isinstance(train.get("datasets"), list) else []:
            if isinstance(item, dict) and isinstance(item.get("type"), str):
                return str(item["type"])
    return None


def _record(raw: Any, kind: ModelKind | None) -> dict[str, Any]:
    """``ditr info``'s training record from a reference trainer checkpoint (epoch, best metric)."""
    if not isinstance(raw, Mapping):
        return {}
    record: dict[str, Any] = {}
    if isinstance(raw.get("epoch"), int):
        record["epoch"] = int(raw["epoch"])
    best = raw.get("best_metric_value")
    try:
        value = float(best) if best is not None else None
    except (TypeError, ValueError):
        value = None
    if value is not None and math.isfinite(value):
        metric = "val mIoU" if kind in (ModelKind.PTV3, ModelKind.DITR) else "-(val loss)"
        record["best"] = {"metric": metric, "value": value, "step": None}
    return record


def describe(raw: Any, weights_path: Path, source: str, options: LoadOptions, *, config_py: Path | None = None,
             entry: zoo.ZooEntry | None = None) -> tuple[dict[str, Tensor], RunConfig | None, dict[str, Any],
                                                         PublishedInfo]:
    """(weights in ditr's naming, run config or None, training record, provenance) of a reference file.

    ``raw`` is the file's content (a trainer checkpoint or a bare state dict), ``config_py`` its
    configuration and ``entry`` its zoo entry when known. Contradictions raise; what cannot be
    decided is left in ``info.unresolved`` (and the run config is then None).
    """
    try:
        weights, aside = reference_weights(raw)
    except DitrError as exc:
        raise DitrError(f"{weights_path}: not a model file ({exc})") from None
    if not weights or not all(isinstance(v, Tensor) for v in weights.values()):
        raise DitrError(f"{weights_path}: not a model file (a torch file, but not a state dict of tensors)")
    ref = read_reference_config(config_py) if config_py is not None else None
    info = PublishedInfo(source=source, weights=str(weights_path), config_py=str(config_py) if config_py else None,
                         zoo=entry.name if entry else None, reported_miou=entry.miou if entry else None,
                         set_aside=aside, config_ignored=list(ref.ignored) if ref else [],
                         deterministic=options.deterministic)
    reader = _Reader(weights, ref, entry, options, info)
    kind = reader.kind()
    info.origin = reader.origin()
    info.vfm = reader.vfm(kind)
    record = _record(raw, kind)
    if kind is None:
        info.unresolved["model"] = (f"{source}: holds a PTv3 backbone without a head (neither seg_head nor a "
                                    "distillation head): use it to initialise a model (ditr train ... --init)")
        return weights, None, record, info
    classes = reader.num_classes()
    info.preset = reader.preset(classes)
    names = reader.class_names(classes, info.preset)
    ptv3 = reader.ptv3()
    if ptv3 is None or info.origin is None or (info.vfm is None and kind is not ModelKind.PTV3):
        return weights, None, record, info
    ptv3.update(reference_compat=True, depth_formula=DEPTH_FORMULA[info.origin])
    if options.deterministic:
        ptv3.update(shuffle_orders=False, compat_pooling_shuffle=False)
    facts = reader.facts
    fragment: dict[str, Any] = {
        "name": entry.name if entry else Path(source).name or "published",
        "description": f"published {kind.value} model read from {source} (origin {info.origin})",
        "model": {"backbone": "scannet", "ptv3": ptv3,
                  "image_channels": facts.image_channels if kind is ModelKind.DITR else None},
    }
    if kind is ModelKind.DITR:
        stages = facts.image_stages
        injection: dict[str, Any] = {"stages": None if stages == list(range(len(facts.dec_depths))) else stages}
        drop = reader.backbone.get("dinov2_drop") if reader.backbone else None
        if isinstance(drop, (int, float)) and drop:
            injection["dropout"] = float(drop)
        fragment["model"]["injection"] = injection
    if kind.segments:
        fragment["dataset"] = {"num_classes": classes, "class_names": names}
    if info.vfm is not None:
        fragment["vfm"] = {"model": info.vfm}
    resolution = _config_resolution(ref.values) if ref is not None and kind.uses_images else None
    if resolution is not None:
        fragment["images"] = {"resolution": resolution}
        info.decided["resolution"] = "config.py ImageResize"
    if kind is ModelKind.D_DITR:
        fragment["distill"] = {"head_channels": facts.head_channels}
    config = load_preset([info.preset, f"method/{kind.value}"]).merged(fragment, f"published model {source}")
    return weights, config, record, info


# ------------------------------------------------------------------------------------------ folders
def find_weights(folder: Path) -> Path:
    """The weight file of a published folder: ``model/model_best.pth``, else ``model/model_last.pth``,
    else the only ``*.pth`` of a ``model/`` directory (searched below ``folder``, outside ``code/``)."""
    candidates = [folder / "model"] + sorted(p for p in folder.rglob("model") if p.is_dir() and "code" not in
                                             p.relative_to(folder).parts)
    for directory in candidates:
        for name in WEIGHT_NAMES:
            if (directory / name).is_file():
                return directory / name
        found = sorted(directory.glob("*.pth")) if directory.is_dir() else []
        if len(found) == 1:
            return found[0]
    raise DitrError(f"{folder}: not a published model folder (no model/{' or model/'.join(WEIGHT_NAMES)}), "
                    "nor a ditr run directory (best.pt / last.pt)")


def find_config(weights: Path, folder: Path | None = None) -> Path | None:
    """The ``config.py`` of a weight file: in the published folder, beside the file, or one level up
    (``EXP/model/model_best.pth`` -> ``EXP/config.py``)."""
    places = ([folder] if folder is not None else []) + [weights.parent, weights.parent.parent]
    for place in places:
        if (place / "config.py").is_file():
            return place / "config.py"
    return None

"""Published DITR / D-DITR models: the zoo, reference folders and files, config.py never executed,
cross-checks, loading (NumPy scalars, BN counters, partial loads), the commands, fine-tuning.

Every published-layout folder here is built from random weights in the reference trainer's format:
``config.py`` (a dumped reference config) and ``model/model_best.pth`` = ``{"epoch", "state_dict"
(module. prefixed), "optimizer", "scheduler", "scaler", "best_metric_value" (a NumPy float64)}``.
Nothing touches the network: the hub is a prepared Hugging Face cache directory in offline mode.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.cli import main
from ditr.configs import load_preset
from ditr.errors import DitrError
from ditr.model_files import LoadOptions, init_model, load_init, load_model, read_model_file
from ditr.models.ptv3 import PTv3Config, PTv3Segmentor, get_config
from ditr.models.reference import load_reference_state_dict
from ditr.models.student import DistillStudent
from ditr.published import read_reference_config
from ditr.scene import Scene
from conftest import SHARED, wall_and_box_scene

pytestmark = pytest.mark.usefixtures("single_thread")

CHECKPOINTS = SHARED / "checkpoints"
TINY = dict(order=("z", "z-trans", "hilbert", "hilbert-trans"), stride=(2, 2, 2, 2), enc_depths=(1, 1, 1, 1, 1),
            enc_channels=(8, 16, 16, 32, 32), enc_num_head=(1, 2, 2, 4, 4), enc_patch_size=(16,) * 5,
            dec_depths=(1, 1, 1, 1), dec_channels=(16, 16, 16, 32), dec_num_head=(2, 2, 2, 4),
            dec_patch_size=(16,) * 4, mlp_ratio=2)


# ------------------------------------------------------------------------------------------ helpers
def reference_backbone(image: bool = False, **changes) -> dict:
    """The backbone dict of a reference config (the DITR release's PT-v3m1 / PT-v3m1-image), tiny sizes."""
    backbone = dict(type="PT-v3m1-image" if image else "PT-v3m1", in_channels=6, **TINY, qkv_bias=True,
                    qk_scale=None, attn_drop=0.0, proj_drop=0.0, drop_path=0.3, pre_norm=True, shuffle_orders=True,
                    enable_rpe=False, enable_flash=True, upcast_attention=False, upcast_softmax=False, cls_mode=False,
                    pdnorm_bn=False, pdnorm_ln=False, pdnorm_decouple=True, pdnorm_adaptive=False, pdnorm_affine=True,
                    pdnorm_conditions=("ScanNet", "S3DIS", "Structured3D"))
    if image:
        backbone.update(init_values=None, dinov2="large", dinov2_missing_embedding=False, dinov2_drop=0.0,
                        dinov2_frozen=True)
    backbone.update(changes)
    return backbone


def reference_config(backbone: dict, num_classes: int | None = 20, dataset: str = "ScanNetDataset",
                     model_type: str = "DefaultSegmentorV2", **extra) -> dict:
    """The top-level assignments of a dumped reference config.py."""
    model = dict(type=model_type, backbone_out_channels=backbone["dec_channels"][0], backbone=backbone,
                 criteria=[dict(type="CrossEntropyLoss", loss_weight=1.0, ignore_index=-1),
                           dict(type="LovaszLoss", mode="multiclass", loss_weight=1.0, ignore_index=-1)])
    if num_classes is not None:
        model["num_classes"] = num_classes
    values = dict(weight=None, resume=False, evaluate=True, seed=12345, save_path="exp/scannet/semseg-ptv3",
                  batch_size=12, epoch=800, eval_epoch=100,
                  optimizer=dict(type="AdamW", lr=0.006, weight_decay=0.05),
                  scheduler=dict(type="OneCycleLR", max_lr=[0.006, 0.0006], pct_start=0.05, anneal_strategy="cos",
                                 div_factor=10.0, final_div_factor=1000.0),
                  param_dicts=[dict(keyword="block", lr=0.0006)], model=model, dataset_type=dataset,
                  data=dict(num_classes=num_classes, ignore_index=-1,
                            train=dict(type=dataset, split="train", data_root="data/scannet", loop=8)))
    values.update(extra)
    return values


def render(value) -> str:
    """Python source of a value as the reference trainer dumps it (dicts as dict(...))."""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={render(v)}" for k, v in value.items()) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(render(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def config_py(values: dict) -> str:
    return "".join(f"{k} = {render(v)}\n" for k, v in values.items())


def random_bn_stats(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so that loading them (or not) shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def tiny_model(num_classes: int | None = 20, image: int | None = None, head: int | None = None,
               seed: int = 0) -> torch.nn.Module:
    """A random tiny PTv3 segmentor (``image``: DITR with that feature width; ``head``: a student)."""
    torch.manual_seed(seed)
    config, _ = get_config("tiny", in_channels=6, image_channels=image)
    model = DistillStudent(config, head) if head else PTv3Segmentor(config, num_classes)
    return random_bn_stats(model, seed)


BEST = np.float64(0.4123)  # SemSegEvaluator's mIoU: a NumPy scalar


def trainer_checkpoint(state: dict, best=BEST, optimizer: bool = True) -> dict:
    """The dict the reference trainer saves (multi-GPU: ``module.`` keys)."""
    params = [torch.nn.Parameter(v.clone()) for v in state.values() if v.is_floating_point()][:4]
    opt = torch.optim.AdamW(params, lr=0.006, weight_decay=0.05)
    if optimizer:
        sum(p.sum() for p in params).backward()
        opt.step()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.006, total_steps=100)
    return {"epoch": 3, "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items()),
            "optimizer": opt.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0},
            "best_metric_value": best}


def published_folder(folder: Path, model: torch.nn.Module, values: dict | None, *, drop_counters: bool = False,
                     legacy_numpy: bool = False, weights: str = "model_best.pth") -> Path:
    """A reference experiment folder: config.py (when ``values``) + model/<weights>."""
    state = model.state_dict()
    if drop_counters:
        state = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    (folder / "model").mkdir(parents=True, exist_ok=True)
    if values is not None:
        (folder / "config.py").write_text(config_py(values))
    (folder / "train.log").write_text("[2024-09-07 12:00:00] epoch 1 ...\n")
    path = folder / "model" / weights
    torch.save(trainer_checkpoint(state), path)
    if legacy_numpy:  # as NumPy 1 pickles a scalar: numpy.core.multiarray.scalar
        rewrite_pickle(path, b"numpy._core.multiarray", b"numpy.core.multiarray")
    return folder


def rewrite_pickle(path: Path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item.filename, data)
    path.write_bytes(out.getvalue())


def scene_dir(tmp_path: Path) -> Path:
    """The wall-and-box scene (one camera, depth) with ScanNet-style labels and normals."""
    scene = wall_and_box_scene()
    scene.attributes["segment20"] = scene.attributes.pop("segment")
    normal = np.zeros_like(scene.coord)
    normal[:, 1] = -1.0
    scene.attributes["normal"] = normal
    scene.meta = {}
    return scene.save(tmp_path / "scene")


def cli_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def batch_of(scene: Path, config) -> dict:
    from ditr.data import SceneDataset, collate

    return collate([SceneDataset([scene], None, config, "val").get(0, np.random.default_rng(0))])


@pytest.fixture(scope="module")
def ptv3_folder(tmp_path_factory) -> Path:
    """A 3D-only model of the DITR release (a D-DITR fine-tune: config.py starts from a distillation)."""
    folder = tmp_path_factory.mktemp("pub") / "semseg-ptv3_weight=distill"
    values = reference_config(reference_backbone(), weight="exp/scannet200/distill-ptv3/model/model_last.pth")
    names = load_preset(["scannet"]).dataset.class_names
    values["data"]["names"] = [{"refrigerator": "refridgerator"}.get(n, n) for n in names]  # Pointcept's spelling
    return published_folder(folder, tiny_model(20), values)


# ------------------------------------------------------------------------------------------ config.py
def test_config_py_is_read_from_its_syntax_tree_never_run(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "config.py").write_text(f"""
import os
open({str(marker)!r}, "w").write("ran")
num_classes = 20
names = ["wall", "floor"]
model = dict(type="DefaultSegmentorV2", num_classes=num_classes, neg=-1.5,
             backbone=dict(type="PT-v3m1", order=("z", "hilbert"), cwd=os.getcwd(), x=__import__("os").system("true")),
             extra={{"a": 1, **{{"b": 2}}}})
hook = print("side effect")
def f():
    return open({str(marker)!r}, "w")
class C:
    x = f()
if True:
    surprise = f()
data: dict = dict(names=names, other=dict(**model))
""")
    ref = read_reference_config(tmp_path / "config.py")
    assert not marker.exists()
    assert ref.values["num_classes"] == 20 and ref.values["names"] == ["wall", "floor"]
    model = ref.values["model"]
    assert model["num_classes"] == 20 and model["neg"] == -1.5 and model["extra"] == {"a": 1}
    assert model["backbone"] == {"type": "PT-v3m1", "order": ("z", "hilbert")}
    assert ref.values["data"] == {"names": ["wall", "floor"], "other": {}}
    assert {"model.backbone.cwd", "model.backbone.x", "hook", "model.extra.**", "data.other.**"} <= set(ref.ignored)
    assert "surprise" not in ref.values and ref.skipped_statements >= 4  # import, call, def, class, if
    (tmp_path / "bad.py").write_text("model = dict(\n")
    with pytest.raises(DitrError, match="not a Python config file"):
        read_reference_config(tmp_path / "bad.py")


# ------------------------------------------------------------------------------------------ the seven problems
def test_problem1_numpy_scalar_checkpoints_load_as_data(tmp_path):
    """Reference trainer checkpoints hold best_metric_value as a NumPy float64 (NumPy 1 and 2 pickles)."""
    for legacy in (False, True):
        folder = published_folder(tmp_path / f"exp{legacy}", tiny_model(20), reference_config(reference_backbone()),
                                  legacy_numpy=legacy)
        file = read_model_file(folder / "model" / "model_best.pth")
        assert file.record["best"]["value"] == pytest.approx(0.4123) and file.record["epoch"] == 3
        report = load_reference_state_dict(tiny_model(20, seed=1), folder / "model" / "model_best.pth")
        assert report.ok
    # Anything else that needs unpickling code stays refused, in one line.
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "evil.pth")
    with pytest.raises(DitrError) as err:
        read_model_file(tmp_path / "evil.pth")
    assert "argparse.Namespace" in str(err.value) and "\n" not in str(err.value)
    assert "Weights only load failed" not in str(err.value)


def test_problem2_absent_batchnorm_counters_are_accepted(tmp_path):
    source = tiny_model(20)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    target = tiny_model(20, seed=1)
    report = load_reference_state_dict(target, state)  # strict
    assert report.ok and len(report.defaulted) == sum(isinstance(m, torch.nn.BatchNorm1d) for m in target.modules())
    folder = published_folder(tmp_path / "exp", source, reference_config(reference_backbone()), drop_counters=True)
    model, _ = load_model(folder, options=LoadOptions(origin="pointcept"))
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked"))


def test_problem3_partial_loads_say_what_was_skipped():
    state = dict(tiny_model(20).state_dict())
    state.pop("seg_head.bias")
    state["backbone.extra.weight"] = torch.zeros(3)
    with pytest.warns(UserWarning) as caught:
        report = load_reference_state_dict(tiny_model(20, seed=1), state, strict=False)
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "1 missing" in lines[0] and "1 unexpected" in lines[0]
    assert "seg_head.bias" in str(report) and "backbone.extra.weight" in str(report)  # the full report on request


def test_problem4_head_keys_into_a_backbone_are_reported_as_head_keys():
    source = tiny_model(20)
    target = tiny_model(20, seed=1).backbone
    report = load_reference_state_dict(target, source.state_dict())
    assert report.ok and report.head_keys == ["seg_head.weight", "seg_head.bias"] and not report.image_encoder_keys
    assert "head tensors" in str(report) and "image-encoder" not in str(report)


def test_problem5_info_predict_evaluate_export_take_published_folders_and_files(ptv3_folder, tmp_path, capsys):
    # the folder, and its model_best.pth alone (config.py found one level up)
    for target in (ptv3_folder, ptv3_folder / "model" / "model_best.pth"):
        info = cli_json(capsys, "info", str(target), "--json")
        assert info["model"]["name"] == "ptv3" and info["data"]["num_classes"] == 20
        assert info["data"]["class_names"] == load_preset(["scannet"]).dataset.class_names  # refrigerator
        assert info["file"]["kind"].startswith("published") and "refridgerator" in info["published"]["notes"][0]
        assert info["published"]["origin"] == "ditr" and info["published"]["behaviour"]["reference_compat"]
        assert info["metrics"]["best"]["value"] == pytest.approx(0.4123)
    assert main(["info", str(ptv3_folder)]) == 0
    assert "published model" in capsys.readouterr().out
    scene = scene_dir(tmp_path)
    summary = cli_json(capsys, "predict", str(ptv3_folder), str(scene), "--out", str(tmp_path / "pred"), "--quiet",
                       "--device", "cpu", "--render-views", "0")
    labels = np.load(tmp_path / "pred" / "labels.npy")
    assert labels.shape == (Scene.load(scene).num_points,) and summary["evaluation"]["scored"]
    report = cli_json(capsys, "evaluate", str(ptv3_folder), str(scene), "--deterministic")
    assert 0.0 <= report["miou"] <= 1.0
    cli_json(capsys, "export", str(ptv3_folder), str(tmp_path / "m.ditr"))
    bundle, config = load_model(tmp_path / "m.ditr")
    assert config.model.ptv3["reference_compat"] and config.model.ptv3["depth_formula"] == "ditr"


def test_problem6_init_carries_reference_behaviour_and_origin(ptv3_folder, tmp_path):
    config = load_preset(["scannet", "method/ptv3"], ["model.backbone=tiny", "dataset.num_classes=13",
                                                   "dataset.class_names=null"])
    with pytest.warns(UserWarning, match="left new"):  # 13 classes here: a new head
        model, ft, report = init_model(config, ptv3_folder)
    assert ft.model.ptv3["reference_compat"] is True and ft.model.ptv3["depth_formula"] == "ditr"
    assert model.backbone.config.reference_compat and model.backbone.config.depth_formula == "ditr"
    assert ft.init["origin"] == "ditr" and set(report["mismatched"]) == {"seg_head.weight", "seg_head.bias"}
    # The run's own settings win.
    own = config.with_overrides(["model.ptv3.reference_compat=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ft, _ = init_model(own, ptv3_folder)
    assert ft.model.ptv3["reference_compat"] is False and ft.model.ptv3["depth_formula"] == "ditr"
    # A bare reference .pth of a 3D-only model: its origin is asked for, then carried.
    bare = tmp_path / "bare.pth"
    bare.write_bytes((ptv3_folder / "model" / "model_best.pth").read_bytes())
    with pytest.raises(DitrError, match="--origin ditr or --origin pointcept"):
        init_model(config, bare)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ft, _ = init_model(config, bare, LoadOptions(origin="pointcept"))
    assert ft.model.ptv3["depth_formula"] == "pointcept" and ft.model.ptv3["reference_compat"]


def test_problem7_deterministic_turns_off_both_shuffles(ptv3_folder, tmp_path):
    scene = scene_dir(tmp_path)
    model, config = load_model(ptv3_folder)
    batch = batch_of(scene, config)

    def run(m, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return m(batch)

    assert config.model.ptv3["reference_compat"] and config.model.ptv3.get("shuffle_orders", True)
    assert not torch.equal(run(model, 0), run(model, 1))  # the reference: outputs depend on the RNG
    model.backbone.config.compat_pooling_shuffle = False  # not enough: level 0 is still reshuffled
    assert not torch.equal(run(model, 0), run(model, 1))
    fixed, _ = load_model(ptv3_folder, options=LoadOptions(deterministic=True))
    assert torch.equal(run(fixed, 0), run(fixed, 1))
    model.backbone.config.shuffle_orders = False  # the two switches --deterministic sets
    assert torch.equal(run(model, 2), run(fixed, 3))


# ------------------------------------------------------------------------------------------ inference from weights
def test_contradictions_and_questions_are_one_line(tmp_path, capsys):
    model = tiny_model(20)
    wrong = published_folder(tmp_path / "wrong", model, reference_config(reference_backbone(), num_classes=200))
    assert "contradictory classes" in cli_error(capsys, "info", str(wrong))
    ditr = tiny_model(20, image=12)
    folder = published_folder(tmp_path / "ditr", ditr, reference_config(reference_backbone(image=True)))
    err = cli_error(capsys, "info", str(folder))  # dinov2="large" is 1024 wide, the projections take 12
    assert "contradictory VFM" in err and "dinov2-vitl14-reg" in err and "12-wide" in err
    img = published_folder(tmp_path / "img", model, reference_config(reference_backbone(image=True)))
    assert "contradictory model" in cli_error(capsys, "info", str(img))
    bare = published_folder(tmp_path / "bare", tiny_model(20, image=32), None)
    err = cli_error(capsys, "info", str(bare))  # no config.py: the VFM cannot be told from a width of 32
    assert "--vfm" in err
    assert "attention heads" in cli_error(capsys, "info", str(bare), "--vfm", "dinov2-tiny-random-reg")
    assert "contradictory origin" in cli_error(capsys, "info", str(folder), "--origin", "pointcept")


def test_full_size_scannet_ptv3_from_its_weights_alone(tmp_path, capsys):
    """The reference ScanNet PT-v3m1 (46.2M parameters) without config.py: sizes and dataset read
    off the weights (20 classes, 6 inputs: ScanNet); the origin asked for, then given."""
    torch.manual_seed(0)
    model = PTv3Segmentor(PTv3Config(), 20)
    (tmp_path / "exp" / "model").mkdir(parents=True)
    torch.save(trainer_checkpoint(model.state_dict(), optimizer=False), tmp_path / "exp" / "model" / "model_best.pth")
    del model
    assert "--origin" in cli_error(capsys, "info", str(tmp_path / "exp"))
    info = cli_json(capsys, "info", str(tmp_path / "exp"), "--origin", "pointcept", "--json")
    assert info["model"]["parameters"]["total"] == 46_167_572 and info["data"]["dataset"] == "scannet"
    assert info["data"]["class_names"][0] == "wall" and info["published"]["origin"] == "pointcept"
    assert info["published"]["behaviour"]["depth_formula"] == "pointcept"


# ------------------------------------------------------------------------------------------ DITR and the VFM
def test_ditr_model_needs_its_vfm(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("DITR_MODELS", raising=False)
    scene = scene_dir(tmp_path)
    values = reference_config(reference_backbone(image=True, dinov2="tiny"))
    values["data"]["val"] = dict(type="ScanNetDataset", split="val", transform=[
        dict(type="ImageResize", height=56, width=70), dict(type="ImageNormalize")])
    tiny_vfm = published_folder(tmp_path / "t", tiny_model(20, image=32), values)
    assert "--vfm NAME" in cli_error(capsys, "info", str(tiny_vfm))  # no real VFM is 32 wide
    info = cli_json(capsys, "info", str(tiny_vfm), "--vfm", "dinov2-tiny-random-reg", "--json")
    assert info["inference"]["needs_images"] and info["vfm"]["model"] == "dinov2-tiny-random-reg"
    assert info["vfm"]["resolution"] == [56, 70]  # config.py's ImageResize
    summary = cli_json(capsys, "predict", str(tiny_vfm), str(scene), "--out", str(tmp_path / "p"), "--quiet",
                       "--vfm", "dinov2-tiny-random-reg", "--device", "cpu", "--render-views", "0", "--deterministic")
    assert summary["uses_images"] and summary["points_seen_by_camera"] > 0
    large = published_folder(tmp_path / "l", tiny_model(20, image=1024),
                             reference_config(reference_backbone(image=True)))
    info = cli_json(capsys, "info", str(large), "--json")
    assert info["published"]["vfm_weights"]["model"] == "dinov2-vitl14-reg"
    err = cli_error(capsys, "predict", str(large), str(scene), "--out", str(tmp_path / "q"), "--quiet")
    assert "dinov2-vitl14-reg" in err and "facebook/dinov2-with-registers-large" in err and "--download" in err


# ------------------------------------------------------------------------------------------ the zoo and the hub
@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A Hugging Face cache laid out as the hub's (models--rwthvision--ditr/snapshots/<rev>/...), offline."""
    import huggingface_hub.constants as hf

    cache = tmp_path / "hub"
    repo = cache / "models--rwthvision--ditr"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snapshot = repo / "snapshots" / rev
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return snapshot


def test_zoo_names_resolve_through_the_hub_cache(fake_hub, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    from ditr import zoo

    assert "--download" in cli_error(capsys, "info", "d-ditr-scannet-ptv3")
    assert "hf download rwthvision/ditr --include 'scannet/semseg-ptv3_weight=" in cli_error(
        capsys, "info", "d-ditr-scannet-ptv3")
    assert "not published yet" in cli_error(capsys, "info", "ditr-scannet-dinov2-l")
    assert "did you mean d-ditr-scannet-ptv3" in cli_error(capsys, "info", "d-ditr-scannet-ptv")
    entry = zoo.get_entry("d-ditr-scannet-ptv3")
    published_folder(fake_hub / entry.path, tiny_model(20), reference_config(reference_backbone(), weight=None),
                     weights="model_last.pth")
    d200 = zoo.get_entry("ditr-scannet200-dinov2-l")
    published_folder(fake_hub / d200.path, tiny_model(200, image=1024),
                     reference_config(reference_backbone(image=True), num_classes=200, dataset="ScanNet200Dataset"))
    assert main(["models", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["d-ditr-scannet-ptv3"]["local"] and listed["ditr-scannet200-dinov2-l"]["local"]
    assert listed["ditr-s3dis-dinov2-l"]["local"] is None and listed["ditr-scannet-dinov2-l"]["status"] == "uploading"
    assert listed["ditr-scannet200-dinov3-l"]["miou"] == 42.3
    info = cli_json(capsys, "info", "d-ditr-scannet-ptv3", "--json")  # origin from the zoo: DITR release
    assert info["published"]["zoo"] == "d-ditr-scannet-ptv3" and info["published"]["origin"] == "ditr"
    assert info["published"]["reported_miou"] == 79.2
    info = cli_json(capsys, "info", "ditr-scannet200-dinov2-l", "--json")
    assert info["data"]["num_classes"] == 200 and info["vfm"]["model"] == "dinov2-vitl14-reg"
    # --download goes through snapshot_download with the entry's folder as the only pattern
    calls = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    scene = scene_dir(tmp_path)
    cli_json(capsys, "predict", "d-ditr-scannet-ptv3", str(scene), "--out", str(tmp_path / "p"), "--download",
             "--quiet", "--render-views", "0", "--device", "cpu")
    assert calls and all(c["allow_patterns"] == [f"{entry.path}/*"] for c in calls)
    assert any(not c["local_files_only"] for c in calls)  # a download call, answered from the cache offline
    assert (tmp_path / "p" / "labels.npy").is_file()
    assert "download of rwthvision/ditr/s3dis/semseg-ptv3_dino-L failed" in cli_error(
        capsys, "info", "ditr-s3dis-dinov2-l", "--download")  # offline and not cached


# ------------------------------------------------------------------------------------------ fine-tuning
def test_step0_of_a_fine_tune_equals_predict(ptv3_folder, tmp_path):
    """The fine-tune starts from the published model itself: same logits (same model, same settings);
    a distilled student gets a new head, so there the backbone features are equal."""
    scene = scene_dir(tmp_path)
    config = load_preset(["scannet", "method/ptv3"], ["model.backbone=tiny", "model.ptv3.drop_path=0.3"])
    start, ft, report = init_model(config, ptv3_folder)
    published, pconfig = load_model(ptv3_folder)
    batch = batch_of(scene, pconfig)
    with torch.no_grad():
        torch.manual_seed(5)
        a = start.eval()(batch)
        torch.manual_seed(5)
        b = published(batch)
    assert report["new"] == [] and torch.equal(a, b)
    # a distilled student (a head 32 wide: the teacher's D) -> a segmentor with a new head
    student = tiny_model(head=32)
    folder = published_folder(tmp_path / "distill", student, reference_config(
        reference_backbone(), num_classes=None, model_type="DefaultDistiller", weight=None))
    file = read_model_file(folder, LoadOptions(vfm="dinov2-tiny-random-reg"))
    assert file.run_config().kind.value == "d-ditr" and "distill_head.weight" in file.weights
    with pytest.warns(UserWarning, match="distill_head"):
        start, ft, report = init_model(config, file)
    assert set(report["new"]) == {"seg_head.weight", "seg_head.bias"} and ft.model.ptv3["depth_formula"] == "ditr"
    source, _ = load_model(file)
    with torch.no_grad():
        torch.manual_seed(5)
        a = start.eval().backbone(batch).feat
        torch.manual_seed(5)
        b = source.backbone(batch).feat
    assert torch.equal(a, b)


def _fixture(name: str):
    npz = CHECKPOINTS / f"{name}.npz"
    if not npz.exists():
        pytest.skip(f"{npz} is absent: the shared checkpoints are not next to this checkout")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((CHECKPOINTS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["ptv3m1_tiny_parity", "ptv3m1_tiny_parity_allorders", "ditr_tiny_parity"])
def test_parity_fixtures_through_init_reproduce_their_logits(name, tmp_path):
    arrays, meta = _fixture(name)
    backbone = dict(meta["config"]["backbone"])
    backbone.pop("dinov2", None)  # the fixture's VFM was a 12-wide stub, not the ViT-L its config names
    values = reference_config(backbone, num_classes=meta["config"]["num_classes"])
    state = OrderedDict((k[len("state."):], torch.from_numpy(np.asarray(v)))
                        for k, v in arrays.items() if k.startswith("state."))
    folder = tmp_path / "exp"
    (folder / "model").mkdir(parents=True)
    (folder / "config.py").write_text(config_py(values))
    torch.save(trainer_checkpoint(state, optimizer=False), folder / "model" / "model_best.pth")
    image = arrays.get("input.image_feat")
    overrides = ["model.backbone=tiny", f"dataset.num_classes={meta['config']['num_classes']}",
                 "dataset.class_names=null",
                 "model.ptv3.shuffle_orders=false", "model.ptv3.compat_pooling_shuffle=false",  # the fixtures' mode
                 *[f"model.ptv3.{k}={json.dumps(backbone[k])}" for k in ("enc_depths", "dec_depths")]]
    if image is not None:
        overrides.append(f"model.image_channels={image.shape[1]}")
    config = load_preset(["scannet", "method/ditr" if image is not None else "method/ptv3"], overrides)
    model, ft, report = init_model(config, folder)
    assert report["new"] == [] and report["skipped"] == [] and ft.model.ptv3["reference_compat"]
    assert ft.init["origin"] == ("ditr" if image is not None else "pointcept")  # enc_mode: Pointcept HEAD
    data = {k: torch.from_numpy(arrays[f"input.{k}"]) for k in ("grid_coord", "feat", "offset")}
    if image is not None:
        data["image_feat"] = torch.from_numpy(image)
    with torch.no_grad():
        logits = PTv3Segmentor.forward(model.eval(), data)
    assert (logits - torch.from_numpy(arrays["output.seg_logits"])).abs().max() < 1e-4


def test_train_init_from_a_published_folder(ptv3_folder, tmp_path, capsys):
    from ditr.io.synthetic import ensure_rooms

    rooms = ensure_rooms(tmp_path / "rooms", 1, 0, 1500, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = cli_json(capsys, "train", "synthetic", "method/ptv3", f"dataset.root={tmp_path / 'rooms'}",
                           f"dataset.splits={{train: [{rooms[0].name}], val: null}}", "dataset.num_classes=20",
                           "dataset.class_names=null", "trainer.epochs=null", "trainer.max_steps=3",
                           "trainer.batch_size=1", "--work-dir", str(tmp_path / "ft"), "--init", str(ptv3_folder),
                           "--quiet")
    assert summary["step"] == 3
    file = read_model_file(tmp_path / "ft" / "last.pt")
    stored = file.run_config()
    assert stored.model.ptv3["reference_compat"] and stored.model.ptv3["depth_formula"] == "ditr"
    assert stored.init["origin"] == "ditr" and stored.init["format"] == "reference"


def test_distill_evaluate_and_requirements_of_a_published_student(tmp_path, capsys):
    folder = published_folder(tmp_path / "distill", tiny_model(head=32), reference_config(
        reference_backbone(), num_classes=None, model_type="DefaultDistiller"))
    scene = scene_dir(tmp_path)
    req = cli_json(capsys, "distill", "--requirements", str(folder), "--vfm", "dinov2-tiny-random-reg")
    assert req["task"] == "distillation" and req["feature_dim"] == 32 and not req["needs_images"]
    result = cli_json(capsys, "distill", "--evaluate", str(folder), str(scene), "--vfm", "dinov2-tiny-random-reg",
                      "--set", "vfm.online=true")
    assert -1.0 <= result["cosine"] <= 1.0 and result["seen_voxels"] > 0
    assert result["teacher"] == "dinov2-tiny-random-reg"
    assert "--vfm" in cli_error(capsys, "distill", "--evaluate", str(folder), str(scene))


def test_load_init_takes_a_model_file(ptv3_folder):
    """load_init takes the ModelFile of read_model_file as well as a path (no second read)."""
    file = read_model_file(ptv3_folder)
    target = tiny_model(20, seed=3)
    report = load_init(target, copy.copy(file))
    assert report["format"] == "reference" and report["new"] == [] and report["loaded"] == len(file.weights)

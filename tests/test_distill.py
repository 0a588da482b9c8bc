"""D-DITR: the distillation loss, a short distillation run, resume, image-free fine-tuning, inits."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from ditr.commands import distill as distill_command
from ditr.configs import RunConfig, load_preset
from ditr.build import build_model
from ditr.demo import render_student_vs_teacher
from ditr.io.synthetic import ensure_rooms
from ditr.vfm.extract import fill_scene_features
from ditr.distill import (DistillCriterion, distill, distill_datasets, evaluate_distillation, source_configs,
                          train_sampler)
from ditr.engine.loading import EpochSampler, SourceSampler
from ditr.engine.logging import read_jsonl
from ditr.engine.losses import cosine_distill_loss
from ditr.engine.trainer import Callback
from ditr.errors import ConfigError, DitrError
from ditr.model_files import LoadOptions, checkpoint_requirements, load_init, load_model, read_model_file
from ditr.models.ptv3 import PTv3Segmentor
from ditr.models.student import DistillStudent
from ditr.training import evaluate, train
from conftest import NO_AUGMENTATION, small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small rooms of this module's own (a test deletes the feature cache)."""
    return small_world(tmp_path_factory.mktemp("distill"))


def student_config(root, vfm, *extra: str) -> RunConfig:
    return load_preset(["synthetic", "method/d-ditr"], [
        f"vfm.cache={root / 'features'}", f"distill.head_channels={vfm['feature_dim']}", "trainer.epochs=null",
        "trainer.batch_size=1", "trainer.eval_every_epochs=1000", "mix3d.p=0", *extra])


def test_loss_counts_seen_voxels_only():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    loss, cos, n = cosine_distill_loss(pred, target, torch.tensor([True, True, False]))
    assert n == 2 and cos.item() == pytest.approx(0.5) and loss.item() == pytest.approx(0.5)
    loss.backward()
    assert pred.grad[2].abs().sum() == 0 and pred.grad[1].abs().sum() > 0  # unseen voxel: no gradient
    loss, cos, n = cosine_distill_loss(pred, target, torch.zeros(3, dtype=torch.bool))
    assert n == 0 and loss.item() == 0.0 and torch.isnan(cos)
    # The criterion reads the teacher through the image lookup: weight-0 (unseen) rows never count.
    batch = {"img_table": target, "img_index": torch.tensor([[0], [1], [2]]), "img_weight": torch.ones(3, 1),
             "img_seen": torch.tensor([True, True, False])}
    out = DistillCriterion()({"pred": pred}, batch)
    assert out["loss"].item() == pytest.approx(0.5) and out["cosine"].item() == pytest.approx(0.5)


def test_student_model_keys(world):
    root, _, vfm = world
    model = build_model(student_config(root, vfm), in_channels=6, num_classes=15)
    assert isinstance(model, DistillStudent)
    keys = set(model.state_dict())
    assert {"distill_head.weight", "distill_head.bias"} <= keys
    assert all(k.startswith(("backbone.", "distill_head.")) for k in keys)
    assert not any("image" in k for k in keys)
    seg_keys = set(PTv3Segmentor(model.config, 15).state_dict())
    assert {k for k in keys if k.startswith("backbone.")} == {k for k in seg_keys if k.startswith("backbone.")}
    with pytest.raises(DitrError, match="head_channels"):
        build_model(load_preset(["synthetic", "method/d-ditr"], ["distill.head_channels=null"]), 6, 15)


class Crash(Callback):
    def on_step_end(self, trainer, losses):
        if trainer.step == 3:
            raise RuntimeError("simulated crash")


def test_distill_learns_resumes_and_fine_tunes_without_images(world, tmp_path):
    root, rooms, vfm = world
    config = student_config(root, vfm, "trainer.max_steps=40", "optim.lr=0.01", NO_AUGMENTATION)
    before = None
    run = tmp_path / "student"
    summary = distill(config, run, train_scenes=rooms, val_scenes=rooms[1:], quiet=True)
    assert summary["step"] == 40 and summary["best"]["metric"] == "val_cosine"
    train_log = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "train"]
    before, after = train_log[0]["loss/cosine"], train_log[-1]["loss/cosine"]
    assert after > before + 0.1, (before, after)
    assert train_log[-1]["loss"] < train_log[0]["loss"]
    report = evaluate_distillation(run / "last.pt", rooms[1:], out=tmp_path / "cos.json")
    assert report["cosine"] == pytest.approx(summary["metrics"]["val_cosine"], abs=0.02)  # voxel draw differs
    assert json.loads((tmp_path / "cos.json").read_text())["seen_voxels"] > 0
    picture = render_student_vs_teacher(run / "last.pt", rooms[1], tmp_path / "pca.png")
    assert picture.stat().st_size > 10_000

    req = checkpoint_requirements(run / "last.pt")
    assert req["task"] == "distillation" and not req["needs_images"] and req["needs_images_for_training"]
    assert req["feature_dim"] == vfm["feature_dim"] and req["vfm"] == "dinov2-tiny-random-reg"

    # Fine-tuning: backbone loaded, head dropped, segmentation head new; no image is ever read.
    ft = load_preset(["synthetic", "method/ptv3"], ["trainer.epochs=null", "trainer.max_steps=3",
                                                   "trainer.batch_size=1", "mix3d.p=0",
                                                   f"vfm.cache={tmp_path / 'no-such-cache'}"])
    torch.manual_seed(0)
    model = PTv3Segmentor(build_model(ft, 6, 15).config, 15)
    fresh_head = model.seg_head.weight.clone()
    info = load_init(model, run / "last.pt")
    student = torch.load(run / "last.pt", weights_only=True)["model"]
    assert info["format"] == "ditr.train_state"
    assert set(info["skipped"]) == {"distill_head.weight", "distill_head.bias"}
    assert set(info["new"]) == {"seg_head.weight", "seg_head.bias"}
    assert all(torch.equal(v, student[k]) for k, v in model.state_dict().items() if k.startswith("backbone."))
    assert torch.equal(model.seg_head.weight, fresh_head)

    train(ft, tmp_path / "ft", train_scenes=rooms, init=run / "last.pt", quiet=True)
    ft_req = checkpoint_requirements(tmp_path / "ft" / "last.pt")
    assert ft_req["needs_images"] is False and ft_req["task"] == "segmentation" and ft_req["vfm"] is None
    assert ft_req["init"]["format"] == "ditr.train_state" and ft_req["init"]["skipped"] == 2
    assert ft_req["classes"][0] == "wall" and ft_req["num_classes"] == 15
    _, stored = load_model(tmp_path / "ft" / "last.pt")
    assert stored.uses_images is False
    assert 0.0 <= evaluate(tmp_path / "ft" / "last.pt", rooms[:1]).metrics["miou"] <= 1.0


def test_distill_resume_and_image_free_evaluation(world, tmp_path):
    root, rooms, vfm = world
    # A private feature cache: deleted below to show the fine-tuned model never reads it.
    shutil.copytree(root / "features", tmp_path / "features")
    config = student_config(tmp_path, vfm, "trainer.max_steps=6", "trainer.checkpoint_every_steps=1")
    full = distill(config, tmp_path / "full", train_scenes=rooms, quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        distill(config, tmp_path / "crash", train_scenes=rooms, quiet=True, callbacks=[Crash()])
    resumed = distill(config, tmp_path / "crash", train_scenes=rooms, quiet=True)
    assert resumed["step"] == full["step"] == 6
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "crash" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    shutil.rmtree(tmp_path / "features")
    ft = load_preset(["synthetic", "method/ptv3"], ["trainer.epochs=null", "trainer.max_steps=3",
                                                   "trainer.batch_size=1", f"vfm.cache={tmp_path / 'features'}"])
    train(ft, tmp_path / "ft", train_scenes=rooms, init=tmp_path / "full" / "last.pt", quiet=True)
    assert 0.0 <= evaluate(tmp_path / "ft" / "last.pt", rooms).metrics["miou"] <= 1.0
    assert not (tmp_path / "features").exists()
    # ...whereas distillation itself needs the teacher's features.
    with pytest.raises(DitrError):
        distill(config, tmp_path / "again", train_scenes=rooms, quiet=True)


def test_reference_format_init(tmp_path):
    config = load_preset(["synthetic", "method/ptv3"])
    source = build_model(config, in_channels=6, num_classes=15)
    reference = {"state_dict": {f"module.{k}": v.clone() + 1.0 for k, v in source.state_dict().items()
                                if not k.startswith("seg_head.")} | {"module.seg_head.weight": torch.zeros(20, 64),
                                                                    "module.seg_head.bias": torch.zeros(20)}}
    path = tmp_path / "model_best.pth"
    torch.save(reference, path)
    target = build_model(config, in_channels=6, num_classes=15)
    info = load_init(target, path)
    assert info["format"] == "reference"
    assert set(info["mismatched"]) == {"seg_head.weight", "seg_head.bias"}  # 20 classes there, 15 here
    for k, v in target.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, reference["state_dict"][f"module.{k}"]), k
    with pytest.raises(DitrError, match="backbone does not fit"):  # another backbone: not silently partial
        load_init(build_model(load_preset(["synthetic", "method/ptv3"], ["model.backbone=scannet"]), 6, 15), path)
    # Through ditr train's init= as well: the stored run config records where the weights came from.
    ft = load_preset(["synthetic", "method/ptv3"], ["trainer.epochs=null", "trainer.max_steps=3",
                                                   "trainer.batch_size=1", "optim.lr=0"])
    rooms = ensure_rooms(tmp_path / "rooms", 1, 0, 2000, 2)
    with pytest.raises(DitrError, match="--origin"):  # a bare 3D-only state dict: DITR's or Pointcept's?
        train(ft, tmp_path / "ft", train_scenes=rooms, init=path, quiet=True)
    train(ft, tmp_path / "ft", train_scenes=rooms, init=read_model_file(path, LoadOptions(origin="pointcept")),
          quiet=True)
    req = checkpoint_requirements(tmp_path / "ft" / "last.pt")
    assert req["init"]["format"] == "reference" and not req["needs_images"]
    assert load_model(tmp_path / "ft" / "last.pt")[1].model.ptv3["reference_compat"]  # carried from the init


def test_multi_source_configs(world):
    root, rooms, vfm = world
    config = student_config(root, vfm)
    config.distill.datasets = [{"dataset": {"root": str(root / "rooms"), "splits": {"train": [rooms[0].name]}},
                                "images": {"views_per_sample": 2}},
                               {"dataset": {"root": str(root / "rooms"), "splits": {"train": [rooms[1].name]}},
                                "images": {"views_per_sample": 4}}]
    sources = source_configs(config)
    assert [s.images.views_per_sample for s in sources] == [2, 4]
    assert all(s.uses_images for s in sources)  # the teacher's features are the targets
    train_set, val_set = distill_datasets(config)
    assert len(train_set) == 2 and val_set is None
    views = [len(train_set[i]["view_names"]) for i in range(2)]
    assert views == [2, 4]
    config.distill.datasets.append({"vfm": {"model": "dinov2-vits14"}})  # another (registered) teacher
    with pytest.raises(DitrError, match="teacher"):
        source_configs(config)
    config.distill.datasets = [{"optim": {}}]
    with pytest.raises(DitrError, match="unknown sections"):
        source_configs(config)


# ------------------------------------------------------------------------------------------ several sources
def batches(sampler: SourceSampler | EpochSampler, epoch: int = 0, skip: int = 0) -> list[list[tuple[int, int]]]:
    sampler.set_epoch(epoch, skip)
    keys = list(sampler)
    assert len(keys) == len(sampler)
    return [keys[i:i + sampler.batch_size] for i in range(0, len(keys), sampler.batch_size)]


def test_source_sampler_batches_follow_the_ratios():
    sizes, ratios, b = [11, 7, 4], [2, 1, 3], 2
    starts = [0, 11, 18]
    source = lambda index: max(s for s in range(3) if index >= starts[s])  # noqa: E731
    sampler = SourceSampler(sizes, ratios, b, rank=0, world_size=1, seed=3)
    epoch = batches(sampler)
    main = 11 // b  # 5 full batches of the main source
    assert sampler.batches_per_epoch == len(epoch) == main // 2 * sum(ratios) + main % 2 == 13
    kinds = []
    for batch in epoch:
        assert len({source(i) for i, _ in batch}) == 1  # every batch from one source
        kinds.append(source(batch[0][0]))
    assert kinds == [0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2, 0]  # the cycle, cut when the main source is done
    # The main source is drawn once (EpochSampler's order of it); the others restart with a new order.
    main_items = [i for batch in epoch for i, _ in batch if source(i) == 0]
    assert main_items == [i for i, _ in EpochSampler(11, b, 0, 1, seed=3)] and len(set(main_items)) == 10
    small = [i - 18 for batch in epoch for i, _ in batch if source(i) == 2]  # 12 items: 6 passes of 2 batches
    passes = [small[k:k + 4] for k in range(0, 12, 4)]
    assert all(len(set(p)) == 4 for p in passes) and len({tuple(p) for p in passes}) > 1
    seeds = [seed for batch in epoch for _, seed in batch]
    assert len(set(seeds)) == len(seeds)
    # Deterministic in (seed, epoch); another epoch, another order.
    assert batches(SourceSampler(sizes, ratios, b, 0, 1, seed=3)) == epoch
    assert batches(sampler, epoch=1) != epoch
    # Resuming after k batches yields exactly the rest of the epoch.
    for skip in (1, 4, 12):
        assert batches(sampler, 0, skip) == epoch[skip:]
    # Ratio 1 each: the main source's pass sets the length, the others restart (source 2 has 2 batches a pass).
    assert SourceSampler([9, 4], [1, 1], 2, 0, 1, 0).batches_per_epoch == 8
    with pytest.raises(ConfigError, match="source 1 has 1 samples"):
        SourceSampler([9, 1], [1, 1], 2, 0, 1, 0)


def test_source_sampler_shards_over_ranks():
    sizes, ratios = [16, 6], [1, 2]
    ranks = [SourceSampler(sizes, ratios, 2, rank, 2, seed=1) for rank in range(2)]
    per_rank = [batches(s) for s in ranks]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 4 * 3  # 8 per rank: 4 main batches
    for a, b in zip(*per_rank):  # the same source at the same step on every rank
        assert (a[0][0] >= 16) == (b[0][0] >= 16)
        assert all((i >= 16) == (a[0][0] >= 16) for i, _ in a + b)
    main = [i for batches_ in per_rank for batch in batches_ for i, _ in batch if i < 16]
    assert sorted(main) == list(range(16))  # the main source's pass split over the ranks, each item once
    seeds = [seed for batches_ in per_rank for batch in batches_ for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


def test_batching_config_checks():
    base = ["synthetic", "method/d-ditr"]
    two = "distill.datasets=[{}, {}]"
    assert load_preset(base, [two]).distill.batching == "per_dataset"
    assert load_preset(base, [two, "distill.ratios=[3, 1]"]).distill.ratios == [3, 1]
    for override, match in [("distill.ratios=[1]", "ratios: has 1 entries for 2 source"),
                            ("distill.ratios=[1, 0]", r"ratios\[1\]"),
                            ("distill.ratios=[1, 1.5]", r"ratios"),
                            ("distill.batching=shuffled", "batching"),
                            ("distill.batching=mixed", None)]:
        extra = [two, override] + (["distill.ratios=[1, 1]"] if match is None else [])
        with pytest.raises(ConfigError, match=match or "apply to batching: per_dataset"):
            load_preset(base, extra)
    assert load_preset(base, ["distill.ratios=[2]"]).distill.ratios == [2]  # the run's own data: one source


def two_source_config(root, vfm, rooms, *extra: str) -> RunConfig:
    """Both rooms twice: source 0 with 2 views per sample, source 1 with 4 (what a batch holds shows its source)."""
    config = student_config(root, vfm, "trainer.batch_size=2", NO_AUGMENTATION, *extra)
    config.distill.datasets = [{"dataset": {"root": str(root / "rooms"), "splits": {"train": [r.name for r in rooms]}},
                                "images": {"views_per_sample": views}} for views in (2, 4)]
    return config


def test_per_dataset_and_mixed_batches_in_a_run(world, tmp_path, monkeypatch):
    root, rooms, vfm = world
    seen: list[list[int]] = []
    original = DistillCriterion.__call__

    def record(self, output, batch):
        seen.append(batch["num_views"].tolist())
        return original(self, output, batch)

    monkeypatch.setattr(DistillCriterion, "__call__", record)
    config = two_source_config(root, vfm, rooms, "trainer.max_steps=3")
    config.distill.ratios = [1, 2]
    train_set, _ = distill_datasets(config)
    assert isinstance(train_sampler(config, train_set)(2, 0, 1, 0), SourceSampler)
    distill(config, tmp_path / "per-dataset", quiet=True)
    assert seen == [[2, 2], [4, 4], [4, 4]]  # one source per batch, in the ratios 1:2

    # mixed: one shuffle over both sources, so batches mix view counts (the collate pads the lookup);
    # Mix3D merges such a pair into one cloud whose halves keep their own views.
    seen.clear()
    config = two_source_config(root, vfm, rooms, "trainer.max_steps=4", "distill.batching=mixed", "mix3d.p=1")
    assert train_sampler(config, distill_datasets(config)[0]) is None
    summary = distill(config, tmp_path / "mixed", quiet=True)
    assert summary["step"] == 4 and [2, 4] in [sorted(v) for v in seen]
    # A mixed batch cannot stack the online teacher's images of two sizes.
    config.distill.datasets[1]["images"]["resolution"] = [28, 28]
    config.vfm.online = True
    with pytest.raises(DitrError, match="per_dataset"):
        distill_datasets(config)


def test_per_dataset_batches_resume_exactly(world, tmp_path):
    """A crash in the middle of an epoch of per-source batches: the resumed run ends with the same weights."""
    root, rooms, vfm = world
    config = two_source_config(root, vfm, rooms, "trainer.max_steps=5", "trainer.checkpoint_every_steps=1")
    full = distill(config, tmp_path / "full", quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):  # step 3: the second batch of epoch 1 is next
        distill(config, tmp_path / "crash", quiet=True, callbacks=[Crash()])
    assert distill(config, tmp_path / "crash", quiet=True)["step"] == full["step"] == 5
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "crash" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_structured3d_distils_every_room_without_validation(world, tmp_path, capsys):
    """The preset trains on every room (train + val + test) and has no val split: no evaluation, no best.pt."""
    root, rooms, vfm = world
    preset = load_preset(["structured3d"])
    assert preset.dataset.splits == {"train": None} and preset.kind.value == "d-ditr"
    # On this machine: the preset with the tiny teacher and model of the synthetic rooms.
    fit = tmp_path / "tiny.yaml"
    fit.write_text(f"""
vfm: {{model: dinov2-tiny-random-reg, precision: auto, cache: {root / 'features'}}}
images: {{resolution: null}}
dataset: {{root: {root / 'rooms'}, input_features: [coord, normal]}}
model: {{backbone: tiny}}
distill: {{head_channels: {vfm['feature_dim']}}}
trainer: {{epochs: null, max_steps: 3, batch_size: 1, amp: null}}
mix3d: {{p: 0}}
""")
    args = argparse.Namespace(items=["structured3d", str(fit), NO_AUGMENTATION], work_dir=tmp_path / "run",
                              no_resume=False, quiet=True, evaluate=None, requirements=None, out=None, device="cpu")
    assert distill_command.run(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 3 and printed["best"] is None and "eval" not in printed
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "best.pt").exists()
    assert not [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "val"]
    stored = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]
    assert stored["dataset"]["splits"] == {"train": None}


def test_split_lists_name_split_files(tmp_path):
    from ditr.data.dataset import resolve_scenes

    rooms = ensure_rooms(tmp_path, 3, 0, 500, 1)
    (tmp_path / "splits").mkdir()
    for name, room in zip(("train", "val", "test"), rooms):
        (tmp_path / "splits" / f"{name}.txt").write_text(room.name + "\n")
    assert resolve_scenes(tmp_path, ["train", "val", "test"]) == rooms
    assert resolve_scenes(tmp_path, [rooms[2].name, "train"]) == [rooms[2], rooms[0]]  # scenes and splits
    with pytest.raises(DitrError, match="nope"):
        resolve_scenes(tmp_path, ["train", "nope"])


@pytest.mark.parametrize("name,sources,ratios,epochs,every,clip,val", [
    ("distill/scannet200", ["scannet200"], None, 800, 8, None, "val"),
    ("distill/scannet-structured3d", ["scannet", "structured3d"], [1, 1], 800, 8, 3.0, None),  # no val split
    ("distill/nuscenes", ["nuscenes"], None, 50, 10, None, "val"),
    ("distill/outdoor", ["nuscenes", "semantickitti", "waymo"], [1, 1, 1], 50, 10, None, "val"),
])
def test_distillation_presets(name, sources, ratios, epochs, every, clip, val):
    config = load_preset([name])
    assert config.kind.value == "d-ditr" and config.vfm.model == "dinov2-vitl14-reg"
    assert config.distill.head_channels == 1024 and config.model.image_channels is None
    assert (config.trainer.epochs, config.trainer.eval_every_epochs, config.trainer.grad_clip) == (epochs, every, clip)
    assert config.distill.batching == "per_dataset" and config.distill.ratios == ratios
    assert config.dataset.splits.get("val") == val
    found = source_configs(config)
    assert [s.dataset.name for s in found] == sources
    assert [s.dataset.splits.get("val") for s in found[1:]] == [None] * (len(found) - 1)  # validation: main only
    views = {s.dataset.name: (s.images.views_per_sample, s.images.resolution) for s in found}
    expected = {"scannet200": (10, [420, 560]), "scannet": (10, [420, 560]), "structured3d": (3, [350, 630]),
                "nuscenes": (6, [378, 672]), "semantickitti": (1, [378, 1246]), "waymo": (5, [308, 672])}
    assert views == {k: expected[k] for k in views}
    indoor = config.dataset.name.startswith("scannet")
    assert config.optim.lr == (0.006 if indoor else 0.002)
    if "structured3d" in sources:
        crops = [t for t in found[1].transforms.train if t["type"] == "SphereCrop"]
        assert crops == [{"type": "SphereCrop", "sample_rate": 0.8, "mode": "random"},
                         {"type": "SphereCrop", "point_max": 204800, "mode": "random"}]
        assert found[1].dataset.splits == {"train": None}  # every room
        scannet_train = [t for t in found[0].transforms.train if t["type"] != "SphereCrop"]
        assert [t for t in found[1].transforms.train if t["type"] != "SphereCrop"] == scannet_train


def test_command_requirements_and_errors(world, tmp_path, capsys):
    root, rooms, vfm = world
    args = argparse.Namespace(items=["synthetic", "method/ptv3"], work_dir=tmp_path, no_resume=False, quiet=True,
                              evaluate=None, requirements=None, out=None, device="cpu")
    with pytest.raises(DitrError, match="d-ditr"):
        distill_command.run(args)
    args.items = ["synthetic", "method/d-ditr", f"vfm.cache={root / 'features'}", f"dataset.root={root / 'rooms'}",
                  f"distill.head_channels={vfm['feature_dim']}", "trainer.epochs=null", "trainer.max_steps=3",
                  "trainer.batch_size=1", f"dataset.splits={{train: [{rooms[0].name}], val: [{rooms[1].name}]}}"]
    assert distill_command.run(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 3 and -1 <= printed["eval"]["cosine"] <= 1
    assert json.loads((tmp_path / "distill_eval.json").read_text())["per_scene"][rooms[1].name]["seen_voxels"] > 0
    args.items, args.requirements, args.out = [], tmp_path / "last.pt", tmp_path / "req.json"
    assert distill_command.run(args) == 0
    assert json.loads((tmp_path / "req.json").read_text())["model"] == "d-ditr"
    args.requirements, args.evaluate, args.items, args.out = None, tmp_path / "last.pt", [str(rooms[0])], None
    assert distill_command.run(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scenes"] == 1


DDP_SCRIPT = """
import sys
from pathlib import Path
from ditr.configs import RunConfig, load_preset
from ditr.distill import distill
from ditr.engine import distributed

base = Path(sys.argv[1])
config = load_preset(["synthetic", "method/d-ditr"], [
    f"vfm.cache={base / 'features'}", "distill.head_channels=32", f"dataset.root={base / 'rooms'}",
    "dataset.splits={train: [room_0000, room_0001], val: [room_0000, room_0001, room_0002]}",
    "trainer.epochs=null", "trainer.max_steps=3", "trainer.batch_size=2", "trainer.num_workers=0"])
distill(config, base / "run", quiet=True)
distributed.cleanup()
"""


def test_distill_under_torchrun_two_ranks(tmp_path):
    """Two gloo ranks: the run finishes, rank 0 writes the checkpoint, val cosine over all 3 rooms."""
    import subprocess
    import sys

    from test_train_distributed import child_env, free_port

    rooms = ensure_rooms(tmp_path / "rooms", 3, 0, 2000, 3)
    fill_scene_features(rooms, "dinov2-tiny-random-reg", tmp_path / "features")
    script = tmp_path / "ddp_distill.py"
    script.write_text(DDP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(script), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2
    single = evaluate_distillation(tmp_path / "run" / "last.pt", rooms)
    val = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "val"][-1]
    assert val["val_cosine"] == pytest.approx(
        sum(v["cosine"] for v in single["per_scene"].values()) / 3, abs=0.03)

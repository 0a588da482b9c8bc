"""Attack cases for training data: a scene no camera saw mixed with scenes that have views (cached
features and online VFM), label arrays that are missing, out of range or empty. Each trains
correctly or fails before any work with an error naming the scene and the array."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ditr.build import model_from_config
from ditr.configs import RunConfig, load_preset
from ditr.data import SceneDataset, collate
from ditr.engine.logging import read_jsonl
from ditr.errors import DitrError, SceneError
from ditr.lifting import lookup_image_features
from ditr.scene import Scene
from ditr.training import train
from conftest import NO_AUGMENTATION, small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small rooms with cached features, and a copy of the second without views."""
    root, rooms, vfm = small_world(tmp_path_factory.mktemp("hostile"))
    blind = Scene.load(rooms[1])
    blind.views = []
    return root, rooms, blind.save(root / "blind"), vfm


def config(root, vfm, *extra: str) -> RunConfig:
    return load_preset(["synthetic", "method/ditr"], [
        f"vfm.cache={root / 'features'}", f"model.image_channels={vfm['feature_dim']}", "trainer.epochs=null",
        "trainer.eval_every_epochs=1000", "mix3d.p=0", "images.color_jitter=null", NO_AUGMENTATION, *extra])


@pytest.mark.parametrize("online", [False, True])
def test_a_batch_mixing_a_scene_without_views_collates_in_any_order(world, online):
    root, rooms, blind, vfm = world
    cfg = config(root, vfm, f"vfm.online={str(online).lower()}")
    data = SceneDataset([rooms[0], blind], None, cfg, "train")
    seen, unseen = (data.get(i, np.random.default_rng(0)) for i in (0, 1))
    assert unseen["num_cells"] == 0 and seen["num_cells"] > 0
    torch.manual_seed(0)
    model = model_from_config(cfg)
    for order in ([seen, unseen], [unseen, seen], [unseen, unseen]):
        batch = collate(order)
        logits = model(batch)
        logits.logsumexp(1).mean().backward()  # forward and backward run whatever the order
        assert torch.isfinite(logits).all()
        cells = int(sum(s["num_cells"] for s in order))
        assert int(batch["img_index"].max()) < max(cells, 1)  # every index inside the batch's table
        if not online:
            feats = lookup_image_features(batch["img_table"].float(), batch["img_index"], batch["img_weight"])
            alone = lookup_image_features(seen["img_table"].float(), seen["img_index"], seen["img_weight"])
            start = 0
            for s in order:
                part = feats[start:start + len(s["coord"])]
                if s is seen:
                    assert torch.equal(part, alone)  # the viewed sample reads exactly its own features
                else:
                    assert not part.any()  # the blind one reads nothing
                start += len(s["coord"])


@pytest.mark.parametrize("online", [False, True])
def test_training_on_a_scene_without_views_mixed_with_viewed_ones(world, online, tmp_path):
    """Both shuffle orders occur in six steps of two samples from three scenes."""
    root, rooms, blind, vfm = world
    cfg = config(root, vfm, "trainer.max_steps=6", "trainer.batch_size=2", f"vfm.online={str(online).lower()}")
    train(cfg, tmp_path / "run", train_scenes=[rooms[0], blind, rooms[1]], quiet=True)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses)


# ------------------------------------------------------------------------------------------ labels
def test_segment_naming_a_missing_array_fails_before_any_work(world):
    """It trained to the end with loss 0: every point of every sample was 'ignore'."""
    root, rooms, _, vfm = world
    data = SceneDataset(rooms, None, config(root, vfm, "dataset.segment=segment200"), "train")
    with pytest.raises(DitrError, match=r"has no dataset.segment 'segment200' \(label arrays there: \['segment'\]\)"):
        data.check_labels()
    with pytest.raises(DitrError, match="has no segment200 label array"):
        data.get(0, np.random.default_rng(0))
    # evaluation and prediction of unlabelled scenes stay possible
    SceneDataset(rooms, None, config(root, vfm, "dataset.segment=segment200"), "val").get(0, np.random.default_rng(0))


def test_train_checks_the_labels_before_the_first_step(world, tmp_path):
    """``train`` itself refuses before any step: no work directory, no checkpoint, no metrics."""
    root, rooms, _, vfm = world
    with pytest.raises(DitrError, match="has no dataset.segment 'segment200'"):
        train(config(root, vfm, "dataset.segment=segment200", "trainer.max_steps=3", "trainer.batch_size=1"),
              tmp_path / "run", train_scenes=rooms, quiet=True)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_label_ids_beyond_num_classes_fail_before_any_work(world, tmp_path):
    root, rooms, _, vfm = world
    scene = Scene.load(rooms[0])
    scene.attributes["segment"] = scene.attributes["segment"].copy()
    scene.attributes["segment"][:5] = 15  # the synthetic preset has 15 classes: 0..14
    bad = scene.save(tmp_path / "bad")
    data = SceneDataset([rooms[1], bad], None, config(root, vfm), "train")
    with pytest.raises(SceneError, match=r"bad/segment.npy: segment: holds class id 15 \(5 points\)"):
        data.check_labels()
    with pytest.raises(SceneError, match=r"bad/segment.npy: segment: holds class id 15"):
        data.get(1, np.random.default_rng(0))


def test_scenes_without_any_labelled_point(world, tmp_path):
    root, rooms, _, vfm = world
    scene = Scene.load(rooms[0])
    scene.attributes["segment"] = np.full(scene.num_points, -1, np.int64)
    empty = scene.save(tmp_path / "empty")
    with pytest.raises(DitrError, match="no point of the 1 train scenes is labelled"):
        SceneDataset([empty], None, config(root, vfm), "train").check_labels()
    summary = SceneDataset([rooms[0], empty], None, config(root, vfm), "train").check_labels()
    assert summary["arrays"] == ["segment"] and 0 < summary["labelled_points"] < summary["points"]


def test_the_label_check_follows_the_scenes_own_choice(world, tmp_path):
    root, rooms, _, vfm = world
    scene = Scene.load(rooms[0])
    scene.attributes = {"segment20": scene.attributes["segment"], "segment200": scene.attributes["segment"] + 100}
    scene.meta["segment"] = "segment20"
    path = scene.save(tmp_path / "two")
    own = config(root, vfm, "dataset.segment=null")  # each scene's meta.json names its array
    assert SceneDataset([path], None, own, "train").check_labels()["arrays"] == ["segment20"]
    meta = json.loads((path / "meta.json").read_text())
    meta["segment"] = "segment200"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SceneError, match="segment200.npy"):
        SceneDataset([path], None, own, "train").check_labels()


def test_a_student_dataset_has_no_labels_to_check(world):
    root, rooms, _, vfm = world
    cfg = load_preset(["synthetic", "method/d-ditr"], ["dataset.segment=segment200", "distill.head_channels=32"])
    assert SceneDataset(rooms, None, cfg, "train").check_labels()["arrays"] == []

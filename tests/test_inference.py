"""The inference service (ditr.inference): the dataset's public stages, the votes, chunks, evaluate's scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ditr.build import model_from_config
from ditr.configs import RunConfig, load_preset
from ditr.data import SceneDataset, collate
from ditr.data.dataset import item_rng
from ditr.engine.checkpoint import save_training_state
from ditr.engine.loading import EVAL_STREAM, item_seed, move_to
from ditr.engine.metrics import confusion_matrix
from ditr.errors import DitrError
from ditr.inference import Predictor, Votes
from ditr.predict import Chunk, PredictOptions
from ditr.scene import Scene
from ditr.training import evaluate
from conftest import small_world

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two small synthetic rooms (3000 points, 4 views) with cached tiny-random DINOv2 features."""
    return small_world(tmp_path_factory.mktemp("inference"))


def ditr_config(world, *extra: str) -> RunConfig:
    root, _, vfm = world
    return load_preset(["synthetic", "method/ditr"], [f"vfm.cache={root / 'features'}",
                                                      f"model.image_channels={vfm['feature_dim']}", *extra])


def save_random_model(path: Path, config: RunConfig) -> Path:
    torch.manual_seed(0)
    save_training_state(path, {"model": model_from_config(config).state_dict(), "config": config.to_dict(), "step": 0})
    return path


def assert_same(a, b, where: str = "") -> None:
    """Equal nested samples / batches: tensors and arrays element for element, everything else by ==."""
    if isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


# ------------------------------------------------------------------------------------------ dataset stages
@pytest.mark.parametrize("mode", ["train", "val", "test"])
def test_public_stages_compose_to_get(world, mode):
    """raw_sample -> voxelise -> feature_table -> finish is get(), generator draws included (random
    view fusion, Mix3D, the training augmentations, the test fragments and variants)."""
    _, rooms, _ = world
    config = ditr_config(world, "images.view_strategy=random", "images.views_per_sample=3",
                         "test_time.variants=[[], [{type: RandomFlip, p: 1}]]")
    ds = SceneDataset(rooms, None, config, mode)
    for seed in (0, 1):
        expected = ds.get(1, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        scene = Scene.load(rooms[1], check_images=False)
        sample, views = ds.raw_sample(scene, rng)
        samples = ds.voxelise(sample, rng)
        table = ds.feature_table(scene, views, samples)
        outs = [ds.finish(s, table, None, rng) for s in samples]
        if mode == "test":
            assert len(outs) > 2 and set(expected) == {"fragments", "origin_segment", "name"}
            assert_same(expected["fragments"], outs)
            assert np.array_equal(expected["origin_segment"].numpy(), sample["origin_segment"])
        else:
            assert len(outs) == 1
            assert_same(expected, outs[0])
    assert ds.voxel_size() == 0.05 and ds.centres()


# ------------------------------------------------------------------------------------------ votes
def test_votes_weight_chunks_per_voxel_then_average_passes_per_point():
    votes = Votes(num_points=4, num_classes=3)
    a, b = torch.tensor([[4.0, 0, 0], [0, 4.0, 0]]), torch.tensor([[0, 0, 6.0], [0, 6.0, 0]])
    # pass 1: voxels 0 and 1 (points 0, 1 -> voxel 0; 2, 3 -> voxel 1), two chunks overlapping in voxel 1
    voxelised = {"coord": np.zeros((2, 3)), "inverse": np.array([0, 0, 1, 1])}
    votes.add_pass(voxelised, [(Chunk(np.array([0, 1]), np.array([1.0, 0.25], np.float32)), a),
                               (Chunk(np.array([1]), np.array([1.0], np.float32)), b[1:])])
    # pass 2: a fragment of points 3 and 0 (its rows ``index``), one chunk
    fragment = {"coord": np.zeros((2, 3)), "index": np.array([3, 0])}
    votes.add_pass(fragment, [(Chunk(np.array([0, 1]), np.ones(2, np.float32)), b)])
    pa, pb = torch.softmax(a, 1), torch.softmax(b, 1)
    voxel1 = (0.25 * pa[1] + pb[1]) / 1.25
    expected = torch.stack([(pa[0] + pb[1]) / 2, pa[0], voxel1, (voxel1 + pb[0]) / 2])
    assert torch.allclose(votes.probabilities(), expected, atol=1e-6)
    gap = Votes(num_points=3, num_classes=3)
    gap.add_pass(fragment | {"index": np.array([0, 1])}, [(Chunk(np.array([0, 1]), np.ones(2, np.float32)), a)])
    with pytest.raises(RuntimeError, match="1 points got no prediction"):
        gap.probabilities()


def test_votes_of_pre_grid_fragments_reach_every_point_through_its_representative():
    votes = Votes(num_points=4, num_classes=2)
    logits = torch.tensor([[2.0, 0], [0, 2.0]])
    fragment = {"coord": np.zeros((2, 3)), "index": np.array([0, 3]), "represented_by": np.array([0, 0, 3, 3])}
    votes.add_pass(fragment, [(Chunk(np.array([0, 1]), np.ones(2, np.float32)), logits)])
    assert torch.allclose(votes.probabilities(), torch.softmax(logits, 1)[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match="different pre-grid draws"):
        votes.add_pass(fragment | {"represented_by": np.array([0, 3, 3, 3])},
                       [(Chunk(np.array([0, 1]), np.ones(2, np.float32)), logits)])


# ------------------------------------------------------------------------------------------ chunks
class PointwiseModel(nn.Module):
    """Logits of each voxel from its normal alone: a model that context cannot change, so chunked
    and whole predictions must agree up to rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 15)

    def forward(self, batch):
        return self.head(batch["feat"][:, 3:6])


def test_chunked_and_whole_predictions_agree(world):
    _, rooms, _ = world
    config = load_preset(["synthetic", "method/ptv3"])
    torch.manual_seed(0)
    predictor = Predictor(PointwiseModel(), config)
    whole = predictor.predict(rooms[0], PredictOptions(max_points=None))
    assert whole.chunks == whole.passes == 1 and whole.views == [] and whole.points_seen is None
    stages = []
    chunked = predictor.predict(rooms[0], PredictOptions(max_points=whole.voxels // 4, overlap=0.5),
                                progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert chunked.chunks > 4 and chunked.voxels == whole.voxels
    np.testing.assert_allclose(chunked.probs, whole.probs, atol=1e-5)
    assert (chunked.labels == whole.labels).mean() > 0.999  # ties within rounding may break either way
    assert stages[-1] == ("chunks", chunked.chunks, chunked.chunks) and stages[0] == ("projection", 0, 1)
    assert np.array_equal(whole.segment, Scene.load(rooms[0]).segment("segment"))
    # one chunk within the budget is the whole forward, bit for bit
    points = Scene.load(rooms[0]).num_points
    budget = predictor.predict(rooms[0], PredictOptions(max_points=points))
    assert budget.chunks == 1 and np.array_equal(budget.probs, whole.probs)
    # the budget counts the scene's points, not the voxels they fill
    assert whole.voxels < points and predictor.predict(rooms[0], PredictOptions(max_points=points - 1)).chunks > 1


def test_batch_is_the_datasets_val_sample(world):
    """Predictor.batch is the model-ready batch of get() in val mode (table and all) on the device."""
    _, rooms, _ = world
    config = ditr_config(world, "images.view_strategy=random")
    predictor = Predictor(model_from_config(config), config)
    expected = collate([SceneDataset([rooms[0]], None, config, "val").get(0, np.random.default_rng(5))])
    assert_same(predictor.batch(rooms[0], np.random.default_rng(5)), move_to(expected, predictor.device))
    student = load_preset(["synthetic", "method/d-ditr"], ["distill.head_channels=32"])
    with pytest.raises(DitrError, match="distillation checkpoint"):
        Predictor(model_from_config(student), student).predict(rooms[0])


# ------------------------------------------------------------------------------------------ outdoor pre-grid
#: The outdoor test pipeline's shape (reference: 2.5 cm pre-grid, 5 cm fragments; PointClip for SemanticKITTI / Waymo).
PRE_GRID = ("transforms.test=[{type: PointClip, point_cloud_range: [0.05, 0.05, 0, 0.45, 0.45, 0.2]}, "
            "{type: GridSample, grid_size: 0.025, mode: train, return_inverse: true}, "
            "{type: GridSample, grid_size: 0.05, mode: test}]")
FLIP_VARIANTS = "test_time.variants=[[], [{type: RandomFlip, p: 1}]]"


def scene_of(coord: np.ndarray) -> Scene:
    """An in-memory scene with random unit normals (the synthetic preset's input) and labels."""
    rng = np.random.default_rng(0)
    normal = rng.standard_normal(coord.shape).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return Scene(coord.astype(np.float32), {"normal": normal, "segment": rng.integers(0, 15, len(coord))})


def test_pre_grid_pipeline_gives_every_raw_point_its_representatives_vote():
    config = load_preset(["synthetic", "method/ptv3"], [PRE_GRID, FLIP_VARIANTS])
    scene = scene_of(np.random.default_rng(1).random((6000, 3)) * [0.5, 0.5, 0.25])
    torch.manual_seed(0)
    model = PointwiseModel()
    predictor = Predictor(model, config)
    pred = predictor.predict(scene, PredictOptions(tta=True), rng=np.random.default_rng(0))
    assert pred.probs.shape == (6000, 15) and len(pred.labels) == 6000
    data = predictor.dataset(tta=True)  # the same draws as predict: every raw point's pre-grid representative
    rng = np.random.default_rng(0)
    passes = data.voxelise(data.raw_sample(scene, rng)[0], rng)
    rep = passes[0]["represented_by"]
    assert (rep != np.arange(6000)).sum() > 1000  # the pre-grid thinned the scene
    # both variants vote for the same pre-grid points (one draw), each in at most 8 fragments (2^3 per 5 cm voxel)
    assert all(np.array_equal(p["represented_by"], rep) for p in passes)
    np.testing.assert_array_equal(np.unique(np.concatenate([p["index"] for p in passes])), np.unique(rep))
    assert pred.passes == len(passes) <= 2 * 8
    # the votes, summed here independently: the pre-grid points' mean, then each raw point its representative's
    scores, count = torch.zeros(6000, 15), torch.zeros(6000)
    with torch.no_grad():
        for p in passes:
            index = torch.from_numpy(p["index"])
            scores.index_add_(0, index, torch.softmax(model.head(torch.from_numpy(p["normal"])), 1))
            count.index_add_(0, index, torch.ones(len(index)))
    expected = (scores[rep] / count[rep][:, None]).numpy()
    np.testing.assert_allclose(pred.probs, expected, atol=1e-6)
    np.testing.assert_array_equal(pred.probs, pred.probs[rep])
    assert not np.allclose(pred.probs, pred.probs[np.arange(6000)[::-1]])


def test_pre_grid_of_a_scene_with_one_point_per_voxel_changes_nothing():
    ijk = np.stack(np.meshgrid(np.arange(12), np.arange(12), np.arange(6), indexing="ij"), -1).reshape(-1, 3)
    scene = scene_of((ijk + 0.5) * 0.025)  # 2.5 cm voxel centres, in voxel order: the pre-grid keeps them as they are
    plain = "transforms.test=[{type: GridSample, grid_size: 0.05, mode: test}]"
    results = []
    for test in (plain, PRE_GRID.replace("[0.05, 0.05, 0, 0.45, 0.45, 0.2]", "[-1, -1, -1, 1, 1, 1]")):
        config = load_preset(["synthetic", "method/ptv3"], [test, FLIP_VARIANTS])
        torch.manual_seed(0)
        predictor = Predictor(model_from_config(config), config)
        results.append(predictor.predict(scene, PredictOptions(tta=True), rng=np.random.default_rng(0)))
    assert results[0].passes == results[1].passes == 2 * 8
    np.testing.assert_array_equal(results[1].probs, results[0].probs)


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_scores_the_services_votes(world, tmp_path):
    """ditr evaluate, with and without TTA, is the confusion of the voting over the dataset's own
    samples (drawn with the evaluation seeds), computed here independently of the service."""
    _, rooms, _ = world
    config = ditr_config(world, "test_time.variants=[[], [{type: RandomRotate, angle: [0.5, 0.5], axis: z, "
                                "center: [0, 0, 0], p: 1}]]")
    ckpt = save_random_model(tmp_path / "ditr.pt", config)
    model = model_from_config(config).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=False)["model"])
    for tta in (False, True):
        ds = SceneDataset(rooms, None, config, "test" if tta else "val")
        conf = torch.zeros(15, 15, dtype=torch.int64)
        for i in range(len(rooms)):
            np.random.seed(item_seed(0, EVAL_STREAM, i))  # what the evaluator's loader does for item i
            item = ds.get(i, item_rng())
            with torch.no_grad():
                if tta:
                    n = len(item["origin_segment"])
                    scores, count = torch.zeros(n, 15), torch.zeros(n)
                    for fragment in item["fragments"]:
                        probs = torch.softmax(model(collate([fragment])), 1)
                        scores.index_add_(0, fragment["index"], probs)
                        count.index_add_(0, fragment["index"], torch.ones(len(fragment["index"])))
                    pred, target = (scores / count[:, None]).argmax(1), item["origin_segment"]
                else:
                    batch = collate([item])
                    pred, target = model(batch).argmax(1)[batch["inverse"]], batch["origin_segment"]
            conf += confusion_matrix(pred, target, 15, -1)
        result = evaluate(ckpt, rooms, tta=tta)
        assert torch.equal(result.confusion, conf), tta
        assert int(conf.sum()) == sum(Scene.load(r).num_points for r in rooms)


def test_load_applies_overrides_and_prediction_setup(world, tmp_path):
    root, rooms, _ = world
    ckpt = save_random_model(tmp_path / "ditr.pt", ditr_config(world))
    stored = Predictor.load(ckpt, overrides=["test_time.variants=[]"])
    assert stored.config.test_time.variants == [] and not stored.config.vfm.online
    online = Predictor.load(ckpt, options=PredictOptions(views=2))
    assert online.config.vfm.online and online.features is online.model.vfm
    assert online.config.images.views_per_sample == 2
    cached = Predictor.load(ckpt, options=PredictOptions(features=root / "features"))
    assert not cached.config.vfm.online and cached.features is None
    assert np.array_equal(cached.predict(rooms[0]).labels, stored.predict(rooms[0]).labels)

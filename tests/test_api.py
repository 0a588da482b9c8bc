"""Prediction on arrays in memory: Scene.from_arrays and ditr.api.predict, the same labels as from a directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import wall_and_box_scene

from ditr.api import load_predictor, predict
from ditr.build import model_from_config
from ditr.configs import load_preset
from ditr.engine.checkpoint import save_training_state
from ditr.errors import SceneError
from ditr.scene import Scene

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-init DITR of the synthetic preset (tiny PTv3, tiny random DINOv2), saved as training saves it."""
    config = load_preset(["synthetic"], ["dataset.num_classes=2", "dataset.class_names=[wall, box]"])
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_training_state(path, {"model": model_from_config(config).state_dict(), "config": config.to_dict(), "step": 0})
    return path


def arrays() -> dict:
    """The analytic wall-and-box scene of conftest as plain arrays."""
    scene = wall_and_box_scene(spacing=0.1)
    view = scene.views[0]
    return dict(points=scene.coord.astype(np.float64), colors=scene.attributes["color"].astype(np.float32) / 255,
                images=[view.image, view.image[:, ::-1].copy()], intrinsics=view.intrinsics,
                poses=np.stack([view.cam_to_world] * 2), depths=[view.depth, view.depth[:, ::-1].copy()])


def test_predict_on_arrays_equals_predict_on_the_saved_scene(tiny_model, tmp_path):
    scene = Scene.from_arrays(**arrays(), name="wall_box")
    assert scene.path is None and [v.name for v in scene.views] == ["view_0000", "view_0001"]
    assert scene.attributes["color"].dtype == np.uint8
    predictor = load_predictor(tiny_model, views="all")
    labels = predict(predictor, scene, max_points=None)
    assert labels.shape == (scene.num_points,) and labels.dtype == np.int64
    assert set(np.unique(labels)) <= {0, 1}
    saved = scene.save(tmp_path / "wall_box", image_format="png")  # lossless: the same pixels from disk
    np.testing.assert_array_equal(predict(predictor, saved, max_points=None), labels)


def test_a_scene_without_images_predicts_from_3d_alone(tiny_model):
    labels = predict(str(tiny_model), Scene.from_arrays(arrays()["points"]))  # a path: loaded for this call
    assert labels.shape == (len(arrays()["points"]),)


@pytest.mark.parametrize(("change", "field"), [
    ({"points": np.zeros((5, 2))}, "points"),
    ({"colors": np.full((10, 3), 2.0)}, "colors"),
    ({"normals": np.zeros((3, 3), np.float32)}, "normals: has 3 rows"),
    ({"images": [np.zeros((48, 64, 3), np.float32)] * 2}, r"images\[0\]"),
    ({"poses": np.eye(4)[None]}, "poses"),
    ({"poses": np.stack([np.diag([2.0, 1, 1, 1])] * 2)}, r"poses\[0\]"),
    ({"intrinsics": np.zeros((3, 3))}, r"intrinsics\[0\]"),
    ({"depths": [np.zeros((2, 2))] * 2}, r"depths\[0\]"),
    ({"intrinsics": None}, "intrinsics"),
])
def test_bad_arrays_name_the_argument(change, field):
    values = arrays() | change
    if "points" in change:
        values = {"points": change["points"]}
    with pytest.raises(SceneError, match=rf"^Scene.from_arrays: {field}"):
        Scene.from_arrays(**values)

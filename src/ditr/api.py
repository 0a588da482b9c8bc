"""Prediction from Python on data in memory: no scene directory in, no output files out.

Build the scene with :meth:`ditr.scene.Scene.from_arrays` (points, colours, normals, images,
intrinsics, poses as arrays), then ``labels = predict(model, scene)``. ``model`` is anything
``ditr predict`` takes (a checkpoint, a ``.ditr`` bundle, a run directory, a published model's
name), or a :class:`~ditr.inference.Predictor` from :func:`load_predictor`, which keeps the model in
memory between calls. The work is :class:`ditr.inference.Predictor`'s, the service behind
``ditr predict``: the same views, chunks and votes, so the labels equal that command's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .inference import Predictor
    from .model_files import ModelFile
    from .scene import Scene


def load_predictor(model: str | Path | ModelFile, device: str = "cpu", *, views: str | int | None = None,
                   features: str | Path | None = None, download: bool = False) -> Predictor:
    """A model ready to predict scenes, as ``ditr predict`` loads it.

    ``views``: None keeps the model's evaluation views, ``"all"`` takes every image, a number that many
    evenly spaced; ``features``: a ``ditr features`` cache (default: the model's VFM runs on the images);
    ``download``: fetch a published model or VFM weights missing from the Hugging Face cache.
    """
    from .device import resolve_device
    from .inference import Predictor
    from .model_files import read_model_file
    from .predict import PredictOptions
    from .published import LoadOptions

    options = PredictOptions(views=views, features=features)
    resolved = resolve_device(device)
    return Predictor.load(read_model_file(model, LoadOptions(download=download)), resolved, options=options)


def predict(model: str | Path | ModelFile | Predictor, scene: Scene | str | Path, *, device: str = "cpu",
            views: str | int | None = None, max_points: int | None = 200_000, tta: bool = False,
            download: bool = False) -> np.ndarray:
    """Class ids (N,) int64 of every point of ``scene`` (a :class:`~ditr.scene.Scene`, e.g. from
    :meth:`~ditr.scene.Scene.from_arrays`, or a scene directory).

    ``max_points`` voxels go through the model at a time (None: the whole scene); ``tta`` votes over
    the test-time variants. ``device``, ``views`` and ``download`` are :func:`load_predictor`'s and
    apply when ``model`` is not a loaded predictor already. Names of the classes:
    ``predictor.config.dataset.class_names``.
    """
    from .inference import Predictor
    from .predict import PredictOptions

    predictor = model if isinstance(model, Predictor) else load_predictor(model, device, views=views,
                                                                           download=download)
    return predictor.predict(scene, PredictOptions(max_points=max_points, tta=tta)).labels

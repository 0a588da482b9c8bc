"""Projection checked against ground truth: rooms rendered with exact depth and per-pixel labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditr.io.synthetic import CLASS_NAMES, generate_room
from ditr.projection import ProjectionConfig, project_scene

FURNITURE = [CLASS_NAMES.index(c) for c in ("table", "chair", "bed", "sofa", "cabinet", "shelf", "lamp")]


@pytest.fixture(scope="module")
def rooms():
    return [generate_room(seed) for seed in (0, 1)]


def ground_truth(scene, corr):
    """Per (view, point): rendered label and depth at the point's pixel."""
    labels, depths = [], []
    for i, view in enumerate(scene.views):
        uv = corr.uv[i].floor().long()
        row = uv[:, 1].clamp(0, view.height - 1)
        col = uv[:, 0].clamp(0, view.width - 1)
        labels.append(torch.from_numpy(view.label)[row, col])
        depths.append(torch.from_numpy(view.depth)[row, col])
    return torch.stack(labels), torch.stack(depths)


def label_agreement(scene, corr) -> float:
    label, _ = ground_truth(scene, corr)
    seg = torch.from_numpy(scene.segment())[None].expand_as(label)
    return float((label == seg)[corr.visible].float().mean())


def test_visible_points_land_on_their_own_label_with_rendered_depth(rooms):
    for room in rooms:
        # The rendered depth is exact, so a tolerance of a few cm suits it; the reference's 0.2 m is
        # meant for sensor noise and also admits points up to 0.2 m behind a surface.
        exact = project_scene(room, ProjectionConfig(occlusion="depth", depth_tolerance=0.05))
        assert label_agreement(room, exact) >= 0.995
        reference = project_scene(room, ProjectionConfig(occlusion="depth"))
        assert label_agreement(room, reference) >= 0.994


def test_visible_points_land_on_their_own_label_with_splatted_depth(rooms):
    for room in rooms:
        corr = project_scene(room, ProjectionConfig(occlusion="splat"))
        assert label_agreement(room, corr) >= 0.985
        unoccluded = project_scene(room, ProjectionConfig(occlusion="none"))
        assert label_agreement(room, corr) > label_agreement(room, unoccluded) + 0.1


@pytest.mark.parametrize("occlusion, max_leak", [("depth", 0.0), ("splat", 0.015)])
def test_points_behind_furniture_are_not_visible(rooms, occlusion, max_leak):
    for room in rooms:
        corr = project_scene(room, ProjectionConfig(occlusion=occlusion))
        label, depth = ground_truth(room, corr)
        behind_furniture = corr.in_frame & torch.isin(label, torch.tensor(FURNITURE)) & (corr.depth > depth + 0.3)
        assert behind_furniture.sum() > 100
        assert corr.visible[behind_furniture].float().mean() <= max_leak


def test_splatted_depth_keeps_most_truly_visible_points(rooms):
    for room in rooms:
        corr = project_scene(room, ProjectionConfig(occlusion="splat"))
        _, depth = ground_truth(room, corr)
        truly_visible = corr.in_frame & ((corr.depth - depth).abs() < 0.02)
        assert corr.visible[truly_visible].float().mean() >= 0.8


def test_point_colours_match_rendered_pixels(rooms):
    room = rooms[0]
    corr = project_scene(room, ProjectionConfig(occlusion="depth", depth_tolerance=0.05))
    color = room.attributes["color"].astype(np.float64)
    for i, view in enumerate(room.views):
        vis = corr.visible[i].numpy()
        uv = corr.uv[i].numpy()[vis].astype(int)
        pixels = view.image[uv[:, 1], uv[:, 0]].astype(np.float64)
        assert np.corrcoef(pixels.ravel(), color[vis].ravel())[0, 1] > 0.9

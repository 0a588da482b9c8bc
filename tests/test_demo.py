"""The demo's output while it works (first line, stage headers, progress with ETA), its modes, and the
choice of the held-out view its prediction figure shows."""

from __future__ import annotations

import re

import numpy as np

from ditr.demo import MODES, DemoSettings
from ditr.demo.figures import choose_view
from ditr.demo.pipeline import STAGES, Display, intro, mode_of
from ditr.engine.logging import ProgressBar
from ditr.io.synthetic import CLASS_NAMES, ensure_rooms
from ditr.scene import Scene
from ditr.viz.labels import render_label_comparison


def test_first_line_says_what_the_demo_does_and_how_long_it_takes():
    quick = intro(DemoSettings.quick(seed=3), mode_of(DemoSettings.quick(seed=3)), 2)
    assert quick.startswith("ditr demo --quick: 3D-only PTv3 vs DITR vs D-DITR on 16 training + 4 held-out")
    assert all(stage in quick for stage in STAGES) and MODES["quick"].expected in quick
    smoke = intro(DemoSettings.smoke(), mode_of(DemoSettings.smoke()), 2)
    assert "not a result" in smoke and MODES["smoke"].expected in smoke
    own = intro(DemoSettings.quick(steps=50), mode_of(DemoSettings.quick(steps=50)), 1)
    assert mode_of(DemoSettings.quick(steps=50)) is None and "not measured for these settings" in own


def test_worker_reports_become_stage_headers_and_progress_lines(capsys):
    """Off a terminal (CI logs): numbered headers with the time since the start, plain progress lines."""
    with ProgressBar(enabled=True, plain_every_s=3600) as bar:
        display = Display(bar)
        display.stage("synthesise rooms", "3 rooms")
        for message in [("start", "3d-only"), ("step", "3d-only", 1, 4, "loss 2.000"),
                        ("step", "3d-only", 2, 4, "loss 1.500"), ("line", "3d-only", "step 2: held-out mIoU 12.5%"),
                        ("step", "3d-only", 4, 4, "loss 1.000"), ("start", "evaluate 3d-only")]:
            display.handle(message)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[0:00] (1/8) synthesise rooms: 3 rooms" and lines[1] == "[0:00] (3/8) train 3D-only"
    assert re.fullmatch(r"train 3D-only 1/4  loss 2\.000  \[elapsed 0:0\d, ETA .*\]", lines[2])
    assert lines[3] == "[0:00]   3d-only: step 2: held-out mIoU 12.5%"  # step 2 was rate-limited
    assert lines[4].startswith("train 3D-only 4/4  loss 1.000  [elapsed")
    assert lines[5].startswith("[0:00] (7/8) evaluate") and lines[6] == "[0:00]   evaluate 3d-only"


def test_prediction_figure_shows_the_view_where_the_better_method_wins(tmp_path):
    rooms = ensure_rooms(tmp_path / "rooms", 2, 0, 2000, 3)
    scenes = [Scene.load(r) for r in rooms]
    gt = {s.name: s.segment() for s in scenes}
    # "good" is right everywhere; "bad" is wrong on every point that room 1's best-covered camera sees
    from ditr.projection import ProjectionConfig, project_scene

    seen = project_scene(scenes[1], ProjectionConfig()).visible.numpy()
    best = int(seen.sum(1).argmax())
    bad = {name: labels.copy() for name, labels in gt.items()}
    bad[scenes[1].name][seen[best]] = (gt[scenes[1].name][seen[best]] + 1) % len(CLASS_NAMES)
    chosen = choose_view(rooms, {"good": gt, "bad": bad}, "good", "bad")
    assert chosen.room == rooms[1] and chosen.better_only == int(seen[best].sum()) and chosen.worse_only == 0
    scene = Scene.load(chosen.room)
    path = render_label_comparison(scene, {"ground truth": gt[scene.name], "good": gt[scene.name],
                                           "bad": bad[scene.name]}, CLASS_NAMES, tmp_path / "pred.png",
                                   view=chosen.view, title="test", compare=("good", "bad"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert np.array_equal(bad[scenes[0].name], gt[scenes[0].name])

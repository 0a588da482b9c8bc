"""The demo's output while it works (first line, stage headers, progress with ETA), its modes, and the
choice of the held-out view its prediction figure shows."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pytest

from ditr.demo import MODES, STUDY_RUNS, DemoSettings
from ditr.demo.figures import choose_view
from ditr.demo.pipeline import STAGES, Display, intro, mode_of
from ditr.demo.results import closing_lines, markdown, summarise
from ditr.engine.logging import ProgressBar, to_jsonable
from ditr.io.synthetic import CLASS_NAMES, ensure_rooms
from ditr.scene import Scene
from ditr.viz.labels import render_label_comparison


def test_first_line_says_what_the_demo_does_and_how_long_it_takes():
    quick = intro(DemoSettings.quick(seed=3), mode_of(DemoSettings.quick(seed=3)), 2, seeds=[3])
    assert quick.startswith("ditr demo --quick: 3d-only vs ditr vs d-ditr, seed 3; per seed 16 training + 4 "
                            "validation + 6 test")
    assert all(stage in quick for stage in STAGES) and MODES["quick"].expected in quick
    assert "One seed is not a result" in quick
    smoke = intro(DemoSettings.smoke(), mode_of(DemoSettings.smoke()), 2)
    assert "not a result" in smoke and MODES["smoke"].expected in smoke
    own = intro(DemoSettings.quick(steps=50), mode_of(DemoSettings.quick(steps=50)), 1)
    assert mode_of(DemoSettings.quick(steps=50)) is None and "not measured for these settings" in own
    study = intro(DemoSettings.quick(), mode_of(DemoSettings.quick()), 2, STUDY_RUNS, [0, 1, 2, 3, 4])
    assert "5 seeds (0-4)" in study and "d-ditr-same-total" in study and "One seed" not in study
    assert MODES["quick"].study_expected in study


def test_worker_reports_become_stage_headers_and_progress_lines(capsys):
    """Off a terminal (CI logs): numbered headers with the time since the start, plain progress lines."""
    with ProgressBar(enabled=True, plain_every_s=3600) as bar:
        display = Display(bar)
        display.stage("synthesise rooms", "3 rooms")
        display.stage("train and evaluate")
        for message in [("start", "3d-only seed 0"), ("step", "3d-only seed 0", 1, 4, "loss 2.000"),
                        ("step", "3d-only seed 0", 2, 4, "loss 1.500"),
                        ("line", "3d-only seed 0", "step 2: validation mIoU 12.5%"),
                        ("step", "3d-only seed 0", 4, 4, "loss 1.000"), ("advance", "2D features", 3, 6, "images")]:
            display.handle(message)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[0:00] (1/4) synthesise rooms: 3 rooms" and lines[1] == "[0:00] (3/4) train and evaluate"
    assert lines[2] == "[0:00]   3d-only seed 0: started"
    assert re.fullmatch(r"3d-only seed 0 1/4  loss 2\.000  \[elapsed 0:0\d, ETA .*\]", lines[3])
    assert lines[4] == "[0:00]   3d-only seed 0: step 2: validation mIoU 12.5%"  # step 2 was rate-limited
    assert lines[5].startswith("3d-only seed 0 4/4  loss 1.000  [elapsed")
    assert lines[6].startswith("2D features 3/6  images")


def plan(seed: int, mious: dict[str, float]):
    """A seed's plan with results as the pipeline leaves them (every class's IoU = the run's mIoU)."""
    from ditr.demo.pipeline import SeedPlan

    results = {run: {"miou": m, "macc": m, "allacc": m, "val_miou": m, "iou": dict.fromkeys(CLASS_NAMES, m),
                     "teacher_cosine": 0.5} for run, m in mious.items()}
    return SeedPlan(DemoSettings.quick(seed=seed), {"train": [], "val": [], "test": []}, Path("runs"), results)


def test_results_over_seeds_give_means_spreads_and_paired_intervals():
    runs = ["3d-only", "ditr", "d-ditr"]
    mious = [(0.50, 0.60, 0.52), (0.60, 0.72, 0.61), (0.55, 0.64, 0.55)]
    plans = [plan(seed, dict(zip(runs, m))) for seed, m in enumerate(mious)]
    results = summarise(plans, runs, {})
    ditr = results["runs"]["ditr"]
    assert ditr["miou"] == pytest.approx(0.6533333) and ditr["miou_std"] == pytest.approx(0.0611010, rel=1e-4)
    assert ditr["miou_per_seed"] == {"0": 0.60, "1": 0.72, "2": 0.64}
    assert ditr["iou"]["rug"] == pytest.approx(ditr["miou"])
    assert ditr["iou_std"]["rug"] == pytest.approx(ditr["miou_std"])
    gain = results["comparisons"]["ditr - 3d-only"]
    # paired: the differences 0.10, 0.12, 0.09 (mean 0.1033, sd 0.01528, t(2) = 4.303)
    assert gain["mean"] == pytest.approx(0.1033333) and gain["std"] == pytest.approx(0.0152753, rel=1e-4)
    assert gain["ci95"] == pytest.approx([0.1033333 - 4.303 * 0.0152753 / 3 ** 0.5,
                                          0.1033333 + 4.303 * 0.0152753 / 3 ** 0.5], rel=1e-4)
    assert gain["excludes_zero"] and gain["per_seed"] == pytest.approx({"0": 0.10, "1": 0.12, "2": 0.09})
    assert not results["comparisons"]["d-ditr - 3d-only"]["excludes_zero"]
    assert set(results["comparisons"]) == {"ditr - 3d-only", "d-ditr - 3d-only"}  # only pairs that both ran
    results.update(seconds=75.0)
    lines = closing_lines(results, "demo_out")
    assert lines[0].startswith("test mIoU (6 test rooms per seed") and "over 3 seeds" in lines[0]
    assert any(line.split()[:3] == ["ditr", "-", "3d-only"] and line.endswith("above zero") for line in lines)
    assert any(line.split()[:3] == ["d-ditr", "-", "3d-only"] and line.endswith("within noise") for line in lines)
    assert "done in 1 min 15 s" in lines[-1]
    table = markdown(to_jsonable(results))  # results.md
    assert "| `ditr` | 60.0 | 72.0 | 64.0 | 65.3 | 6.1 |" in table
    assert "| `ditr - 3d-only` | +10.0 | +12.0 | +9.0 | +10.3 | [+6.5, +14.1] |" in table


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

"""The README's first session on a dataset, shrunk: import (split lists + estimated normals) -> a short
training run -> evaluate -> predict -> info, all through the ``ditr`` command line.

The source is built from the shared ScanNet sample the way the common preprocessing stores ScanNet:
``SRC/train/<scene>/`` and ``SRC/val/<scene>/`` with no ``normal.npy``, plus the exported frames.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from ditr.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

#: Every k-th point of the 81k-point sample (2.5k points): a run of a few seconds on a CPU.
STEP = 32
TINY = ["model.backbone=tiny", "trainer.batch_size=1", "trainer.epochs=3", "trainer.eval_every_epochs=3",
        "trainer.num_workers=0"]


def preprocessed_source(root: Path) -> Path:
    """SRC/train/scene0000_00 and SRC/val/scene0001_00 (two subsamples of the sample), frames for both."""
    sample = shared_path("data", "scannet")
    src = root / "src"
    for split, name, offset in [("train", "scene0000_00", 0), ("val", "scene0001_00", STEP // 2)]:
        scene = src / split / name
        scene.mkdir(parents=True)
        for array in ("coord", "color", "segment20", "instance"):
            np.save(scene / f"{array}.npy", np.load(sample / "scene0000_00" / f"{array}.npy")[offset::STEP])
        shutil.copytree(sample / "frames" / "scene0000_00", src / "frames" / name)
    return src


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_import_train_evaluate_predict_info(tmp_path, capsys):
    src, out, work = preprocessed_source(tmp_path), tmp_path / "scenes", tmp_path / "runs" / "ptv3"
    code, stdout, stderr = run(["import", "scannet", str(src), str(out), "--normals", "estimate"], capsys)
    report = json.loads(stdout)
    assert code == 0 and report["splits"] == {"train": 1, "val": 1}
    assert report["normals_estimated"] == ["scene0000_00", "scene0001_00"]
    assert "split lists in" in stderr and "train.txt (1 scenes)" in stderr
    assert (out / "splits" / "train.txt").read_text() == "scene0000_00\n"
    assert (out / "splits" / "val.txt").read_text() == "scene0001_00\n"
    normal = np.load(out / "scene0000_00" / "normal.npy")
    assert normal.shape == (len(np.load(out / "scene0000_00" / "coord.npy")), 3) and normal.dtype == np.float32
    assert (np.abs(np.linalg.norm(normal, axis=1) - 1) < 1e-5).mean() > 0.99

    train = ["train", "scannet", "method/ptv3", f"dataset.root={out}", *TINY, "--quiet", "--work-dir", str(work)]
    assert run(train, capsys)[0] == 0
    assert (work / "best.pt").is_file() and (work / "metrics.jsonl").is_file()
    val = str(out / "scene0001_00")
    code, stdout, _ = run(["evaluate", str(work / "best.pt"), val, "--out", str(tmp_path / "eval.json")], capsys)
    assert code == 0 and 0 <= json.loads((tmp_path / "eval.json").read_text())["miou"] <= 1
    code, stdout, _ = run(["predict", str(work / "best.pt"), val, "--out", str(tmp_path / "pred"), "--quiet",
                           "--render-views", "0"], capsys)
    labels = np.load(tmp_path / "pred" / "labels.npy")
    assert code == 0 and labels.shape == (len(np.load(out / "scene0001_00" / "coord.npy")),)
    code, stdout, _ = run(["info", str(work / "best.pt")], capsys)
    assert code == 0 and "ptv3" in stdout


def test_training_without_normals_says_how_to_get_them(tmp_path, capsys):
    src, out = preprocessed_source(tmp_path), tmp_path / "scenes"
    code, stdout, stderr = run(["import", "scannet", str(src), str(out)], capsys)
    assert code == 0 and "import again with --normals estimate" in stderr
    assert not (out / "scene0000_00" / "normal.npy").exists()
    code, _, stderr = run(["train", "scannet", "method/ptv3", f"dataset.root={out}", *TINY, "--quiet",
                           "--work-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "lack normal.npy" in stderr and "--normals estimate" in stderr and "input_features=[color]" in stderr


def test_official_lists_decide_the_splits(tmp_path, capsys):
    src, out = preprocessed_source(tmp_path), tmp_path / "scenes"
    lists = tmp_path / "Benchmark"
    lists.mkdir()
    (lists / "scannetv2_train.txt").write_text("scene0000_00\nscene0001_00\nscene0002_00\n")
    (lists / "scannetv2_val.txt").write_text("scene0003_00\n")
    code, stdout, stderr = run(["import", "scannet", str(src), str(out), "--splits-dir", str(lists),
                                "--frame-step", "3"], capsys)
    assert code == 0 and json.loads(stdout)["splits"] == {"train": 2, "val": 0}
    assert (out / "splits" / "train.txt").read_text().split() == ["scene0000_00", "scene0001_00"]
    assert not (out / "splits" / "val.txt").exists()  # an empty split gets no file

"""`ditr train` under torchrun: two CPU ranks (gloo) on tiny synthetic rooms, end to end.

Checks what a multi-GPU user relies on (docs/scaling.md): the run finishes, rank 0 writes the
checkpoint and metrics, and the validation metrics come from the confusion matrix summed over BOTH
ranks (every validation point counted exactly once: three scenes over two ranks, so a missing
all-reduce or padded evaluation shows), equal to a single-process `ditr evaluate` of the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.io.synthetic import ensure_rooms
from ditr.vfm.extract import fill_scene_features
from ditr.engine import distributed
from ditr.engine.metrics import segmentation_metrics

TRAIN = ["room_0000", "room_0001"]
VAL = ["room_0000", "room_0001", "room_0002"]  # uneven over 2 ranks: rank 0 gets 0 and 2, rank 1 gets 1
POINTS, VIEWS, STEPS = 2000, 3, 3
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=timeout)
    assert proc.returncode == 0, \
        f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def close(a: dict, b: dict) -> None:
    """Two metric dicts equal: mIoU / mAcc / allAcc and every per-class value (NaN = NaN)."""
    for key in ("miou", "macc", "allacc"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    for key in ("iou", "acc"):
        assert list(a[key]) == list(b[key]), key  # the same class names, in the same order
        x = np.array([np.nan if v is None else v for v in a[key].values()], dtype=float)
        y = np.array([np.nan if v is None else v for v in b[key].values()], dtype=float)
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=key)


def train_cmd(base: Path, work: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
            "-m", "ditr.cli", "train", "synthetic", "method/ditr",
            f"dataset.root={base / 'rooms'}", f"dataset.splits.train=[{','.join(TRAIN)}]",
            f"dataset.splits.val=[{','.join(VAL)}]", f"vfm.cache={base / 'features'}",
            "model.image_channels=32", "trainer.epochs=null", f"trainer.max_steps={steps}",
            "trainer.batch_size=2", "trainer.eval_every_epochs=0", "trainer.num_workers=0",
            "optim.lr=0.01", "--work-dir", str(work), "--quiet"]


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    rooms = ensure_rooms(base / "rooms", len(VAL), seed=0, points=POINTS, views=VIEWS)
    fill_scene_features(rooms, "dinov2-tiny-random-reg", base / "features")
    work = base / "run"
    proc = run(train_cmd(base, work, STEPS))
    return base, work, proc


def test_two_rank_training_finishes_and_writes_the_run(distributed_run):
    base, work, proc = distributed_run
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == STEPS and summary["total_steps"] == STEPS
    for name in ("last.pt", "best.pt", "metrics.jsonl"):
        assert (work / name).is_file(), name
    state = torch.load(work / "last.pt", weights_only=True, map_location="cpu")
    assert state["step"] == STEPS
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    # Only rank 0 writes: one train record per logged step, not one per rank.
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS


def val_record(work: Path) -> dict:
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [STEPS], "one evaluation, at the end of training"
    return val[0]


def label_counts(scenes: list[Path]) -> np.ndarray:
    """Points per class over the scenes, at full resolution (what the evaluation must count)."""
    return sum(np.bincount(np.load(s / "segment.npy")[np.load(s / "segment.npy") >= 0], minlength=15)
               for s in scenes)


@pytest.fixture(scope="module")
def single_eval(distributed_run):
    """`ditr evaluate` of the run's last.pt in one process over all validation rooms."""
    base, work, _ = distributed_run
    scenes = [base / "rooms" / name for name in VAL]
    out = base / "eval.json"
    proc = run([sys.executable, "-m", "ditr.cli", "evaluate", str(work / "last.pt"), *map(str, scenes),
                "--out", str(out)])
    single = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1])["miou"] == single["miou"]
    return single


def test_distributed_confusion_counts_every_labelled_point_once(distributed_run):
    """The logged per-class accuracies are tp_c / (points of class c): with the confusion summed over
    both ranks, acc_c x (class-c points of ALL validation rooms) is a whole number for every class;
    with one rank's share, or a padded shard counting a room twice, it is not."""
    base, work, _ = distributed_run
    record = val_record(work)
    gt = label_counts([base / "rooms" / name for name in VAL])
    assert gt.sum() == len(VAL) * POINTS
    for c, (acc, n) in enumerate(zip(record["acc"].values(), gt)):
        assert (acc is None) == (n == 0), f"class {c}: accuracy {acc} with {n} labelled points"
        if n:
            assert abs(acc * n - round(acc * n)) < 1e-6, f"class {c}: {acc} x {n} points is not a count"
    correct = record["allacc"] * gt.sum()
    assert abs(correct - round(correct)) < 1e-6
    # The check can tell: against rank 0's rooms alone (0 and 2) the same numbers are not counts.
    rank0 = label_counts([base / "rooms" / VAL[i] for i in (0, 2)])
    assert any(acc is not None and n and abs(acc * n - round(acc * n)) > 1e-6
               for acc, n in zip(record["acc"].values(), rank0)), "accuracies too degenerate to tell the shards apart"


def test_rank_shards_add_up_to_the_single_process_confusion(distributed_run, single_eval, monkeypatch):
    """Single-process `ditr evaluate` counts every labelled point once, and what each rank scores on
    its own shard (exactly as in the run, re-run here without collectives) adds up to it."""
    from ditr.training import evaluate

    base, work, _ = distributed_run
    scenes = [base / "rooms" / name for name in VAL]
    conf = torch.tensor(single_eval["confusion"])
    assert conf.sum(1).tolist() == label_counts(scenes).tolist()  # rows: ground truth, full resolution
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the run (OMP_NUM_THREADS=1): same arithmetic, same arg-max
    try:
        shards = []
        for rank in range(2):
            monkeypatch.setattr(distributed, "get_rank", lambda r=rank: r)
            monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
            shards.append(evaluate(work / "last.pt", scenes).confusion)
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    assert [int(c.sum()) for c in shards] == [2 * POINTS, POINTS]
    assert torch.equal(shards[0] + shards[1], conf)
    rank0 = segmentation_metrics(shards[0])
    assert not (rank0["allacc"] == pytest.approx(single_eval["allacc"])
                and rank0["miou"] == pytest.approx(single_eval["miou"]))


def test_distributed_val_metrics_equal_single_process_evaluate(distributed_run, single_eval):
    _, work, _ = distributed_run
    record = val_record(work)
    assert record["miou"] == pytest.approx(single_eval["miou"], rel=1e-9)
    close(record, single_eval)


def test_two_rank_run_resumes_exactly_from_the_shared_work_dir(distributed_run, tmp_path):
    """A run stopped after step STEPS - 1 (its previous checkpoint) and started again with the same
    command ends with the same weights, bit for bit, as the uninterrupted run."""
    base, work, _ = distributed_run
    again = tmp_path / "run"
    shutil.copytree(work, again)
    os.replace(again / "last.prev.pt", again / "last.pt")  # as if stopped before the last step
    assert torch.load(again / "last.pt", weights_only=True, map_location="cpu")["step"] == STEPS - 1
    proc = run(train_cmd(base, again, STEPS))
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == STEPS
    resumed = torch.load(again / "last.pt", weights_only=True, map_location="cpu")
    original = torch.load(work / "last.pt", weights_only=True, map_location="cpu")
    assert resumed["step"] == STEPS
    for name, value in original["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    records = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, STEPS + 1))
    assert [r["step"] for r in records if r["kind"] == "val"] == [STEPS]

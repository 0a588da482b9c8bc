"""`ditr train` under torchrun: two CPU ranks (gloo) on tiny synthetic rooms, end to end.

Checks what a multi-GPU user relies on (docs/scaling.md): the run finishes, rank 0 writes the
checkpoint and metrics, and the validation metrics come from the confusion matrix summed over BOTH
ranks (every validation point counted exactly once: three scenes over two ranks, so a missing
all-reduce or padded evaluation shows), equal to a single-process `ditr evaluate` of the checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditr.demo import DemoSettings, ensure_rooms, fill_features
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
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def close(a: dict, b: dict) -> None:
    """Two metric dicts equal: mIoU / mAcc / allAcc and every per-class value (NaN = NaN)."""
    for key in ("miou", "macc", "allacc"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    for key in ("iou", "acc"):
        x = np.array([np.nan if v is None else v for v in a[key]], dtype=float)
        y = np.array([np.nan if v is None else v for v in b[key]], dtype=float)
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=key)


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    rooms = ensure_rooms(base / "rooms", len(VAL), seed=0, points=POINTS, views=VIEWS)
    fill_features(rooms, DemoSettings(points=POINTS, views=VIEWS), base / "features")
    work = base / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "ditr.cli", "train", "synthetic", "method/ditr",
           f"dataset.root={base / 'rooms'}", f"dataset.splits.train=[{','.join(TRAIN)}]",
           f"dataset.splits.val=[{','.join(VAL)}]", f"vfm.cache={base / 'features'}",
           "model.image_channels=32", "trainer.epochs=null", f"trainer.max_steps={STEPS}",
           "trainer.batch_size=2", "trainer.eval_every_epochs=0", "trainer.num_workers=0",
           "optim.lr=0.01", "--work-dir", str(work), "--quiet"]
    proc = run(cmd)
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


def test_distributed_evaluation_counts_every_point_once(distributed_run, monkeypatch):
    base, work, _ = distributed_run
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [STEPS], "one evaluation, at the end of training"
    record = val[0]

    # The same checkpoint evaluated by one process over all validation rooms.
    scenes = [base / "rooms" / name for name in VAL]
    out = base / "eval.json"
    proc = run([sys.executable, "-m", "ditr.cli", "evaluate", str(work / "last.pt"), *map(str, scenes),
                "--out", str(out)])
    single = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1])["miou"] == single["miou"]
    conf = torch.tensor(single["confusion"])
    labelled = sum(int((np.load(s / "segment.npy") != -1).sum()) for s in scenes)
    assert int(conf.sum()) == labelled == len(VAL) * POINTS  # full resolution, every point once

    # Distributed mIoU at that step == single-process mIoU (the summed matrix, not one rank's).
    assert record["miou"] == pytest.approx(single["miou"], rel=1e-9)
    close(record, single)

    # What each rank evaluates on its own (its shard, exactly as in the run, no collectives):
    # the shards add up to the whole matrix, and rank 0's share alone scores differently, so the
    # equality above can only hold if both ranks' confusion matrices were summed.
    from ditr.training import evaluate

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
    assert not (rank0["allacc"] == pytest.approx(record["allacc"]) and rank0["miou"] == pytest.approx(record["miou"]))

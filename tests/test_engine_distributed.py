"""Sharding, single-process fallbacks, and a real 2-rank gloo run under torchrun."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ditr.engine import distributed

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("n,world", [(10, 3), (7, 2), (4, 4), (1, 2)])
def test_shard_indices(n, world):
    pad = [distributed.shard_indices(n, r, world, epoch=3, seed=1) for r in range(world)]
    assert len({len(s) for s in pad}) == 1 and len(pad[0]) == -(-n // world)
    assert set().union(*map(set, pad)) == set(range(n))
    assert pad == [distributed.shard_indices(n, r, world, epoch=3, seed=1) for r in range(world)]

    trunc = [distributed.shard_indices(n, r, world, mode="truncate") for r in range(world)]
    assert all(len(s) == n // world for s in trunc)
    exact = [distributed.shard_indices(n, r, world, shuffle=False, mode="none") for r in range(world)]
    assert sorted(sum(exact, [])) == list(range(n))


def test_epochs_shuffle_differently():
    a = distributed.shard_indices(50, 0, 1, epoch=0)
    assert a != distributed.shard_indices(50, 0, 1, epoch=1)
    assert a != distributed.shard_indices(50, 0, 1, epoch=0, seed=1)


def test_single_process_fallbacks(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    assert info.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    t = torch.ones(2)
    assert distributed.all_reduce_sum(t) is t and distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    model = nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, info) is model and distributed.unwrap(model) is model
    distributed.barrier()
    assert distributed.init_distributed(device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        distributed.init_distributed(device="tpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_torchrun(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(TESTS / "test_engine_toy.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # Evaluation covers every validation scene exactly once and sums over ranks.
    assert sorted(ranks[0]["shard"] + ranks[1]["shard"]) == list(range(7))
    total = ranks[0]["local"] + ranks[1]["local"]
    assert int(ranks[0]["local"].sum()) > 0 and int(ranks[1]["local"].sum()) > 0
    assert torch.equal(ranks[0]["reduced"], total) and torch.equal(ranks[1]["reduced"], total)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    # DDP keeps the replicas identical; both ranks ran the same number of steps.
    assert ranks[0]["step"] == ranks[1]["step"] == 6
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    # A SIGTERM to rank 1 alone stopped both ranks at the same step, after it; the resumed run
    # ends exactly where the uninterrupted one did.
    assert ranks[0]["stopped_at"] == ranks[1]["stopped_at"] == 3
    for r in ranks:
        assert r["resumed_step"] == 6
        for key, value in ranks[0]["weights"].items():
            assert torch.equal(value, r["resumed_weights"][key]), key
    # Only rank 0 wrote the run's files.
    run = tmp_path / "straight"
    assert (run / "last.pt").exists() and (run / "metrics.jsonl").exists()
    state = torch.load(run / "last.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["world_size"] == 2
    for key, value in state["model"].items():
        assert torch.equal(value, ranks[0]["weights"][key])

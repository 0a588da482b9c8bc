"""Parameter groups, OneCycle shape, clipping; checkpoint round trip, rotation and fallback."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from ditr.engine.checkpoint import (CheckpointManager, TrainingStateError, find_resume, load_training_state,
                                    preserved_rng, rng_state, save_training_state, set_rng_state)
from ditr.engine.optim import GroupRule, OptimConfig, build, clip_gradients, param_groups


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(3, 4)
        self.block0 = nn.Linear(4, 4)
        self.enc = nn.ModuleDict({"block1": nn.Linear(4, 4)})
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 1)
        self.frozen.requires_grad_(False)


def test_param_groups_by_name():
    net = Net()
    groups = param_groups(net, lr=0.006, weight_decay=0.05,
                          rules=[GroupRule("block", 0.1), GroupRule("norm", 1.0, weight_decay=0.0)])
    by_name = {g["name"]: g for g in groups}
    assert by_name["block"]["lr"] == pytest.approx(0.0006)
    assert len(by_name["block"]["params"]) == 4
    assert by_name["default"]["lr"] == 0.006 and len(by_name["default"]["params"]) == 2
    assert by_name["norm"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == 8  # frozen parameters left out


def test_one_cycle_schedule_follows_the_recipe():
    cfg = OptimConfig.from_dict({"lr": 0.006, "groups": [{"keyword": "block", "lr_scale": 0.1}],
                                 "pct_start": 0.05, "div_factor": 10, "final_div_factor": 1000})
    opt, sched = build(Net(), cfg, total_steps=200)
    assert opt.param_groups[0]["weight_decay"] == 0.05
    lrs, betas = [], []
    for _ in range(200):
        lrs.append([g["lr"] for g in opt.param_groups])
        betas.append(opt.param_groups[0]["betas"][0])
        opt.step()
        sched.step()
    lrs = np.array(lrs)
    assert lrs[0] == pytest.approx([0.0006, 0.00006])
    peak = int(0.05 * 200) - 1  # torch ends the warm-up phase at step pct_start * total - 1
    assert lrs[peak] == pytest.approx([0.006, 0.0006]) and int(lrs[:, 0].argmax()) == peak
    assert lrs[-1] == pytest.approx([0.006 / 10 / 1000, 0.0006 / 10 / 1000], rel=1e-3)
    assert betas[0] == pytest.approx(0.95) and betas[peak] == pytest.approx(0.85)


@pytest.mark.parametrize("steps", [3, 4, 20, 40, 41])
def test_short_schedules_work(steps):
    opt, sched = build(Net(), OptimConfig(), total_steps=steps)
    used = []
    for _ in range(steps):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(used) == pytest.approx(0.006, rel=0.01) and used[0] == pytest.approx(0.0006)
    assert used[-1] == pytest.approx(0.006 / 10 / 1000, rel=1e-6)
    with pytest.raises(ValueError, match="3 steps"):
        build(Net(), OptimConfig(), total_steps=2)


def test_clip_gradients():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert clip_gradients([p], 1.0) == pytest.approx(6.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients([p], None) is None


def test_rng_state_round_trip():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]
    with preserved_rng():
        torch.rand(5), np.random.rand(5), random.random()
    after = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(after[0], torch.rand(3))


def test_checkpoint_round_trip(tmp_path):
    net = Net()
    state = {"model": net.state_dict(), "step": 7, "rng": [rng_state()], "config": {"a": [1, 2]}}
    save_training_state(tmp_path / "x.pt", state)
    loaded = load_training_state(tmp_path / "x.pt")
    assert loaded["step"] == 7 and loaded["config"] == {"a": [1, 2]}
    assert all(torch.equal(loaded["model"][k], v) for k, v in net.state_dict().items())
    set_rng_state(loaded["rng"][0])
    assert list(tmp_path.iterdir()) == [tmp_path / "x.pt"]  # no temporary file left behind


def test_rotation_fallback_and_best(tmp_path):
    manager = CheckpointManager(tmp_path)
    assert manager.load_resume() is None and find_resume(tmp_path) is None
    manager.save({"step": 1}, is_best=True)
    manager.save({"step": 2})
    assert load_training_state(manager.prev)["step"] == 1
    assert load_training_state(manager.best)["step"] == 1
    assert find_resume(tmp_path) == manager.last

    data = manager.last.read_bytes()
    manager.last.write_bytes(data[: len(data) // 2])  # a partial write
    with pytest.warns(UserWarning, match="damaged"):
        path, state = manager.load_resume()
    assert path == manager.prev and state["step"] == 1

    manager.prev.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingStateError, match="no readable.*--restart"):
        manager.load_resume()
    with pytest.warns(UserWarning, match="starting over"):
        assert manager.load_resume(restart=True) is None
    assert manager.last.exists() and manager.prev.exists()  # damaged files keep their names

    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(TrainingStateError, match="format"):
        load_training_state(tmp_path / "foreign.pt")

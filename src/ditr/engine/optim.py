"""AdamW with name-based parameter groups, OneCycle schedule and gradient clipping (docs/design.md#training-recipe).

The reference gives every parameter whose name contains ``"block"`` (the transformer blocks)
a tenth of the base learning rate: indoor lr 0.006 / blocks 0.0006, weight decay 0.05; outdoor
0.002 / 0.0002, weight decay 0.005. OneCycle runs per optimizer step with pct_start 0.05 (outdoor
0.04), cosine annealing, div_factor 10 and final_div_factor 1000 (outdoor 100), and cycles Adam's
beta1 between 0.95 and 0.85 as ``torch.optim.lr_scheduler.OneCycleLR`` does by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR

from .. import checks
from ..errors import ConfigError


@dataclass
class GroupRule:
    """Parameters whose name contains ``keyword`` get ``lr * lr_scale`` (and their own decay)."""

    keyword: str
    lr_scale: float = 1.0
    weight_decay: float | None = None

    def __post_init__(self) -> None:
        checks.non_empty("keyword", self.keyword)
        checks.number("lr_scale", self.lr_scale, low=0)
        checks.number("weight_decay", self.weight_decay, low=0, optional=True)


@dataclass
class OptimConfig:
    """Optimizer and schedule settings; defaults are the indoor reference recipe."""

    lr: float = 0.006
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    groups: list[GroupRule] = field(default_factory=lambda: [GroupRule("block", 0.1)])
    pct_start: float = 0.05
    anneal_strategy: str = "cos"
    div_factor: float = 10.0
    final_div_factor: float = 1000.0
    cycle_momentum: bool = True

    def __post_init__(self) -> None:
        checks.number("lr", self.lr, low=0)
        checks.number("weight_decay", self.weight_decay, low=0)
        checks.numbers("betas", self.betas, length=2, low=0, high=1, high_open=True)
        checks.number("pct_start", self.pct_start, low=0, high=1, high_open=True)
        checks.one_of("anneal_strategy", self.anneal_strategy, ("cos", "linear"))
        checks.number("div_factor", self.div_factor, low=0, low_open=True)
        checks.number("final_div_factor", self.final_div_factor, low=0, low_open=True)

    @classmethod
    def from_dict(cls, values: dict) -> OptimConfig:
        """Build from a config mapping; ``groups`` entries are dicts of :class:`GroupRule` fields."""
        values = dict(values)
        if "groups" in values:
            values["groups"] = [GroupRule(**g) for g in values["groups"]]
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 rules: Sequence[GroupRule] = ()) -> list[dict]:
    """Trainable parameters split by the first rule whose keyword is in the parameter's name.

    Parameters matching no rule form the default group (listed first). Empty groups are dropped.
    Each group records its ``name`` so that logs and tests can tell them apart.
    """
    buckets: list[list[Tensor]] = [[] for _ in range(len(rules) + 1)]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        slot = next((i + 1 for i, r in enumerate(rules) if r.keyword in name), 0)
        buckets[slot].append(param)
    groups = [{"name": "default", "params": buckets[0], "lr": lr, "weight_decay": weight_decay}]
    for rule, params in zip(rules, buckets[1:]):
        decay = weight_decay if rule.weight_decay is None else rule.weight_decay
        groups.append({"name": rule.keyword, "params": params, "lr": lr * rule.lr_scale,
                       "weight_decay": decay})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay, cfg.groups),
                             lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig, total_steps: int) -> OneCycleLR:
    """OneCycle over ``total_steps`` optimizer steps; each group peaks at its own initial lr.

    PyTorch divides by zero when the warm-up is shorter than 2 steps, so very short runs (tests,
    demos) get a 2-step warm-up; real schedules (thousands of steps) are unaffected.
    """
    if total_steps < 3:
        raise ConfigError("trainer", "epochs / max_steps",
                          f"a OneCycle schedule needs at least 3 steps, got {total_steps}: set trainer.max_steps=3 "
                          "(and trainer.epochs=null), train more epochs, or lower trainer.batch_size")
    pct_start = max(cfg.pct_start, 2.0 / total_steps)
    return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                      total_steps=total_steps, pct_start=pct_start,
                      anneal_strategy=cfg.anneal_strategy,  # type: ignore[arg-type]  # OneCycleLR checks it
                      div_factor=cfg.div_factor,
                      final_div_factor=cfg.final_div_factor, cycle_momentum=cfg.cycle_momentum)


def build(model: nn.Module, cfg: OptimConfig, total_steps: int) -> tuple[Optimizer, LRScheduler]:
    """The trainer's default optimizer/scheduler factory."""
    optimizer = build_optimizer(model, cfg)
    return optimizer, build_scheduler(optimizer, cfg, total_steps)


def clip_gradients(parameters: Iterable[Tensor], max_norm: float | None) -> float | None:
    """Clip the global gradient norm to ``max_norm`` (no-op for None); returns the norm before."""
    if max_norm is None:
        return None
    return float(torch.nn.utils.clip_grad_norm_(list(parameters), max_norm))

"""torchrun set-up and the few collectives the engine needs.

Everything here degrades to a no-op in a single process, so the trainer has one code path for a
laptop CPU, one GPU and many nodes. The process group is created from the environment variables
that ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL when CUDA is
available, gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError, DitrError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on its node and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None, device: str | None = None,
                     timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (if any) and pick the device.

    Idempotent: a second call returns the same info without re-initialising. With WORLD_SIZE
    unset or 1 no group is created. The device is ``cuda:LOCAL_RANK`` when CUDA is available,
    else the CPU; ``device="cpu"`` forces the CPU (and gloo).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in (None, "cpu", "cuda"):
        raise ConfigError("trainer", "device", f"must be None, 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DitrError("device 'cuda' requested but CUDA is not available")
    if device != "cpu" and torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not is_initialized():
        backend = backend or ("nccl" if chosen.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank,
                    device=chosen)


def cleanup() -> None:
    """Leave the process group (safe to call when none exists).

    Close trainers first (``Trainer.close()``): DDP objects outliving their group can abort the
    process at exit.
    """
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes logs, plots and checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over ranks in place and return it (unchanged in a single process)."""
    if is_initialized() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not is_initialized() or get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order."""
    if not is_initialized() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_indices(num_items: int, rank: int, world_size: int, *, epoch: int = 0, seed: int = 0,
                  shuffle: bool = True, mode: str = "pad") -> list[int]:
    """This rank's share of ``range(num_items)`` for ``epoch``, identical on every call.

    The order is a seeded permutation of ``(seed, epoch)`` (or the natural order), dealt round
    robin. ``mode`` decides what happens to the remainder so that collectives stay in step:
    ``"pad"`` repeats items from the start until every rank has the same count (training),
    ``"truncate"`` drops the tail so every rank has the same count, ``"none"`` leaves ranks uneven
    and covers every item exactly once (evaluation, where repeats would be counted twice).
    """
    if mode not in ("pad", "truncate", "none"):
        raise ValueError(f"mode must be 'pad', 'truncate' or 'none', got {mode!r}")
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(num_items).tolist()
    else:
        order = list(range(num_items))
    if mode == "pad" and num_items:
        total = -(-num_items // world_size) * world_size
        while len(order) < total:
            order += order[: total - len(order)]
    elif mode == "truncate":
        order = order[: num_items // world_size * world_size]
    return order[rank::world_size]


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False,
             sync_bn: bool = False) -> nn.Module:
    """The model in DistributedDataParallel when more than one rank runs, else unchanged.

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm (CUDA only; ignored on CPU, where
    PyTorch has no SyncBatchNorm kernel).
    """
    if info.world_size <= 1:
        return model
    if sync_bn and info.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

"""Deterministic data loading: what makes an interrupted run resume bit for bit.

Two rules. The order of an epoch is a function of (seed, epoch) only. Every sample is loaded with
the torch / NumPy / Python generators seeded from (seed, epoch, position), so its random
augmentations are the same whatever the number of workers and wherever a run was interrupted.
Skipping the batches an interrupted run had consumed then reproduces the rest of the epoch.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, get_worker_info

from . import distributed
from .checkpoint import preserved_rng

EVAL_STREAM = 1 << 40  # seed stream of evaluation samples, apart from every training epoch
MODEL_STREAM = (1 << 40) + 1  # seed stream of the model's own randomness (dropout, drop path)


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 32-bit seed for the sample at ``position`` of ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed the global torch, NumPy and Python generators (what augmentations draw from)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` leaving SIGINT/SIGTERM to the main process.

    A Ctrl-C or a scheduler's SIGTERM reaches the whole process group; workers that died on it
    would make the main process crash on its next batch instead of finishing the step and saving
    a checkpoint. Workers still exit when the main process does (PyTorch watches the parent).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class SeededDataset(Dataset):
    """Loads ``dataset[index]`` for ``(index, seed)`` keys with the generators seeded by ``seed``.

    In a worker process the generators are simply reseeded; in the main process
    (``num_workers=0``) their state is restored afterwards, so the model's own randomness
    (dropout, drop path) does not depend on data loading.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets have __len__

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:
            seed_all(seed)
            return self.dataset[index]
        with preserved_rng():
            seed_all(seed)
            return self.dataset[index]


class EpochSampler(Sampler):
    """This rank's ``(index, seed)`` keys for one epoch, from batch ``skip`` on.

    The epoch's order is :func:`distributed.shard_indices` of (seed, epoch), padded so every rank
    has the same number of full batches; an incomplete last batch is dropped.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True):
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.batches_per_epoch = -(-num_items // world_size) // batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = distributed.shard_indices(self.num_items, self.rank, self.world_size,
                                          epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
                                          mode="pad")
        for pos in range(self.skip * self.batch_size, self.batches_per_epoch * self.batch_size):
            global_pos = pos * self.world_size + self.rank
            yield order[pos], item_seed(self.seed, self.epoch, global_pos)


def eval_keys(num_items: int, rank: int, world_size: int, seed: int = 0) -> list[tuple[int, int]]:
    """This rank's ``(index, seed)`` keys for evaluation: every item exactly once over all ranks."""
    shard = distributed.shard_indices(num_items, rank, world_size, shuffle=False, mode="none")
    return [(i, item_seed(seed, EVAL_STREAM, i)) for i in shard]


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts / lists / tuples moved to ``device`` (others untouched)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch

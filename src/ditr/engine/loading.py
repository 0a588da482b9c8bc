"""Deterministic data loading: what makes an interrupted run resume bit for bit.

Two rules. The order of an epoch is a function of (seed, epoch) only. Every sample is loaded with
the torch / NumPy / Python generators seeded from (seed, epoch, position), so its random
augmentations are the same whatever the number of workers and wherever a run was interrupted.
Skipping the batches an interrupted run had consumed then reproduces the rest of the epoch.

:class:`EpochSampler` is the plain order over one data set; :class:`SourceSampler` draws each batch
from one of several concatenated sources, in a fixed cycle (multi-dataset distillation).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, get_worker_info

from ..errors import ConfigError
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


class TrainSampler(Protocol):
    """What the trainer needs of its training order: batches per epoch, and an epoch from a batch on.

    Iterating yields this rank's ``(index, seed)`` keys, ``batch_size`` consecutive keys per batch.
    """

    batches_per_epoch: int

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None: ...

    def __iter__(self) -> Iterator[tuple[int, int]]: ...

    def __len__(self) -> int: ...


class SourceSampler(Sampler):
    """This rank's ``(index, seed)`` keys for one epoch over concatenated sources, every batch from one.

    ``sizes`` are the sources' lengths in their concatenation order (indices of source ``s`` start
    at the sum of the sizes before it). The epoch cycles through the sources in order, taking
    ``ratios[s]`` consecutive batches from each. Source 0 is the main one: its order is the one
    :class:`EpochSampler` gives it, and the epoch ends when it runs out, so an epoch has
    ``(B // r0) * sum(ratios) + B % r0`` batches, ``B`` being the main source's full batches per
    rank. The others restart with a new order whenever they run out; the ``k``-th pass over source
    ``s`` is shuffled by ``(seed, epoch, s, k)``. Every rank follows the same cycle (batch ``j``
    comes from the same source on every rank) and gets its own shard of each pass, padded like
    :class:`EpochSampler`'s; an incomplete last batch of a pass is dropped. Item seeds are those of
    :class:`EpochSampler` (by position in the epoch), so ``set_epoch(epoch, skip)`` resumes exactly.
    """

    def __init__(self, sizes: Sequence[int], ratios: Sequence[int], batch_size: int, rank: int, world_size: int,
                 seed: int):
        if len(sizes) != len(ratios) or not sizes:
            raise ValueError(f"{len(sizes)} sources and {len(ratios)} ratios: give one ratio per source")
        if any(r < 1 for r in ratios):
            raise ValueError(f"ratios must be positive, got {list(ratios)}")
        self.sizes, self.ratios = list(sizes), list(ratios)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.starts = np.cumsum([0, *self.sizes[:-1]]).tolist()
        #: Full batches per rank in one pass over each source.
        self.pass_batches = [-(-n // world_size) // batch_size for n in self.sizes]
        empty = [s for s, b in enumerate(self.pass_batches) if b == 0]
        if empty:
            raise ConfigError("trainer", "batch_size", f"source {empty[0]} has {self.sizes[empty[0]]} samples: no "
                                                       f"full batch of {batch_size} per rank on {world_size} rank(s)")
        self.schedule = self._schedule()
        self.batches_per_epoch = len(self.schedule)
        self.epoch, self.skip = 0, 0

    def _schedule(self) -> list[tuple[int, int]]:
        """(source, its batch number within the epoch) of every batch of an epoch, in order."""
        main = self.pass_batches[0]
        drawn = [0] * len(self.sizes)
        schedule: list[tuple[int, int]] = []
        while True:
            for source, ratio in enumerate(self.ratios):
                for _ in range(ratio):
                    if source == 0 and drawn[0] == main:
                        return schedule
                    schedule.append((source, drawn[source]))
                    drawn[source] += 1

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size

    def _order(self, source: int, pass_number: int) -> list[int]:
        """This rank's share of pass ``pass_number`` over ``source`` (the main source has one pass)."""
        seed = (self.seed if source == 0 else
                int(np.random.SeedSequence([self.seed, source, pass_number]).generate_state(1)[0]))
        return distributed.shard_indices(self.sizes[source], self.rank, self.world_size, epoch=self.epoch,
                                         seed=seed, shuffle=True, mode="pad")

    def __iter__(self) -> Iterator[tuple[int, int]]:
        current: dict[int, tuple[int, list[int]]] = {}  # source -> (pass number, this rank's order)
        b = self.batch_size
        for batch in range(self.skip, self.batches_per_epoch):
            source, number = self.schedule[batch]
            pass_number, in_pass = divmod(number, self.pass_batches[source])
            if source not in current or current[source][0] != pass_number:
                current[source] = (pass_number, self._order(source, pass_number))
            order = current[source][1]
            for i in range(b):
                global_pos = (batch * b + i) * self.world_size + self.rank
                yield self.starts[source] + order[in_pass * b + i], item_seed(self.seed, self.epoch, global_pos)


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

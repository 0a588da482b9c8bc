"""A generic, resumable, distributed training loop.

Contracts (docs/training.md):

* ``model(batch) -> dict`` with at least ``"logits"`` (N, C) for the default evaluation;
* ``criterion(output, batch) -> dict`` of scalar losses, ``"loss"`` being back-propagated;
* a dataset yields one sample per index and ``collate_fn`` turns a list of them into the batch
  dict (targets under ``"segment"``; optionally ``"inverse"`` + ``"origin_segment"`` to evaluate
  at full resolution).

Other tasks (distillation) override :meth:`Trainer.compute_loss` / :meth:`Trainer.eval_step`
or just pass another criterion.

Determinism is what makes resuming exact: the order of an epoch is a function of (seed, epoch),
every sample is loaded with the random generators seeded from (seed, epoch, position) — so
augmentations do not depend on worker count or on where a run was interrupted — and the
checkpoint stores every rank's generator state. A resumed run skips the batches the interrupted
one had consumed and continues exactly as if nothing had happened.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from ..errors import DitrError
from . import distributed as dist
from .checkpoint import CheckpointManager, load_checkpoint, preserved_rng, rng_state, set_rng_state
from .logging import JsonlLogger, ProgressBar, plot_class_iou, plot_training_curves, read_jsonl
from .metrics import ConfusionMeter, segmentation_metrics, to_full_resolution
from .optim import OptimConfig, build, clip_gradients

_EVAL_STREAM = 1 << 40  # seed stream of evaluation samples, apart from every training epoch
OptimFactory = Callable[[nn.Module, int], tuple[Optimizer, LRScheduler]]


class TrainingError(DitrError):
    """Training cannot go on (diverged loss, inconsistent configuration)."""


class TrainingInterrupted(DitrError):
    """Stopped by SIGINT/SIGTERM after saving a checkpoint; running again resumes."""


@dataclass
class TrainerConfig:
    """Loop settings. ``batch_size`` is global (split over ranks); give ``epochs`` or ``max_steps``."""

    work_dir: str | Path
    batch_size: int = 12
    epochs: int | None = None
    max_steps: int | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    ignore_index: int = -1
    val_batch_size: int = 1
    eval_every_epochs: int = 1
    checkpoint_every_steps: int | None = None
    log_every_steps: int = 10
    num_workers: int = 0
    amp: str | None = None
    grad_clip: float | None = None
    seed: int = 0
    best_metric: str = "miou"
    best_mode: str = "max"
    find_unused_parameters: bool = False
    sync_bn: bool = False
    quiet: bool = False
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("give exactly one of epochs and max_steps")
        if self.amp not in (None, "fp16", "bf16"):
            raise ValueError(f"amp must be None, 'fp16' or 'bf16', got {self.amp!r}")
        if self.best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {self.best_mode!r}")


@dataclass
class EvalResult:
    """Metrics over all ranks' data and the all-reduced (C, C) confusion matrix ``[gt, pred]``."""

    metrics: dict[str, Any]
    confusion: Tensor


class Callback:
    """Hooks into the loop; override what you need. Exceptions propagate (and stop training)."""

    def on_step_end(self, trainer: Trainer, losses: Mapping[str, Tensor]) -> None:
        """After each optimizer step (and its checkpoint, if one was due)."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After the epoch's evaluation and checkpoint."""

    def on_evaluate(self, trainer: Trainer, result: EvalResult) -> None:
        """After each evaluation during :meth:`Trainer.fit`."""


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere inside dicts / lists / tuples moved to ``device`` (others untouched)."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A well-mixed 32-bit seed for the sample at ``position`` of ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Loads ``dataset[index]`` with torch / NumPy / Python generators seeded by the sampler.

    Keys are ``(index, seed)`` pairs. In a worker process the generators are simply reseeded; in
    the main process (``num_workers=0``) their state is restored afterwards so that the model's own
    randomness (dropout, drop path) does not depend on data loading.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:
            _seed_all(seed)
            return self.dataset[index]
        with preserved_rng():
            _seed_all(seed)
            return self.dataset[index]


class EpochSampler(Sampler):
    """This rank's ``(index, seed)`` keys for one epoch, from batch ``skip`` on.

    The epoch's order is :func:`distributed.shard_indices` of (seed, epoch), padded so every rank
    has the same number of full batches; incomplete last batches are dropped.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True):
        self.num_items, self.batch_size = num_items, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        per_rank = -(-num_items // world_size)
        self.batches_per_epoch = per_rank // batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = dist.shard_indices(self.num_items, self.rank, self.world_size, epoch=self.epoch,
                                   seed=self.seed, shuffle=self.shuffle, mode="pad")
        for pos in range(self.skip * self.batch_size, self.batches_per_epoch * self.batch_size):
            global_pos = pos * self.world_size + self.rank
            yield order[pos], item_seed(self.seed, self.epoch, global_pos)


class Trainer:
    """Trains ``model`` with ``criterion`` on ``train_set``; evaluates on ``val_set``.

    The run directory (``config.work_dir``) receives ``last.pt`` / ``last.prev.pt`` / ``best.pt``,
    ``metrics.jsonl``, ``curves.png`` and ``class_iou.png``. ``build_optim(model, total_steps)``
    returns the optimizer and a per-step scheduler; by default AdamW + OneCycle from ``optim``.
    ``run_config`` (the user's whole configuration) is stored in every checkpoint.
    """

    def __init__(self, model: nn.Module, criterion: Callable[..., dict[str, Tensor]],
                 train_set: Dataset, config: TrainerConfig, *,
                 collate_fn: Callable[[list], Any] | None = None,
                 val_set: Dataset | None = None, val_collate_fn: Callable[[list], Any] | None = None,
                 optim: OptimConfig | None = None, build_optim: OptimFactory | None = None,
                 callbacks: Sequence[Callback] = (), run_config: Mapping[str, Any] | None = None,
                 dist_info: dist.DistInfo | None = None):
        self.config = config
        self.work_dir = Path(config.work_dir)
        self.info = dist_info or dist.init_distributed()
        self.device = self.info.device
        self.train_set, self.val_set = train_set, val_set
        self.collate_fn = collate_fn or default_collate
        self.val_collate_fn = val_collate_fn or self.collate_fn
        self.callbacks = list(callbacks)
        self.run_config = dict(run_config or {})
        if val_set is not None and config.num_classes is None:
            raise ValueError("config.num_classes is needed to evaluate")

        world = self.info.world_size
        if config.batch_size % world:
            raise ValueError(f"global batch size {config.batch_size} is not divisible by the "
                             f"{world} ranks")
        self.batch_per_rank = config.batch_size // world
        self.sampler = EpochSampler(len(train_set), self.batch_per_rank, self.info.rank, world,
                                    config.seed)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training samples make no full batch of "
                             f"{self.batch_per_rank} per rank")
        self.total_steps = (config.max_steps if config.max_steps is not None
                            else config.epochs * self.steps_per_epoch)

        self.model = dist.wrap_ddp(model.to(self.device), self.info,
                                   config.find_unused_parameters, config.sync_bn)
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        factory = build_optim or (lambda m, n: build(m, optim or OptimConfig(), n))
        self.optimizer, self.scheduler = factory(dist.unwrap(self.model), self.total_steps)
        amp_on = config.amp is not None and self.device.type == "cuda"
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.amp) if amp_on else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.step = self.epoch = self.batch_in_epoch = 0
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.checkpoints = CheckpointManager(self.work_dir)
        self.logger = JsonlLogger(self.work_dir / "metrics.jsonl", enabled=self.info.is_main)
        self._stop_signal: int | None = None
        self._bar = ProgressBar(0, enabled=False)
        self._lr: list[float] = [g["lr"] for g in self.optimizer.param_groups]

    # ----- the loop -------------------------------------------------------------------------

    def fit(self, resume: bool | str | Path = True) -> dict[str, Any]:
        """Train to ``total_steps``; returns :meth:`summary`.

        ``resume=True`` continues from the run directory's newest readable checkpoint if there is
        one; a path resumes from that file; False starts over (existing files are overwritten).
        """
        if resume:
            self.resume(None if resume is True else resume)
        self.logger.truncate_after(self.step)
        loader = self._train_loader()
        enabled = self.info.is_main and not self.config.quiet
        self._bar = ProgressBar(self.total_steps, self.step, enabled=enabled)
        with self._bar, self._stop_on_signals():
            while self.step < self.total_steps:
                self._run_epoch(loader)
        if self.config.plots and self.info.is_main:
            self.plot()
        return self.summary()

    def _run_epoch(self, loader: DataLoader) -> None:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        tick = time.perf_counter()
        for batch in loader:
            data_s = time.perf_counter() - tick
            losses = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            self._bar.update(1)
            boundary = (self.batch_in_epoch == self.steps_per_epoch
                        or self.step >= self.total_steps)
            log_due = self.step % self.config.log_every_steps == 0 or boundary
            if log_due:
                self._log_train(losses, data_s, time.perf_counter() - tick)
            if self._stop_requested(log_due):
                self.save_checkpoint()
                raise TrainingInterrupted(
                    f"stopped by signal {self._stop_signal} at step {self.step}/{self.total_steps}; "
                    f"checkpoint saved in {self.work_dir}, run again to resume")
            every = self.config.checkpoint_every_steps
            if every and self.step % every == 0 and not boundary:
                self.save_checkpoint()
            for cb in self.callbacks:
                cb.on_step_end(self, losses)
            if self.step >= self.total_steps:
                break
            tick = time.perf_counter()
        epoch_done = self.batch_in_epoch >= self.steps_per_epoch
        if epoch_done:
            self.epoch += 1
            self.batch_in_epoch = 0
        every = self.config.eval_every_epochs
        due = epoch_done and every > 0 and self.epoch % every == 0
        is_best = False
        if self.val_set is not None and (due or self.step >= self.total_steps):
            result = self.evaluate()
            is_best = self._record_eval(result)
        self.save_checkpoint(is_best=is_best)
        for cb in self.callbacks:
            cb.on_epoch_end(self)

    def train_step(self, batch: Any) -> dict[str, Tensor]:
        """One optimizer step on ``batch``; returns the detached losses (plus ``grad_norm``)."""
        self.model.train()
        batch = move_to(batch, self.device)
        with self._autocast():
            losses = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        out = {k: v.detach() for k, v in losses.items()}
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            out["grad_norm"] = torch.tensor(clip_gradients(params, self.config.grad_clip))
        self._lr = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return out

    def compute_loss(self, batch: Any) -> dict[str, Tensor]:
        """Forward + criterion. Override for tasks whose loss needs more than (output, batch)."""
        return self.criterion(self.model(batch), batch)

    # ----- evaluation -----------------------------------------------------------------------

    def evaluate(self, dataset: Dataset | None = None,
                 collate_fn: Callable[[list], Any] | None = None) -> EvalResult:
        """Metrics over the whole data set, each rank evaluating its own share.

        Every sample is seen exactly once across ranks (no padding), and the confusion matrix and
        losses are summed over ranks before the metrics are computed. Random generators are left
        as they were, so evaluating does not change the training that follows.
        """
        dataset = dataset if dataset is not None else self.val_set
        if dataset is None:
            raise ValueError("no dataset to evaluate")
        if self.config.num_classes is None:
            raise ValueError("config.num_classes is needed to evaluate")
        collate = collate_fn or self.val_collate_fn
        keys = [(i, item_seed(self.config.seed, _EVAL_STREAM, i)) for i in
                dist.shard_indices(len(dataset), self.info.rank, self.info.world_size,
                                   shuffle=False, mode="none")]
        loader = DataLoader(SeededDataset(dataset), batch_size=self.config.val_batch_size,
                            sampler=keys, collate_fn=collate, num_workers=self.config.num_workers,
                            pin_memory=self.device.type == "cuda")
        meter = ConfusionMeter(self.config.num_classes, self.config.ignore_index)
        loss_sums: dict[str, float] = {}
        batches = 0
        with preserved_rng(), torch.inference_mode():
            for batch in loader:
                batch = move_to(batch, self.device)
                with self._autocast():
                    out = self.eval_step(batch)
                if out.get("pred") is not None:
                    meter.update(out["pred"], out["target"])
                for name, value in out.get("losses", {}).items():
                    loss_sums[name] = loss_sums.get(name, 0.0) + float(value)
                batches += 1
        conf = meter.reduced().cpu()
        names = sorted(loss_sums)
        totals = torch.tensor([loss_sums[n] for n in names] + [batches], dtype=torch.float64,
                              device=self.device)
        totals = dist.all_reduce_sum(totals).tolist()
        metrics: dict[str, Any] = {}
        if conf.sum() > 0:
            metrics.update(segmentation_metrics(conf, self.config.class_names))
        if totals[-1] > 0:
            metrics.update({f"val_{n}": v / totals[-1] for n, v in zip(names, totals)})
        return EvalResult(metrics=metrics, confusion=conf)

    def eval_step(self, batch: Any) -> dict[str, Any]:
        """Predictions, targets and losses of one batch, at full resolution when it can be.

        Returns ``{"pred", "target", "losses"}``; a task without class predictions may return
        only losses. Evaluation runs the bare model (no DDP), since ranks see different numbers
        of batches.
        """
        model = dist.unwrap(self.model)
        model.eval()
        output = model(batch)
        losses = self.criterion(output, batch)
        pred = output["logits"].argmax(1)
        target = batch["segment"]
        if "inverse" in batch and "origin_segment" in batch:
            pred, target = to_full_resolution(pred, batch["inverse"]), batch["origin_segment"]
        return {"pred": pred, "target": target, "losses": losses}

    def _record_eval(self, result: EvalResult) -> bool:
        """Log an evaluation, tell the callbacks; True when it is the best so far."""
        self.last_metrics = result.metrics
        self.logger.log({"kind": "val", "step": self.step, "epoch": self.epoch, **result.metrics})
        value = result.metrics.get(self.config.best_metric)
        is_best = False
        if value is not None and math.isfinite(value):
            better = (self.best is None or (value > self.best["value"] if self.config.best_mode == "max"
                                            else value < self.best["value"]))
            if better:
                self.best = {"metric": self.config.best_metric, "value": value, "step": self.step}
                is_best = True
        if "miou" in result.metrics:
            self._bar.print(f"step {self.step}: mIoU {100 * result.metrics['miou']:.2f}  "
                            f"mAcc {100 * result.metrics['macc']:.2f}  "
                            f"allAcc {100 * result.metrics['allacc']:.2f}")
        if self.config.plots and self.info.is_main:
            self.plot()
        for cb in self.callbacks:
            cb.on_evaluate(self, result)
        return is_best

    # ----- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; a collective (gathers all ranks' RNG states)."""
        return {
            "model": dist.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "world_size": self.info.world_size,
            "rng": dist.all_gather_object(rng_state()),
            "best": self.best,
            "metrics": self.last_metrics,
            "config": self.run_config,
            "trainer": _plain(asdict(self.config)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        dist.unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.best, self.last_metrics = state.get("best"), state.get("metrics")
        if state["total_steps"] != self.total_steps:
            warnings.warn(f"checkpoint was made for {state['total_steps']} steps, this run has "
                          f"{self.total_steps}: the learning-rate schedule keeps the old length",
                          stacklevel=2)
        rngs = state["rng"]
        if len(rngs) != self.info.world_size:
            warnings.warn(f"checkpoint was made with {len(rngs)} ranks, this run has "
                          f"{self.info.world_size}: the continuation will not be bit-identical",
                          stacklevel=2)
        set_rng_state(rngs[self.info.rank % len(rngs)])

    def save_checkpoint(self, is_best: bool = False) -> None:
        """``last.pt`` (and ``best.pt``) from rank 0; every rank must call it."""
        state = self.state_dict()
        if self.info.is_main:
            self.checkpoints.save(state, is_best=is_best)
        dist.barrier()

    def resume(self, path: str | Path | None = None) -> bool:
        """Load the newest readable checkpoint of the run (or ``path``); False if there is none.

        Rank 0 chooses the file (falling back to ``last.prev.pt`` when ``last.pt`` is damaged) and
        tells the others, so all ranks continue from the same state (the run directory must be
        on a file system that all nodes share).
        """
        state = None
        if self.info.is_main:
            if path is not None:
                state = load_checkpoint(path)
            else:
                found = self.checkpoints.load_resume()
                if found is not None:
                    path, state = found
        path = dist.broadcast_object(None if path is None else str(path))
        if path is None:
            return False
        if state is None:
            state = load_checkpoint(path)
        self.load_state_dict(state)
        return True

    def summary(self) -> dict[str, Any]:
        return {"work_dir": str(self.work_dir), "step": self.step, "epoch": self.epoch,
                "total_steps": self.total_steps, "best": self.best, "metrics": self.last_metrics}

    def plot(self) -> None:
        """``curves.png`` from the metrics log and ``class_iou.png`` from the last evaluation."""
        if not self.logger.path.exists():
            return
        with preserved_rng():
            plot_training_curves(read_jsonl(self.logger.path), self.work_dir / "curves.png")
            if self.last_metrics and "iou" in self.last_metrics:
                plot_class_iou(self.last_metrics["iou"], self.work_dir / "class_iou.png",
                               self.last_metrics.get("class_names"))

    # ----- helpers --------------------------------------------------------------------------

    def _train_loader(self) -> DataLoader:
        workers = self.config.num_workers
        # A private generator: creating an iterator must not draw from the global RNG, or a
        # resumed run (one more iterator) would diverge from an uninterrupted one.
        return DataLoader(SeededDataset(self.train_set), batch_size=self.batch_per_rank,
                          sampler=self.sampler, collate_fn=self.collate_fn, num_workers=workers,
                          pin_memory=self.device.type == "cuda", drop_last=True,
                          persistent_workers=workers > 0, generator=torch.Generator())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _log_train(self, losses: Mapping[str, Tensor], data_s: float, step_s: float) -> None:
        names = sorted(losses)
        values = torch.stack([losses[n].float().reshape(()) for n in names]).to(self.device)
        values = (dist.all_reduce_sum(values) / self.info.world_size).tolist()
        record = {("loss" if n == "loss" else n if n == "grad_norm" else f"loss/{n}"): v
                  for n, v in zip(names, values)}
        if not math.isfinite(record["loss"]) and not self.scaler.is_enabled():
            raise TrainingError(f"loss is {record['loss']} at step {self.step}; lower the "
                                f"learning rate or check the data (last checkpoint is kept)")
        lr = self._lr[0]
        self.logger.log({"kind": "train", "step": self.step, "epoch": self.epoch, "lr": lr,
                         **record, "data_s": data_s, "step_s": step_s})
        self._bar.update(0, info=f"epoch {self.epoch}  loss {record['loss']:.4f}  lr {lr:.2e}")

    def _stop_requested(self, sync_point: bool) -> bool:
        """Whether a stop signal arrived (on any rank: all ranks must stop at the same step).

        With several ranks the flag is exchanged only at log steps and epoch ends, which every
        rank reaches together, so the check costs no extra synchronisation per step.
        """
        if self.info.world_size == 1:
            return self._stop_signal is not None
        if not sync_point:
            return False
        flag = torch.tensor([0 if self._stop_signal is None else 1], device=self.device)
        if int(dist.all_reduce_sum(flag).item()) == 0:
            return False
        if self._stop_signal is None:
            self._stop_signal = -1  # another rank was signalled
        return True

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask to stop after the current step (a second SIGINT aborts at once)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: object) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous[signum])

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _plain(value: Any) -> Any:
    """Config values as plain Python (paths as strings) for weights-only checkpoints."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

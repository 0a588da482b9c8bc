"""A generic, resumable, distributed training loop.

Contracts (docs/training.md):

* ``model(batch) -> dict`` with at least ``"logits"`` (N, C) for the default evaluation (a model
  returning a bare (N, C) tensor, like ``PTv3Segmentor``, is taken to return the logits);
* ``criterion(output, batch) -> dict`` of scalar losses, ``"loss"`` being back-propagated;
* a dataset yields one sample per index and ``collate_fn`` turns a list of them into the batch
  dict (targets under ``"segment"``; optionally ``"inverse"`` + ``"origin_segment"`` to evaluate
  at full resolution).

Other tasks (D-DITR distillation) pass another criterion and, where evaluation differs, override
:meth:`Trainer.eval_step` (and :meth:`Trainer.compute_loss` if the loss needs more than
``(output, batch)``). Resuming is exact because data loading is deterministic (see ``loading``)
and the checkpoint holds every rank's random generator state.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset, default_collate

from .. import checks
from ..errors import ConfigError, DitrError
from . import distributed as dist
from .checkpoint import CheckpointManager, load_training_state, preserved_rng, rng_state, set_rng_state
from .evaluator import EvalResult, Evaluator, amp_dtype, as_output, autocast
from .loading import (MODEL_STREAM, EpochSampler, SeededDataset, TrainSampler, ignore_stop_signals,
                      item_seed, move_to, seed_all)
from .loggers import DEFAULT_LOGGERS, LOGGERS, build_loggers
from .logging import JsonlLogger, ProgressBar, plot_class_iou, plot_training_curves, read_jsonl
from .optim import OptimConfig, build, clip_gradients

OptimFactory = Callable[[nn.Module, int], tuple[Optimizer, LRScheduler]]
#: ``(batch_per_rank, rank, world_size, seed) -> sampler``: the training order of one rank.
SamplerFactory = Callable[[int, int, int, int], TrainSampler]


class TrainingError(DitrError):
    """Training cannot go on (diverged loss, inconsistent configuration)."""


class TrainingInterrupted(DitrError):
    """Stopped by SIGINT/SIGTERM after saving a checkpoint; running again resumes."""


@dataclass
class TrainerConfig:
    """Loop settings. ``batch_size`` is global (split over ranks); give ``epochs`` or ``max_steps``.

    This is also the ``trainer`` section of a run configuration; the fields marked
    ``run_config=False`` are filled in by the workflow (the work directory from the command line,
    classes from the ``dataset`` section), not read from it.
    """

    work_dir: str | Path = field(default="", metadata={"run_config": False})
    batch_size: int = 12
    epochs: int | None = None
    max_steps: int | None = None
    num_classes: int | None = field(default=None, metadata={"run_config": False})
    class_names: list[str] | None = field(default=None, metadata={"run_config": False})
    ignore_index: int = field(default=-1, metadata={"run_config": False})
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
    quiet: bool = field(default=False, metadata={"run_config": False})
    plots: bool = True
    loggers: list[str] = field(default_factory=lambda: list(DEFAULT_LOGGERS))

    def __post_init__(self) -> None:
        """Ranges (a negative clip flips the gradient, 0 zeroes it); keys are relative to ``trainer``."""
        if self.amp not in (None, "fp16", "bf16"):
            raise ConfigError("", "amp", f"must be None, 'fp16' or 'bf16', got {self.amp!r}")
        if self.best_mode not in ("max", "min"):
            raise ConfigError("", "best_mode", f"must be 'max' or 'min', got {self.best_mode!r}")
        checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("epochs", self.epochs, optional=True)
        checks.positive_int("max_steps", self.max_steps, optional=True)
        checks.positive_int("val_batch_size", self.val_batch_size)
        checks.number("eval_every_epochs", self.eval_every_epochs, low=0, integer=True)
        checks.positive_int("checkpoint_every_steps", self.checkpoint_every_steps, optional=True)
        checks.positive_int("log_every_steps", self.log_every_steps)
        checks.number("num_workers", self.num_workers, low=0, high=256, integer=True)
        checks.number("grad_clip", self.grad_clip, low=0, low_open=True, optional=True)
        checks.number("seed", self.seed, low=0, high=2**32 - 1, integer=True)
        checks.non_empty("best_metric", self.best_metric)
        checks.positive_int("num_classes", self.num_classes, optional=True)
        if self.epochs is not None and self.max_steps is not None:
            raise ConfigError("", "epochs", "and max_steps are both set: give exactly one of them")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown:
            raise ConfigError("", "loggers", f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGERS)}")
        if "jsonl" not in self.loggers:
            raise ConfigError("", "loggers", "must keep 'jsonl': metrics.jsonl is the run's own record "
                                             "(curves.png and resuming read it)")


class Callback:
    """Hooks into the loop; override what you need. Exceptions propagate (and stop training)."""

    def on_step_end(self, trainer: Trainer, losses: Mapping[str, Tensor]) -> None:
        """After each optimizer step (and its checkpoint, if one was due)."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After the epoch's evaluation and checkpoint."""

    def on_evaluate(self, trainer: Trainer, result: EvalResult) -> None:
        """After each evaluation during :meth:`Trainer.fit`."""


class Trainer:
    """Trains ``model`` with ``criterion`` on ``train_set``; evaluates on ``val_set``.

    The run directory (``config.work_dir``) receives ``last.pt`` / ``last.prev.pt`` / ``best.pt``,
    ``metrics.jsonl``, ``curves.png`` and ``class_iou.png``. ``build_optim(model, total_steps)``
    returns the optimizer and a per-step scheduler; by default AdamW + OneCycle from ``optim``.
    ``run_config`` (the user's whole configuration) is stored in every checkpoint.
    ``sampler`` builds the training order (default: :class:`~ditr.engine.loading.EpochSampler` over
    ``train_set``; multi-dataset distillation draws each batch from one source instead).
    """

    def __init__(self, model: nn.Module, criterion: Callable[..., dict[str, Tensor]],
                 train_set: Dataset, config: TrainerConfig, *,
                 collate_fn: Callable[[list], Any] | None = None,
                 val_set: Dataset | None = None, val_collate_fn: Callable[[list], Any] | None = None,
                 optim: OptimConfig | None = None, build_optim: OptimFactory | None = None,
                 callbacks: Sequence[Callback] = (), run_config: Mapping[str, Any] | None = None,
                 dist_info: dist.DistInfo | None = None, sampler: SamplerFactory | None = None):
        self.config = config
        self.work_dir = Path(config.work_dir)
        self.info = dist_info or dist.init_distributed()
        self.device = self.info.device
        self.train_set, self.val_set = train_set, val_set
        self.collate_fn = collate_fn or default_collate
        self.val_collate_fn = val_collate_fn or self.collate_fn
        self.callbacks = list(callbacks)
        self.run_config = dict(run_config or {})
        if (val_set is not None and config.num_classes is None
                and type(self).eval_step is Trainer.eval_step):
            raise ConfigError("dataset", "num_classes", "is needed to evaluate segmentation")

        world = self.info.world_size
        if config.batch_size % world:
            raise TrainingError(f"trainer.batch_size {config.batch_size} (the global batch) is not divisible "
                                f"by the {world} ranks")
        self.batch_per_rank = config.batch_size // world
        num_samples = len(train_set)  # type: ignore[arg-type]  # map-style datasets have __len__
        make_sampler = sampler or (lambda b, rank, w, seed: EpochSampler(num_samples, b, rank, w, seed))
        self.sampler: TrainSampler = make_sampler(self.batch_per_rank, self.info.rank, world, config.seed)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        if self.steps_per_epoch == 0:
            most = num_samples // world * world
            raise ConfigError("trainer", "batch_size", f"{num_samples} training samples make no full batch of "
                                                         f"{self.batch_per_rank} per rank: set trainer.batch_size="
                                                         f"{most or world} or less, or train on more scenes")
        if config.epochs is None and config.max_steps is None:
            raise ConfigError("trainer", "epochs / max_steps", "give exactly one of them (neither is set)")
        self.total_steps = (config.max_steps if config.max_steps is not None
                            else int(config.epochs or 0) * self.steps_per_epoch)

        self.model = dist.wrap_ddp(model.to(self.device), self.info,
                                   config.find_unused_parameters, config.sync_bn)
        self.criterion = criterion.to(self.device) if isinstance(criterion, nn.Module) else criterion
        factory = build_optim or (lambda m, n: build(m, optim or OptimConfig(), n))
        self.optimizer, self.scheduler = factory(dist.unwrap(self.model), self.total_steps)
        self.amp_dtype = amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.step = self.epoch = self.batch_in_epoch = 0
        self.best: dict[str, Any] | None = None
        self.last_metrics: dict[str, Any] | None = None
        self.evaluator = Evaluator(self.model, config.num_classes, criterion=self.criterion,
                                   ignore_index=config.ignore_index,
                                   class_names=config.class_names,
                                   batch_size=config.val_batch_size,
                                   num_workers=config.num_workers, amp=config.amp,
                                   seed=config.seed, device=self.device)
        self.checkpoints = CheckpointManager(self.work_dir)
        self.logger = JsonlLogger(self.work_dir / "metrics.jsonl", enabled=self.info.is_main,
                                  trackers=build_loggers(config.loggers, self.work_dir, enabled=self.info.is_main))
        self._stop_signal: int | None = None
        self._closed = False
        self._bar = ProgressBar(0, enabled=False)
        self._lr: list[float] = [g["lr"] for g in self.optimizer.param_groups]

    # ----- the loop -------------------------------------------------------------------------

    def fit(self, resume: bool | str | Path = True, restart: bool = False) -> dict[str, Any]:
        """Train to ``total_steps``; returns :meth:`summary`.

        ``resume=True`` continues from the run directory's newest readable checkpoint if there is
        one; a path resumes from that file; False starts over (existing files are overwritten).
        When the run directory has checkpoints but none is readable it is an error unless
        ``restart`` (then the run starts over). Temporary files of interrupted writes in the run
        directory are removed first.
        """
        if self._closed:
            raise RuntimeError("this trainer was closed; make a new one to train again")
        if self.info.is_main:
            self.checkpoints.clean()
        resumed = bool(resume) and self.resume(resume if isinstance(resume, (str, Path)) else None, restart=restart)
        if not resumed:
            # The model's own randomness (dropout, drop path) starts from the run's seed, one
            # stream per rank; a resumed run restores the saved generator states instead.
            seed_all(item_seed(self.config.seed, MODEL_STREAM, self.info.rank))
        self.logger.truncate_after(self.step)
        loader = self._train_loader()
        enabled = self.info.is_main and not self.config.quiet and "console" in self.config.loggers
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
        with autocast(self.device, self.amp_dtype):
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
        return self.criterion(as_output(self.model(batch)), batch)

    # ----- evaluation -----------------------------------------------------------------------

    def evaluate(self, dataset: Dataset | None = None,
                 collate_fn: Callable[[list], Any] | None = None) -> EvalResult:
        """Metrics over the whole data set (default: the validation set), all ranks together."""
        dataset = dataset if dataset is not None else self.val_set
        if dataset is None:
            raise ValueError("no dataset to evaluate")
        if self.info.world_size > 1:
            # Each rank's last forward updated its own BatchNorm statistics; the checkpoint holds
            # rank 0's, so every rank evaluates with those (as `ditr evaluate` of it would).
            for buffer in dist.unwrap(self.model).buffers():
                torch.distributed.broadcast(buffer, src=0)
        return self.evaluator.run(dataset, collate_fn or self.val_collate_fn, self.eval_step)

    def eval_step(self, batch: Any) -> Mapping[str, Any]:
        """One evaluation batch; override together with :meth:`compute_loss` for other tasks."""
        return self.evaluator.step(batch)

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
            self._bar.print(f"step {self.step}: mIoU {100 * result.metrics['miou']:.2f}%  "
                            f"mAcc {100 * result.metrics['macc']:.2f}%  "
                            f"allAcc {100 * result.metrics['allacc']:.2f}%")
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
            raise TrainingError(f"the checkpoint was made for a run of {state['total_steps']} steps, this run "
                                f"asks for {self.total_steps}: the learning-rate schedule cannot change length. "
                                "Resume with the same budget, or start afresh in a new work directory")
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

    def resume(self, path: str | Path | None = None, restart: bool = False) -> bool:
        """Load the newest readable checkpoint of the run (or ``path``); False if there is none.

        Rank 0 chooses the file (falling back to ``last.prev.pt`` when ``last.pt`` is damaged) and
        tells the others, so all ranks continue from the same state (the run directory must be
        on a file system that all nodes share).
        """
        state = None
        if self.info.is_main:
            if path is not None:
                state = load_training_state(path)
            else:
                found = self.checkpoints.load_resume(restart=restart)
                if found is not None:
                    path, state = found
        path = dist.broadcast_object(None if path is None else str(path))
        if path is None:
            return False
        if state is None:
            state = load_training_state(path)
        try:
            self.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(f"{path} does not fit this model/optimizer ({exc}); use another "
                                f"work directory or start over") from None
        return True

    def close(self) -> None:
        """Drop the DDP wrapper before the process group goes (:func:`distributed.cleanup`).

        A DistributedDataParallel object still alive when its group is destroyed can abort the
        process at exit. A closed trainer can still evaluate, not train.
        """
        self.model = dist.unwrap(self.model)
        self.logger.close()
        self._closed = True
        gc.collect()

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
                plot_class_iou(self.last_metrics["iou"], self.work_dir / "class_iou.png")

    # ----- helpers --------------------------------------------------------------------------

    def _train_loader(self) -> DataLoader:
        workers = self.config.num_workers
        # A private generator: creating an iterator must not draw from the global RNG, or a
        # resumed run (one more iterator) would diverge from an uninterrupted one.
        return DataLoader(SeededDataset(self.train_set), batch_size=self.batch_per_rank,
                          sampler=self.sampler, collate_fn=self.collate_fn, num_workers=workers,
                          pin_memory=self.device.type == "cuda", drop_last=True,
                          persistent_workers=workers > 0, generator=torch.Generator(),
                          worker_init_fn=ignore_stop_signals if workers > 0 else None)

    def _log_train(self, losses: Mapping[str, Tensor], data_s: float, iter_s: float) -> None:
        names = sorted(losses)
        values = torch.stack([losses[n].float().reshape(()).to(self.device) for n in names])
        means: list[float] = (dist.all_reduce_sum(values) / self.info.world_size).tolist()
        record = {("loss" if n == "loss" else n if n == "grad_norm" else f"loss/{n}"): v
                  for n, v in zip(names, means)}
        if not math.isfinite(record["loss"]) and not self.scaler.is_enabled():
            raise TrainingError(f"loss is {record['loss']} at step {self.step}; lower the "
                                f"learning rate or check the data (last checkpoint is kept)")
        lr = self._lr[0]
        self.logger.log({"kind": "train", "step": self.step, "epoch": self.epoch, "lr": lr,
                         **record, "data_s": data_s, "iter_s": iter_s})
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
            signal.signal(signum, previous[signal.Signals(signum)])

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

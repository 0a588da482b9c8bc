"""A toy segmentation task for the engine tests, and the worker script of the torchrun test.

Scenes are sets of random per-point features whose class is the arg-max of a fixed linear map, so
a small MLP learns them in a few steps. ``__getitem__`` adds noise drawn from the *global* torch /
NumPy / Python generators, like real augmentations do, so the tests see whether the engine keeps
data randomness reproducible. Run as a script under torchrun it trains, evaluates and writes what
the distributed test checks.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

NUM_CLASSES = 4
DIM = 8


class ToyScenes(Dataset):
    def __init__(self, num_scenes: int = 24, seed: int = 0, augment: bool = True):
        self.num_scenes, self.seed, self.augment = num_scenes, seed, augment
        self.weight = torch.randn(DIM, NUM_CLASSES, generator=torch.Generator().manual_seed(1234))

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        n = 24 + int(torch.randint(0, 16, (1,), generator=g))
        feat = torch.randn(n, DIM, generator=g)
        segment = (feat @ self.weight).argmax(1)
        segment[torch.rand(n, generator=g) < 0.05] = -1
        if self.augment:
            feat = feat + 0.05 * torch.randn_like(feat) + float(np.random.uniform(-0.05, 0.05))
            if random.random() < 0.5:
                feat = feat * 1.01
        return {"feat": feat, "segment": segment}


def collate(items: list[dict]) -> dict[str, torch.Tensor]:
    """Concatenate points of the scenes (as point-cloud batches are), with end offsets."""
    return {"feat": torch.cat([it["feat"] for it in items]),
            "segment": torch.cat([it["segment"] for it in items]),
            "offset": torch.tensor([len(it["feat"]) for it in items]).cumsum(0)}


class ToyNet(nn.Module):
    """An MLP with dropout (model-side randomness) whose first layer is named like a block."""

    def __init__(self):
        super().__init__()
        self.block0 = nn.Linear(DIM, 32)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.drop(torch.relu(self.block0(batch["feat"]))))}


def ddp_main(out_dir: str) -> None:
    """torchrun worker: train on 2 ranks, once straight through and once stopped by a SIGTERM to
    rank 1 and resumed; evaluate; write what the distributed test compares."""
    import os
    import signal

    from ditr.engine import distributed
    from ditr.engine.losses import SegmentationCriterion
    from ditr.engine.metrics import confusion_matrix
    from ditr.engine.optim import OptimConfig
    from ditr.engine.trainer import Callback, Trainer, TrainerConfig, TrainingInterrupted

    class TermRank1(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.step == 2 and trainer.info.rank == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    out = Path(out_dir)
    info = distributed.init_distributed()
    val = ToyScenes(7, seed=5, augment=False)  # odd: the ranks get 4 and 3 scenes

    def make(run: str, callbacks=()) -> Trainer:
        torch.manual_seed(0)
        config = TrainerConfig(work_dir=out / run, batch_size=4, max_steps=6,
                               num_classes=NUM_CLASSES, log_every_steps=1, quiet=True, plots=False)
        return Trainer(ToyNet(), SegmentationCriterion(), ToyScenes(10), config,
                       collate_fn=collate, val_set=val, optim=OptimConfig(lr=0.01),
                       callbacks=callbacks, dist_info=info)

    trainer = make("straight")
    trainer.fit()
    stopped_at = None
    stopped = make("stopped", [TermRank1()])
    try:
        stopped.fit()
    except TrainingInterrupted:
        stopped_at = torch.load(out / "stopped" / "last.pt", weights_only=True)["step"]
    stopped.close()
    resumed = make("stopped")
    resumed.fit()

    result = trainer.evaluate()
    # This rank's own share of the validation set, evaluated without any collective.
    model = distributed.unwrap(trainer.model).eval()
    local = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    shard = distributed.shard_indices(len(val), info.rank, info.world_size, shuffle=False, mode="none")
    with torch.no_grad():
        for i in shard:
            item = val[i]
            pred = model({"feat": item["feat"]})["logits"].argmax(1)
            local += confusion_matrix(pred, item["segment"], NUM_CLASSES)
    torch.save({"local": local, "reduced": result.confusion, "metrics": result.metrics,
                "weights": distributed.unwrap(trainer.model).state_dict(), "step": trainer.step,
                "resumed_weights": distributed.unwrap(resumed.model).state_dict(),
                "resumed_step": resumed.step, "stopped_at": stopped_at, "shard": shard},
               out / f"rank{info.rank}.pt")
    trainer.close()
    resumed.close()
    distributed.cleanup()


if __name__ == "__main__":
    ddp_main(sys.argv[1])

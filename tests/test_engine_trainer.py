"""The training loop: learning, exact mid-epoch resume, signals, evaluation, outputs."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from test_engine_toy import NUM_CLASSES, ToyNet, ToyScenes, collate

from ditr.engine.checkpoint import load_training_state
from ditr.engine.logging import read_jsonl
from ditr.engine.losses import SegmentationCriterion
from ditr.engine.metrics import confusion_matrix
from ditr.engine.optim import OptimConfig
from ditr.engine.trainer import (Callback, Trainer, TrainerConfig, TrainingError,
                                 TrainingInterrupted)


pytestmark = pytest.mark.usefixtures("single_thread")


def make_trainer(work_dir, callbacks=(), val=True, lr=0.02, **overrides) -> Trainer:
    torch.manual_seed(0)  # the same initial weights for every trainer
    settings = dict(work_dir=work_dir, batch_size=3, epochs=3, num_classes=NUM_CLASSES,
                    checkpoint_every_steps=2, log_every_steps=1, quiet=True, plots=False)
    settings.update(overrides)
    return Trainer(ToyNet(), SegmentationCriterion(), ToyScenes(16), TrainerConfig(**settings),
                   collate_fn=collate, val_set=ToyScenes(6, seed=9, augment=False) if val else None,
                   optim=OptimConfig(lr=lr), callbacks=callbacks)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, losses):
        if trainer.step == self.step:
            raise RuntimeError("simulated crash")


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def train_records(path):
    return [(r["step"], r["loss"]) for r in read_jsonl(path) if r["kind"] == "train"]


def test_learns_and_writes_outputs(tmp_path):
    trainer = make_trainer(tmp_path, epochs=8, plots=True, eval_every_epochs=4, lr=0.1)
    before = trainer.evaluate().metrics["miou"]
    summary = trainer.fit()
    assert summary["step"] == trainer.total_steps == 8 * 5  # 16 scenes // 3 per batch
    assert summary["metrics"]["miou"] > max(0.7, before + 0.3)
    val = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [20, 40]
    assert summary["best"]["metric"] == "miou"
    best = load_training_state(tmp_path / "best.pt")
    assert best["step"] == summary["best"]["step"]
    assert best["metrics"]["miou"] == summary["best"]["value"]
    for name in ("last.pt", "last.prev.pt", "curves.png", "class_iou.png"):
        assert (tmp_path / name).exists(), name


def test_interrupted_run_resumes_exactly(tmp_path):
    """Crash at step 7 (mid-epoch 1, last checkpoint at step 6) and resume with workers."""
    reference = make_trainer(tmp_path / "ref")
    reference.fit()

    crashed = make_trainer(tmp_path / "run", callbacks=[StopAt(7)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    assert load_training_state(tmp_path / "run" / "last.pt")["step"] == 6
    assert load_training_state(tmp_path / "run" / "last.pt")["batch_in_epoch"] == 1

    resumed = make_trainer(tmp_path / "run", num_workers=2)  # workers must not change the data
    resumed.fit()
    assert resumed.step == reference.step == 15
    ref_w, res_w = weights(reference), weights(resumed)
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert train_records(tmp_path / "run" / "metrics.jsonl") == \
        train_records(tmp_path / "ref" / "metrics.jsonl")


def test_resume_falls_back_when_last_checkpoint_is_damaged(tmp_path):
    reference = make_trainer(tmp_path / "ref", epochs=2, val=False)
    reference.fit()
    crashed = make_trainer(tmp_path / "run", epochs=2, val=False, callbacks=[StopAt(9)])
    with pytest.raises(RuntimeError):
        crashed.fit()
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # killed while writing, say
    resumed = make_trainer(tmp_path / "run", epochs=2, val=False)
    with pytest.warns(UserWarning, match="damaged"):
        resumed.fit()
    ref_w, res_w = weights(reference), weights(resumed)
    assert resumed.step == 10 and all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert not list((tmp_path / "run").glob("*.damaged"))  # nothing renamed; the damaged file was not rotated
    assert load_training_state(tmp_path / "run" / "last.prev.pt")["step"] < 10


def test_signal_stops_after_the_step_with_a_checkpoint(tmp_path):
    class Term(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    trainer = make_trainer(tmp_path, val=False, checkpoint_every_steps=None, callbacks=[Term()])
    with pytest.raises(TrainingInterrupted, match="step 4/15"):
        trainer.fit()
    assert signal.getsignal(signal.SIGTERM) == previous
    assert load_training_state(tmp_path / "last.pt")["step"] == 4
    resumed = make_trainer(tmp_path, val=False)
    assert resumed.fit()["step"] == 15


def test_loader_workers_survive_stop_signals(tmp_path):
    import multiprocessing
    import time

    trainer = make_trainer(tmp_path, val=False, num_workers=1)
    iterator = iter(trainer._train_loader())
    next(iterator)
    (worker,) = multiprocessing.active_children()
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert worker.is_alive()
    assert len(list(iterator)) == trainer.steps_per_epoch - 1
    del iterator


def test_max_steps_and_full_resolution_evaluation(tmp_path):
    class Voxelised(torch.utils.data.Dataset):
        """Each scene's voxels plus the point -> voxel map and the full-resolution labels."""

        def __init__(self):
            self.scenes = ToyScenes(3, seed=4, augment=False)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            item = self.scenes[i]
            n = len(item["feat"])
            inverse = torch.arange(n) % (n // 2)
            return {"feat": item["feat"][: n // 2], "segment": item["segment"][: n // 2],
                    "inverse": inverse, "origin_segment": item["segment"]}

    def collate_full(items):
        start = torch.tensor([0] + [len(it["feat"]) for it in items[:-1]]).cumsum(0)
        return {"feat": torch.cat([it["feat"] for it in items]),
                "segment": torch.cat([it["segment"] for it in items]),
                "inverse": torch.cat([it["inverse"] + s for it, s in zip(items, start)]),
                "origin_segment": torch.cat([it["origin_segment"] for it in items])}

    trainer = make_trainer(tmp_path, epochs=None, max_steps=7, val=False)
    assert trainer.fit()["step"] == 7 and trainer.epoch == 1 and trainer.batch_in_epoch == 2
    data = Voxelised()
    result = trainer.evaluate(data, collate_full)
    model = trainer.model.eval()
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    with torch.no_grad():
        for i in range(3):
            item = data[i]
            pred = model({"feat": item["feat"]})["logits"].argmax(1)[item["inverse"]]
            expected += confusion_matrix(pred, item["origin_segment"], NUM_CLASSES)
    assert torch.equal(result.confusion, expected)
    assert int(expected.sum()) > sum(len(data[i]["feat"]) for i in range(3))  # full resolution
    assert set(result.metrics) >= {"miou", "macc", "allacc", "iou", "val_loss", "val_ce"}


def test_resuming_into_a_different_model_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, epochs=None, max_steps=3, val=False).fit()

    class Wider(ToyNet):
        def __init__(self):
            super().__init__()
            self.block0 = torch.nn.Linear(8, 48)
            self.head = torch.nn.Linear(48, NUM_CLASSES)

    config = TrainerConfig(work_dir=tmp_path, batch_size=3, max_steps=3, quiet=True, plots=False)
    other = Trainer(Wider(), SegmentationCriterion(), ToyScenes(16), config, collate_fn=collate)
    with pytest.raises(TrainingError, match="does not fit"):
        other.fit()


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        TrainerConfig(work_dir=tmp_path, epochs=1, max_steps=3)
    with pytest.raises(ValueError, match="amp"):
        TrainerConfig(work_dir=tmp_path, epochs=1, amp="fp8")
    with pytest.raises(ValueError, match="no full batch"):
        make_trainer(tmp_path, batch_size=32)


def test_standalone_evaluator_and_loss_only_steps():
    from ditr.engine.evaluator import Evaluator

    torch.manual_seed(0)
    model = ToyNet().train()
    data = ToyScenes(5, seed=3, augment=False)
    evaluator = Evaluator(model, NUM_CLASSES)
    result = evaluator.run(data, collate)
    assert model.training  # restored after evaluation
    assert int(result.confusion.sum()) == int(sum((data[i]["segment"] >= 0).sum() for i in range(5)))
    assert "val_loss" not in result.metrics and 0 <= result.metrics["miou"] <= 1

    def cosine_step(batch):  # a distillation-style step: losses only, no class predictions
        out = model(batch)["logits"]
        return {"losses": {"loss": 1 - torch.cosine_similarity(out, out.flip(0)).mean()}}

    loss_only = Evaluator(model, None).run(data, collate, step_fn=cosine_step)
    assert set(loss_only.metrics) == {"val_loss"} and loss_only.confusion.numel() == 0
    with pytest.raises(ValueError, match="num_classes"):
        Evaluator(model, None).run(data, collate)


def test_models_returning_bare_logits(tmp_path):
    class Bare(ToyNet):
        def forward(self, batch):
            return super().forward(batch)["logits"]

    torch.manual_seed(0)
    config = TrainerConfig(work_dir=tmp_path, batch_size=4, max_steps=3, num_classes=NUM_CLASSES,
                           quiet=True, plots=False)
    trainer = Trainer(Bare(), SegmentationCriterion(), ToyScenes(8), config, collate_fn=collate,
                      val_set=ToyScenes(2, seed=1))
    assert trainer.fit()["metrics"]["miou"] >= 0
    trainer.close()
    assert trainer.evaluate().metrics["miou"] >= 0
    with pytest.raises(RuntimeError, match="closed"):
        trainer.fit()

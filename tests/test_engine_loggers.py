"""trainer.loggers: TensorBoard and W&B receive the records of metrics.jsonl; missing packages are clear errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from test_engine_toy import NUM_CLASSES, ToyNet, ToyScenes, collate

from ditr.engine.logging import read_jsonl
from ditr.engine.loggers import scalars
from ditr.engine.losses import SegmentationCriterion
from ditr.engine.optim import OptimConfig
from ditr.engine.trainer import Callback, Trainer, TrainerConfig
from ditr.errors import ConfigError, DitrError

pytestmark = pytest.mark.usefixtures("single_thread")


def fit(work_dir, loggers: list[str], callbacks=(), **settings) -> Trainer:
    torch.manual_seed(0)
    config = TrainerConfig(work_dir=work_dir, batch_size=4, max_steps=4, eval_every_epochs=1, num_classes=NUM_CLASSES,
                           log_every_steps=1, quiet=True, plots=False, loggers=loggers, **settings)
    trainer = Trainer(ToyNet(), SegmentationCriterion(), ToyScenes(8), config, collate_fn=collate,
                      val_set=ToyScenes(2, seed=9, augment=False), optim=OptimConfig(lr=0.02), callbacks=callbacks)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer


def test_scalars_keep_finite_numbers_under_their_kind():
    step, values = scalars({"kind": "val", "step": 7, "epoch": 1, "miou": 0.5, "iou": [0.1, 0.9],
                            "class_names": ["a", "b"], "val_loss": float("nan"), "time": 1e9, "best": True})
    assert step == 7
    assert values == {"val/epoch": 1.0, "val/miou": 0.5}


def test_tensorboard_event_file_has_the_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(tmp_path, ["console", "jsonl", "tensorboard"])
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/miou"} <= set(tags)
    logged = [(r["step"], r["loss"]) for r in read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == logged


def test_tensorboard_drops_the_steps_a_resumed_run_redoes(tmp_path):
    """Crash after step 3 with the checkpoint of step 2: step 3 is logged again, and shown once."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    class CrashAt3(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.step == 3:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path, ["jsonl", "tensorboard"], callbacks=[CrashAt3()], checkpoint_every_steps=2)
    fit(tmp_path, ["jsonl", "tensorboard"], checkpoint_every_steps=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


class FakeRun:
    def __init__(self, **settings):
        self.settings, self.logged, self.finished = settings, [], False

    def log(self, values, step):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch) -> list[FakeRun]:
    runs: list[FakeRun] = []
    module = types.ModuleType("wandb")
    module.init = lambda **settings: runs.append(FakeRun(**settings)) or runs[-1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def test_wandb_runs_offline_by_default_and_gets_every_record(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    runs = fake_wandb(monkeypatch)
    fit(tmp_path, ["jsonl", "wandb"])
    (run,) = runs
    assert run.settings["mode"] == "offline" and run.settings["dir"] == str(tmp_path)
    assert run.finished
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [step for step, _ in run.logged] == [r["step"] for r in records]
    assert any("val/miou" in values for _, values in run.logged)


def test_wandb_mode_set_by_the_user_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    runs = fake_wandb(monkeypatch)
    fit(tmp_path, ["jsonl", "wandb"])
    assert runs[0].settings["mode"] == "disabled"


def test_a_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(DitrError, match=r"pip install 'ditr\[wandb\]'"):
        fit(tmp_path, ["jsonl", "wandb"])
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(("loggers", "message"), [(["jsonl", "mlflow"], "unknown logger 'mlflow'"),
                                                  (["console"], "must keep 'jsonl'")])
def test_bad_logger_lists_are_config_errors(loggers, message):
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(loggers=loggers)

"""ditr train --print-config: the resolved run configuration as YAML, nothing trained."""

from __future__ import annotations

import yaml

from ditr.cli import main
from ditr.configs import load_config, load_preset


def test_prints_the_resolved_config_that_reads_back_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = ["trainer.batch_size=8", "trainer.loggers=[console, jsonl, tensorboard]"]
    assert main(["train", "scannet", "method/ptv3", *overrides, "--print-config"]) == 0
    text = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no run directory, no checkpoint
    printed = yaml.safe_load(text)
    assert printed["trainer"]["batch_size"] == 8 and printed["model"]["name"] == "ptv3"
    assert "dataset:\n" in text and "class_names: [wall, floor," in text  # sections in blocks, flat lists inline
    (tmp_path / "run.yaml").write_text(text)
    expected = load_preset(["scannet", "method/ptv3"], overrides).to_dict()
    assert load_config(str(tmp_path / "run.yaml")).to_dict() == expected


def test_a_bad_override_is_still_an_error(capsys):
    assert main(["train", "synthetic", "trainer.batch_size=0", "--print-config"]) == 2
    assert "trainer.batch_size" in capsys.readouterr().err

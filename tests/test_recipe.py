"""The recipe card: every preset resolves to the reference's recipe except declared, reasoned differences."""

from __future__ import annotations

import json

import pytest

from ditr.cli import main
from ditr.recipe import build_card, card_names, config_view, methods_of
from ditr.recipe.reference import card_spec, declared, entry, reference_data

CARDS = [(preset, method) for preset in card_names() for method in methods_of(preset)]


@pytest.fixture(scope="module")
def cards():
    return {f"{p}/{m}": build_card(p, m) for p, m in CARDS}


@pytest.mark.parametrize("preset, method", CARDS, ids=[f"{p}/{m}" for p, m in CARDS])
def test_every_difference_has_a_declared_reason(cards, preset, method):
    card = cards[f"{preset}/{method}"]
    assert not card.undeclared, "\n".join(f"{r.key}: ours {r.ours!r}, reference {r.reference!r}"
                                          for r in card.undeclared)


def test_no_declared_reason_is_stale(cards):
    """Each declaration explains at least one actual difference (a fixed difference drops its reason)."""
    used = {(r.key, r.reason) for c in cards.values() for r in c.differences}
    for d in declared():
        assert any(d.covers(name, r.key) for name, c in cards.items() for r in c.differences), \
            f"differences.yaml: {d.cards} {d.key!r} covers no difference: {d.reason}"
    assert used


def test_every_reference_key_exists_in_our_configuration(cards):
    """A reference key we do not have would compare against nothing: a typo or a missing feature."""
    for name, card in cards.items():
        view = config_view(card.config)
        ref = entry(card.spec.entry)
        missing = [k for k in ref.settings if k not in view and not (card.spec.method == "ptv3" and
                                                                     k.startswith(("images.", "vfm.", "projection.",
                                                                                   "model.injection", "model.image")))]
        assert not missing, f"{name}: {missing}"


def test_every_card_entry_and_preset_resolves():
    for preset, method in CARDS:
        spec = card_spec(preset, method)
        assert spec.entry in reference_data()["entries"]


def test_a_drifted_preset_is_caught():
    card = build_card("scannet", "ditr", ["trainer.epochs=600", "mix3d.p=0.5"])
    assert {r.key for r in card.undeclared} == {"trainer.epochs", "mix3d.p"}
    card = build_card("semantickitti", "ditr", ["loss.class_weights=null"])
    assert [r.key for r in card.undeclared] == ["loss.class_weights"]


def test_the_image_flip_and_backbone_are_compared_as_the_run_does():
    view = config_view(build_card("scannet").config)
    assert view["images.flip_p"] == 0.5
    assert all(t["type"] != "ImageFlip" for t in view["transforms.train"])
    assert view["model.ptv3.enc_depths"] == [2, 2, 2, 6, 2] and view["model.ptv3.in_channels"] == 6
    assert config_view(build_card("nuscenes").config)["model.ptv3.in_channels"] == 4


def test_recipe_command_json_and_check(capsys):
    assert main(["recipe", "semantickitti", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "semantickitti" and out["method"] == "ditr"
    assert out["config"]["loss"]["class_weights"][7] == pytest.approx(10.1922)
    assert all(set(d) == {"key", "ours", "reference", "reason"} and d["reason"] for d in out["differences"])
    assert main(["recipe", "scannet", "mix3d.p=0.5", "--check", "--differences"]) == 1
    text = capsys.readouterr().out
    assert "mix3d.p" in text and "UNDECLARED" in text and "trainer.epochs" not in text


def test_recipe_command_refuses_unknown_cards(capsys):
    assert main(["recipe", "synthetic"]) == 2
    assert "no recipe card" in capsys.readouterr().err
    assert main(["recipe", "s3dis", "--method", "d-ditr"]) == 2
    assert "no d-ditr recipe" in capsys.readouterr().err


def test_every_card_configuration_builds_its_pipelines(cards):
    """The presets the cards compare also run: every transform list and test-time variant builds."""
    from ditr.data.transforms import build_transforms

    for name, card in cards.items():
        for mode in ("train", "val", "test"):
            build_transforms(getattr(card.config.transforms, mode), f"{name}: transforms.{mode}")
        for i, variant in enumerate(card.config.test_time.variants):
            build_transforms(variant, f"{name}: test_time.variants[{i}]")

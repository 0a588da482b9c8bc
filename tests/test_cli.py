"""The command line as a user meets it: quick start-up, quiet closed pipes, one --device rule."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ditr.cli import build_parser
from ditr.commands.features import REFERENCE_JITTER
from ditr.vfm.color_jitter import REFERENCE_STRENGTH

SRC = Path(__file__).resolve().parents[1] / "src"
#: Modules that take seconds to import; a command imports them only when its work needs them.
HEAVY = ("torch", "transformers", "matplotlib")


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """A Python child that imports this checkout's ditr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True, **kwargs)


def closed_pipe_run(argv: list[str]) -> tuple[int, str]:
    """(exit status, stderr) of ``ditr ARGV... | head`` whose reader has gone before the first line; the child
    then reports on stderr which heavy modules the command imported."""
    code = ("import sys\n"
            "from ditr.cli import main\n"
            "code = main(sys.argv[1:])\n"
            f"print('imported:', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
            "sys.exit(code)\n")
    proc = python(code, *argv)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away at once
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def assert_quiet(code: int, err: str) -> None:
    assert code == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_help_of_every_command_imports_no_heavy_module():
    """Building the parser and printing help takes a fraction of a second: no torch, transformers, matplotlib."""
    code = ("import contextlib, io, sys\n"
            "from ditr.cli import build_parser\n"
            "parser = build_parser()\n"
            "for name in sys.argv[1:]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        parser.parse_args([name, '--help'] if name else ['--help'])\n"
            f"print(*[m for m in {HEAVY!r} if m in sys.modules])\n")
    names = [""] + list(_subcommands())
    out, err = python(code, *names).communicate(timeout=120)
    assert not err and out.split() == [], f"imported: {out} {err[-2000:]}"


@pytest.mark.parametrize("argv", [["models"], ["models", "--json"]], ids=["rich-table", "print"])
def test_closed_pipe_ends_quietly(argv):
    code, err = closed_pipe_run(argv)
    assert_quiet(code, err)
    assert err.splitlines()[-1] == "imported:"


def test_info_of_a_checkpoint_imports_neither_transformers_nor_matplotlib(tmp_path):
    """``ditr info CKPT`` reads the checkpoint with torch and needs nothing heavier (here piped into head)."""
    from test_info_export import save_trained_like

    ckpt = save_trained_like(tmp_path / "ditr.pt", ["synthetic", "method/ditr"], "model.image_channels=16")
    code, err = closed_pipe_run(["info", str(ckpt)])
    assert_quiet(code, err)
    assert err.splitlines()[-1] == "imported: torch"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, by name."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_device_option_defaults_to_auto_and_says_so():
    with_device = {name: action for name, command in _subcommands().items() for action in command._actions
                   if "--device" in action.option_strings}
    assert {"project", "inspect", "features", "evaluate", "predict", "distill"} <= set(with_device)
    for name, action in with_device.items():
        assert action.default == "auto", name
        assert "(default: auto)" in action.help and "CUDA" in action.help, name


def test_color_jitter_default_in_help_is_the_reference_strength():
    assert REFERENCE_JITTER == ",".join(f"{x:g}" for x in REFERENCE_STRENGTH)



def test_overrides_may_follow_options():
    from ditr.cli import parse_arguments

    parser = build_parser()
    args = parse_arguments(parser, ["train", "synthetic", "--work-dir", "runs/x", "trainer.epochs=1", "loss.x=2"])
    assert args.items == ["synthetic", "trainer.epochs=1", "loss.x=2"] and args.work_dir == Path("runs/x")
    args = parse_arguments(parser, ["recipe", "scannet", "--json", "trainer.epochs=3"])
    assert args.overrides == ["trainer.epochs=3"]
    with pytest.raises(SystemExit):  # not an override: argparse's own error
        parse_arguments(parser, ["train", "synthetic", "--work-dir", "runs/x", "stray"])

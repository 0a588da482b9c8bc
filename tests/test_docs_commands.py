"""The commands shown in README.md and docs/*.md work.

- Every ``ditr ...`` line in a fenced block (also ``torchrun ... -m ditr.cli ...`` and ``... | xargs ditr ...``)
  parses with ditr's own argument parser, so a renamed sub-command or option cannot linger in the docs; so do
  the examples of every command's ``--help``. Documented ``ditr train`` / ``distill`` / ``recipe`` runs also
  resolve their presets and ``key=value`` overrides.
- Blocks marked runnable (an HTML comment line ``<!-- runnable -->`` directly before the fence) run with
  ``bash -e`` in a temporary directory, one directory per page so a page's blocks run in order as a session.
  ``SUBSTITUTIONS`` shrinks sizes (scenes, points, steps) so the suite stays fast, and points a page's
  placeholders (``SRC``) at the small real data samples (``$DITR_TEST_DATA``, the folder conftest reads; such a
  page is skipped where it is absent).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import shared_path

from ditr.cli import COMMANDS, build_parser
from ditr.errors import DitrError

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^\s*```(\S*)\s*$")
# Fenced blocks in these languages are code of another kind; every other block may hold shell commands.
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "jsonl", "toml", "html", "text"}

#: Per page, (old, new) replacements applied to its runnable blocks before they run: smaller sizes, sample data.
SUBSTITUTIONS: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        ("ditr synth rooms --scenes 4 --seed 0 ", "ditr synth rooms --scenes 4 --seed 0 --points 3000 --views 2 "),
        ("trainer.epochs=20 trainer.eval_every_epochs=5", "trainer.epochs=3 trainer.eval_every_epochs=3"),
    ],
    "docs/synthetic.md": [
        ("--scenes 10 --seed 0 ", "--scenes 1 --seed 0 --points 2000 --views 2 --width 64 --height 48 "),
        ("--scenes 2 --seed 3 --points 50000 --views 12 --width 640 --height 480",
         "--scenes 1 --seed 3 --points 2000 --views 2 --width 64 --height 48"),
        ("--scenes 100 --seed 1 ", "--scenes 1 --seed 1 --points 2000 --views 2 --width 64 --height 48 "),
    ],
    "docs/features.md": [("ditr synth rooms --scenes 1", "ditr synth rooms --scenes 1 --points 2000 --views 2")],
    "docs/datasets.md": [("ditr import kitti SRC scenes/kitti [--split testing] [--frame-step 10] [--max-frames 100]",
                          'ditr import kitti "$DITR_TEST_DATA/kitti_object" scenes/kitti --max-frames 1')],
}


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository
    line: int  # line number of the opening fence
    language: str
    text: str
    runnable: bool


def _blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page that may hold shell commands."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        language = match.group(1).lower()
        if language not in NOT_SHELL:
            runnable = i > 0 and lines[i - 1].strip() == RUNNABLE
            out.append(Block(str(path.relative_to(REPO)), i + 1, language, "\n".join(lines[i + 1:end]), runnable))
        i = end + 1
    return out


ALL_BLOCKS = [block for page in PAGES for block in _blocks(page)]
RUNNABLE_PAGES = sorted({block.page for block in ALL_BLOCKS if block.runnable})


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


# Documentation shorthand, not shell: "[--opt X]" is an optional option, "a|b|c" a choice (the first is taken).
_OPTIONAL = re.compile(r"\[(--[^\]]*)\]")
_CHOICE = re.compile(r"(?<=[\w.])\|[\w.|]+")


def _ditr_argvs(line: str) -> list[list[str]]:
    """The argument lists given to ditr on one shell line (none when the line runs no ditr command)."""
    line = _CHOICE.sub("", _OPTIONAL.sub(r"\1", line))
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    out = []
    for segment in _split(tokens, {"|", "&&", ";", "||"}):
        if segment[:1] == ["ditr"] and len(segment) > 1 and not segment[1].endswith(":"):
            out.append(segment[1:])
        elif "xargs" in segment and "ditr" in segment:
            out.append(segment[segment.index("ditr") + 1:] + ["SCENE"])  # xargs appends the scenes
        elif "-m" in segment and segment[segment.index("-m") + 1:][:1] == ["ditr.cli"]:
            out.append(segment[segment.index("-m") + 2:])
    return out


_REDIRECT = re.compile(r"^\d*(>>?|<)(&\d+)?")


def _split(tokens: list[str], separators: set[str]) -> list[list[str]]:
    """Commands between separators, without their redirections (``> out.yaml``, ``2>&1``)."""
    segments: list[list[str]] = [[]]
    skip_target = False
    for token in tokens:
        if skip_target:
            skip_target = False
        elif token in separators:
            segments.append([])
        elif match := _REDIRECT.match(token):
            skip_target = match.end() == len(token) and not match.group(2)  # the target is the next token
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def _documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for block in ALL_BLOCKS:
        for offset, line in enumerate(_logical_lines(block.text)):
            out.extend((f"{block.page}:{block.line + 1 + offset}", argv) for argv in _ditr_argvs(line))
    return out


_parser = functools.cache(build_parser)  # parse_args leaves the parser as it was: one serves every command


def _parse_error(argv: list[str]) -> str | None:
    """argparse's complaint about ``ditr ARGV``, or None when it parses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_every_documented_ditr_command_parses():
    commands = _documented_commands()
    assert len(commands) > 100, "the extraction of ditr commands from the docs found too few"
    failures = [f"{where}: ditr {shlex.join(argv)}\n    {error}"
                for where, argv in commands if (error := _parse_error(argv)) is not None]
    assert not failures, "documented commands that ditr rejects:\n" + "\n".join(failures)


def test_documented_runs_resolve_their_configs():
    """``ditr train`` / ``distill`` / ``recipe`` lines name existing presets and keys the run config has
    (lines that name a YAML file of their own or a placeholder such as CONFIG are left to the parse check)."""
    from ditr.commands.train import split_items
    from ditr.configs import list_presets, load_preset

    known = set(list_presets())
    failures, checked = [], 0
    for where, argv in _documented_commands():
        if argv[0] not in ("train", "distill", "recipe"):
            continue
        args = _parser().parse_args(argv)
        items = args.items if argv[0] != "recipe" else [args.preset, *args.overrides] if args.preset else []
        presets, overrides = split_items(items)
        if not presets or not set(presets) <= known:
            continue
        checked += 1
        try:
            load_preset(presets, overrides)
        except DitrError as exc:
            failures.append(f"{where}: ditr {shlex.join(argv)}\n    {exc}")
    assert checked > 20, "too few documented runs were checked"
    assert not failures, "\n".join(failures)


def test_every_help_example_parses():
    """The examples in each command's --help are documentation too."""
    import importlib

    failures = []
    for name in COMMANDS:
        examples = getattr(importlib.import_module(f"ditr.commands.{name}"), "EXAMPLES", None) or ""
        for line in _logical_lines(examples):
            for argv in _ditr_argvs(line):
                if (error := _parse_error(argv)) is not None:
                    failures.append(f"ditr {name} --help: ditr {shlex.join(argv)}\n    {error}")
    assert not failures, "\n".join(failures)


def test_command_extraction_reads_doc_shorthand():
    assert _ditr_argvs("ditr import waymo SRC OUT [--frame-step 2] --projections first|both|none  # note") == [
        ["import", "waymo", "SRC", "OUT", "--frame-step", "2", "--projections", "first"]]
    assert _ditr_argvs("find data -name views.json | sort | xargs ditr features --model m --cache c") == [
        ["features", "--model", "m", "--cache", "c", "SCENE"]]
    assert _ditr_argvs("OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m ditr.cli train synthetic") == [
        ["train", "synthetic"]]
    assert _ditr_argvs("ditr train a --print-config > a.yaml 2>&1 && ditr info x 2>/dev/null >>log") == [
        ["train", "a", "--print-config"], ["info", "x"]]
    assert _ditr_argvs("ditr info: error: no such model") == []
    assert _ditr_argvs("python download.py -o SRC") == []
    assert _parse_error(["features", "rooms", "--model", "m", "--cache", "c", "--no-such-option"]) is not None


def _environment(work: Path, test_data: Path | None) -> dict[str, str]:
    """The venv's ``ditr`` first on PATH, this checkout's sources imported, nothing downloaded."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO / "src"), env.get("PYTHONPATH", "")] if p)
    env.update({"HOME": str(work), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE",
                "DITR_MODELS": str(work / "no-models")})
    if test_data is not None:
        env["DITR_TEST_DATA"] = str(test_data)
    return env


def _script(page: str) -> str:
    """The runnable blocks of a page, in order, with the page's substitutions applied (each must apply)."""
    text = "\n".join(block.text for block in ALL_BLOCKS if block.page == page and block.runnable)
    for old, new in SUBSTITUTIONS.get(page, []):
        assert old in text, f"{page}: the substitution of {old!r} no longer matches a runnable block"
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_runnable_blocks_run(page, tmp_path):
    script = _script(page)
    test_data = shared_path("data") if "$DITR_TEST_DATA" in script else None
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=_environment(tmp_path, test_data),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{page}: a runnable block failed (status {result.returncode})\n--- script\n"
                                    f"{script}\n--- stderr\n{result.stderr[-3000:]}")


def test_substitutions_name_pages_with_runnable_blocks():
    stale = [page for page in SUBSTITUTIONS if page not in RUNNABLE_PAGES]
    assert not stale, f"substitutions for pages without runnable blocks: {stale}"

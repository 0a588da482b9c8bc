"""The repository is self-contained: it cites its own docs/design.md, never files that users do not have.

Citations of the design are `docs/design.md#<anchor>` (or, inside docs/, `design.md#<anchor>`); every
such anchor must name a heading of docs/design.md.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".toml", ".cfg", ".json", ".sh", ""}

# A numbered section of a design file outside the repository ("DESIGN 1.2"), or that file itself.
EXTERNAL_DESIGN = re.compile(r"DESIGN \d|DESIGN\.md")
# A path into the folder of shared samples beside the checkout: not something users have.
SHARED_PATH = re.compile(r"\.\./shared")
DESIGN_ANCHOR = re.compile(r"design\.md#([A-Za-z0-9_-]+)")
# Notes written while building the project, not facts for users: they must not reach the documentation.
INTERNAL_NOTE = re.compile(r"(?i:\bthe issue\b|\bgoal is not met\b|\bthe lead\b|\bhelpers?\b|reference-recipe\.md)"
                           r"|\bTODO\b|\bFIXME\b|\bXXX\b|\bDESIGN\b")
# A Markdown file named in the documentation (a link or a mention): users must be able to open it.
MARKDOWN_NAME = re.compile(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b")
USER_DOCS = ("docs", "README.md")


def _files(*roots: str) -> list[Path]:
    out = []
    for root in roots:
        path = REPO / root
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            generated = "__pycache__" in p.parts or any(part.endswith(".egg-info") for part in p.parts)
            if p.resolve() == THIS or generated or p.suffix not in TEXT_SUFFIXES:
                continue
            out.append(p)
    return out


def _hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    return hits


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def test_no_citation_of_an_external_design_file():
    hits = _hits(EXTERNAL_DESIGN, _files("src", "docs", "tests", "benchmarks", "README.md", "Makefile"))
    assert not hits, "cite docs/design.md#<section> instead:\n" + "\n".join(hits)


def test_no_path_to_the_shared_folder_in_package_or_docs():
    hits = _hits(SHARED_PATH, _files("src", *USER_DOCS))
    assert not hits, "users have no ../shared folder:\n" + "\n".join(hits)


def test_design_citations_name_existing_sections():
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+)$", design, re.MULTILINE)}
    files = _files("src", "docs", "tests", "benchmarks", "README.md", "Makefile")
    missing = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for match in DESIGN_ANCHOR.finditer(line):
                if match.group(1) not in anchors:
                    missing.append(f"{path.relative_to(REPO)}:{number}: #{match.group(1)}")
    assert not missing, "no such heading in docs/design.md:\n" + "\n".join(missing)


def test_github_anchor_rule():
    assert _github_anchor("Projection and visibility") == "projection-and-visibility"
    assert _github_anchor("2D features") == "2d-features"
    assert _github_anchor("D-DITR distillation") == "d-ditr-distillation"


def test_docs_hold_no_internal_notes():
    hits = _hits(INTERNAL_NOTE, [p for p in _files(*USER_DOCS) if p.suffix == ".md"])
    assert not hits, "write these as facts for users:\n" + "\n".join(hits)


def test_docs_name_only_markdown_files_of_the_repository():
    """A page may name ``docs/x.md``, ``x.md`` (beside it) or ``README.md``; each must exist here
    (``demo_out/...`` names what ``make demo`` writes)."""
    missing = []
    for path in (p for p in _files(*USER_DOCS) if p.suffix == ".md"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in MARKDOWN_NAME.findall(line):
                if name.startswith(("//", "demo_out/")):  # a web address's path; a file the demo writes
                    continue
                candidates = [(path.parent / name).resolve(), (REPO / name).resolve(), REPO / "docs" / Path(name).name]
                if not any(c.is_file() and c.is_relative_to(REPO) for c in candidates):
                    missing.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not missing, "documents users do not have:\n" + "\n".join(missing)


def test_internal_note_rule():
    assert INTERNAL_NOTE.search("as the issue asks") and INTERNAL_NOTE.search("TODO: later")
    assert INTERNAL_NOTE.search("see ../shared/reference-recipe.md")
    assert not INTERNAL_NOTE.search("a design choice, issues of the dataset's tracker, the leading axis")
    assert MARKDOWN_NAME.findall("see [x](../shared/DESIGN.md) and https://host/README.md") == [
        "../shared/DESIGN.md", "//host/README.md"]

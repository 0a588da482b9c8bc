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
    hits = _hits(SHARED_PATH, _files("src", "docs"))
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

"""References to docs/architecture.md name sections that exist; no reference to an absent doc."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# The design document the project started from is not in the repository.
ABSENT_DOC = "DESIGN" + ".md"
REFERENCE = re.compile(r"architecture\.md\)?,?\s+sections?\s+(\d+)((?:(?:,\s*|\s+and\s+)\d+)*)")


def _sources() -> list[Path]:
    paths = [ROOT / "README.md", ROOT / "cli.py", *ROOT.glob("docs/*.md")]
    for folder in ("randomizer", "tests", "benchmarks"):
        paths += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.suffix in (".py", ".md", ".json", ".toml") and p.is_file()
        ]
    return sorted(paths)


def _sections() -> set[int]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)}


def test_every_section_reference_names_an_existing_section() -> None:
    sections = _sections()
    assert sections == set(range(1, len(sections) + 1)), "sections are numbered 1, 2, 3, ..."
    references: list[tuple[str, int]] = []
    for path in _sources():
        for match in REFERENCE.finditer(path.read_text(encoding="utf-8")):
            numbers = [match.group(1), *re.findall(r"\d+", match.group(2))]
            references += [(str(path.relative_to(ROOT)), int(n)) for n in numbers]
    assert len({where for where, _ in references}) >= 10, "the reference pattern went stale"
    assert [(where, n) for where, n in references if n not in sections] == []


def test_nothing_points_to_the_design_document_outside_the_repository() -> None:
    found = [
        str(p.relative_to(ROOT)) for p in _sources() if ABSENT_DOC in p.read_text(encoding="utf-8")
    ]
    assert found == []

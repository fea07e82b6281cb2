"""Library messages speak to every front end; the CLI adds its flags through hints."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from randomizer.commands.base import CLI_HINTS, error_text
from randomizer.errors import Hint, StateError

PACKAGE = Path(__file__).resolve().parents[1] / "randomizer"
FRONT_END_ONLY = (PACKAGE / "commands", PACKAGE / "migrations")

CLI_WORDS = re.compile(r"(?<![\w-])--[a-z]|'randomizer [a-z]|\bRANDOMIZER_[A-Z]")
"""A flag, a quoted command line or an environment variable: words of the CLI alone."""


def _library_files() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if not any(p.is_relative_to(folder) for folder in FRONT_END_ONLY)
    )


def _raised_texts(path: Path) -> list[tuple[int, str]]:
    """The literal text of every message handed to an exception a module raises."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                for part in ast.walk(arg):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        texts.append((node.lineno, part.value))
    return texts


def test_the_scan_sees_library_messages() -> None:
    """The scan below would pass vacuously if it found no messages."""
    texts = [text for path in _library_files() for _, text in _raised_texts(path)]
    assert len(texts) > 100
    assert any("no allocation list yet" in text for text in texts)


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_messages_name_no_cli_flag_or_command(path: Path) -> None:
    found = [
        f"{path.name}:{line}: {text!r}"
        for line, text in _raised_texts(path)
        if CLI_WORDS.search(text)
    ]
    assert found == []


def test_the_pattern_catches_cli_words() -> None:
    for text in ("use --override-window", "run 'randomizer init' first", "set RANDOMIZER_KEY_FILE"):
        assert CLI_WORDS.search(text), text
    assert not CLI_WORDS.search("2026-01-01 is outside 2026-01-02 to 2026-01-03")


def test_every_hint_has_cli_words() -> None:
    assert set(CLI_HINTS) == set(Hint)
    assert all(text.strip() for text in CLI_HINTS.values())


def test_the_error_line_adds_the_cli_hint() -> None:
    plain = StateError("no allocation list yet: an admin generates the allocation list first")
    hinted = StateError(
        "no allocation list yet: an admin generates the allocation list first",
        hint=Hint.GENERATE_LIST,
    )
    assert error_text(plain) == str(plain)
    assert error_text(hinted) == (
        "no allocation list yet: an admin generates the allocation "
        "list first (run 'randomizer list generate')"
    )
    assert str(hinted) == str(plain)  # the library's message (and its audit record) has no flag

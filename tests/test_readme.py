"""The README's command examples name commands and options the CLI has, and would not be
refused for what they show (a future date, a checkpoint before its signing key)."""

from __future__ import annotations

import re
import shlex
from datetime import date
from pathlib import Path

import click
import pytest

from randomizer.commands import cli

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_OPTIONS = {"--db", "--key-file", "--user", "--json", "--server"}


def _examples() -> list[str]:
    """Every ``randomizer ...`` command line of the README, in order."""
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for segment in re.split(r"&&|\|", line):
                words = shlex.split(segment, comments=True)
                if words and words[0].endswith("randomizer"):
                    lines.append(" ".join(["randomizer", *words[1:]]))
    outside = re.sub(r"```sh\n.*?```", "", text, flags=re.DOTALL)
    lines += [span for span in re.findall(r"`(randomizer [^`]+)`", outside)]
    # 'randomizer COMMAND --help' stands for every command
    return [line for line in lines if not line.startswith("randomizer COMMAND ")]


EXAMPLES = _examples()


def _command(words: list[str]) -> tuple[tuple[str, ...], click.Command, list[str]]:
    """The command path, the command and its remaining words; root options skipped."""
    command: click.Command = cli
    path: list[str] = []
    rest = list(words)
    while isinstance(command, click.Group):
        word = rest.pop(0)
        if word in ROOT_OPTIONS:
            if word != "--json":
                rest.pop(0)
            continue
        sub = command.get_command(click.Context(command), word)  # the root loads lazily
        assert sub is not None, f"no command {' '.join([*path, word])!r}"
        command, path = sub, [*path, word]
    return tuple(path), command, rest


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) > 20
    assert "randomizer --user alice list generate" in EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_example_names_a_command_and_its_options(example: str) -> None:
    words = [w.strip("[]") for w in example.split()[1:]]
    path, command, rest = _command(words)
    options = {opt for param in command.params for opt in param.opts} | {"--help"}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options | ROOT_OPTIONS, (
                f"'randomizer {' '.join(path)}' has no option {word}"
            )


def test_no_example_date_is_in_the_future() -> None:
    days = [(day, e) for e in EXAMPLES for day in re.findall(r"\d{4}-\d{2}-\d{2}", e)]
    assert [(day, e) for day, e in days if date.fromisoformat(day) > date.today()] == []


def test_a_checkpoint_example_comes_after_its_signing_key_is_made() -> None:
    keygen = [i for i, e in enumerate(EXAMPLES) if " audit keygen " in f"{e} "]
    checkpoints = [i for i, e in enumerate(EXAMPLES) if " audit checkpoint " in f"{e} "]
    assert checkpoints and keygen
    assert min(keygen) < min(checkpoints)
    for i in checkpoints:
        assert "--out" in EXAMPLES[i] and ">" not in EXAMPLES[i], EXAMPLES[i]


def test_every_test_the_security_model_names_exists() -> None:
    """The security table says which test shows each claim: each must be there to run."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Security model") : text.index("## Docs")]
    named = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`((?:, `::\w+`)*)", section)
    assert len(named) >= 8
    for path, first, more in named:
        source = (README.parent / path).read_text(encoding="utf-8")
        for test in [first, *re.findall(r"::\w+", more)]:
            if test:
                assert f"def {test[2:]}(" in source, f"{path}{test} does not exist"
    every_test = "".join(
        path.read_text(encoding="utf-8") for path in (README.parent / "tests").rglob("test_*.py")
    )
    for test in re.findall(r"`::(\w+)`", section):
        assert f"def {test}(" in every_test, f"{test} does not exist"

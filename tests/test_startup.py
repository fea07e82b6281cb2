"""Start-up of the command line: what ``--help``, ``--version`` and a command import.

These check ``sys.modules`` in a fresh interpreter, never a time: the time is what
``benchmarks/bench_startup.py`` prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from randomizer import access, store
from randomizer.commands import COMMANDS, cli
from randomizer.commands.base import DEFAULT_DB_URL, MAX_PASSWORD_LENGTH

HEAVY = ("sqlalchemy", "alembic", "numpy")
"""Packages the root command must not import: each costs a tenth of a second or more."""

PROBE = """
import json, sys
from randomizer.commands import main
sys.argv = ["randomizer", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
"""Run the console script's ``main`` with the given arguments, then list every module
imported (on stderr, after whatever the command wrote)."""


def imported_after(arguments: list[str], **environment: str) -> set[str]:
    """The modules a fresh interpreter has imported once ``randomizer ARGUMENTS`` ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env.update(environment)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(arguments)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    modules: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return set(modules)


def heavy(modules: set[str]) -> list[str]:
    """The heavy packages among ``modules``."""
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize("arguments", [["--help"], ["--version"], []])
def test_the_root_command_imports_neither_sqlalchemy_alembic_nor_numpy(
    arguments: list[str],
) -> None:
    modules = imported_after(arguments)
    assert "randomizer.commands" in modules  # the probe did run the command line
    assert heavy(modules) == []
    assert not any(
        m.startswith("randomizer.commands.") and m != "randomizer.commands.base" for m in modules
    ), "a command module was imported by the root"


def test_a_command_imports_its_module_and_what_it_needs() -> None:
    # the probe can see imports at all: a command that needs numpy imports it
    modules = imported_after(
        ["list", "preview", "--design", "exosome-ms", "--seed", "0" * 64, "--participants", "4"]
    )
    assert "randomizer.commands.listing" in modules
    assert "numpy" in modules
    assert "randomizer.commands.setup" not in modules


REMOTE = ["--server", "http://127.0.0.1:9", "--user", "ina", "audit", "verify"]
"""A remote command; nothing listens on port 9, so it fails after loading its whole path."""
REMOTE_ENV = {
    "RANDOMIZER_PASSWORD": "not-a-real-password",
    "XDG_STATE_HOME": "/nonexistent-randomizer-state",
}


def test_a_remote_command_imports_no_alembic() -> None:
    modules = imported_after(REMOTE, **REMOTE_ENV)
    assert "randomizer.backends.http" in modules
    assert "randomizer.backends.local" not in modules
    assert not any(m.split(".")[0] == "alembic" for m in modules)


@pytest.mark.parametrize(
    "command",
    [["audit", "verify"], ["report"], ["list", "status"], ["pharmacy", "list"], ["verify"]],
)
def test_a_remote_command_imports_neither_sqlalchemy_alembic_nor_numpy(
    command: list[str],
) -> None:
    modules = imported_after([*REMOTE[:4], *command], **REMOTE_ENV)
    assert "randomizer.backends.http" in modules
    assert heavy(modules) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_lazy_command_is_the_command_of_its_module_with_its_short_help(name: str) -> None:
    command = COMMANDS[name].load()
    assert command.name == name
    assert command.get_short_help_str(limit=1_000) == COMMANDS[name].short_help, (
        f"set the short help of {name!r} in COMMANDS to {command.get_short_help_str(limit=1_000)!r}"
    )


def test_the_root_help_lists_the_commands_as_click_would_with_them_loaded() -> None:
    lazy = CliRunner().invoke(cli, ["--help"], prog_name="randomizer")
    eager = click.Group(name="randomizer", params=cli.params, help=cli.help)
    for name, entry in COMMANDS.items():
        eager.add_command(entry.load(), name)
    loaded = CliRunner().invoke(eager, ["--help"], prog_name="randomizer")
    assert lazy.exit_code == 0, lazy.output
    assert lazy.stdout == loaded.stdout


def test_the_constants_spelled_out_for_start_up_match_the_library() -> None:
    assert DEFAULT_DB_URL == store.DEFAULT_URL
    assert MAX_PASSWORD_LENGTH == access.MAX_PASSWORD_LENGTH

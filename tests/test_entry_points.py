"""How the command line is started: console script, ``python -m randomizer``, a checkout's cli.py.

The command line lives inside the package; the installed distribution must not
put a top-level ``cli`` module into every user's site-packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from randomizer import __version__

ROOT = Path(__file__).resolve().parents[1]
VERSION_LINE = f"randomizer, version {__version__}"
REINSTALL = "the installed metadata is stale or wrong: reinstall with pip install -e ."


def _python(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_python_m_randomizer_runs_the_command_line(tmp_path: Path) -> None:
    # outside the checkout, so the installed package answers, not the source tree
    result = _python("-m", "randomizer", "--version", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, VERSION_LINE, "")


def test_python_m_randomizer_keeps_the_error_contract(tmp_path: Path) -> None:
    result = _python("-m", "randomizer", "no-such-command", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: No such command 'no-such-command'")


def test_cli_py_in_a_checkout_runs_the_same_command_line() -> None:
    result = _python("cli.py", "--version", cwd=ROOT)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, VERSION_LINE, "")


def test_the_project_points_the_console_script_into_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"] == {"randomizer": "randomizer.commands:main"}
    assert "py-modules" not in project["tool"].get("setuptools", {})


# Run outside the checkout, without PYTHONPATH: the checkout's own cli.py and the
# in-tree randomizer.egg-info must not stand in for what the install provides.
INSTALLED = """
import importlib.util, json
from importlib import metadata
distribution = metadata.distribution("randomizer")
print(json.dumps({
    "scripts": [e.value for e in metadata.entry_points(group="console_scripts",
                                                        name="randomizer")],
    "top_level": (distribution.read_text("top_level.txt") or "").split(),
    "cli": getattr(importlib.util.find_spec("cli"), "origin", None),
}))
"""


def test_the_installed_distribution_has_no_top_level_cli_module(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = _python("-c", INSTALLED, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "scripts": ["randomizer.commands:main"],
        "top_level": ["randomizer"],
        "cli": None,
    }, REINSTALL

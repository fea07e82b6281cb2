"""The real CLI in a process of its own, for the tests that kill, pause or cut it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from tests.support.trial import PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the processes' working directory, where ``cli`` and ``tests`` are."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RANDOMIZER_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env.update(extra)
    return env


def cli_process(db_url: str, key_file: Path, user: str, *args: str,
                fault: str | None = None) -> subprocess.Popen[str]:
    """The real CLI as ``user`` (password from the environment), started and not waited for.

    ``fault`` arms a test-only fault point (RANDOMIZER_TEST_FAULT): the process
    dies or pauses there.
    """
    env = clean_env(RANDOMIZER_PASSWORD=PASSWORDS[user])
    if fault is not None:
        env["RANDOMIZER_TEST_FAULT"] = fault
    return subprocess.Popen(
        [sys.executable, "-m", "randomizer", "--db", db_url, "--key-file",
         str(key_file), "--user", user, *args],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


class Finished(NamedTuple):
    """How a process ended: exit code (negative: the signal that killed it) and its output."""

    code: int
    stdout: str
    stderr: str


def finish(process: subprocess.Popen[str], timeout: float = 60) -> Finished:
    """Wait for a process (killing it if it hangs past ``timeout`` seconds)."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return Finished(process.returncode, stdout, stderr)

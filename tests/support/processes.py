"""The real CLI in a process of its own, for the tests that kill, pause or cut it off,
and the real trial server (``randomizer serve``) with remote CLI processes talking to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

import httpx

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


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_text(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


@contextmanager
def serve_process(db_url: str, key_file: Path, timeout: float = 60) -> Iterator[str]:
    """``randomizer serve`` for the trial at ``db_url`` in a process of its own; yields its URL.

    The server listens on a free loopback port and is waited for until
    ``/api/v1/health`` answers. When the block ends, however it ends, the
    server gets SIGTERM (a graceful stop, which it audits as ``server.stop``)
    and is killed only if it has not exited ``timeout`` seconds later. Its log
    goes to a temporary file (a pipe nobody reads would fill and stall it) and
    is shown if it fails to start or does not stop cleanly.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "randomizer", "--db", db_url, "--key-file", str(key_file),
             "serve", "--port", str(port)],
            cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT)
        try:
            _wait_until_healthy(process, url, timeout, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # uvicorn re-raises the signal once it has shut down gracefully: a clean stop
        # ends by SIGTERM, anything else (a kill after the timeout, a crash) is a failure
        if process.returncode not in (0, -signal.SIGTERM):
            raise AssertionError(f"the server exited with {process.returncode}:\n"
                                 f"{_log_text(log)}")


def _wait_until_healthy(process: subprocess.Popen[bytes], url: str, timeout: float,
                        log: IO[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode} before it "
                                 f"answered:\n{_log_text(log)}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not answer within {timeout} s:\n"
                                 f"{_log_text(log)}")
        time.sleep(0.05)


def remote_cli(server: str, *args: str, cwd: Path, state_home: Path, user: str | None = None,
               password: str | None = None, input: str | None = None,
               timeout: float = 120) -> Finished:
    """The real CLI with ``--server``, as a user away from the trial's host would run it.

    Its environment names no database and no key file (no RANDOMIZER_ variable
    but RANDOMIZER_PASSWORD when ``password`` is given), it runs in ``cwd``
    (give it an empty directory) and keeps its token files under ``state_home``
    (XDG_STATE_HOME). ``input`` goes to its standard input.
    """
    env = clean_env(XDG_STATE_HOME=str(state_home))
    if password is not None:
        env["RANDOMIZER_PASSWORD"] = password
    argv = [sys.executable, "-m", "randomizer", "--server", server]
    if user is not None:
        argv += ["--user", user]
    done = subprocess.run([*argv, *args], cwd=cwd, env=env, input=input, capture_output=True,
                          text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL if input is None else None)
    return Finished(done.returncode, done.stdout, done.stderr)

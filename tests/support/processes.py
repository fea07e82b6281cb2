"""The real CLI in a process of its own, for the tests that kill, pause or cut it off,
and the real trial server (``randomizer serve``) in a process of its own.

The benchmarks import this module too (for :func:`server_process`), so it
imports nothing from pytest at module level.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the processes' working directory, where ``cli`` and ``tests`` are."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RANDOMIZER_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env.update(extra)
    return env


def randomizer_argv(db_url: str, key_file: Path, *args: str) -> list[str]:
    """The command line of ``python -m randomizer --db URL --key-file K [args]``."""
    return [sys.executable, "-m", "randomizer", "--db", db_url, "--key-file", str(key_file), *args]


def cli_process(
    db_url: str, key_file: Path, user: str, *args: str, fault: str | None = None
) -> subprocess.Popen[str]:
    """The real CLI as ``user`` (password from the environment), started and not waited for.

    ``fault`` arms a test-only fault point (RANDOMIZER_TEST_FAULT): the process
    dies or pauses there.
    """
    from tests.support.trial import PASSWORDS  # here: it imports pytest, the benchmarks not

    env = clean_env(RANDOMIZER_PASSWORD=PASSWORDS[user])
    if fault is not None:
        env["RANDOMIZER_TEST_FAULT"] = fault
    return subprocess.Popen(
        randomizer_argv(db_url, key_file, "--user", user, *args),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``randomizer serve``: its base URL, port, process and log file.

    ``verify`` is what an HTTP client must trust to reach it (a test CA's
    context when it serves TLS).
    """

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    verify: ssl.SSLContext | bool = True

    def log_text(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self) -> httpx.Client:
        """An HTTP client for this server."""
        return httpx.Client(base_url=self.url, verify=self.verify, timeout=30)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as a service manager stops it (killed after ``timeout`` s); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextmanager
def server_process(
    db_url: str,
    key_file: Path,
    log: Path,
    *args: str,
    start_timeout: float = 30,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
) -> Iterator[ServerProcess]:
    """``python -m randomizer --db URL --key-file K serve --port P [args]`` on a free port.

    Yields once ``GET /api/v1/health`` answers (over ``scheme``, trusting
    ``verify``). The server's output goes to ``log`` (a pipe nobody reads would
    fill and stall it). It is always stopped with SIGTERM, as a service manager
    stops it (killed only if it is still up after 20 s); its exit code is then
    in ``process.returncode``.
    """
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            randomizer_argv(db_url, key_file, "serve", "--port", str(port), *args),
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"{scheme}://127.0.0.1:{port}", port, process, log, verify)
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the server did not start (exit {process.poll()}):\n{server.log_text()}"
                )
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def _healthy(server: ServerProcess) -> bool:
    try:
        with server.client() as client:
            return client.get("/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serve_process(db_url: str, key_file: Path, timeout: float = 60) -> Iterator[str]:
    """:func:`server_process` with its log in a temporary folder; yields only the URL.

    Besides stopping the server, it fails unless the server stopped cleanly
    (uvicorn re-raises SIGTERM once it has shut down gracefully: a clean stop
    ends by SIGTERM; a kill after the timeout or a crash is a failure).
    """
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        with server_process(db_url, key_file, log, start_timeout=timeout) as server:
            yield server.url
        if server.process.returncode not in (0, -signal.SIGTERM):
            raise AssertionError(
                f"the server exited with {server.process.returncode}:\n{server.log_text()}"
            )


def remote_cli(
    server: str,
    *args: str,
    cwd: Path,
    state_home: Path,
    user: str | None = None,
    password: str | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> Finished:
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
    done = subprocess.run(
        [*argv, *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL if input is None else None,
    )
    return Finished(done.returncode, done.stdout, done.stderr)

"""The remote CLI on bad days: no server, a server that answers garbage, custody commands
sent to a server, a wrong password, a damaged token file, a malformed server URL.

Whatever happens, the user gets one ``Error:`` line and an exit code (1 for a
refusal or an unreachable server, 2 for malformed input), never a traceback,
and nothing is left behind: no token file from a failed login, no half-written
export, no key file or database in the working directory.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import Result

from randomizer.backends.http import save_token, token_path
from tests.backends.live import live_server
from tests.support.assertions import assert_error, assert_ok, describe
from tests.support.exosome import answer_args
from tests.support.processes import free_port, remote_cli
from tests.support.remote import RemoteRun
from tests.support.trial import PASSWORDS, TrialFiles

LOGIN_REFUSED = "login refused for user 'ivan': unknown user, wrong password or disabled account"
UNREADABLE = (
    "the token file {path} is unreadable: log in again "
    "(run 'randomizer --server URL --user NAME login')"
)


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_STATE_HOME for this test, in the test process as in the CLI it invokes."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory for the in-process CLI (where a local run would write)."""
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def _one_error(result: Result, code: int, prefix: str) -> str:
    message = assert_error(result, code)
    assert message.startswith(prefix), describe(result)
    assert "internal error" not in message, describe(result)
    return message


# no server --------------------------------------------------------------------------------


def test_a_server_that_is_down_is_one_error_line(state_home: Path, workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    remote = RemoteRun(url, state_home)
    expected = f"cannot reach the trial server at {url}: ConnectError"
    assert _one_error(remote("report", user="ivan"), 1, expected) == expected
    assert _one_error(remote("login", user="ivan"), 1, expected) == expected
    assert not token_path(url).exists()
    save_token(url, "ivan", "t" * 43)  # a saved login changes nothing
    assert _one_error(remote("kit", "request", "P-001", "--visit", "2"), 1, expected) == expected


def test_a_server_that_is_down_as_a_real_process(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = remote_cli(
        url,
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *answer_args(),
        cwd=tmp_path,
        state_home=tmp_path / "state",
        user="ivan",
        password=PASSWORDS["ivan"],
    )
    assert (done.code, done.stdout) == (1, "")
    assert done.stderr == f"Error: cannot reach the trial server at {url}: ConnectError\n"
    assert list(tmp_path.iterdir()) == []


# a server that answers garbage ------------------------------------------------------------------

GARBAGE = {
    "200-text": (200, "text/plain", b"hello, this is not JSON"),
    "500-html": (500, "text/html", b"<html><body><h1>Internal Server Error</h1></body></html>"),
    "502-empty": (502, "text/html", b""),
    "401-html": (401, "text/html", b"<html>who are you?</html>"),
    "200-wrong-shape": (200, "application/json", b'{"token": 5, "kit": [1, 2]}'),
    "200-list": (200, "application/json", b"[1, 2, 3]"),
    "404-json-not-ours": (404, "application/json", b'{"detail": "Not Found"}'),
}
"""Answers no trial server gives: each must end in one line naming the server."""


@contextmanager
def garbage_server(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """A loopback HTTP server that answers every request with the same response."""

    class Answer(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


COMMANDS = {
    "login": ("login",),
    "report": ("report",),
    "randomize": ("randomize", "P-001", "--site", "WAW", *answer_args()),
    "kit-request": ("kit", "request", "P-001", "--visit", "2"),
    "audit-show": ("audit", "show"),
    "unblind-all": ("unblind", "all", "--out", "all.csv"),
}


@pytest.mark.parametrize("answer", list(GARBAGE))
@pytest.mark.parametrize("saved_login", [False, True], ids=["password", "token"])
def test_a_server_answering_garbage_is_one_error_line(
    answer: str, saved_login: bool, state_home: Path, workdir: Path
) -> None:
    with garbage_server(*GARBAGE[answer]) as url:
        remote = RemoteRun(url, state_home)
        saved = save_token(url, "ivan", "t" * 43).read_bytes() if saved_login else None
        for name, args in COMMANDS.items():
            # a login always sends a password; the rest use the saved login if there is one
            user = "ivan" if name == "login" or not saved_login else None
            # a signed action sends the password again (to sign), token or not
            result = remote(*args, user=user, password=PASSWORDS["ivan"])
            _one_error(result, 1, f"the trial server at {url} ")
            assert result.stdout == "", f"{name}: {describe(result)}"
            if saved is None:
                assert not token_path(url).exists(), name
            else:
                assert token_path(url).read_bytes() == saved, name
        assert list(workdir.iterdir()) == []  # no half-written export


def test_a_garbage_login_answer_as_a_real_process(tmp_path: Path) -> None:
    with garbage_server(*GARBAGE["200-text"]) as url:
        done = remote_cli(
            url,
            "login",
            cwd=tmp_path,
            state_home=tmp_path / "state",
            user="ivan",
            password=PASSWORDS["ivan"],
        )
    assert (done.code, done.stdout) == (1, "")
    assert done.stderr == (
        f"Error: the trial server at {url} answered something that is not JSON\n"
    )
    assert not (tmp_path / "state").exists()


# custody commands stay on the trial's host ---------------------------------------------------

CUSTODY = [
    ("init", "--design", "exosome-ms", "--admin", "bob"),
    ("key", "rotate", "--new-key-file", "new.key"),
    ("backup", "--out", "backup.db"),
    ("restore", "--from", "backup.db"),
    ("db", "upgrade"),
    ("db", "status"),
]


@pytest.mark.parametrize("args", CUSTODY, ids=[" ".join(a[:2]) for a in CUSTODY])
def test_custody_commands_are_refused_through_a_server(
    args: tuple[str, ...], state_home: Path, workdir: Path
) -> None:
    # a closed port: had the command tried the server, it would say it cannot reach it
    remote = RemoteRun(f"http://127.0.0.1:{free_port()}", state_home)
    command = " ".join(a for a in args[:2] if not a.startswith("-"))
    result = remote(
        *args, user="alice", password=None, env={"RANDOMIZER_PASSWORD": None}
    )  # refused before any password is asked
    message = assert_error(result, 2)
    assert message == (
        f"'randomizer {command}' is a custody command: run it on the trial's "
        "host (with --db and --key-file), not through --server"
    )
    assert list(workdir.iterdir()) == []


def test_serve_is_refused_through_a_server(state_home: Path, workdir: Path) -> None:
    result = RemoteRun(f"http://127.0.0.1:{free_port()}", state_home)("serve")
    assert assert_error(result, 2) == "serve runs the server itself: drop --server"


# logins and the token file -------------------------------------------------------------------


@pytest.fixture
def server(trial_with_users: TrialFiles) -> Iterator[str]:
    """A live server for the trial with one user per role."""
    with live_server(trial_with_users.db_url, trial_with_users.key_file) as url:
        yield url


def test_a_wrong_password_writes_no_token_file(server: str, state_home: Path) -> None:
    remote = RemoteRun(server, state_home)
    assert (
        assert_error(remote("login", user="ivan", password="not-ivans-password"), 1)
        == LOGIN_REFUSED
    )
    assert not state_home.exists()
    assert_ok(remote("login", user="ivan"))
    saved = token_path(server).read_bytes()
    assert (
        assert_error(remote("login", user="ivan", password="not-ivans-password"), 1)
        == LOGIN_REFUSED
    )
    assert token_path(server).read_bytes() == saved  # the earlier login stands
    assert_ok(remote("report"))


@pytest.mark.parametrize(
    "content",
    [
        b"garbage{",
        b"",
        b'["ivan", "token"]',
        b'{"user": "ivan"}',
        b'{"user": 7, "token": "t"}',
        b'{"user": "ivan", "token": "two words"}',
        '{"user": "ivan", "token": "\u00e9"}'.encode(),
        b"\xff\xfe\x00",
    ],
    ids=[
        "not-json",
        "empty",
        "a-list",
        "no-token",
        "no-user-name",
        "token-with-space",
        "token-not-ascii",
        "not-utf-8",
    ],
)
def test_a_damaged_token_file_is_a_clear_error(
    content: bytes, server: str, state_home: Path
) -> None:
    remote = RemoteRun(server, state_home)
    assert_ok(remote("login", user="ivan"))
    path = token_path(server)
    path.write_bytes(content)
    assert assert_error(remote("report"), 2) == UNREADABLE.format(path=path)
    assert assert_error(remote("report", user="ivan"), 2) == UNREADABLE.format(path=path)
    assert_ok(remote("login", user="ivan"))  # what the message says to do
    assert json.loads(path.read_text(encoding="utf-8"))["user"] == "ivan"
    assert_ok(remote("report"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://[::1",
        "http://127.0.0.1:0",
        "ftp://trial.example.org",
        "trial.example.org",
        "http://",
    ],
)
def test_a_malformed_server_url_is_malformed_input(
    url: str, state_home: Path, workdir: Path
) -> None:
    result = RemoteRun(url, state_home)("report", user="ivan")
    assert assert_error(result, 2) == (
        f"server URL {url!r} is not valid: use http(s)://HOST[:PORT]"
    )

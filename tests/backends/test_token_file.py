"""Where the remote CLI keeps its login, and that only its owner can read it, on every platform.

The Windows branch is exercised on any machine by showing the module a copy
of :mod:`os` whose ``name`` is ``"nt"`` (patching the real ``os.name`` would
make pathlib refuse to build any path in the test process).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from randomizer.backends import http
from randomizer.backends.http import (
    load_token,
    remove_token,
    save_token,
    state_directory,
    token_path,
)
from randomizer.errors import Hint, InvalidInput

SERVER = "https://trial.example.org"
TOKEN = "A" * 43

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_STATE_HOME in a temporary directory."""
    home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


# where -------------------------------------------------------------------------------------


def test_xdg_state_home_is_honoured(xdg: Path) -> None:
    assert state_directory() == xdg / "randomizer"
    assert token_path(SERVER) == xdg / "randomizer" / "https-trial.example.org-443.token"


@pytest.mark.parametrize("value", [None, "", "relative/state"])
def test_without_an_absolute_xdg_state_home_the_home_directory_is_used(
    value: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if value is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", value)
    assert state_directory() == tmp_path / ".local" / "state" / "randomizer"


@pytest.mark.parametrize(
    ("server", "name"),
    [
        ("http://127.0.0.1:8000", "http-127.0.0.1-8000.token"),
        ("http://trial.example.org", "http-trial.example.org-80.token"),
        ("https://Trial.Example.ORG", "https-trial.example.org-443.token"),
        ("https://trial.example.org:8443", "https-trial.example.org-8443.token"),
        ("http://[::1]:8000", "http-__1-8000.token"),
        ("http://[fe80::1%25eth0]:8000", "http-fe80__1_25eth0-8000.token"),
    ],
)
def test_one_token_file_per_server_with_a_name_any_platform_takes(
    server: str, name: str, xdg: Path
) -> None:
    path = token_path(server)
    assert path.name == name
    assert not set(path.name) & set('<>:"/\\|?*')  # what no Windows file name may hold


# privacy on POSIX -----------------------------------------------------------------------


@posix_only
def test_the_token_file_is_0600_in_a_0700_directory(xdg: Path) -> None:
    path = save_token(SERVER, "ivan", TOKEN)
    assert path == token_path(SERVER)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "server": SERVER,
        "user": "ivan",
        "token": TOKEN,
    }
    assert load_token(SERVER) == ("ivan", TOKEN)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@posix_only
def test_privacy_whatever_the_umask_and_the_modes_found(xdg: Path) -> None:
    directory = xdg / "randomizer"
    directory.mkdir(parents=True, mode=0o777)
    directory.chmod(0o777)
    old = token_path(SERVER)
    old.write_text("{}", encoding="utf-8")
    old.chmod(0o644)
    old.with_suffix(".tmp").write_text("left by a crash", encoding="utf-8")
    previous = os.umask(0)
    try:
        path = save_token(SERVER, "ivan", TOKEN)
    finally:
        os.umask(previous)
    assert (_mode(path), _mode(directory)) == (0o600, 0o700)
    assert not path.with_suffix(".tmp").exists()
    assert load_token(SERVER) == ("ivan", TOKEN)


@posix_only
def test_a_symlink_at_the_token_path_is_replaced_not_followed(xdg: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours", encoding="utf-8")
    token_path(SERVER).parent.mkdir(parents=True)
    token_path(SERVER).symlink_to(target)
    token_path(SERVER).with_suffix(".tmp").symlink_to(target)
    save_token(SERVER, "ivan", TOKEN)
    assert target.read_text(encoding="utf-8") == "not yours"
    assert not token_path(SERVER).is_symlink()
    assert _mode(token_path(SERVER)) == 0o600


def test_a_new_login_replaces_the_old_and_remove_deletes_it(xdg: Path) -> None:
    save_token(SERVER, "ivan", TOKEN)
    save_token(SERVER, "mona", "B" * 43)
    assert load_token(SERVER) == ("mona", "B" * 43)
    assert load_token("http://127.0.0.1:8000") is None  # another server, no login
    assert remove_token(SERVER) is True
    assert load_token(SERVER) is None
    assert remove_token(SERVER) is False


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"user": "ivan"}',
        b'{"user": "ivan", "token": ""}',
        b'{"user": "ivan", "token": "a b"}',
        b'{"user": "ivan", "token": "\\u00e9"}',
        b'["ivan", "t"]',
        b"\xff\xfe",
    ],
)
def test_an_unreadable_token_file_says_to_log_in_again(content: bytes, xdg: Path) -> None:
    path = token_path(SERVER)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(InvalidInput) as refused:
        load_token(SERVER)
    assert (str(refused.value), refused.value.hint) == (
        f"the token file {path} is unreadable: log in again",
        Hint.LOGIN,
    )


# the Windows branch ---------------------------------------------------------------------


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """Show the module an ``os`` whose name is "nt"; yields the (flags, mode) of each open."""
    opened: list[tuple[int, int]] = []

    def recording_open(path: Any, flags: int, mode: int = 0o777) -> int:
        opened.append((flags, mode))
        return os.open(path, flags, mode)

    fake = SimpleNamespace(**{**vars(os), "name": "nt", "open": recording_open})
    monkeypatch.setattr(http, "os", fake)
    yield opened


def test_windows_keeps_tokens_in_local_appdata(
    windows: list[tuple[int, int]], xdg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appdata = tmp_path / "AppData" / "Local"
    monkeypatch.setenv("LOCALAPPDATA", str(appdata))
    assert state_directory() == appdata / "randomizer"  # XDG_STATE_HOME is not Windows'
    path = save_token(SERVER, "ivan", TOKEN)
    assert path == appdata / "randomizer" / "https-trial.example.org-443.token"
    assert load_token(SERVER) == ("ivan", TOKEN)
    # written by exclusive create with an owner-only mode, as on POSIX
    assert len(windows) == 1
    flags, mode = windows[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    assert not (xdg / "randomizer").exists()


def test_windows_without_local_appdata_uses_the_home_directory(
    windows: list[tuple[int, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert state_directory() == tmp_path / "AppData" / "Local" / "randomizer"
    save_token("http://[::1]:8000", "ivan", TOKEN)
    assert load_token("http://[::1]:8000") == ("ivan", TOKEN)


def test_windows_replaces_a_stale_temporary_file(
    windows: list[tuple[int, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    stale = token_path(SERVER).with_suffix(".tmp")
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a crash", encoding="utf-8")
    save_token(SERVER, "ivan", TOKEN)
    save_token(SERVER, "ivan", "C" * 43)  # and a second login over the first
    assert load_token(SERVER) == ("ivan", "C" * 43)
    assert not stale.exists()

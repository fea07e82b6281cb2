"""Deploying the trial server without leaking: where it listens, TLS, proxies, logs, files, stop.

Most tests start the real ``randomizer serve`` in a process of its own, as an
operator would, and look at what it did: the address it bound, the audit
events it wrote, the log it printed. The refusals run in-process with
uvicorn replaced, so a refusal that failed to refuse cannot leave a server
listening.
"""

from __future__ import annotations

import ipaddress
import signal
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from randomizer.signatures import MEANINGS
from tests.backends.live import live_server
from tests.support.assertions import assert_error
from tests.support.database import audit_rows
from tests.support.exosome import ELIGIBLE
from tests.support.processes import ServerProcess, server_process
from tests.support.tls import self_signed
from tests.support.trial import PASSWORDS, Run, TrialFiles

START_WAIT = 60.0
"""How long a server process may take to answer its first request before the test gives up."""


@contextmanager
def serving(
    files: TrialFiles, *options: str, scheme: str = "http", verify: ssl.SSLContext | bool = True
) -> Iterator[ServerProcess]:
    """``randomizer serve`` for ``files``' trial on a free loopback port, stopped at the end."""
    log = files.directory / "server.log"
    with server_process(
        files.db_url,
        files.key_file,
        log,
        *options,
        start_timeout=START_WAIT,
        scheme=scheme,
        verify=verify,
    ) as served:
        yield served


def _login(client: httpx.Client, user: str, headers: dict[str, str] | None = None) -> str:
    response = client.post(
        "/api/v1/auth/token", headers=headers, json={"user": user, "password": PASSWORDS[user]}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (Linux /proc/net)."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, port_hex = local.partition(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # /proc writes each 32-bit word of the address in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


# where it listens and what it refuses -------------------------------------------


def test_serve_listens_on_loopback_only_by_default(trial_with_list: TrialFiles) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads the listening sockets from /proc/net (Linux)")
    with serving(trial_with_list) as served:
        assert _listening_addresses(served.port) == {"127.0.0.1"}
    assert f"running on http://127.0.0.1:{served.port}" in served.log_text()


@pytest.fixture
def no_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """uvicorn.run replaced by a recorder: a refusal that fails to refuse starts nothing."""
    calls: list[Any] = []

    def run(app: Any, **options: Any) -> None:
        app.state.randomizer.store.dispose()
        calls.append(options)

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "trial.example.org"])
def test_a_public_address_without_tls_or_proxy_is_refused(
    run: Run, trial_with_list: TrialFiles, no_uvicorn: list[Any], host: str
) -> None:
    before = audit_rows(trial_with_list.db_url)
    result = run("serve", "--host", host)
    assert_error(
        result,
        2,
        f"refusing to listen on {host} without TLS",
        "give a certificate and key, or say that a TLS proxy is in front",
    )
    assert result.stdout == ""
    assert no_uvicorn == []
    assert audit_rows(trial_with_list.db_url) == before


def test_tls_needs_the_certificate_and_its_key_together(
    run: Run, trial_with_list: TrialFiles, no_uvicorn: list[Any]
) -> None:
    cert_file, _ = self_signed(trial_with_list.directory, "server")
    result = run("serve", "--host", "0.0.0.0", "--certfile", str(cert_file))
    assert_error(result, 2, "TLS needs both a certificate file and its key file")
    assert no_uvicorn == []


@pytest.mark.parametrize("options", [("--behind-proxy",), ("--certfile", "--keyfile")])
def test_a_public_address_is_allowed_with_tls_or_behind_a_proxy(
    run: Run, trial_with_list: TrialFiles, no_uvicorn: list[Any], options: tuple[str, ...]
) -> None:
    cert_file, key_file = self_signed(trial_with_list.directory, "server")
    files = {"--certfile": str(cert_file), "--keyfile": str(key_file)}
    args = [
        item
        for option in options
        for item in ((option, files[option]) if option in files else (option,))
    ]
    result = run("serve", "--host", "0.0.0.0", *args)
    assert result.exit_code == 0, result.output
    assert [call["host"] for call in no_uvicorn] == ["0.0.0.0"]
    assert no_uvicorn[0]["proxy_headers"] is ("--behind-proxy" in options)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620], ids=oct)
def test_a_key_file_others_may_access_stops_serve_before_it_starts(
    run: Run, trial_with_list: TrialFiles, no_uvicorn: list[Any], mode: int
) -> None:
    before = audit_rows(trial_with_list.db_url)
    trial_with_list.key_file.chmod(mode)
    result = run("serve")
    who = "others" if mode & 0o007 else "its group"
    assert_error(
        result,
        1,
        f"key file {trial_with_list.key_file} is ",
        f"by {who}",
        f"(mode {mode:04o}): chmod 600",
    )
    assert no_uvicorn == []
    assert audit_rows(trial_with_list.db_url) == before


@pytest.mark.parametrize("mode", [0o640, 0o644], ids=oct)
def test_a_tls_key_others_may_read_stops_serve_before_it_starts(
    run: Run, trial_with_list: TrialFiles, no_uvicorn: list[Any], mode: int
) -> None:
    cert_file, key_file = self_signed(trial_with_list.directory, "server", key_mode=mode)
    result = run("serve", "--certfile", str(cert_file), "--keyfile", str(key_file))
    assert_error(
        result, 1, f"TLS key file {key_file} is accessible by", f"(mode {mode:04o}): chmod 600"
    )
    assert no_uvicorn == []


# TLS, proxies, logs and stopping, through a real server process -----------------


def test_the_server_answers_over_https_with_its_certificate(trial_with_list: TrialFiles) -> None:
    cert_file, key_file = self_signed(trial_with_list.directory, "server")
    trusted = ssl.create_default_context(cafile=str(cert_file))
    with serving(
        trial_with_list,
        "--host",
        "127.0.0.1",
        "--certfile",
        str(cert_file),
        "--keyfile",
        str(key_file),
        scheme="https",
        verify=trusted,
    ) as served:
        with served.client() as client:
            response = client.get("/api/v1/health")
            assert response.status_code == 200
            assert response.json()["status"] == "ok"
            assert response.url.scheme == "https"
        # without the certificate the client refuses the server
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=True) as untrusted:
            untrusted.get(f"{served.url}/api/v1/health")


@pytest.mark.parametrize(
    ("options", "seen"),
    [
        (("--behind-proxy", "--proxy-address", "127.0.0.1"), "203.0.113.7"),
        (("--behind-proxy", "--proxy-address", "192.0.2.1"), "127.0.0.1"),
        ((), "127.0.0.1"),
    ],
)
def test_forwarded_for_is_believed_only_from_the_proxy_address(
    trial_with_list: TrialFiles, options: tuple[str, ...], seen: str
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    with serving(trial_with_list, *options) as served, served.client() as client:
        token = _login(client, "ivan", headers=forwarded)
        response = client.post(
            "/api/v1/participants",
            json={
                "participant": "P-001",
                "site": "WAW",
                "answers": dict(ELIGIBLE),
                "signature": {"password": PASSWORDS["ivan"], "meaning": MEANINGS["randomize"]},
            },
            headers={**forwarded, "Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
    events = audit_rows(trial_with_list.db_url)
    login = [e for e in events if e["action"] == "auth.login" and e["user"] == "ivan"][-1]
    randomize = [e for e in events if e["action"] == "randomize"][-1]
    assert login["details"]["via"]["client"] == seen
    assert randomize["details"]["via"]["client"] == seen


def test_the_server_log_holds_no_password_token_or_request_body(
    trial_with_list: TrialFiles,
) -> None:
    wrong = "not-ivans-password-4711"
    with serving(trial_with_list) as served, served.client() as client:
        token = _login(client, "ivan")
        randomized = client.post(
            "/api/v1/participants",
            json={
                "participant": "P-001",
                "site": "WAW",
                "answers": dict(ELIGIBLE),
                "signature": {"password": PASSWORDS["ivan"], "meaning": MEANINGS["randomize"]},
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        assert randomized.status_code == 200, randomized.text
        refused = client.post("/api/v1/auth/token", json={"user": "ivan", "password": wrong})
        assert refused.status_code == 401
        client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    log = served.log_text()
    # the log is there and names each request by method, path and status
    assert '"POST /api/v1/auth/token HTTP/1.1" 200' in log
    assert '"POST /api/v1/participants HTTP/1.1" 200' in log
    assert '"POST /api/v1/auth/token HTTP/1.1" 401' in log
    for secret in (PASSWORDS["ivan"], wrong, token, token[:16], "Bearer", "Authorization"):
        assert secret not in log, secret
    for body_part in (
        '"answers"',
        "progressive_ms",
        "recent_relapse_or_steroids",
        '"site"',
        "P-001",
        '"password"',
    ):
        assert body_part not in log, body_part


def test_sigterm_stops_the_server_cleanly_and_audits_the_stop(trial_with_list: TrialFiles) -> None:
    with serving(trial_with_list) as served:
        pid = served.process.pid
        status = served.stop()
    # uvicorn shuts down, then ends by the signal it was sent: systemd counts that as clean
    assert status == -signal.SIGTERM
    log = served.log_text()
    assert "Application shutdown complete." in log
    assert "Traceback" not in log and "ERROR" not in log
    events = audit_rows(trial_with_list.db_url)
    assert [e["action"] for e in events[-2:]] == ["server.start", "server.stop"]
    assert [e["details"]["pid"] for e in events[-2:]] == [pid, pid]


# the database files ---------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_and_the_server_create_the_sqlite_files_private(
    run: Run, trial_files: TrialFiles, sqlite_only: None
) -> None:
    run.init()
    database = trial_files.db_path
    assert database is not None
    assert _mode(database) == 0o600
    assert _mode(trial_files.key_file) == 0o600
    with (
        live_server(trial_files.db_url, trial_files.key_file) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        _login(client, "alice")  # a write: the server's connections make -wal and -shm
        wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
        assert wal.exists() and shm.exists()
        assert (_mode(database), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)


def test_a_sqlite_database_others_could_read_is_made_private_when_opened(
    run: Run, trial_with_list: TrialFiles, sqlite_only: None
) -> None:
    database = trial_with_list.db_path
    assert database is not None
    database.chmod(0o644)
    run.ok("user", "list", user="alice")
    assert _mode(database) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(f"{database}{suffix}")
        assert not side.exists() or _mode(side) == 0o600

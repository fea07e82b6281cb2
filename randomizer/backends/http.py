"""The remote client: the Backend protocol over the trial server's JSON API.

An investigator's or pharmacist's machine needs no key file and no database:
each call is one HTTP request with a bearer token, and each refusal comes back
as the library's own error class with the server's message
(:mod:`randomizer.backends.wire`). Nothing here is POSIX-only, so the client
runs on Windows and macOS as well as Linux.

The token comes from ``randomizer login`` (a file only its owner can read, see
:func:`token_path`) or, for one command, from a password login that is logged
out again when the command ends.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from randomizer import results
from randomizer.backends.wire import error_from_wire, from_wire
from randomizer.design import TrialDesign, parse_design
from randomizer.errors import (
    AuthenticationFailed,
    Busy,
    Hint,
    InvalidInput,
    NotAuthorized,
    NotFound,
    RandomizerError,
    ServerUnavailable,
    StateError,
    TooManyAttempts,
)
from randomizer.exportfiles import ExportFiles
from randomizer.signatures import Signature

if TYPE_CHECKING:
    from randomizer.access import Role

T = TypeVar("T")

TIMEOUT = httpx.Timeout(60.0, connect=10.0)
"""How long a request may take: list generation of a large trial takes a while."""

_TOKEN_TEXT = re.compile(r"[A-Za-z0-9._~+/=-]{1,1024}")
"""What a bearer token may look like (RFC 6750's b64token): anything else is no token."""

_FALLBACK: dict[int, type[RandomizerError]] = {
    400: InvalidInput,
    401: AuthenticationFailed,
    403: NotAuthorized,
    404: NotFound,
    409: StateError,
    413: InvalidInput,
    422: InvalidInput,
    429: TooManyAttempts,
    503: Busy,
}


def check_server_url(url: str) -> str:
    """An ``http://`` or ``https://`` URL with a host; anything else is bad input."""
    refusal = InvalidInput(f"server URL {url[:80]!r} is not valid: use http(s)://HOST[:PORT]")
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # a port that is not a number from 0 to 65535 raises ValueError
    except ValueError:
        raise refusal from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise refusal
    return url.strip().rstrip("/")


def state_directory() -> Path:
    """Where the remote CLI keeps tokens: per user, private to them.

    ``%LOCALAPPDATA%\\randomizer`` on Windows; elsewhere ``$XDG_STATE_HOME/randomizer``
    when XDG_STATE_HOME is an absolute path, else ``~/.local/state/randomizer``.
    """
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "randomizer"
    base = os.environ.get("XDG_STATE_HOME", "")
    if not Path(base).is_absolute():
        # the XDG spec: a relative path is invalid (it would put a token in the work tree)
        base = str(Path.home() / ".local" / "state")
    return Path(base) / "randomizer"


def token_path(server: str) -> Path:
    """The token file for one server (its host and port in the name)."""
    parts = urlsplit(server)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    # an IPv6 host ("::1") holds colons, which no Windows file name may
    host = re.sub(r"[^a-z0-9.-]", "_", parts.hostname or "")
    return state_directory() / f"{parts.scheme}-{host}-{port}.token"


def save_token(server: str, user: str, token: str) -> Path:
    """Write the token file, readable by its owner only (replacing an older one)."""
    path = token_path(server)
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.name != "nt":
        path.parent.chmod(0o700)
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    # O_EXCL with 0600: the file is private from its first byte on POSIX; on Windows
    # the per-user LOCALAPPDATA folder already carries an owner-only ACL.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"server": server, "user": user, "token": token}, handle)
    os.replace(temporary, path)
    return path


def load_token(server: str) -> tuple[str, str] | None:
    """The (user, token) saved for ``server``, if any."""
    path = token_path(server)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise InvalidInput(
            f"the token file {path} is unreadable: log in again", hint=Hint.LOGIN
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("user"), str)
        or not isinstance(data.get("token"), str)
        or not _TOKEN_TEXT.fullmatch(data["token"])
    ):
        raise InvalidInput(f"the token file {path} is unreadable: log in again", hint=Hint.LOGIN)
    return data["user"], data["token"]


def remove_token(server: str) -> bool:
    """Delete the token file; whether there was one."""
    path = token_path(server)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


class HttpBackend:
    """The Backend protocol through a trial server at ``server``.

    Give ``token`` (from ``randomizer login``) or ``credentials`` (a login for
    this backend's life only, logged out by :meth:`close`).
    """

    def __init__(
        self,
        server: str,
        token: str | None = None,
        credentials: Callable[[], results.Credentials] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = check_server_url(server)
        self._token = token
        self._credentials = credentials
        self._temporary = False
        self._client = httpx.Client(
            base_url=self.server,
            timeout=TIMEOUT,
            transport=transport,
            headers={"User-Agent": f"randomizer-cli/{sys.platform}"},
        )

    # the wire ------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._bearer()}"} if auth else {}
        try:
            response = self._client.request(
                method, f"/api/v1{path}", json=body, params=params, headers=headers
            )
        except httpx.TimeoutException:
            raise ServerUnavailable(
                f"the trial server at {self.server} did not answer in "
                "time; nothing may have been done: check before retrying"
            ) from None
        except httpx.HTTPError as exc:
            raise ServerUnavailable(
                f"cannot reach the trial server at {self.server}: {type(exc).__name__}"
            ) from None
        if response.is_success:
            return response
        try:
            payload = response.json()
        except ValueError:
            payload = None
        fallback = _FALLBACK.get(response.status_code)
        if (
            fallback is None
            or not isinstance(payload, dict)
            or not isinstance(payload.get("error"), str)
        ):
            # not a refusal of a trial server: another program, or a proxy's error page
            raise ServerUnavailable(
                f"the trial server at {self.server} answered "
                f"{response.status_code} without a readable error"
            )
        error = error_from_wire(payload, fallback)
        if isinstance(error, TooManyAttempts):
            wait = response.headers.get("Retry-After", "")
            error.retry_after = int(wait) if wait.isascii() and wait.isdigit() else 0
        raise error

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        response = self._send(method, path, body, params, auth)
        try:
            return response.json()
        except ValueError:
            raise ServerUnavailable(
                f"the trial server at {self.server} answered something that is not JSON"
            ) from None

    def _call(
        self,
        cls: type[T],
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> T:
        data = self._json(method, path, body, params)
        try:
            return from_wire(cls, data)
        except (ValueError, TypeError) as exc:
            raise ServerUnavailable(
                f"the trial server at {self.server} answered an unexpected "
                f"shape ({exc}): is it the same randomizer release?"
            ) from None

    def _bearer(self) -> str:
        if self._token is None:
            if self._credentials is None:
                raise AuthenticationFailed(
                    f"not logged in to {self.server}: log in first", hint=Hint.LOGIN
                )
            self._token = self.login(self._credentials())
            self._temporary = True
        return self._token

    # logins ------------------------------------------------------------------

    def login(self, credentials: results.Credentials) -> str:
        """Exchange a password for a token (no other call needs the password)."""
        data = self._json(
            "POST",
            "/auth/token",
            {"user": credentials.user, "password": credentials.password},
            auth=False,
        )
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not _TOKEN_TEXT.fullmatch(token):
            raise ServerUnavailable(f"the trial server at {self.server} sent no token")
        return token

    def logout(self) -> None:
        """Revoke this backend's token on the server."""
        if self._token is not None:
            self._send("POST", "/auth/logout")
            self._token = None

    def close(self) -> None:
        """Log a one-command login out again, then close the connection."""
        try:
            if self._temporary and self._token is not None:
                self.logout()
        except RandomizerError:
            pass  # the token expires by itself; the command's own result stands
        finally:
            self._client.close()

    # the Backend protocol ---------------------------------------------------------

    def trial_design(self) -> TrialDesign:
        """The trial's design, parsed here from the server's TOML text."""
        data = self._json("GET", "/design")
        if not isinstance(data, dict) or not isinstance(data.get("toml"), str):
            raise ServerUnavailable(f"the trial server at {self.server} sent no design")
        return parse_design(data["toml"])

    def add_user(
        self, name: str, role: Role, password: str, sites: Sequence[str] = ()
    ) -> results.UserInfo:
        """Add a user with a role, limited to ``sites`` if any (admin)."""
        return self._call(
            results.UserInfo,
            "POST",
            "/users",
            {"name": name, "role": role.value, "password": password, "sites": list(sites)},
        )

    def list_users(self) -> list[results.UserInfo]:
        """Every user (admin)."""
        return self._call(list[results.UserInfo], "GET", "/users")

    def disable_user(self, name: str, reason: str) -> results.UserInfo:
        """Disable a user (admin)."""
        return self._call(
            results.UserInfo, "POST", f"/users/{_segment(name)}/disable", {"reason": reason}
        )

    def change_password(self, name: str | None, password: str) -> results.UserInfo:
        """Change one's own password, or (admin) another user's."""
        target = name or self._whoami()
        return self._call(
            results.UserInfo, "POST", f"/users/{_segment(target)}/password", {"password": password}
        )

    def lift_login_lock(self, name: str, client: str | None = None) -> results.LoginUnlock:
        """Clear failed logins and any lock of a user name (and of ``client``) (admin)."""
        return self._call(
            results.LoginUnlock, "POST", f"/users/{_segment(name)}/unlock", {"client": client}
        )

    def _whoami(self) -> str:
        if self._credentials is not None:
            return self._credentials().user
        saved = load_token(self.server)
        if saved is None:
            raise AuthenticationFailed(
                f"not logged in to {self.server}: log in first", hint=Hint.LOGIN
            )
        return saved[0]

    def generate_list(self) -> results.ListSummary:
        """Generate the sealed list (admin)."""
        return self._call(results.ListSummary, "POST", "/list/generate")

    def list_status(self) -> results.ListStatus:
        """Whether the list exists and how much of it is used (any role)."""
        return self._call(results.ListStatus, "GET", "/list")

    def verify_list(self) -> results.ListSummary:
        """Regenerate and compare (admin; statistician after lock)."""
        return self._call(results.ListSummary, "POST", "/list/verify")

    def approve_list(self, *, signature: Signature) -> results.ListApproval:
        """Approve the draft list for go-live (admin or statistician, not its generator); signed."""
        return self._call(
            results.ListApproval, "POST", "/list/approve", {"signature": _signed(signature)}
        )

    def randomize(
        self,
        participant: str,
        site: str,
        levels: dict[str, str],
        answers: dict[str, str],
        on: date | None = None,
        *,
        signature: Signature,
    ) -> results.Randomization:
        """Randomize one participant (investigator); signed."""
        return self._call(
            results.Randomization,
            "POST",
            "/participants",
            {
                "participant": participant,
                "site": site,
                "levels": levels,
                "answers": answers,
                "date": on.isoformat() if on else None,
                "signature": _signed(signature),
            },
        )

    def request_kit(
        self,
        participant: str,
        visit: int,
        on: date | None = None,
        override_reason: str | None = None,
    ) -> results.KitIssue:
        """The kit of one dosing visit (investigator)."""
        return self._call(
            results.KitIssue,
            "POST",
            f"/participants/{_segment(participant)}/kits",
            {
                "visit": visit,
                "date": on.isoformat() if on else None,
                "override_reason": override_reason,
            },
        )

    def replace_kit(self, code: str, reason: str) -> results.KitReplacement:
        """Void a kit and issue a spare (investigator)."""
        return self._call(
            results.KitReplacement, "POST", f"/kits/{_segment(code)}/replace", {"reason": reason}
        )

    def prepare_kit(self, code: str) -> results.Preparation:
        """What a kit holds; records its preparation (pharmacist)."""
        return self._call(results.Preparation, "POST", f"/kits/{_segment(code)}/prepare")

    def pharmacy_list(self) -> list[results.PharmacyKit]:
        """Every kit with content and status (pharmacist)."""
        return self._call(list[results.PharmacyKit], "GET", "/pharmacy/kits")

    def emergency_unblind(
        self, participant: str, reason: str, *, signature: Signature
    ) -> results.Unblinding:
        """Break the code for one participant (investigator, admin); signed."""
        return self._call(
            results.Unblinding,
            "POST",
            f"/participants/{_segment(participant)}/emergency-unblinding",
            {"reason": reason, "signature": _signed(signature)},
        )

    def void_participant(
        self, participant: str, reason: str, *, signature: Signature
    ) -> results.ParticipantVoid:
        """Mark a randomization made in error; the slot stays used (admin); signed."""
        return self._call(
            results.ParticipantVoid,
            "POST",
            f"/participants/{_segment(participant)}/void",
            {"reason": reason, "signature": _signed(signature)},
        )

    def lock(self, reason: str, *, signature: Signature) -> results.LockResult:
        """Lock the database (admin); signed."""
        return self._call(
            results.LockResult,
            "POST",
            "/lock",
            {"reason": reason, "signature": _signed(signature)},
        )

    def unblind_all(self, *, signature: Signature, out: Path | None = None) -> results.Export:
        """The full unblinding CSV and analysis files (statistician, after lock); signed.
        With ``out``, written there and beside it (:class:`ExportFiles`) instead."""
        if out is None:
            return self._export("/unblinding/bundle", {"signature": _signed(signature)})
        with ExportFiles(out) as files:  # refuses before the request if a file exists
            export = self._export("/unblinding/bundle", {"signature": _signed(signature)})
            files.write({results.LEGACY_FILE: export.csv, **export.files})
            files.publish()
        return replace(
            export,
            csv=b"",
            files={},
            written={name: str(path) for name, path in files.final.items()},
        )

    def unblind_dummy(self) -> results.Export:
        """The full unblinding's CSV with made-up arms, marked dummy (statistician)."""
        return self._export("/unblinding/dummy/bundle")

    def _export(self, path: str, body: Any = None) -> results.Export:
        response = self._send("POST", path, body)
        sha256 = response.headers.get("X-Randomizer-SHA256", "")
        count = response.headers.get("X-Randomizer-Participants", "")
        broken = ServerUnavailable(
            f"the trial server at {self.server} sent an export without its digest"
        )
        if not count.isdigit() or len(sha256) != 64:
            raise broken
        try:
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                files = {name: archive.read(name) for name in archive.namelist()}
        except (zipfile.BadZipFile, KeyError, ValueError):
            raise broken from None
        data = files.pop(results.LEGACY_FILE, b"")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise broken
        return results.Export(
            csv=data,
            sha256=sha256,
            participants=int(count),
            files=files,
            file_sha256={
                name: hashlib.sha256(content).hexdigest() for name, content in files.items()
            },
        )

    def report(self) -> results.Report:
        """The report the caller's role may see."""
        return self._call(results.Report, "GET", "/report")

    def kit_label(self, code: str) -> results.KitLabel:
        """The label of a prepared kit's infusion bag (pharmacist)."""
        return self._call(results.KitLabel, "GET", f"/kits/{_segment(code)}/label")

    def audit_events(self, since: int = 0, limit: int | None = None) -> list[results.AuditEvent]:
        """Audit events after ``since`` (admin, monitor)."""
        params: dict[str, Any] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return self._call(list[results.AuditEvent], "GET", "/audit/events", params=params)

    def audit_verify(self, checkpoint: results.Checkpoint | None = None) -> results.ChainReport:
        """Verify the chain (and a checkpoint whose signature was checked here)."""
        body = {"checkpoint": asdict(checkpoint) if checkpoint is not None else None}
        return self._call(results.ChainReport, "POST", "/audit/verify", body)

    def audit_checkpoint(self) -> results.Checkpoint:
        """An unsigned checkpoint, to be signed here (admin)."""
        return self._call(results.Checkpoint, "POST", "/audit/checkpoint")

    # per-site rights -------------------------------------------------------------

    def user_sites(self, name: str) -> results.UserInfo:
        """One user and the sites they are limited to (admin)."""
        return self._call(results.UserInfo, "GET", f"/users/{_segment(name)}/sites")

    def set_user_sites(self, name: str, sites: Sequence[str]) -> results.UserInfo:
        """Limit a user to ``sites``; none makes them trial-wide (admin)."""
        return self._call(
            results.UserInfo, "PUT", f"/users/{_segment(name)}/sites", {"sites": list(sites)}
        )

    def participant_view(self, site: str | None = None) -> list[results.ParticipantVisits]:
        """The participants the caller may see (of ``site``): visits done, next window."""
        params = {"site": site} if site is not None else None
        return self._call(list[results.ParticipantVisits], "GET", "/participants", params=params)

    def unblinding_reviews(self, open_only: bool = True) -> list[results.ReviewItem]:
        """Emergency unblindings to review (admin, monitor)."""
        return self._call(
            list[results.ReviewItem],
            "GET",
            "/unblinding/reviews",
            params={"open_only": "true" if open_only else "false"},
        )

    def close_review(self, review_id: int, note: str) -> results.ReviewItem:
        """Close one review with a note; not by the unblinder (admin, monitor)."""
        return self._call(
            results.ReviewItem, "POST", f"/unblinding/reviews/{review_id}/close", {"note": note}
        )

    def verify_database(
        self, checkpoint: results.Checkpoint | None = None
    ) -> results.IntegrityReport:
        """Verify the whole database on the server (admin, monitor)."""
        body = {"checkpoint": asdict(checkpoint) if checkpoint is not None else None}
        return self._call(results.IntegrityReport, "POST", "/verify", body)

    def pharmacy_queue(self) -> list[results.PharmacyKit]:
        """Kits requested and not yet prepared, oldest request first (pharmacist)."""
        return self._call(list[results.PharmacyKit], "GET", "/pharmacy/queue")

    def lookup_kit(self, code: str) -> results.PharmacyKit:
        """One kit with content, status and history, by its code (pharmacist)."""
        return self._call(results.PharmacyKit, "GET", f"/pharmacy/kits/{_segment(code)}")


def _signed(signature: Signature) -> dict[str, str]:
    """A signature as the API takes it: the password re-entered now and the meaning shown."""
    return {"password": signature.password, "meaning": signature.meaning}


def _segment(value: str) -> str:
    """One URL path segment, whatever the user typed."""
    # "." and ".." would be resolved away by the client as dot segments; "%2E" is not
    return quote(value, safe="").replace(".", "%2E")

"""The pages' login, sessions, CSRF and headers: the parts every page shares."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from randomizer import sessions
from randomizer.backends.local import LocalBackend
from randomizer.server.pages import CONTENT_SECURITY_POLICY, TASKS
from tests.support.database import audit_rows, execute
from tests.support.trial import PASSWORDS, USER_OF_ROLE, USERS, TrialFiles
from tests.support.web import Browser, Clock, text_of


def test_login_page_is_a_labelled_form_with_a_skip_link(browser: Callable[[], Browser]) -> None:
    page = browser().get("/login")
    assert page.status_code == 200
    body = page.text
    assert '<label for="user">User name</label>' in body
    assert '<label for="password">Password</label>' in body
    assert 'href="#main"' in body and '<main id="main"' in body
    assert "<script" not in body and "style=" not in body and "<style" not in body


def test_headers_on_every_page(browser: Callable[[], Browser]) -> None:
    page = browser().get("/login")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("role", sorted(TASKS))
def test_each_role_logs_in_to_its_own_first_page(
    browser: Callable[[], Browser], role: str, trial_with_list: TrialFiles
) -> None:
    b = browser()
    page = b.login(USER_OF_ROLE[role])
    assert page.status_code == 200
    for task in TASKS[role]:
        assert f'href="{task.path}"' in page.text
    others = {t.path for r, ts in TASKS.items() if r != role for t in ts} - {
        t.path for t in TASKS[role]
    }
    for path in others:
        assert f'href="{path}"' not in page.text, path
    login = [r for r in audit_rows(trial_with_list.db_url) if r["action"] == "auth.login"][-1]
    assert login["user"] == USER_OF_ROLE[role]
    assert login["details"]["via"]["channel"] == "web"


def test_session_cookie_is_host_prefixed_secure_httponly_lax(
    browser: Callable[[], Browser],
) -> None:
    b = browser()
    b.get("/login")
    response = b.post("/login", {"user": "ivan", "password": PASSWORDS["ivan"]})
    assert response.status_code == 303
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    session = next(c for c in cookies if c.startswith("__Host-session="))
    parts = {p.strip().lower() for p in session.split(";")}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= parts
    assert not any(p.startswith("domain") for p in parts)
    token = session.split(";")[0].split("=", 1)[1]
    assert PASSWORDS["ivan"] not in session and len(token) == 43


def test_wrong_password_shows_the_library_message_next_to_the_field(
    browser: Callable[[], Browser],
) -> None:
    b = browser()
    b.get("/login")
    page = b.post("/login", {"user": "ivan", "password": "wrong-password-1"})
    assert page.status_code == 401
    assert 'class="error-summary"' in page.text and 'id="user-error"' in page.text
    assert "__Host-session" not in page.headers.get("set-cookie", "")


def test_failed_logins_are_throttled_as_in_the_api(browser: Callable[[], Browser]) -> None:
    b = browser()
    b.get("/login")
    statuses = []
    for _ in range(sessions.BACKOFF_AFTER + 1):
        statuses.append(b.post("/login", {"user": "ivan", "password": "wrong-password-1"}))
    last = statuses[-1]
    assert last.status_code == 429
    assert "too many failed logins" in text_of(last.text)
    assert int(last.headers["Retry-After"]) >= 1


def test_a_page_without_login_redirects_to_login_and_back(browser: Callable[[], Browser]) -> None:
    b = browser()
    response = b.get("/participants")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/participants"
    b.follow()
    assert 'name="next" value="/participants"' in b.last.text  # type: ignore[union-attr]
    b.post("/login", {"user": "ivan", "password": PASSWORDS["ivan"], "next": "/participants"})
    assert b.last is not None and b.last.headers["location"] == "/participants"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/logout"])
def test_login_never_redirects_off_site(browser: Callable[[], Browser], target: str) -> None:
    b = browser()
    b.get("/login")
    response = b.post("/login", {"user": "ivan", "password": PASSWORDS["ivan"], "next": target})
    assert response.headers["location"] == "/"


def test_logout_revokes_the_session_server_side(
    browser: Callable[[], Browser], trial_with_list: TrialFiles
) -> None:
    b = browser()
    b.login("ivan")
    cookie = b.client.cookies.get("__Host-session")
    assert cookie
    response = b.logout()
    assert response.status_code == 303 and response.headers["location"] == "/login?done=logout"
    # the old cookie replayed by another client is refused: revoked in the database
    thief = browser()
    thief.client.cookies.set("__Host-session", cookie)
    assert thief.get("/").status_code == 303
    revoked = execute(
        trial_with_list.db_url,
        "SELECT revoked_reason FROM auth_tokens WHERE kind = 'web' AND user_name = 'ivan'",
    )
    assert revoked == [("logout",)]


def test_idle_and_absolute_timeouts_end_the_session(
    browser: Callable[[], Browser], clock: Clock
) -> None:
    b = browser()
    b.login("ivan")
    clock.now += sessions.IDLE_TIMEOUT + timedelta(seconds=1)
    response = b.get("/")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    b.login("ivan")
    for _ in range(int(sessions.ABSOLUTE_TIMEOUT / (sessions.IDLE_TIMEOUT / 2)) + 1):
        clock.now += sessions.IDLE_TIMEOUT / 2
        if b.get("/").status_code != 200:
            break
    else:
        pytest.fail("the session outlived its absolute timeout")
    assert b.last is not None and b.last.headers["location"].startswith("/login")


def test_disabling_a_user_ends_their_web_session(browser: Callable[[], Browser]) -> None:
    ivan = browser()
    ivan.login("ivan")
    admin = browser()
    admin.login("alice")
    admin.get("/users")
    response = admin.post("/users/ivan/disable", {"reason": "left the site"})
    assert response.status_code == 303
    assert ivan.get("/").status_code == 303


def test_an_api_token_is_not_a_web_session(browser: Callable[[], Browser]) -> None:
    b = browser()
    token = b.client.post(
        "/api/v1/auth/token", json={"user": "ivan", "password": PASSWORDS["ivan"]}
    ).json()["token"]
    b.client.cookies.set("__Host-session", token)
    assert b.get("/").status_code == 303


def test_a_web_session_token_is_not_an_api_token(browser: Callable[[], Browser]) -> None:
    b = browser()
    b.login("ivan")
    token = b.client.cookies.get("__Host-session")
    response = b.client.get("/api/v1/report", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == sessions.INVALID_TOKEN


@pytest.mark.parametrize("path", ["/logout", "/kits/replace", "/randomize"])
def test_a_post_without_csrf_token_goes_back_to_login_and_changes_nothing(
    browser: Callable[[], Browser], trial_with_list: TrialFiles, path: str
) -> None:
    b = browser()
    b.login("ivan")
    before = audit_rows(trial_with_list.db_url)
    response = b.post(path, {"participant": "P-001", "reason": "x", "code": "x"}, csrf="")
    assert response.status_code == 401
    assert 'action="/login"' in response.text
    assert "too old to accept" in text_of(response.text)
    after = audit_rows(trial_with_list.db_url)
    assert [r["action"] for r in after[len(before) :]] == []
    revoked = execute(
        trial_with_list.db_url,
        "SELECT revoked_at FROM auth_tokens WHERE kind = 'web' AND user_name = 'ivan'",
    )
    assert revoked == [(None,)]


def test_a_stale_csrf_token_is_refused(browser: Callable[[], Browser]) -> None:
    b = browser()
    b.login("ivan")
    stale = b.csrf()
    b.logout()
    b.login("ivan")
    response = b.post("/kits/replace", {"code": "ABCD-EFGH", "reason": "dropped"}, csrf=stale)
    assert response.status_code == 401
    assert "too old to accept" in text_of(response.text)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_cross_site_posts_are_refused(browser: Callable[[], Browser], site: str) -> None:
    b = browser()
    b.get("/login")
    response = b.post(
        "/login",
        {"user": "ivan", "password": PASSWORDS["ivan"]},
        headers={"Sec-Fetch-Site": site},
    )
    assert response.status_code == 403
    assert "from another site" in text_of(response.text)
    assert "__Host-session" not in response.headers.get("set-cookie", "")


def test_unknown_page_is_an_html_404_without_trace(browser: Callable[[], Browser]) -> None:
    page = browser().get("/no/such/page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no such page" in page.text and "Traceback" not in page.text


def test_a_body_that_is_not_a_form_is_refused_as_a_page(browser: Callable[[], Browser]) -> None:
    b = browser()
    response = b.client.post(
        "/login", content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400
    assert "could not be read" in text_of(response.text)


def test_users_fixture_roles_match_the_tasks() -> None:
    assert set(USERS.values()) == set(TASKS)


def test_an_internal_error_is_a_page_without_a_trace(
    browser: Callable[[], Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = browser()
    b.login("ivan")

    def broken(self: LocalBackend, site: str | None = None) -> None:
        raise RuntimeError("secret detail /srv/trial.db")

    monkeypatch.setattr(LocalBackend, "participant_view", broken)
    page = b.get("/participants")
    assert page.status_code == 500
    assert "internal error; nothing was committed" in text_of(page.text)
    for hidden in ("Traceback", "RuntimeError", "secret detail"):
        assert hidden not in page.text
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_a_wrong_method_is_a_page(browser: Callable[[], Browser]) -> None:
    b = browser()
    b.login("ivan")
    page = b.client.put("/randomize", headers={"Sec-Fetch-Site": "same-origin"})
    assert page.status_code == 405
    assert page.headers["content-type"].startswith("text/html")
    assert "method not allowed" in text_of(page.text)

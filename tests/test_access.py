"""Users, roles and logins: the role table of docs/architecture.md section 2, by command."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer import access
from randomizer.access import (
    BLINDED_ROLES,
    Permission,
    Role,
    allowed,
    check_password,
    check_user_name,
    hash_password,
    parse_role,
    verify_password,
)
from randomizer.audit import new_signing_key
from randomizer.errors import DamagedRecord, InvalidInput
from tests.support.assertions import assert_error, assert_ok
from tests.support.database import audit_rows, dump_database, execute, without_audit
from tests.support.rows import reseal
from tests.support.trial import ADMIN, PASSWORDS, USER_OF_ROLE, USERS, Run, TrialFiles, all_commands

ROLES = ("admin", "investigator", "pharmacist", "statistician", "monitor")
NEW_PASSWORD = "a-brand-new-password"
LOGIN_REFUSED = "unknown user, wrong password or disabled account"


# The role table, written out from docs/architecture.md section 2 (not derived from the code)


EXPECTED_BEFORE_LOCK: dict[Permission, set[str]] = {
    Permission.MANAGE_USERS: {"admin"},
    Permission.ROTATE_KEY: {"admin"},
    Permission.GENERATE_LIST: {"admin"},
    Permission.VERIFY_LIST: {"admin"},
    Permission.LOCK: {"admin"},
    Permission.READ_AUDIT: {"admin", "monitor"},
    Permission.CHECKPOINT_AUDIT: {"admin"},
    Permission.RANDOMIZE: {"investigator"},
    Permission.DISPENSE: {"investigator"},
    Permission.EMERGENCY_UNBLIND: {"investigator", "admin"},
    Permission.PREPARE: {"pharmacist"},
    Permission.LIST_KITS: {"pharmacist"},
    Permission.UNBLIND_ALL: set(),
    Permission.DUMMY_UNBLIND: {"statistician"},
    Permission.REPORT: set(ROLES),
    Permission.LOG_IN: set(ROLES),
    Permission.REPORT_ARMS: {"admin"},
    Permission.MAINTAIN: {"admin"},
    Permission.READ_PARTICIPANTS: {"admin", "investigator", "pharmacist", "monitor"},
    Permission.APPROVE_LIST: {"admin", "statistician"},
    Permission.VOID_PARTICIPANT: {"admin"},
    Permission.REVIEW_UNBLINDING: {"admin", "monitor"},
    Permission.SEND_MAIL: {"admin"},
    Permission.VERIFY: {"admin", "monitor"},
}
STATISTICIAN_AFTER_LOCK = {Permission.VERIFY_LIST, Permission.UNBLIND_ALL, Permission.REPORT_ARMS}


def test_every_permission_is_in_the_expected_table() -> None:
    assert set(EXPECTED_BEFORE_LOCK) == set(Permission)
    assert {r.value for r in Role} == set(ROLES)


@pytest.mark.parametrize("permission", list(Permission), ids=lambda p: p.name)
@pytest.mark.parametrize("role", ROLES)
def test_allowed_matches_the_role_table(role: str, permission: Permission) -> None:
    before = role in EXPECTED_BEFORE_LOCK[permission]
    after = before or (role == "statistician" and permission in STATISTICIAN_AFTER_LOCK)
    assert allowed(role, permission, locked=False) is before
    assert allowed(role, permission, locked=True) is after


def test_blinded_roles() -> None:
    assert BLINDED_ROLES == {Role.INVESTIGATOR, Role.STATISTICIAN, Role.MONITOR}
    # a blinded role holds nothing that reveals an arm before the lock
    for permission in (
        Permission.PREPARE,
        Permission.LIST_KITS,
        Permission.UNBLIND_ALL,
        Permission.REPORT_ARMS,
        Permission.GENERATE_LIST,
        Permission.VERIFY_LIST,
    ):
        for role in ("statistician", "monitor"):
            assert not allowed(role, permission, locked=False)


@pytest.mark.parametrize(
    "text, role",
    [("admin", Role.ADMIN), (" Monitor ", Role.MONITOR), ("STATISTICIAN", Role.STATISTICIAN)],
)
def test_parse_role(text: str, role: Role) -> None:
    assert parse_role(text) is role


@pytest.mark.parametrize("text", ["wizard", "", "admins", "investigator,admin"])
def test_parse_role_refuses_unknown_roles(text: str) -> None:
    with pytest.raises(
        InvalidInput,
        match="unknown role .*: use one of admin, investigator, pharmacist, statistician, monitor",
    ):
        parse_role(text)


@pytest.mark.parametrize("name", ["alice", "a", "Bob.Smith", "x_1-2", "a" * 64])
def test_valid_user_names(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "-x", "a b", "a" * 65, "ali$ce", "élise", "alice\n"])
def test_invalid_user_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="is not valid: start with a letter"):
        check_user_name(name)


@given(st.text(max_size=11))
def test_short_passwords_are_refused(password: str) -> None:
    with pytest.raises(InvalidInput, match="password too short: use at least 12 characters"):
        check_password(password)


@given(st.text(min_size=12, max_size=40))
def test_passwords_of_twelve_characters_or_more_are_accepted(password: str) -> None:
    assert check_password(password) == password


def test_absurdly_long_passwords_are_refused() -> None:
    check_password("x" * 1024)
    with pytest.raises(InvalidInput, match="password too long: at most 1024 characters"):
        check_password("x" * 1025)


def test_passwords_that_are_not_text_are_refused() -> None:
    # a password with invalid UTF-8 from the environment arrives as lone surrogates
    with pytest.raises(InvalidInput, match="password is not valid text"):
        check_password("pw-\udcff-123456789")


@settings(max_examples=25, deadline=None)
@given(password=st.text(min_size=1, max_size=30), other=st.text(min_size=1, max_size=30))
def test_password_hash_round_trip(password: str, other: str) -> None:
    stored = hash_password(password, n=2**4)
    assert verify_password(password, stored)
    assert verify_password(other, stored) is (other == password)


def test_password_hash_is_salted_and_stores_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = hash_password("pw-admin-123456"), hash_password("pw-admin-123456")
    assert first != second
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**10), "8", "1")
    assert "pw-admin-123456" not in first
    # raising the cost later keeps old hashes valid: the stored n is used
    monkeypatch.setattr(access, "SCRYPT_N", 2**12)
    assert verify_password("pw-admin-123456", first)
    assert hash_password("x" * 12).split("$")[1] == str(2**12)


def test_default_scrypt_cost_is_the_documented_one() -> None:
    # the fast_scrypt fixture patches the module; the shipped default stays high
    assert "\nSCRYPT_N = 2**15\n" in inspect.getsource(access)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "bcrypt$1$2$3$AAAA$AAAA",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$3$8$1$AAAA$AAAA",
        "scrypt$16$8$1$!!$AAAA",
    ],
)
def test_malformed_stored_hashes_never_verify(stored: str) -> None:
    assert verify_password("pw-admin-123456", stored) is False


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (2**30, 8, 1),  # the case: 1 TiB, an internal MemoryError before
        (2**21, 8, 1),
        (2**4, 33, 1),
        (2**4, 8, 17),
        (2**64, 8, 1),
        (2**20, 16, 1),  # 2 GiB
        (2**20, 8, 4),  # 4 x 10 s
        (2**16, 1, 1),
    ],
)  # OpenSSL's rule n < 2**(16 r): a MemoryError before
def test_absurd_stored_scrypt_costs_are_refused_not_computed(n: int, r: int, p: int) -> None:
    stored = "$".join(
        ["scrypt", str(n), str(r), str(p)] + hash_password("x", n=2**4).split("$")[4:]
    )
    with pytest.raises(
        DamagedRecord,
        match=f"asks for scrypt n={str(n)[:20]}, r={r}, p={p}, a cost no release writes",
    ):
        verify_password("pw-admin-123456", stored)


def test_a_login_with_an_absurd_stored_hash_is_refused_and_recorded(
    trial_with_users: TrialFiles, run: Run
) -> None:
    url = trial_with_users.db_url
    [(stored,)] = execute(url, "SELECT password_hash FROM users WHERE name = 'ivan'")
    _, _, _, _, salt, digest = stored.split("$")
    execute(
        url,
        "UPDATE users SET password_hash = :h WHERE name = 'ivan'",
        h=f"scrypt$1073741824$8$1${salt}${digest}",
    )
    # with a valid row MAC, as a release would have written it (else the MAC refuses it first)
    reseal(
        trial_with_users, "users", execute(url, "SELECT id FROM users WHERE name = 'ivan'")[0][0]
    )
    before = dump_database(url)

    result = run("report", user="ivan")

    assert assert_error(result, 1) == (
        "login refused for user 'ivan': a stored password hash asks for scrypt n=1073741824, "
        "r=8, p=1, a cost no release writes: the users table was altered or damaged; an "
        "admin can set a new password with 'randomizer user passwd'"
    )
    assert without_audit(dump_database(url)) == without_audit(before)
    failed = audit_rows(url)[-1]
    assert (failed["action"], failed["user"], failed["role"]) == (
        "auth.failed",
        "ivan",
        "investigator",
    )
    assert failed["details"]["refusal"] == "damaged password hash"
    # an admin resets it, and ivan logs in again
    run.ok("user", "passwd", "ivan", "--password-stdin", user=ADMIN, input=NEW_PASSWORD + "\n")
    run.ok("report", user="ivan", password=NEW_PASSWORD)


# Every command x every role, through the CLI ------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command: its arguments, who may run it, and how a refusal reads."""

    argv: Callable[[TrialFiles, str], list[str]]
    action: str
    allowed: frozenset[str]
    may_not: str
    events: tuple[str, ...]
    stage: str = "trial_with_list"
    stdin: str | None = None
    done: str = ""

    @property
    def path(self) -> str:
        """The command as typed: ``user add``."""
        return self.action.replace(".", " ")


def _signing_key(files: TrialFiles) -> Path:
    path = files.directory / "qa-signing.pem"
    if not path.exists():
        path.write_bytes(new_signing_key()[0])
    return path


def _other_user(actor: str) -> str:
    return "petra" if actor == "ivan" else "ivan"


ADMIN_ONLY = frozenset({"admin"})
READERS = frozenset({"admin", "monitor"})
LOGIN = ("auth.login",)
COMMANDS: dict[str, Case] = {
    "user-add": Case(
        lambda f, a: ["user", "add", "newbie", "--role", "monitor", "--password-stdin"],
        "user.add",
        ADMIN_ONLY,
        "manage users",
        (*LOGIN, "user.add"),
        stdin="pw-newbie-123456\n",
        done="User newbie added as monitor.",
    ),
    "user-list": Case(
        lambda f, a: ["user", "list"],
        "user.list",
        ADMIN_ONLY,
        "manage users",
        LOGIN,
        done="stan   statistician  active",
    ),
    "user-disable": Case(
        lambda f, a: ["user", "disable", "mona", "--reason", "left"],
        "user.disable",
        ADMIN_ONLY,
        "manage users",
        (*LOGIN, "user.disable"),
        done="User mona disabled.",
    ),
    "user-passwd-own": Case(
        lambda f, a: ["user", "passwd", "--password-stdin"],
        "user.passwd",
        frozenset(ROLES),
        "",
        (*LOGIN, "user.passwd"),
        stdin=NEW_PASSWORD + "\n",
        done="Password of ",
    ),
    "user-passwd-other": Case(
        lambda f, a: ["user", "passwd", _other_user(a), "--password-stdin"],
        "user.passwd",
        ADMIN_ONLY,
        "manage users",
        (*LOGIN, "user.passwd"),
        stdin=NEW_PASSWORD + "\n",
        done="Password of ivan changed.",
    ),
    "user-unlock": Case(
        lambda f, a: ["user", "unlock", "ivan"],
        "user.unlock",
        ADMIN_ONLY,
        "manage users",
        (*LOGIN, "user.unlock"),
        done="No failed logins or lock on user name ivan: nothing to lift.",
    ),
    "user-sites": Case(
        lambda f, a: ["user", "sites", "ivan"],
        "user.sites",
        ADMIN_ONLY,
        "manage users",
        LOGIN,
        done="User ivan (investigator) is trial-wide.",
    ),
    "user-sites-set": Case(
        lambda f, a: ["user", "sites", "ivan", "--set", "WAW"],
        "user.sites",
        ADMIN_ONLY,
        "manage users",
        (*LOGIN, "user.sites"),
        done="User ivan is now limited to site WAW.",
    ),
    "key-rotate": Case(
        lambda f, a: ["key", "rotate", "--new-key-file", str(f.directory / "new.key")],
        "key.rotate",
        ADMIN_ONLY,
        "rotate the trial key",
        (*LOGIN, "key.rotate"),
        done="Key rotated",
    ),
    "list-generate": Case(
        lambda f, a: ["list", "generate"],
        "list.generate",
        ADMIN_ONLY,
        "generate the allocation list",
        (*LOGIN, "list.generate"),
        stage="trial_with_users",
        done="Allocation list generated.",
    ),
    "list-verify": Case(
        lambda f, a: ["list", "verify"],
        "list.verify",
        ADMIN_ONLY,
        "verify the allocation list",
        (*LOGIN, "list.verify"),
        done="Allocation list verified",
    ),
    "list-approve": Case(
        lambda f, a: ["list", "approve"],
        "list.approve",
        frozenset({"admin", "statistician"}),
        "approve the allocation list",
        (*LOGIN, "list.approve"),
        stage="trial_with_draft_list",
        done="Allocation list approved by",
    ),
    "list-status": Case(
        lambda f, a: ["list", "status"],
        "list.status",
        frozenset(ROLES),
        "",
        (*LOGIN, "list.status"),
        done="Allocation list generated",
    ),
    "audit-show": Case(
        lambda f, a: ["audit", "show"],
        "audit.show",
        READERS,
        "read the audit trail",
        LOGIN,
        done="trial.init",
    ),
    "audit-verify": Case(
        lambda f, a: ["audit", "verify"],
        "audit.verify",
        READERS,
        "read the audit trail",
        (*LOGIN, "audit.verify"),
        done="Audit trail verified",
    ),
    "audit-checkpoint": Case(
        lambda f, a: ["audit", "checkpoint", "--signing-key", str(_signing_key(f))],
        "audit.checkpoint",
        ADMIN_ONLY,
        "sign audit checkpoints",
        (*LOGIN, "audit.checkpoint"),
        done="randomizer audit checkpoint v1",
    ),
}


def expected_refusal(case: Case, role: str) -> str:
    if case.action == "list.verify" and role == "statistician":
        return "role statistician may verify the allocation list only after the database lock"
    return f"role {role} may not {case.may_not}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_role_matrix(command: str, role: str, request: pytest.FixtureRequest, run: Run) -> None:
    case = COMMANDS[command]
    files: TrialFiles = request.getfixturevalue(case.stage)
    actor = USER_OF_ROLE[role]
    argv = case.argv(files, actor)
    before = dump_database(files.db_url)
    events_before = len(audit_rows(files.db_url))

    result = run(*argv, user=actor, input=case.stdin)

    events = audit_rows(files.db_url)
    if role in case.allowed:
        assert_ok(result)
        assert case.done in result.stdout
        new_events = events[events_before:]
        assert tuple(e["action"] for e in new_events) == case.events
        assert {(e["user"], e["role"]) for e in new_events} == {(actor, role)}
        assert new_events[0]["subject"] == case.action
        return
    message = expected_refusal(case, role)
    assert assert_error(result, 1) == message
    assert result.stdout == ""
    # nothing changed but the trail, which gained exactly the refusal
    assert without_audit(dump_database(files.db_url)) == without_audit(before)
    assert len(events) == events_before + 1
    refusal = events[-1]
    assert (refusal["action"], refusal["user"], refusal["role"]) == ("refused", actor, role)
    assert refusal["details"]["command"] == case.action
    assert refusal["details"]["message"] == message
    assert not (files.directory / "new.key").exists()


def test_the_matrix_covers_every_setup_and_audit_command() -> None:
    no_login = {"list preview", "audit keygen"}
    covered = {case.path for case in COMMANDS.values()}
    # the groups of trial setup and custody; later groups have their own matrices
    names = {
        " ".join(path)
        for path, command in all_commands()
        if len(path) == 2 and path[0] in ("user", "key", "list", "audit")
    }
    # a new command in these groups belongs in COMMANDS (or, without a login, in no_login)
    assert names - no_login == covered


def test_statistician_verifies_the_list_only_after_the_lock(
    trial_with_list: TrialFiles, run: Run
) -> None:
    assert (
        assert_error(run("list", "verify", user="stan"), 1)
        == "role statistician may verify the allocation list only after the database lock"
    )
    run.ok("lock", "--reason", "last participant completed follow-up", user=ADMIN)
    result = run.ok("list", "verify", user="stan")
    assert "Allocation list verified: it matches its seed." in result.stdout
    # the other blinded roles stay refused after the lock
    for name in ("ivan", "mona"):
        role = USERS[name]
        assert (
            assert_error(run("list", "verify", user=name), 1)
            == f"role {role} may not verify the allocation list"
        )


def test_own_password_change_takes_effect(trial_with_users: TrialFiles, run: Run) -> None:
    run.ok("user", "passwd", "--password-stdin", user="ivan", input=NEW_PASSWORD + "\n")
    assert_error(
        run("user", "passwd", "--password-stdin", user="ivan", input="another-password-1\n"),
        1,
        "login refused for user 'ivan'",
    )
    run.ok(
        "user",
        "passwd",
        "--password-stdin",
        user="ivan",
        password=NEW_PASSWORD,
        input=PASSWORDS["ivan"] + "\n",
    )
    change = [e for e in audit_rows(trial_with_users.db_url) if e["action"] == "user.passwd"]
    assert [(e["user"], e["subject"]) for e in change] == [("ivan", "ivan"), ("ivan", "ivan")]
    assert all(PASSWORDS["ivan"] not in str(e) and NEW_PASSWORD not in str(e) for e in change)


def test_admin_resets_another_users_password(trial_with_users: TrialFiles, run: Run) -> None:
    run.ok("user", "passwd", "petra", "--password-stdin", user=ADMIN, input=NEW_PASSWORD + "\n")
    assert_error(run("user", "list", user="petra"), 1, "login refused")
    run.ok(
        "user",
        "passwd",
        "--password-stdin",
        user="petra",
        password=NEW_PASSWORD,
        input=PASSWORDS["petra"] + "\n",
    )


def test_password_change_of_an_unknown_user_is_refused(
    trial_with_users: TrialFiles, run: Run
) -> None:
    assert (
        assert_error(
            run(
                "user",
                "passwd",
                "nobody",
                "--password-stdin",
                user=ADMIN,
                input=NEW_PASSWORD + "\n",
            ),
            1,
        )
        == "no user 'nobody': check the name against the list of users (see 'randomizer user list')"
    )


# Logins ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who, password, why",
    [
        ("ivan", "not-ivans-password", "wrong password"),
        ("nobody", "pw-nobody-123456", "unknown user"),
        ("mona", PASSWORDS["mona"], "disabled user"),
        ("alice", "", "wrong password"),
    ],
)
@pytest.mark.parametrize("command", [["user", "list"], ["audit", "show"], ["list", "verify"]])
def test_failed_logins_are_refused_and_recorded(
    who: str, password: str, why: str, command: list[str], trial_with_list: TrialFiles, run: Run
) -> None:
    run.ok("user", "disable", "mona", user=ADMIN)
    before = dump_database(trial_with_list.db_url)
    events_before = len(before["audit_events"])

    result = run(*command, user=who, password=password)

    # one message whatever the cause: it tells nobody which names exist
    assert assert_error(result, 1) == f"login refused for user {who!r}: {LOGIN_REFUSED}"
    assert result.stdout == ""
    assert without_audit(dump_database(trial_with_list.db_url)) == without_audit(before)
    events = audit_rows(trial_with_list.db_url)
    assert len(events) == events_before + 1
    failed = events[-1]
    assert failed["action"] == "auth.failed"
    assert failed["user"] == who
    assert failed["role"] == USERS.get(who, "")
    assert failed["details"]["refusal"] == why
    assert failed["details"]["command"] == ".".join(command)
    assert password not in str(failed) or password == ""


def test_a_disabled_user_stays_locked_out_and_listed(
    trial_with_users: TrialFiles, run: Run
) -> None:
    run.ok("user", "disable", "ivan", "--reason", "left the study team", user=ADMIN)
    assert_error(
        run("user", "passwd", "--password-stdin", user="ivan", input=NEW_PASSWORD + "\n"),
        1,
        "login refused for user 'ivan'",
    )
    listing = run.ok("user", "list", "--json", user=ADMIN)
    users = {u["name"]: u for u in json.loads(listing.stdout)}
    assert users["ivan"]["disabled"] is True and users["ivan"]["role"] == "investigator"
    assert set(users) == set(USERS)
    assert all("password" not in str(u) for u in users.values())
    event = [e for e in audit_rows(trial_with_users.db_url) if e["action"] == "user.disable"][-1]
    assert event["reason"] == "left the study team"
    assert event["details"] == {
        "before": {"role": "investigator", "disabled": False},
        "after": {"role": "investigator", "disabled": True},
    }


def test_disabling_twice_and_the_last_admin_is_refused(
    trial_with_users: TrialFiles, run: Run
) -> None:
    run.ok("user", "disable", "ivan", user=ADMIN)
    assert (
        assert_error(run("user", "disable", "ivan", user=ADMIN), 1)
        == "user 'ivan' is already disabled"
    )
    assert (
        assert_error(run("user", "disable", "alice", user=ADMIN), 1)
        == "user 'alice' is the last enabled admin: add another admin first"
    )
    assert (
        assert_error(run("user", "disable", "ghost", user=ADMIN), 1)
        == "no user 'ghost': check the name against the list of users (see 'randomizer user list')"
    )
    # with a second admin, the first may go
    run.add_user("adam", "admin", password="pw-adam-admin-1")
    run.ok("user", "disable", "alice", user="adam", password="pw-adam-admin-1")
    assert_error(run("user", "list", user=ADMIN), 1, "login refused for user 'alice'")
    refusals = [e for e in audit_rows(trial_with_users.db_url) if e["action"] == "refused"]
    assert [e["details"]["refusal"] for e in refusals] == ["StateError", "StateError", "NotFound"]


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"RANDOMIZER_PASSWORD": None},
            "no password: set RANDOMIZER_PASSWORD or run on a terminal",
        ),
    ],
)
def test_no_password_is_bad_usage(
    env: dict[str, str | None], message: str, trial_with_users: TrialFiles, run: Run
) -> None:
    before = dump_database(trial_with_users.db_url)
    assert assert_error(run("user", "list", user=ADMIN, env=env), 2) == message
    assert dump_database(trial_with_users.db_url) == before


def test_no_user_is_bad_usage(trial_with_users: TrialFiles, run: Run) -> None:
    before = dump_database(trial_with_users.db_url)
    assert (
        assert_error(run("user", "list", password=PASSWORDS[ADMIN]), 2)
        == "no user: pass --user NAME or set RANDOMIZER_USER"
    )
    assert dump_database(trial_with_users.db_url) == before


def test_user_comes_from_the_environment(trial_with_users: TrialFiles, run: Run) -> None:
    result = run("user", "list", password=PASSWORDS[ADMIN], env={"RANDOMIZER_USER": ADMIN})
    assert_ok(result)
    assert "petra  pharmacist" in result.stdout

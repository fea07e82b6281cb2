"""Fuzzed input: hostile strings at every command's arguments and at design files.

Issue 5, item 5. Each run goes through the real CLI in-process (the ``run``
fixture), so NUL bytes, impossible in a real process's argv, are thrown too.
Every run must

* exit 0, 1 or 2, with no exception but ``SystemExit`` and no traceback;
* on exit 0 print nothing on stderr; otherwise print exactly one line on
  stderr, starting ``Error: `` (and never the boundary's "internal error");
* on exit 2 (malformed input) leave the database row-for-row unchanged;
* on exit 1 (a refusal) leave every table but the audit trail unchanged, and
  the trail only grown by appended events (its head row pointing at the last);
* never rewrite an audit event that was already there, whatever the exit;
* never name an arm to a blinded role.

Values come from :func:`hostile`: any unicode text (surrogate-free), control
characters with NUL, SQL fragments, 10,000-character values, empty and blank
strings, and mutations of valid values, so that some runs get past parsing and
reach the database. The trial is the shipped exosome-ms trial with its list and
one randomized participant. Options are passed as ``--name=value`` and
positionals after ``--``, so a value that starts with a dash is still a value.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from sqlalchemy.engine import make_url

from randomizer.commands import cli
from randomizer.design import design_text
from tests.support.assertions import assert_no_arm
from tests.support.database import Dump, Snapshots
from tests.support.exosome import ELIGIBLE
from tests.support.trial import PASSWORDS, USERS, Run, TrialFiles, write_key_file

# a failing example that holds a 10,000-character value must still be reported
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

EXAMPLES = int(os.environ.get("RANDOMIZER_FUZZ_EXAMPLES", "100"))
"""Examples per test: 100 keeps the file under a minute per engine; raise it for a long hunt."""

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

TODAY = date.today()

SQL = [
    "'; DROP TABLE slots;--",
    "P-001'; DROP TABLE participants;--",
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "1; DELETE FROM audit_events",
    "'; UPDATE kits SET status='available';--",
    "' UNION SELECT name, password_hash FROM users --",
    "alice'--",
    "%",
    "_",
    "%%",
    "\\",
    "\\'",
    "'",
    '"',
    ";",
    "--",
    "/*",
    "*/",
    "NULL",
    "null",
    "None",
    "$1",
    ":name",
    "?",
    "%s",
    "{0}",
    "%(x)s",
]
NESTED = ["[" * 5000 + "]" * 5000, '{"a": ' * 5000 + "1" + "}" * 5000]
"""Arrays and tables nested past Python's recursion limit (JSON and TOML files)."""
TRICKY = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    " \t\n ",
    "\x00",
    "P-001\x00",
    "\x00P-001",
    "\u00a0",
    "\u200b",
    "\u2028",
    "\u2029",
    "\u0085",
    "\ufeff",
    "\u202e",
    "\x1b[31m",
    "\U0001f600",
    "\u0130",
    "\u00df",
    "\u212a",
    "\uff30-001",
    "\u0420-001",
    "\u0665",
    "\u0664\u0665",
    "4_5",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "-0",
    "0x10",
    "1e2",
    "9" * 400,
    "-" * 40,
    "--help",
    "-h",
    "--version",
    "-",
    "=",
    "==",
    "a=b=c",
    "../../../../etc/passwd",
    "/dev/null",
    "/",
    ".",
    "..",
    "~",
    "$HOME",
    "$(id)",
    "`id`",
    "CON",
    "<script>alert(1)</script>",
    "A" * 33,
    "A" * 65,
    "A" * 257,
    "A" * 2001,
    *NESTED,
]
HOSTILE = SQL + TRICKY

TEXT = st.text(max_size=40)  # any unicode but surrogates
CONTROL = st.text(st.characters(categories=["Cc"]), min_size=1, max_size=6)  # NUL included
HUGE = st.builds(
    lambda piece, size: (piece * size)[:size],
    st.text(min_size=1, max_size=4),
    st.sampled_from([10_000, 10_001]),
)
PIECES = st.one_of(TEXT, CONTROL, st.sampled_from(HOSTILE))


def _splice(valid: str, at: int, cut: int, piece: str) -> str:
    at %= len(valid) + 1
    return valid[:at] + piece + valid[at + cut :]


def hostile(*valid: str) -> st.SearchStrategy[str]:
    """Hostile strings, plus the valid values given and their mutations."""
    parts: list[st.SearchStrategy[str]] = [st.sampled_from(HOSTILE), TEXT, CONTROL, HUGE]
    if valid:
        parts += [
            st.sampled_from(valid),
            st.builds(
                _splice, st.sampled_from(valid), st.integers(0, 64), st.integers(0, 3), PIECES
            ),
        ]
    return st.one_of(*parts)


def numbers(*valid: int) -> st.SearchStrategy[str]:
    """Integer options: valid values, boundaries, huge and negative numbers, and text."""
    return st.one_of(
        st.sampled_from([str(v) for v in valid]),
        st.integers().map(str),
        st.sampled_from(
            [
                "0",
                "-1",
                str(2**31 - 1),
                str(2**31),
                str(2**63 - 1),
                str(2**63),
                str(10**30),
                "-" + str(10**30),
                " 5 ",
                "+5",
                "\u0665",
                "5.0",
                "0x5",
            ]
        ),
        hostile(*(str(v) for v in valid)),
    )


def dates(*valid: str) -> st.SearchStrategy[str]:
    """--date values: valid past dates, edges of the calendar, and hostile text."""
    return st.one_of(
        st.dates().map(date.isoformat),
        st.sampled_from(
            [
                "0001-01-01",
                "9999-12-31",
                "2024-02-29",
                "2023-02-29",
                "2026-13-01",
                "2026-00-10",
                "20260101",
                "2026-1-1",
                "01/02/2026",
            ]
        ),
        hostile(*valid),
    )


# the harness -----------------------------------------------------------------------------


def _describe(args: Sequence[str], result: Result) -> str:
    shown = [a if len(a) <= 80 else f"{a[:60]}...({len(a)} chars)" for a in args]
    return (
        f"args {shown!r}\nexit {result.exit_code}\nstdout {result.stdout[:500]!r}\n"
        f"stderr {result.stderr[:500]!r}\nexception {result.exception!r}"
    )


def assert_clean(args: Sequence[str], result: Result, allowed: Sequence[int] = (0, 1, 2)) -> None:
    """Exit code in ``allowed``, no traceback, and a one-line ``Error:`` on failure."""
    why = _describe(args, result)
    with contextlib.suppress(InvalidArgument):  # outside a hypothesis test: no statistics
        event(f"exit {result.exit_code}")  # shown by pytest --hypothesis-show-statistics
    assert result.exit_code in allowed, why
    assert result.exception is None or isinstance(result.exception, SystemExit), why
    assert "Traceback" not in result.output, why
    if result.exit_code == 0:
        assert result.stderr == "", why
        return
    lines = result.stderr.splitlines()
    assert len(lines) == 1, why
    assert lines[0].startswith("Error: "), why
    assert "internal error" not in lines[0], why  # an exception no handler expected


def _events(dump: Dump, columns: list[str]) -> list[tuple[Any, ...]]:
    seq = columns.index("seq")
    return sorted(dump["audit_events"], key=lambda row: row[seq])


def assert_refusal_changed_nothing(
    before: Dump, after: Dump, code: int, columns: dict[str, list[str]], why: str
) -> None:
    """Exit 2: nothing changed. Exit 1: only audit events appended. Any exit: no event lost."""
    event_columns = columns["audit_events"]
    old, new = _events(before, event_columns), _events(after, event_columns)
    assert new[: len(old)] == old, f"an audit event was altered or removed\n{why}"
    if code == 2:
        assert after == before, f"malformed input changed the database\n{why}"
    elif code == 1:
        for name in before:
            if not name.startswith("audit"):
                assert after[name] == before[name], f"a refusal changed {name}\n{why}"
        head_columns = columns["audit_head"]
        (head,) = after["audit_head"]
        last = new[-1]
        assert head[head_columns.index("seq")] == last[event_columns.index("seq")], why
        assert head[head_columns.index("mac")] == last[event_columns.index("mac")], why


@dataclass
class Fuzz:
    """The trial under fuzz: P-001 randomized at WAW with its visit-1 kit ``kit``."""

    run: Run
    files: TrialFiles
    kit: str
    snapshots: Snapshots
    last: Dump = field(default_factory=dict)
    signing: Signing | None = None

    def check(
        self,
        *args: str,
        user: str | None = None,
        input: str = "",
        blinded: bool = False,
        password: str | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Result:
        """Run one command and assert every property of this module's docstring."""
        before = self.last
        result = self.run(*args, user=user, input=input, password=password, env=env)
        # the next example compares with this state, even if an assertion below fails
        after = self.last = self.snapshots.dump()
        assert_clean(args, result)
        assert_refusal_changed_nothing(
            before, after, result.exit_code, self.snapshots.columns, _describe(args, result)
        )
        if blinded:
            assert_no_arm(result, _describe(args, result), inputs=args)
        return result


@pytest.fixture
def fuzz(run: Run, trial_with_list: TrialFiles) -> Iterator[Fuzz]:
    """The exosome-ms trial with its list and P-001 randomized."""
    first = run.ok(
        "--json",
        "randomize",
        "P-001",
        "--site",
        "WAW",
        *(f"--answer={k}={v}" for k, v in ELIGIBLE.items()),
        user="ivan",
    )
    kit = first.stdout.split('"kit": "')[1][:9]
    snapshots = Snapshots(trial_with_list.db_url)
    state = Fuzz(run=run, files=trial_with_list, kit=kit, snapshots=snapshots)
    state.last = snapshots.dump()
    try:
        yield state
    finally:
        snapshots.dispose()


@st.composite
def one_hostile(
    draw: st.DrawFn, /, **fields: tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """Each field as (valid, hostile) strategies: all valid but one (now and then two, or none).

    Throwing hostile values at every field at once would stop nearly every run at
    the first argument parsed; one at a time, the others carry it to the database.
    """
    names = sorted(fields)
    fuzzed = {draw(st.sampled_from(names))}
    extra = draw(st.integers(0, 5))
    if extra == 0:
        fuzzed.add(draw(st.sampled_from(names)))
    elif extra == 1:
        fuzzed = set()  # all valid now and then: successes and refusals change the state
    return {name: draw(fields[name][1] if name in fuzzed else fields[name][0]) for name in names}


# the blinded path --------------------------------------------------------------------------


@st.composite
def answer_options(draw: st.DrawFn) -> list[str]:
    """The eligibility answers, one of them (or the set) made hostile."""
    answers = dict(ELIGIBLE)
    how = draw(st.sampled_from(["value", "value", "name", "drop", "raw"]))
    if how == "value":
        criterion = draw(st.sampled_from(sorted(ELIGIBLE)))
        answers[criterion] = draw(
            hostile("45", "18", "65", "17.99", "4.5", "yes", "no", "y", "TRUE", "N")
        )
    elif how == "name":
        answers[draw(hostile(*ELIGIBLE))] = draw(hostile("45", "yes", "no"))
    elif how == "drop":
        del answers[draw(st.sampled_from(sorted(ELIGIBLE)))]
    pairs = [f"{name}={value}" for name, value in answers.items()]
    if how == "raw":
        pairs.insert(draw(st.integers(0, len(pairs))), draw(hostile("age=45", "edss=4.5")))
    return [f"--answer={pair}" for pair in pairs]


ELIGIBLE_OPTIONS = [f"--answer={name}={value}" for name, value in ELIGIBLE.items()]
INELIGIBLE = st.sampled_from(  # well-formed answers that fail one criterion
    [
        ("age", "17"),
        ("age", "65.5"),
        ("edss", "7"),
        ("progressive_ms", "no"),
        ("other_neuro_autoimmune", "yes"),
    ]
).map(lambda fail: [f"--answer={k}={fail[1] if k == fail[0] else v}" for k, v in ELIGIBLE.items()])
NEW_IDS = st.integers(2, 999).map(lambda n: f"P-{n:03d}")


@fuzz_settings
@given(
    fields=one_hostile(
        participant=(NEW_IDS | st.just("P-001"), hostile("P-002", "P-001", "p-003", "X1")),
        site=(st.just("WAW"), hostile("WAW", "waw")),
        answers=(st.just(ELIGIBLE_OPTIONS) | INELIGIBLE, answer_options()),
        strata=(st.just([]), st.lists(hostile("type=PPMS", "=", "type="), min_size=1, max_size=2)),
        on=(
            st.sampled_from([None, TODAY.isoformat(), "2020-01-31"]),
            dates(TODAY.isoformat(), "2026-01-15"),
        ),
    ),
    as_json=st.booleans(),
)
def test_randomize(fuzz: Fuzz, fields: dict[str, Any], as_json: bool) -> None:
    args = [
        "randomize",
        f"--site={fields['site']}",
        *fields["answers"],
        *(f"--stratum={s}" for s in fields["strata"]),
    ]
    if fields["on"] is not None:
        args.append(f"--date={fields['on']}")
    if as_json:
        args.append("--json")
    fuzz.check(*args, "--", fields["participant"], user="ivan", blinded=True)


@st.composite
def kit_commands(draw: st.DrawFn, kit: str) -> tuple[list[str], str]:
    """kit request | kit replace | pharmacy prepare with hostile arguments; (argv, user)."""
    codes = (
        st.sampled_from([kit, kit.lower(), kit.replace("-", ""), f" {kit} "]),
        hostile(kit, kit.lower(), "ABCD-EFGC", "0000-0000"),
    )
    reasons = (st.just("bag damaged"), hostile("bag damaged"))
    which = draw(st.sampled_from(["request", "request", "replace", "prepare"]))
    if which == "request":
        f = draw(
            one_hostile(
                participant=(st.just("P-001"), hostile("P-001", "P-002")),
                visit=(st.sampled_from(["1", "2"]), numbers(1, 2, 4, 5)),
                on=(st.sampled_from([None, TODAY.isoformat()]), dates(TODAY.isoformat())),
                reason=(st.sampled_from([None, "illness"]), hostile("dose delayed by illness")),
            )
        )
        args = ["kit", "request", f"--visit={f['visit']}"]
        if f["on"] is not None:
            args.append(f"--date={f['on']}")
        if f["reason"] is not None:
            args += ["--override-window", f"--reason={f['reason']}"]
        return [*args, "--", f["participant"]], "ivan"
    if which == "replace":
        f = draw(one_hostile(code=codes, reason=reasons))
        return ["kit", "replace", f"--reason={f['reason']}", "--", f["code"]], "ivan"
    return ["pharmacy", "prepare", "--", draw(codes[1])], "petra"


@fuzz_settings
@given(data=st.data())
def test_kits(fuzz: Fuzz, data: st.DataObject) -> None:
    args, user = data.draw(kit_commands(fuzz.kit))
    fuzz.check(*args, user=user, blinded=user == "ivan")


@fuzz_settings
@given(
    fields=one_hostile(
        participant=(st.just("P-001"), hostile("P-001", "P-002")),
        reason=(st.just("SAE: anaphylaxis"), hostile("SAE: anaphylaxis")),
    ),
    as_role=st.sampled_from(["ivan", "ivan", "mona"]),
)
def test_emergency_unblinding(fuzz: Fuzz, fields: dict[str, str], as_role: str) -> None:
    participant, reason = fields["participant"], fields["reason"]
    result = fuzz.check(
        "unblind", "emergency", f"--reason={reason}", "--", participant, user=as_role
    )
    if result.exit_code != 0:
        assert_no_arm(
            result, _describe([participant, reason], result), inputs=[participant, reason]
        )


# users, logins and reasons -------------------------------------------------------------------


NAMES = ("bob", "ivan", "stan", "alice", "b.o_b-1")
ROLES = ("investigator", "pharmacist", "statistician", "monitor", "admin", "Monitor ")


@st.composite
def user_commands(draw: st.DrawFn) -> tuple[list[str], str]:
    """user add | disable | passwd with hostile names, roles, passwords and reasons."""
    which = draw(st.sampled_from(["add", "add", "disable", "passwd"]))
    password = draw(st.one_of(st.just("a-long-enough-pw-1"), hostile("a-long-enough-pw-1")))
    feed = draw(st.booleans())
    stdin = password + "\n" if feed else ""
    flag = ["--password-stdin"] if feed or draw(st.booleans()) else []
    if which == "add":
        return [
            "user",
            "add",
            f"--role={draw(hostile(*ROLES))}",
            *flag,
            "--",
            draw(hostile(*NAMES)),
        ], stdin
    if which == "disable":
        args = ["user", "disable"]
        if draw(st.booleans()):
            args.append(f"--reason={draw(hostile('left the study team'))}")
        return [*args, "--", draw(hostile("stan", "mona", "alice", "nobody"))], stdin
    # never alice: a new password for her would lock every later example out
    return ["user", "passwd", *flag, "--", draw(hostile("stan", "mona", "nobody"))], stdin


@fuzz_settings
@given(data=st.data())
def test_users(fuzz: Fuzz, data: st.DataObject) -> None:
    args, stdin = data.draw(user_commands())
    fuzz.check(*args, user="alice", input=stdin)


@fuzz_settings
@given(
    name=hostile(*USERS),
    password=hostile(*PASSWORDS.values()).filter(
        lambda p: "\x00" not in p
    ),  # an environment variable cannot hold NUL
    command=st.sampled_from(
        [("report",), ("user", "list"), ("audit", "verify"), ("pharmacy", "list")]
    ),
)
def test_logins(fuzz: Fuzz, name: str, password: str, command: tuple[str, ...]) -> None:
    fuzz.check(f"--user={name}", *command, password=password)


@fuzz_settings
@given(
    reason=hostile("database lock after the last visit", "x"),
    as_role=st.sampled_from(["alice", "ivan"]),
)
def test_lock(fuzz: Fuzz, reason: str, as_role: str) -> None:
    fuzz.check("lock", f"--reason={reason}", user=as_role)


# the audit trail ----------------------------------------------------------------------------


@fuzz_settings
@given(
    since=st.none() | numbers(0, 1, 5),
    limit=st.none() | numbers(1, 3),
    as_role=st.sampled_from(["alice", "mona", "ivan"]),
    as_json=st.booleans(),
)
def test_audit_show(
    fuzz: Fuzz, since: str | None, limit: str | None, as_role: str, as_json: bool
) -> None:
    args = ["audit", "show"]
    if since is not None:
        args.append(f"--since={since}")
    if limit is not None:
        args.append(f"--limit={limit}")
    if as_json:
        args.append("--json")
    fuzz.check(*args, user=as_role, blinded=as_role != "alice")


@dataclass(frozen=True)
class Signing:
    """A real checkpoint note and the key pair that signed it, to mutate."""

    note: str
    public: str
    private: str


def signing_material(fuzz: Fuzz) -> Signing:
    """Made once per trial through the CLI: audit keygen, then audit checkpoint."""
    if fuzz.signing is None:
        pem = fuzz.files.directory / "qa-signing.pem"
        fuzz.check("audit", "keygen", f"--out={pem}")
        note = fuzz.check("audit", "checkpoint", f"--signing-key={pem}", user="alice").stdout
        fuzz.signing = Signing(
            note=note, private=pem.read_text(), public=Path(f"{pem}.pub").read_text()
        )
    return fuzz.signing


def _pem_like(pem: str) -> st.SearchStrategy[str]:
    lines = pem.splitlines(keepends=True)
    return st.one_of(
        hostile(pem),
        st.builds(  # one line of the base64 body changed
            lambda i, piece: "".join(lines[:i] + [piece] + lines[i + 1 :]),
            st.integers(0, len(lines) - 1),
            hostile(*lines),
        ),
    )


@fuzz_settings
@given(
    data=st.data(),
    which=st.sampled_from(["verify", "checkpoint"]),
    raw=st.none() | st.binary(max_size=200),
)
def test_audit_files(fuzz: Fuzz, data: st.DataObject, which: str, raw: bytes | None) -> None:
    real = signing_material(fuzz)
    folder = fuzz.files.directory
    note_file, public_file, private_file = folder / "c.note", folder / "k.pub", folder / "s.pem"
    if which == "verify":
        f = data.draw(
            one_hostile(
                note=(st.just(real.note), hostile(real.note)),
                public=(st.just(real.public), _pem_like(real.public)),
            )
        )
        note_file.write_bytes(raw if raw is not None else f["note"].encode("utf-8"))
        public_file.write_text(f["public"], encoding="utf-8")
        fuzz.check(
            "audit",
            "verify",
            f"--checkpoint={note_file}",
            f"--public-key={public_file}",
            user=data.draw(st.sampled_from(["alice", "mona"])),
        )
    else:
        private = data.draw(_pem_like(real.private))
        private_file.write_bytes(raw if raw is not None else private.encode("utf-8"))
        fuzz.check("audit", "checkpoint", f"--signing-key={private_file}", user="alice")


# files and URLs ----------------------------------------------------------------------------


@fuzz_settings
@given(
    name=hostile("answers.toml", "k.key", "out.csv"),
    which=st.sampled_from(
        ["key-file", "new-key-file", "unblind-out", "csv", "answers", "keygen-out"]
    ),
    content=hostile('age = 45\nprogressive_ms = "yes"\n', '{"age": 45}'),
    suffix=st.sampled_from([".toml", ".json", ""]),
)
def test_paths(fuzz: Fuzz, name: str, which: str, content: str, suffix: str) -> None:
    """Path options below a folder of their own: a refusal leaves the folder empty."""
    folder = fuzz.files.directory / "fuzzed-paths"
    _empty(folder)
    name = name.replace("/", "_")  # stay inside folder: no "../../etc/passwd" here
    path = f"{folder}/{name}{suffix}"
    if which == "key-file":
        result = fuzz.check(f"--key-file={path}", "report", user="alice")
    elif which == "new-key-file":
        # into a directory that does not exist, so rotation must fail ("k" first: pathlib
        # reads "missing/" and "missing/." as the file "missing")
        result = fuzz.check(
            "key", "rotate", f"--new-key-file={folder}/missing/k{name}", user="alice"
        )
        assert result.exit_code != 0
    elif which == "unblind-out":
        result = fuzz.check("unblind", "all", f"--out={path}", user="stan")
    elif which == "csv":
        result = fuzz.check("pharmacy", "list", f"--csv={path}", user="petra")
    elif which == "keygen-out":
        result = fuzz.check("audit", "keygen", f"--out={path}")
    else:
        answers = fuzz.files.directory / f"answers{suffix}"
        answers.write_text(content, encoding="utf-8")
        result = fuzz.check(
            "randomize",
            "--site=WAW",
            f"--answers={answers}",
            "--",
            "P-003",
            user="ivan",
            blinded=True,
        )
    if result.exit_code != 0:
        assert _listing(folder) == [], "a refused command left a file behind"


def _empty(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*"))


@fuzz_settings
@example(url="postgresql+psycopg://@\xad")  # a host IDNA cannot encode: was an internal error
@given(
    url=st.one_of(
        # no "postgresql://" + random text: a random host name would wait on DNS
        hostile("sqlite://", "sqlite:///", "mysql://x", "sqlite:////", "sqlite:///:memory:"),
        st.builds(
            lambda prefix, tail: prefix + tail,
            st.sampled_from(
                [
                    "sqlite:///{tmp}/missing/",
                    "sqlite:///{tmp}/",
                    "sqlite:///",
                    "postgresql+psycopg://x:y@127.0.0.1:1/",
                    "postgresql+psycopg://127.0.0.1:1/db?",
                    "sqlite:///file:",
                ]
            ),
            hostile("trial.db", "db", "x?mode=ro"),
        ),
    )
)
def test_database_urls(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """A hostile --db, with a valid key file so that the database is reached: a clean
    refusal (no trial is there), and no file left behind but, on SQLite, the one the URL
    names: SQLite creates a missing file on connecting, and the refusal leaves it there."""
    work = tmp_path / "work"
    _empty(work)
    monkeypatch.chdir(work)  # a relative SQLite path must not land in the repository
    key_file = tmp_path / "fuzz.key"
    if not key_file.exists():
        write_key_file(key_file, b"k" * 32)
    url = url.replace("{tmp}", str(work))
    args = ("--db", url, "--key-file", str(key_file), "--user", "alice", "audit", "verify")
    environment: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("RANDOMIZER_")
    }
    environment["RANDOMIZER_PASSWORD"] = PASSWORDS["alice"]
    result = run.runner.invoke(cli, args, input="", env=environment, prog_name="randomizer")
    assert_clean(args, result, allowed=(1, 2))
    named = _sqlite_file(url)
    left = [
        p for p in work.rglob("*") if named is None or p.resolve() not in {named, *_siblings(named)}
    ]
    assert not left, f"a refused --db left {left}\n{_describe(args, result)}"


def _sqlite_file(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except Exception:  # any parse failure: then nothing may be created at all
        return None
    if not parsed.drivername.startswith("sqlite") or not parsed.database or "\0" in parsed.database:
        return None
    return Path(parsed.database).resolve()


def _siblings(path: Path) -> set[Path]:
    return {Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal")}


# designs and list previews (no database) -------------------------------------------------


VALID_DESIGN = design_text("exosome-ms")
DESIGN_LINES = VALID_DESIGN.splitlines(keepends=True)
TOML_VALUES = st.one_of(
    st.integers().map(str),
    st.floats().map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    hostile("1", "0.1", "exosome").map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.sampled_from(
        [
            "[]",
            "{}",
            "[1, 2]",
            "[4, 6]",
            '["WAW", "WAW"]',
            "inf",
            "nan",
            "-0",
            "1979-05-27",
            "{ exosome = 1 }",
            '"""\nx"""',
            "'''x'''",
            "0x10",
            "1_000",
        ]
    ),
)


@st.composite
def design_files(draw: st.DrawFn) -> str | bytes:
    """TOML-ish text: mutations of the valid design, or fuzz from scratch."""
    how = draw(
        st.sampled_from(["lines", "value", "splice", "truncate", "scratch", "bytes", "valid"])
    )
    lines = list(DESIGN_LINES)
    if how == "lines":  # drop, duplicate or swap whole lines
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["drop", "dup", "swap"]))
            if op == "drop":
                del lines[i]
            elif op == "dup":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            if not lines:
                break
        return "".join(lines)
    if how == "value":  # replace the value of one "key = value" line
        keyed = [i for i, line in enumerate(lines) if re.match(r"^[a-z_]+ = ", line)]
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.sampled_from(keyed))
            key = lines[i].split(" = ")[0]
            lines[i] = f"{key} = {draw(TOML_VALUES)}\n"
        return "".join(lines)
    if how == "splice":  # (deep nesting has a test of its own below)
        return _splice(
            VALID_DESIGN,
            draw(st.integers(0, len(VALID_DESIGN))),
            draw(st.integers(0, 20)),
            draw(PIECES.filter(lambda p: p not in NESTED)),
        )
    if how == "truncate":
        return VALID_DESIGN[: draw(st.integers(0, len(VALID_DESIGN)))]
    if how == "bytes":  # not necessarily UTF-8
        return draw(st.binary(max_size=300)) + VALID_DESIGN.encode()[: draw(st.integers(0, 99))]
    if how == "scratch":
        return draw(
            st.one_of(
                TEXT,
                HUGE,
                st.sampled_from(HOSTILE),
                st.builds(
                    lambda ls: "".join(ls),
                    st.lists(
                        st.builds(
                            lambda k, v: f"{k} = {v}\n",
                            st.sampled_from(
                                [
                                    "id",
                                    "title",
                                    "ratio",
                                    "block_sizes",
                                    "[trial]",
                                    "[[arms]]",
                                    "[allocation]",
                                ]
                            ),
                            TOML_VALUES,
                        ),
                        max_size=12,
                    ),
                ),
            )
        )
    return VALID_DESIGN


@fuzz_settings
@given(text=design_files(), as_json=st.booleans())
def test_design_check(run: Run, tmp_path: Path, text: str | bytes, as_json: bool) -> None:
    path = tmp_path / "fuzzed-design.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    json_flag = ["--json"] if as_json else []
    args = ["design", "check", *json_flag, "--", str(path)]
    result = run(*args, input="")
    assert_clean(args, result, allowed=(0, 2))
    shown = run("design", "show", *json_flag, "--", str(path), input="")
    assert_clean(["design", "show", str(path)], shown, allowed=(0, 2))
    assert shown.exit_code == result.exit_code  # check and show agree on validity


@pytest.mark.parametrize(
    "value", ["[" * 5000 + "]" * 5000, "{a=" * 3000 + "1" + "}" * 3000], ids=["arrays", "tables"]
)
def test_a_deeply_nested_design_is_malformed_input(run: Run, tmp_path: Path, value: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(
        VALID_DESIGN.replace("block_sizes = [4, 6]", f"block_sizes = {value}"), encoding="utf-8"
    )
    args = ["design", "check", "--", str(path)]
    assert_clean(args, run(*args, input=""), allowed=(2,))


@fuzz_settings
@given(name=hostile("exosome-ms", "exosome-ms.toml"), command=st.sampled_from(["show", "check"]))
def test_design_names(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["design", command, "--", name]
    assert_clean(args, run(*args, input=""), allowed=(0, 2))


SEED = "0123456789abcdef" * 4


def _as_int(text: str) -> int:
    """The number click would read from ``text``, or 0."""
    try:
        return int(text)
    except ValueError:
        return 0


@fuzz_settings
@given(
    fields=one_hostile(
        seed=(st.sampled_from([SEED, SEED.upper(), "f" * 64]), hostile(SEED, SEED.upper())),
        participants=(st.sampled_from([None, "1", "20", "37"]), numbers(1, 20, 200, 10_000_000)),
        design=(st.just("exosome-ms"), hostile("exosome-ms", "exosome-ms.toml")),
    ),
    as_json=st.booleans(),
)
def test_list_preview(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], as_json: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    participants = fields["participants"]
    if participants is not None and 1000 < _as_int(participants) <= 10_000_000:
        participants = "1000"  # a valid but long list costs seconds, not coverage
    args = ["list", "preview", f"--design={fields['design']}", f"--seed={fields['seed']}"]
    if participants is not None:
        args.append(f"--participants={participants}")
    if as_json:
        args.append("--json")
    result = run(*args, input="")
    assert_clean(args, result, allowed=(0, 2))
    assert list(tmp_path.iterdir()) == [], "list preview wrote a file"


@fuzz_settings
@given(
    fields=one_hostile(
        design=(st.just("exosome-ms"), hostile("exosome-ms")),
        admin=(st.sampled_from(["alice", "zed"]), hostile("alice", "zed")),
        password=(
            st.just("a-long-enough-pw-1"),
            hostile("a-long-enough-pw-1").filter(lambda p: "\x00" not in p),
        ),
    )
)
def test_init_over_an_existing_trial(fuzz: Fuzz, fields: dict[str, str]) -> None:
    key = fuzz.files.key_file.read_bytes()
    fuzz.check(
        "init",
        f"--design={fields['design']}",
        f"--admin={fields['admin']}",
        password=fields["password"],
    )
    assert fuzz.files.key_file.read_bytes() == key, "init replaced the trial's key file"

"""The blinded path through a running trial server, every role, all real processes.

One process (``randomizer serve``) holds the key file and the database; every
user works from a machine of their own: a remote CLI process whose
environment names no database and no key file, in an empty working directory,
keeping its login in a token file under its own XDG_STATE_HOME. Runs on
SQLite by default and on PostgreSQL when RANDOMIZER_TEST_DB is set.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.blinded_path import KIT_CODE, days_ago, participant_arms
from tests.support.database import audit_rows
from tests.support.exosome import ARMS, DESIGN, answer_args, arm_words_in
from tests.support.exports import analysis_text
from tests.support.processes import Finished, remote_cli, serve_process
from tests.support.trial import ADMIN, PASSWORDS, USERS, Run, TrialFiles, backdate_list

pytestmark = pytest.mark.slow

DAY0 = days_ago(120)
"""The randomization day: visit 2 (day 84 +/- 7) falls on DAY0 + 84, in the past."""

WEEK12 = (DAY0 + timedelta(days=84)).isoformat()

NOT_LOGGED_IN = "Error: the login is not valid or has expired: log in again\n"
LABEL_OF = {arm.id: arm.label for arm in DESIGN.arms}


SIGNED = frozenset({"randomize", "lock", "unblind", "list", "participant"})
"""Commands (first words) whose action may be signed: the password is given to sign."""


@dataclass
class Person:
    """One user at a machine of their own: an empty working directory and a state directory."""

    name: str
    server: str
    home: Path
    state: Path

    def __call__(
        self,
        *args: str,
        password: str | None = None,
        input: str | None = None,
        user: str | None = None,
    ) -> Finished:
        """The remote CLI as this person (their saved login unless a password is given).

        A signed command gets this person's password to sign with (their saved login
        still does for the rest).
        """
        if password is None and user is None and args and args[0] in SIGNED:
            password = PASSWORDS[self.name]
        return remote_cli(
            self.server,
            *args,
            cwd=self.home,
            state_home=self.state,
            user=user,
            password=password,
            input=input,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        """Run and assert success; returns stdout."""
        done = self(*args, **kwargs)
        assert done.code == 0, (args, done)
        assert done.stderr == "", (args, done)
        return done.stdout

    def refused(self, code: int, message: str, *args: str) -> None:
        """Run and assert one ``Error:`` line, exactly ``message``, and the exit code."""
        done = self(*args)
        assert (done.code, done.stderr, done.stdout) == (code, f"Error: {message}\n", ""), (
            args,
            done,
        )

    @property
    def token_file(self) -> Path:
        """Where this person's login to the server is kept."""
        port = self.server.rsplit(":", 1)[1]
        return self.state / "randomizer" / f"http-127.0.0.1-{port}.token"

    def login(self) -> str:
        """``randomizer login`` with the password; checks the token file; returns the token."""
        out = self.ok("login", user=self.name, password=PASSWORDS[self.name])
        assert out == (
            f"Logged in to {self.server} as {self.name}; token kept in {self.token_file}.\n"
        )
        assert stat.S_IMODE(self.token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(self.token_file.parent.stat().st_mode) == 0o700
        saved = json.loads(self.token_file.read_text(encoding="utf-8"))
        assert saved["user"] == self.name and saved["server"] == self.server
        token: str = saved["token"]
        return token


def _no_arm(text: str, who: str) -> None:
    assert not arm_words_in(text), f"{who} was shown an arm: {text!r}"


def test_the_blinded_path_through_a_running_server(
    run: Run, initialized_trial: TrialFiles, tmp_path: Path
) -> None:
    files = initialized_trial
    tokens: dict[str, str] = {}
    with serve_process(files.db_url, files.key_file) as url:
        people = {}
        for name in USERS:
            home, state = tmp_path / name / "work", tmp_path / name / "state"
            home.mkdir(parents=True)
            people[name] = Person(name, url, home, state)
        alice, ivan, petra, stan, mona = (
            people[n] for n in ("alice", "ivan", "petra", "stan", "mona")
        )

        # the admin adds the users and generates the list ------------------------------
        tokens["alice"] = alice.login()
        for name, role in USERS.items():
            if name != ADMIN:
                assert (
                    alice.ok(
                        "user",
                        "add",
                        name,
                        "--role",
                        role,
                        "--password-stdin",
                        input=PASSWORDS[name] + "\n",
                    )
                    == f"User {name} added as {role}.\n"
                )
        generated = alice.ok("list", "generate")
        assert generated.startswith("Allocation list generated.\n")
        kit_count = re.search(
            r"\nKits: (\d+) \(8 spares\)\nList commitment: [0-9a-f]{64}\n$", generated
        )
        assert kit_count, generated  # the list runs past 20 slots when a block does
        backdate_list(files)  # the story's randomizations are dated months ago
        # go-live: a second person approves the draft list (its generator may not)
        alice.refused(
            1,
            "user alice generated the allocation list and may not approve it: a second "
            "admin or statistician reviews and approves it",
            "list",
            "approve",
        )
        tokens["stan"] = stan.login()
        approved = stan.ok("list", "approve")
        assert approved.startswith("Allocation list approved by stan at ")

        # the investigator randomizes, requests and replaces kits -----------------------
        tokens["ivan"] = ivan.login()
        kits: dict[str, str] = {}
        for n in range(1, 5):
            out = ivan.ok(
                "randomize", f"P-00{n}", "--site", "WAW", *answer_args(), "--date", DAY0.isoformat()
            )
            found = re.fullmatch(
                rf"Participant P-00{n} randomized at WAW: randomization "
                rf"number R-00{n}\.\nVisit 1 kit: ({KIT_CODE.pattern})\n",
                out,
            )
            assert found, out
            kits[f"P-00{n}"] = found.group(1)
        ivan.refused(
            1,
            "participant P-001 is already randomized as R-001",
            "randomize",
            "P-001",
            "--site",
            "WAW",
            *answer_args(),
        )
        ivan.refused(
            1,
            "participant P-005 is not eligible, no slot used: age: answered 12, "
            "must be 18 to 65 (Age in years at screening)",
            "randomize",
            "P-005",
            "--site",
            "WAW",
            *answer_args(age="12"),
        )
        first = ivan.ok("kit", "request", "P-001", "--visit", "2", "--date", WEEK12)
        code = first.split("kit ")[1].strip()
        assert first == f"P-001 (R-001) visit 2 (Week 12) on {WEEK12}: kit {code}\n"
        assert (
            ivan.ok("kit", "request", "P-001", "--visit", "2", "--date", WEEK12)
            == f"P-001 (R-001) visit 2 (Week 12) on {WEEK12}: kit {code} (issued earlier)\n"
        )
        replaced = ivan.ok("kit", "replace", code, "--reason", "bag punctured")
        spare = replaced.rsplit("use kit ", 1)[1].strip()
        assert replaced == f"Kit {code} voided. P-001 visit 2: use kit {spare}\n"
        for text in (first, replaced):
            _no_arm(text, "the investigator")
        arms = participant_arms(files)  # as the key holder, behind the server's back
        assert set(arms.values()) == set(ARMS)
        unblinded = ivan.ok("unblind", "emergency", "P-002", "--reason", "anaphylaxis")
        assert unblinded == (
            f"EMERGENCY UNBLINDING of P-002 (R-002): "
            f"{LABEL_OF[arms['P-002']]} [{arms['P-002']}]. This has been "
            "recorded with your reason.\n"
        )

        # the pharmacist prepares and lists kits ------------------------------------------
        tokens["petra"] = petra.login()
        prepared = petra.ok("pharmacy", "prepare", spare)
        assert prepared.startswith(
            f"Kit {spare} for P-001 (R-001), visit 2 (Week 12)\n"
            f"CONTENT: {LABEL_OF[arms['P-001']]} [{arms['P-001']}]\n"
        )
        listing = petra.ok("pharmacy", "list", "--csv", "kits.csv")
        rows = {line.split()[0]: line for line in listing.splitlines()[2:]}
        assert len(rows) == int(kit_count.group(1))  # a replacement issues one of the spares
        assert " voided " in rows[code] and " prepared " in rows[spare]
        assert stat.S_IMODE((petra.home / "kits.csv").stat().st_mode) == 0o600
        with (petra.home / "kits.csv").open(encoding="utf-8", newline="") as handle:
            by_code = {row["kit"]: row for row in csv.DictReader(handle)}
        assert by_code[spare]["arm"] == arms["P-001"]

        # the monitor reads the report and the trail; a blinded role sees no arm -----------
        tokens["mona"] = mona.login()
        report = mona.ok("report")
        assert report.startswith(
            "Trial exosome-ms: 4 of 20 planned randomized; 1 screen "
            "failures; 1 emergency unblindings\n"
        )
        trail = mona.ok("audit", "show")
        verified = mona.ok("audit", "verify")
        for text in (report, trail, verified):
            _no_arm(text, "the monitor")
        assert "Balance by arm" not in report
        assert re.fullmatch(
            r"Audit trail verified: \d+ events, head [0-9a-f]{16}\.\.\.\n", verified
        )

        # a checkpoint signed on the admin's machine, verified on the monitor's ---------
        assert alice.ok("audit", "keygen", "--out", "qa.pem").startswith(
            "Signing key written to qa.pem (mode 0600)"
        )
        note = alice.ok("audit", "checkpoint", "--signing-key", "qa.pem")
        assert note.startswith("randomizer audit checkpoint v1\ntrial: exosome-ms\n")
        (mona.home / "2026-q4.note").write_text(note, encoding="utf-8")
        shutil.copy(alice.home / "qa.pem.pub", mona.home / "qa.pub")
        head = re.search(r"^sequence: (\d+)$", note, re.M)
        assert head, note
        anchored = mona.ok(
            "audit", "verify", "--checkpoint", "2026-q4.note", "--public-key", "qa.pub"
        )
        assert anchored.endswith(f"; signed checkpoint at event {head.group(1)} holds\n")

        # the statistician waits for the lock, then exports --------------------------------
        stan.refused(
            1,
            "role statistician may unblind the whole trial only after the database lock",
            "unblind",
            "all",
            "--out",
            "final.csv",
        )
        assert not (stan.home / "final.csv").exists()
        _no_arm(stan.ok("report"), "the statistician before the lock")
        locked = alice.ok("lock", "--reason", "last participant's week 48 visit done")
        assert re.fullmatch(
            r"Trial exosome-ms locked at \S+Z by alice with 4 participants\. "
            r"Statisticians may now run 'randomizer unblind all'\.\n",
            locked,
        )
        ivan.refused(
            1,
            "the database is locked: no more randomization",
            "randomize",
            "P-006",
            "--site",
            "WAW",
            *answer_args(),
        )
        exported = stan.ok("unblind", "all", "--out", "final.csv")
        export = stan.home / "final.csv"
        digest = hashlib.sha256(export.read_bytes()).hexdigest()
        assert exported == (
            f"Wrote 4 participants to final.csv\nSHA-256: {digest}\n"
            + analysis_text(Path("final.csv"), stan.home)
        )
        assert stat.S_IMODE(export.stat().st_mode) == 0o600
        table = list(csv.DictReader(io.StringIO(export.read_text(encoding="utf-8"))))
        assert {row["participant"]: row["arm"] for row in table} == arms
        assert {row["participant"]: row["emergency_unblinded"] for row in table} == {
            "P-001": "no",
            "P-002": "yes",
            "P-003": "no",
            "P-004": "no",
        }
        assert f"2:{code}(voided) 2:{spare}" in table[0]["kits"]

        # logout: the token file goes and the token stops working ---------------------------
        for person in people.values():
            assert person.ok("logout") == f"Logged out of {url}.\n"
            assert not person.token_file.exists()
        stolen = {"server": url, "user": "ivan", "token": tokens["ivan"]}
        ivan.token_file.write_text(json.dumps(stolen), encoding="utf-8")
        done = ivan("report")
        assert (done.code, done.stdout, done.stderr) == (1, "", NOT_LOGGED_IN)
        answer = httpx.get(
            f"{url}/api/v1/report",
            timeout=10,
            headers={"Authorization": f"Bearer {tokens['ivan']}"},
        )
        assert answer.status_code == 401

    # nobody's machine holds a database, a key file or a token --------------------------------
    for person in people.values():
        left = {p.name for p in person.home.iterdir()}
        assert not left & {"randomizer.db", "randomizer.key"}, left
    assert {p.name for p in alice.home.iterdir()} == {"qa.pem", "qa.pem.pub"}

    # the trail: every request names its channel, token id and client; start and stop ---
    events = audit_rows(files.db_url)
    starts = [i for i, e in enumerate(events) if e["action"] == "server.start"]
    assert len(starts) == 1
    served, stop = events[starts[0] + 1 : -1], events[-1]
    assert stop["action"] == "server.stop" and stop["user"] == "(server)"
    assert stop["details"]["pid"] == events[starts[0]]["details"]["pid"]
    sessions: dict[str, set[str]] = {}
    for event in served:
        via = event["details"]["via"]
        assert via["channel"] == "api" and via["client"] == "127.0.0.1", event
        assert re.fullmatch(r"[0-9a-f]{16}", via["session"]), event
        sessions.setdefault(event["user"], set()).add(via["session"])
    assert {user: len(ids) for user, ids in sessions.items()} == {name: 1 for name in USERS}
    logins = {
        e["user"]: e["details"]["via"]["session"] for e in served if e["action"] == "auth.login"
    }
    assert logins == {user: ids.pop() for user, ids in sessions.items()}
    actions = [e["action"] for e in served]
    for action in (
        "user.add",
        "list.generate",
        "randomize",
        "screen_failure",
        "kit.request",
        "kit.replace",
        "unblind.emergency",
        "pharmacy.prepare",
        "pharmacy.list",
        "report",
        "audit.verify",
        "audit.checkpoint",
        "lock",
        "unblind.all",
    ):
        assert action in actions, action
    assert actions.count("auth.logout") == len(USERS)
    trail = json.dumps(events)
    for secret in (*tokens.values(), (alice.home / "qa.pem").read_text(encoding="utf-8")):
        assert secret not in trail
    for event in events:  # the monitor reads it all: no arm anywhere
        assert arm_words_in(json.dumps(event, ensure_ascii=False)) == [], event
    assert run.ok("audit", "verify", user=ADMIN).stdout.startswith("Audit trail verified:")

"""Per-site rights from the command line: ``user add --site``, ``user sites``, ``participant
list``, and refusals for another site's participant that read exactly as for a missing one."""

from __future__ import annotations

import json
from datetime import date, timedelta

from click.testing import Result

from tests.support.assertions import assert_error
from tests.support.database import audit_rows
from tests.support.exosome import answer_args
from tests.support.sites import SITE_PASSWORDS
from tests.support.trial import ADMIN, Run, TrialFiles

START = date.today() - timedelta(days=100)


def _as(run: Run, user: str, *args: str) -> Result:
    return run(*args, user=user, password=SITE_PASSWORDS[user])


def _randomize(run: Run, user: str, participant: str, site: str) -> None:
    result = _as(
        run,
        user,
        "randomize",
        participant,
        "--site",
        site,
        "--date",
        START.isoformat(),
        *answer_args(),
    )
    assert result.exit_code == 0, result.output


def test_another_sites_participant_is_refused_byte_for_byte_as_a_missing_one(
    two_sites: TrialFiles, run: Run
) -> None:
    commands = [
        ("kit", "request", "P-201", "--visit", "2"),
        ("unblind", "emergency", "P-201", "--reason", "anaphylaxis"),
    ]
    missing = [_as(run, "wanda", *command) for command in commands]
    _randomize(run, "kris", "P-201", "KRK")
    other_site = [_as(run, "wanda", *command) for command in commands]
    for before, after in zip(missing, other_site, strict=True):
        assert assert_error(after, 1) == "participant P-201 is not randomized in this trial"
        assert (after.exit_code, after.stdout, after.stderr) == (
            before.exit_code,
            before.stdout,
            before.stderr,
        )
    refused = [e for e in audit_rows(two_sites.db_url) if e["user"] == "wanda"]
    assert [e["action"] for e in refused] == ["refused"] * 4
    assert [(e["subject"], e["details"]) for e in refused[:2]] == [
        (e["subject"], e["details"]) for e in refused[2:]
    ]


def test_an_investigator_limited_to_a_site_randomizes_only_there(
    two_sites: TrialFiles, run: Run
) -> None:
    result = _as(
        run,
        "wanda",
        "randomize",
        "P-102",
        "--site",
        "KRK",
        "--date",
        START.isoformat(),
        *answer_args(),
    )
    assert assert_error(result, 1) == (
        "user wanda may not randomize participants at site KRK: limited to site WAW"
    )
    _randomize(run, "wanda", "P-101", "WAW")
    _randomize(run, "kris", "P-201", "KRK")
    report = json.loads(_as(run, "wanda", "report", "--json").stdout)
    assert (report["randomized"], report["by_site"]) == (1, {"WAW": 1})
    listing = _as(run, "wanda", "participant", "list").stdout.splitlines()
    assert listing[0].split() == [
        "participant",
        "number",
        "site",
        "visits",
        "done",
        "last",
        "visit",
        "next",
        "visit",
        "window",
    ]
    assert [line.split()[:4] for line in listing[2:]] == [["P-101", "R-001", "WAW", "1"]]
    assert "2 (Week 12)" in listing[2]
    everyone = json.loads(_as(run, "ivan", "participant", "list", "--json").stdout)
    assert [p["participant"] for p in everyone] == ["P-101", "P-201"]
    assert_error(
        _as(run, "wanda", "participant", "list", "--site", "KRK"),
        1,
        "user wanda may not see participants at site KRK",
    )


def test_user_add_with_sites_and_user_sites(two_sites: TrialFiles, run: Run) -> None:
    added = run(
        "user",
        "add",
        "nina",
        "--role",
        "investigator",
        "--site",
        "WAW",
        "--site",
        "KRK",
        "--password-stdin",
        user=ADMIN,
        input="pw-nina-123456\n",
    )
    assert added.stdout == "User nina added as investigator, limited to site KRK, WAW.\n"
    shown = run.ok("user", "sites", "nina", user=ADMIN).stdout
    assert shown == "User nina (investigator) is limited to site KRK, WAW.\n"
    changed = run.ok("user", "sites", "nina", "--set", "KRK", user=ADMIN).stdout
    assert changed == "User nina is now limited to site KRK.\n"
    lifted = run.ok("user", "sites", "nina", "--trial-wide", "--json", user=ADMIN).stdout
    assert json.loads(lifted)["sites"] == []
    users = run.ok("user", "list", user=ADMIN).stdout.splitlines()
    assert users[0].split() == ["user", "role", "status", "created", "sites"]
    rows = {line.split()[0]: line.split()[-1] for line in users[2:]}
    assert (rows["wanda"], rows["kris"], rows["nina"], rows["ivan"]) == ("WAW", "KRK", "all", "all")
    assert_error(
        run("user", "sites", "nina", "--set", "GDA", user=ADMIN),
        2,
        "site 'GDA' is not a site of this trial",
    )
    assert_error(
        run("user", "sites", "nina", user="ivan"), 1, "role investigator may not manage users"
    )
    assert_error(
        run("user", "sites", "nina", "--set", "WAW", "--trial-wide", user=ADMIN),
        2,
        "not both",
    )
    events = [e for e in audit_rows(two_sites.db_url) if e["action"] == "user.sites"]
    assert [e["details"]["after"]["sites"] for e in events if e["subject"] == "nina"] == [
        ["KRK"],
        [],
    ]

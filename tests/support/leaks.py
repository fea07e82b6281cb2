"""The blinded-output leak matrix shared by the local and the remote leak tests.

Every command a blinded role may run (and the ones it may not), as a case to run
through the local CLI or through ``--server``; the trial they run against, with
every kind of event in its trail; and the refusals to compare between arms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from click.testing import Result

from tests.support.assertions import assert_ok
from tests.support.blinded_path import FOUR_DAY0, live_kit, one_per_arm
from tests.support.exosome import answer_args
from tests.support.trial import Run


class Invoke(Protocol):
    """The local or the remote CLI runner: argv as a user, a click Result."""

    def __call__(self, *args: str, user: str | None = None) -> Result: ...


DAY0 = FOUR_DAY0


def on(offset: int) -> str:
    """The day ``offset`` days after :data:`DAY0`, as ISO text."""
    return (DAY0 + timedelta(days=offset)).isoformat()


# (name, user, argv builder, expected exit code); argv may use the trial's facts
Case = tuple[str, str, Callable[["Facts"], tuple[str, ...]], int]


@dataclass
class Facts:
    """Participant ids and kit codes the commands below refer to."""

    first: str
    second: str
    kit: str
    voided: str
    note: str
    public_key: str
    out: str
    dummy_out: str


INVESTIGATOR: list[Case] = [
    (
        "randomize",
        "ivan",
        lambda f: (
            "randomize",
            "P-101",
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
        ),
        0,
    ),
    (
        "randomize-json",
        "ivan",
        lambda f: (
            "randomize",
            "P-102",
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
            "--json",
        ),
        0,
    ),
    (
        "randomize-twice",
        "ivan",
        lambda f: (
            "randomize",
            f.first,
            "--site",
            "WAW",
            *answer_args(),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    (
        "randomize-ineligible",
        "ivan",
        lambda f: (
            "randomize",
            "P-103",
            "--site",
            "WAW",
            *answer_args(edss="9"),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    (
        "randomize-bad-answer",
        "ivan",
        lambda f: ("randomize", "P-104", "--site", "WAW", *answer_args(age="abc")),
        2,
    ),
    (
        "kit-request",
        "ivan",
        lambda f: ("kit", "request", f.first, "--visit", "2", "--date", on(84)),
        0,
    ),
    (
        "kit-request-repeat-json",
        "ivan",
        lambda f: ("kit", "request", f.first, "--visit", "1", "--json"),
        0,
    ),
    (
        "kit-request-out-of-order",
        "ivan",
        lambda f: ("kit", "request", f.second, "--visit", "3", "--date", on(90)),
        1,
    ),
    (
        "kit-request-outside-window",
        "ivan",
        lambda f: ("kit", "request", f.second, "--visit", "2", "--date", on(95)),
        1,
    ),
    (
        "kit-request-override-json",
        "ivan",
        lambda f: (
            "kit",
            "request",
            f.second,
            "--visit",
            "2",
            "--date",
            on(95),
            "--override-window",
            "--reason",
            "hospitalised",
            "--json",
        ),
        0,
    ),
    (
        "kit-replace-json",
        "ivan",
        lambda f: ("kit", "replace", f.kit, "--reason", "dropped", "--json"),
        0,
    ),
    (
        "kit-replace-voided",
        "ivan",
        lambda f: ("kit", "replace", f.voided, "--reason", "dropped"),
        1,
    ),
    (
        "kit-replace-typo",
        "ivan",
        lambda f: ("kit", "replace", "0000-0001", "--reason", "dropped"),
        2,
    ),
    ("report", "ivan", lambda f: ("report",), 0),
    ("report-json", "ivan", lambda f: ("report", "--json"), 0),
    ("participant-list", "ivan", lambda f: ("participant", "list"), 0),
    ("participant-list-json", "ivan", lambda f: ("participant", "list", "--json"), 0),
    (
        "emergency-no-reason",
        "ivan",
        lambda f: ("unblind", "emergency", f.first, "--reason", " "),
        2,
    ),
    ("audit-show", "ivan", lambda f: ("audit", "show"), 1),
    ("audit-verify", "ivan", lambda f: ("audit", "verify"), 1),
    ("list-verify", "ivan", lambda f: ("list", "verify"), 1),
    ("unblind-all", "ivan", lambda f: ("unblind", "all", "--out", f.out), 1),
    ("unblind-dummy", "ivan", lambda f: ("unblind", "dummy", "--out", f.dummy_out), 1),
    ("pharmacy-prepare", "ivan", lambda f: ("pharmacy", "prepare", f.kit), 1),
    ("pharmacy-list", "ivan", lambda f: ("pharmacy", "list", "--json"), 1),
]

STATISTICIAN: list[Case] = [
    ("report", "stan", lambda f: ("report",), 0),
    ("report-json", "stan", lambda f: ("report", "--json"), 0),
    ("participant-list", "stan", lambda f: ("participant", "list"), 1),
    ("list-verify", "stan", lambda f: ("list", "verify"), 1),
    ("list-verify-json", "stan", lambda f: ("list", "verify", "--json"), 1),
    ("unblind-all", "stan", lambda f: ("unblind", "all", "--out", f.out), 1),
    (
        "unblind-dummy",
        "stan",
        lambda f: ("unblind", "dummy", "--out", f.dummy_out.replace(".csv", "-stan.csv")),
        0,
    ),
    ("audit-show", "stan", lambda f: ("audit", "show"), 1),
    ("randomize", "stan", lambda f: ("randomize", "P-201", "--site", "WAW", *answer_args()), 1),
    ("kit-request", "stan", lambda f: ("kit", "request", f.first, "--visit", "1"), 1),
    ("emergency", "stan", lambda f: ("unblind", "emergency", f.first, "--reason", "curious"), 1),
    ("pharmacy-list", "stan", lambda f: ("pharmacy", "list"), 1),
]

MONITOR: list[Case] = [
    ("report", "mona", lambda f: ("report",), 0),
    ("review-list", "mona", lambda f: ("unblind", "review", "list", "--all"), 0),
    ("review-list-json", "mona", lambda f: ("unblind", "review", "list", "--json"), 0),
    (
        "review-close-json",
        "mona",
        lambda f: ("unblind", "review", "close", "1", "--note", "checked", "--json"),
        0,
    ),
    ("report-json", "mona", lambda f: ("report", "--json"), 0),
    ("participant-list", "mona", lambda f: ("participant", "list", "--site", "WAW"), 0),
    ("audit-show", "mona", lambda f: ("audit", "show"), 0),
    ("audit-show-json", "mona", lambda f: ("audit", "show", "--json"), 0),
    ("audit-verify", "mona", lambda f: ("audit", "verify"), 0),
    (
        "audit-verify-checkpoint-json",
        "mona",
        lambda f: (
            "audit",
            "verify",
            "--checkpoint",
            f.note,
            "--public-key",
            f.public_key,
            "--json",
        ),
        0,
    ),
    ("list-verify", "mona", lambda f: ("list", "verify"), 1),
    ("unblind-all", "mona", lambda f: ("unblind", "all", "--out", f.out), 1),
    ("unblind-dummy", "mona", lambda f: ("unblind", "dummy", "--out", f.dummy_out), 1),
    ("emergency", "mona", lambda f: ("unblind", "emergency", f.first, "--reason", "curious"), 1),
    ("randomize", "mona", lambda f: ("randomize", "P-301", "--site", "WAW", *answer_args()), 1),
    ("kit-request", "mona", lambda f: ("kit", "request", f.first, "--visit", "1"), 1),
    ("kit-replace", "mona", lambda f: ("kit", "replace", f.kit, "--reason", "x"), 1),
    ("pharmacy-prepare", "mona", lambda f: ("pharmacy", "prepare", f.kit), 1),
]

CASES = [*INVESTIGATOR, *STATISTICIAN, *MONITOR]


REFUSALS: list[tuple[str, Callable[[str], tuple[str, ...]], int]] = [
    (
        "randomize-twice",
        lambda p: ("randomize", p, "--site", "WAW", *answer_args(), "--date", DAY0.isoformat()),
        1,
    ),
    (
        "randomize-twice-ineligible",
        lambda p: (
            "randomize",
            p,
            "--site",
            "WAW",
            *answer_args(edss="8"),
            "--date",
            DAY0.isoformat(),
        ),
        1,
    ),
    ("out-of-order", lambda p: ("kit", "request", p, "--visit", "3", "--date", on(84)), 1),
    ("outside-window", lambda p: ("kit", "request", p, "--visit", "2", "--date", on(70)), 1),
    ("visit-5", lambda p: ("kit", "request", p, "--visit", "5"), 2),
    ("empty-reason", lambda p: ("unblind", "emergency", p, "--reason", ""), 2),
]


def prepare(run: Run, invoke: Invoke, directory: Path) -> tuple[Facts, dict[str, str]]:
    """Give the trial of ``run`` participants of both arms and every kind of event
    (replacement, preparation, pharmacy list, an emergency unblinding, a checkpoint),
    acting through ``invoke``; the facts the cases refer to, and arm -> participant.
    """
    files = run.files
    by_arm = one_per_arm(run, DAY0)
    first, second = sorted(by_arm.values())[:2]
    voided = live_kit(files, second, 1)
    assert_ok(invoke("kit", "replace", voided, "--reason", "damaged", user="ivan"))
    assert_ok(invoke("pharmacy", "prepare", live_kit(files, second, 1), user="petra"))
    assert_ok(invoke("pharmacy", "list", user="petra"))
    last = sorted(by_arm.values())[-1]
    emergency = ("unblind", "emergency", last, "--reason", "serious adverse event")
    assert_ok(invoke(*emergency, user="ivan"))
    signing = directory / "qa.pem"
    assert_ok(invoke("audit", "keygen", "--out", str(signing), user="alice"))
    checkpoint = invoke("audit", "checkpoint", "--signing-key", str(signing), user="alice")
    assert_ok(checkpoint)
    note = directory / "checkpoint.note"
    note.write_text(checkpoint.stdout, encoding="utf-8")
    facts = Facts(
        first=first,
        second=second,
        kit=live_kit(files, first, 1),
        voided=voided,
        note=str(note),
        public_key=f"{signing}.pub",
        out=str(directory / "export.csv"),
        dummy_out=str(directory / "dummy-export.csv"),
    )
    return facts, by_arm

"""``randomizer demo``: the first trial played end to end on the embedded SQLite.

Every step is a real CLI command run in this process, printed as the user
would type it and followed by what they would see.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sqlite3
import sys
from datetime import date, timedelta
from pathlib import Path

import click

from randomizer.commands.base import Settings, pass_settings
from randomizer.errors import InvalidInput

USERS = {"alice": "admin", "ivan": "investigator", "petra": "pharmacist",
         "stan": "statistician", "mona": "monitor"}
PARTICIPANTS = 20
KIT_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}\b")


def _password(user: str) -> str:
    return f"demo-{user}-password"


class _Player:
    """Runs CLI commands in-process against the demo directory and prints them."""

    def __init__(self, root: click.Command, folder: Path) -> None:
        self.root = root
        self.base = ["--db", f"sqlite:///{folder / 'trial.db'}",
                     "--key-file", str(folder / "trial.key")]

    def run(self, user: str | None, *args: str, expect: int = 0, show: bool = True,
            stdin: str | None = None) -> str:
        """Run one command as ``user``; print it and its output when ``show``; return stdout."""
        shown = " ".join(shlex.quote(a) for a in args)
        if show:
            click.echo(f"\n{f'[{user}] ' if user else ''}$ randomizer {shown}")
        argv = [*self.base, *(["--user", user] if user else []), *args]
        out = io.StringIO()
        saved_stdin = sys.stdin
        os.environ["RANDOMIZER_PASSWORD"] = _password(user or "alice")
        try:
            if stdin is not None:
                sys.stdin = io.StringIO(stdin)
            with contextlib.redirect_stdout(out):
                self.root.main(args=argv, prog_name="randomizer", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            sys.stdin = saved_stdin
            os.environ.pop("RANDOMIZER_PASSWORD", None)
        if show:
            click.echo(out.getvalue(), nl=False)
        if code != expect:
            raise click.ClickException(f"demo step failed (exit {code}, expected {expect}): "
                                       f"randomizer {shown}")
        return out.getvalue()


def _date_list_back(db: Path, day: date) -> None:
    """Date the list's generation back to ``day`` in the demo's own database.

    The demo plays in a minute a trial that began 420 days ago, and no participant may be
    randomized before the list was generated. Its ``list.generate`` event keeps the real time.
    """
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.execute("UPDATE trial SET list_generated_at = ?",
                               (f"{day.isoformat()} 00:00:00.000000",))
    finally:
        connection.close()


def _kit_code(output: str) -> str:
    return str(KIT_CODE.findall(output)[-1])


def _answers(n: int) -> list[str]:
    age = 28 + (n * 7) % 35
    edss = 3.0 + (n % 8) * 0.5
    return ["--answer", f"age={age}", "--answer", "progressive_ms=yes",
            "--answer", f"edss={edss:g}", "--answer", "recent_relapse_or_steroids=no",
            "--answer", "other_neuro_autoimmune=no", "--answer", "infection_malignancy_systemic=no"]


@click.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-trial"), show_default=True,
              help="Empty directory for the demo database, key and exports.")
@click.option("--quiet", is_flag=True, help="Print only the main steps and the final balance.")
@pass_settings
def demo(settings: Settings, folder: Path, quiet: bool) -> None:
    """Play the exosome-ms trial end to end: 20 participants, 80 infusions, lock, unblinding.

    Example: randomizer demo --dir demo-trial
    """
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"{folder} is not empty: the demo starts from an empty directory")
    folder.mkdir(parents=True, exist_ok=True)
    root = click.get_current_context().find_root().command
    play = _Player(root, folder)
    verbose = not quiet
    click.echo(f"Demo of the exosome-ms trial in {folder}/ (SQLite). Demo passwords are "
               "'demo-<user>-password'.")
    play.run(None, "init", "--design", "exosome-ms", "--admin", "alice")
    for name, role in USERS.items():
        if role != "admin":
            play.run("alice", "user", "add", name, "--role", role, "--password-stdin",
                     stdin=_password(name) + "\n", show=verbose)
    play.run("alice", "list", "generate")

    start = date.today() - timedelta(days=420)
    _date_list_back(folder / "trial.db", start - timedelta(days=7))
    click.echo("\n# Screening: one candidate fails eligibility (EDSS 7.0) and uses no slot.")
    play.run("ivan", "randomize", "P-000", "--site", "WAW", *_answers(0)[:4],
             "--answer", "edss=7.0", *_answers(0)[6:], "--date", start.isoformat(), expect=1)

    # A realistic calendar: one randomization a week, infusions at weeks 0/12/24/36
    # (a few days off target, inside the +/-7 day window), every step in date order.
    steps: list[tuple[date, int, str, int]] = []
    for n in range(1, PARTICIPANTS + 1):
        day0 = start + timedelta(days=7 * (n - 1) + (n % 3))
        for visit, offset in ((1, 0), (2, 84), (3, 168), (4, 252)):
            drift = 0 if visit == 1 else (n + visit) % 5 - 2
            steps.append((day0 + timedelta(days=offset + drift), n, "visit", visit))
    steps.sort()
    for when, n, _kind, visit in steps:
        pid = f"P-{n:03d}"
        if visit == 1:
            out = play.run("ivan", "randomize", pid, "--site", "WAW", *_answers(n),
                           "--date", when.isoformat(), show=verbose or n <= 2)
        else:
            out = play.run("ivan", "kit", "request", pid, "--visit", str(visit), "--date",
                           when.isoformat(), show=verbose or (n == 1 and visit == 2))
        kit = _kit_code(out)
        if n == 5 and visit == 2:
            click.echo("\n# The week-12 kit of P-005 arrives damaged: it is replaced.")
            replaced = play.run("ivan", "kit", "replace", kit, "--reason",
                                "infusion bag damaged in transit")
            click.echo("\n# The pharmacy scans the voided kit by mistake and is stopped:")
            play.run("petra", "pharmacy", "prepare", kit, expect=1)
            kit = _kit_code(replaced)
        play.run("petra", "pharmacy", "prepare", kit, show=verbose or (n == 1 and visit == 1))
        if n == 11 and visit == 3:
            click.echo("\n# P-011 has a serious adverse reaction: the investigator breaks "
                       "the code for P-011 alone, at once, with a reason.")
            play.run("ivan", "unblind", "emergency", pid, "--reason",
                     "suspected anaphylaxis; treating physician needs to know the product")
    click.echo("\n# Blinded views stay blinded: the monitor's report has no arm in it.")
    play.run("mona", "report")
    play.run("mona", "audit", "verify")
    click.echo("\n# A statistician cannot unblind before the lock.")
    play.run("stan", "unblind", "all", "--out", str(folder / "too-early.csv"), expect=1)
    play.run("alice", "lock", "--reason", "last participant completed week 48; data cleaned")
    play.run("ivan", "randomize", "P-021", "--site", "WAW", *_answers(21), expect=1)
    play.run("stan", "unblind", "all", "--out", str(folder / "final-unblinding.csv"))
    play.run("stan", "list", "verify")
    play.run("alice", "audit", "keygen", "--out", str(folder / "qa-signing.pem"))
    note = folder / "checkpoint.note"
    click.echo(f"\n[alice] $ randomizer audit checkpoint --signing-key {folder}/qa-signing.pem "
               f"> {note}")
    note.write_text(play.run("alice", "audit", "checkpoint", "--signing-key",
                             str(folder / "qa-signing.pem"), show=False), encoding="utf-8")
    play.run("mona", "audit", "verify", "--checkpoint", str(note), "--public-key",
             str(folder / "qa-signing.pem.pub"))
    click.echo("\n# Final balance (admin view, after lock):")
    play.run("alice", "report")


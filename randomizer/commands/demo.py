"""``randomizer demo``: the first trial played end to end on the embedded SQLite.

Every step is a real CLI command run in this process, printed as the user
would type it and followed by what they would see, its ``Error:`` line
included: the whole story goes to standard output, so ``randomizer demo >
out.txt`` keeps the intended refusals too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

import click
import httpx

import randomizer
from randomizer.commands.base import Settings, pass_settings
from randomizer.errors import InvalidInput

USERS = {
    "alice": "admin",
    "ivan": "investigator",
    "petra": "pharmacist",
    "stan": "statistician",
    "mona": "monitor",
}
PARTICIPANTS = 20
KIT_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}\b")
SERVER_START_WAIT = 60.0
"""Seconds the demo's server may take to answer its first request."""


def _password(user: str) -> str:
    return f"demo-{user}-password"


_SIGNING = frozenset({"login", "randomize", "lock", "unblind", "list", "participant"})
"""Commands (first words) a remote user types a password for: the login, and those whose
actions are signed (randomize, lock, unblind emergency|all, list approve, participant void)."""


class _Player:
    """Runs CLI commands in-process against the demo directory and prints them.

    A logged-in user's commands go through the trial server (``--server``), with
    that user's token, no password, and a token folder of their own as on their
    own machine; every other command runs on the host with the key file and the
    database. Each printed step says where: ``[host ...]`` or ``[remote NAME]``.
    """

    def __init__(self, root: click.Command, folder: Path) -> None:
        self.root = root
        self.base = [
            "--db",
            f"sqlite:///{folder / 'trial.db'}",
            "--key-file",
            str(folder / "trial.key"),
        ]
        self.folder = folder
        self.server = ""
        """The trial server's URL once it runs."""
        self.logged_in: set[str] = set()
        """Users working from their own machines through the server."""

    def _environment(self, user: str | None, remote: bool, command: str) -> dict[str, str | None]:
        if not remote:  # the host: the key file and the database, never another server
            return {"RANDOMIZER_PASSWORD": _password(user or "alice"), "RANDOMIZER_SERVER": None}
        # each user's own machine: a token folder of their own; the password only to log
        # in and to sign (re-entered for every signed action, token or not)
        machine = self.folder / "machines" / str(user)
        state = "LOCALAPPDATA" if os.name == "nt" else "XDG_STATE_HOME"
        return {
            state: str(machine.resolve()),
            "RANDOMIZER_PASSWORD": _password(str(user)) if command in _SIGNING else None,
        }

    def login(self, user: str) -> None:
        """``user`` logs in to the server from their own machine; their commands go there."""
        self.logged_in.add(user)
        try:
            self.run(user, "login")
        except BaseException:
            self.logged_in.discard(user)
            raise

    def logout(self, user: str) -> None:
        """``user`` ends their login; the token stops working at once."""
        self.run(user, "logout")
        self.logged_in.discard(user)

    def run(
        self,
        user: str | None,
        *args: str,
        expect: int = 0,
        show: bool = True,
        stdin: str | None = None,
    ) -> str:
        """Run one command as ``user``; print it and its output when ``show``; return stdout.

        What the command wrote to stderr (an intended refusal's ``Error:`` line) is
        printed to stdout with the rest, where it belongs in the story.
        """
        shown = " ".join(shlex.quote(a) for a in args)
        remote = user in self.logged_in
        where = f"[remote {user}]" if remote else f"[host{f' {user}' if user else ''}]"
        if show:
            click.echo(f"\n{where} $ randomizer {shown}")
        connection = ["--server", self.server] if remote else self.base
        argv = [*connection, *(["--user", user] if user else []), *args]
        out, err = io.StringIO(), io.StringIO()
        saved_stdin = sys.stdin
        saved_environment = _set_environment(self._environment(user, remote, args[0]))
        try:
            if stdin is not None:
                sys.stdin = io.StringIO(stdin)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                self.root.main(args=argv, prog_name="randomizer", standalone_mode=False)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            sys.stdin = saved_stdin
            _set_environment(saved_environment)
        if show:
            click.echo(out.getvalue() + err.getvalue(), nl=False)
        if code != expect:
            raise click.ClickException(
                f"demo step failed (exit {code}, expected {expect}): "
                f"randomizer {shown}: {err.getvalue().strip()}"
            )
        return out.getvalue()

    def command_line(self, user: str, *args: str) -> str:
        """The full command line to run ``args`` as ``user`` on the demo trial from anywhere."""
        db, db_url, key_option, key_file = self.base
        absolute = [
            "--db",
            f"sqlite:///{Path(db_url.removeprefix('sqlite:///')).resolve()}",
            key_option,
            str(Path(key_file).resolve()),
            "--user",
            user,
            *args,
        ]
        return f"RANDOMIZER_PASSWORD={_password(user)} randomizer " + " ".join(
            shlex.quote(a) for a in absolute
        )


def _date_list_back(db: Path, day: date) -> None:
    """Date the list's generation back to ``day`` in the demo's own database.

    The demo plays in a minute a trial that began 420 days ago, and no participant may be
    randomized before the list was generated. Its ``list.generate`` event keeps the real time.
    """
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.execute(
                "UPDATE trial SET list_generated_at = ?", (f"{day.isoformat()} 00:00:00.000000",)
            )
    finally:
        connection.close()


def _kit_code(output: str) -> str:
    return str(KIT_CODE.findall(output)[-1])


def _answers(n: int) -> list[str]:
    age = 28 + (n * 7) % 35
    edss = 3.0 + (n % 8) * 0.5
    return [
        "--answer",
        f"age={age}",
        "--answer",
        "progressive_ms=yes",
        "--answer",
        f"edss={edss:g}",
        "--answer",
        "recent_relapse_or_steroids=no",
        "--answer",
        "other_neuro_autoimmune=no",
        "--answer",
        "infection_malignancy_systemic=no",
    ]


def _set_environment(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set (or, for None, unset) environment variables; returns what they were."""
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return before


class _TrialServer:
    """``randomizer serve`` in a process of its own on a free loopback port.

    The port is found by binding port 0 and letting it go, so another program
    could take it in between; the server then fails to start and the demo
    says so with the server's log.
    """

    def __init__(self, base: list[str], log: Path) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["serve", "--port", str(self.port)]
        self.log = log
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in ("RANDOMIZER_SERVER", "RANDOMIZER_PASSWORD")
        }
        # the package this demo runs from, also when run from a checkout without install
        package_root = str(Path(randomizer.__file__).resolve().parent.parent)
        environment["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, [environment.get("PYTHONPATH")])]
        )
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "randomizer", *base, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=environment,
            )

    def wait_until_up(self) -> None:
        """Return once the server answers its health check; refuse if it never does."""
        deadline = time.monotonic() + SERVER_START_WAIT
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    if client.get("/api/v1/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise click.ClickException(
            "the demo's trial server did not start: " + " / ".join(tail or ["no output"])
        )

    def stop(self) -> int | None:
        """SIGTERM, as systemd stops it (the server audits its stop); the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-trial"),
    show_default=True,
    help="Empty directory for the demo database, key and exports.",
)
@click.option("--quiet", is_flag=True, help="Print only the main steps and the final balance.")
@pass_settings
def demo(settings: Settings, folder: Path, quiet: bool) -> None:
    """Play the exosome-ms trial end to end: 20 participants, 80 infusions, lock, unblinding.

    As deployed: the admin's custody steps (init, users, the list) run here, on
    the trial's host; then a trial server starts on a free loopback port, and
    every role logs in and works through it with --server, until the server is
    stopped with SIGTERM. Each step says where it ran: [host ...] or [remote NAME].

    Example: randomizer demo --dir demo-trial
    """
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"{folder} is not empty: the demo starts from an empty directory")
    folder.mkdir(parents=True, exist_ok=True)
    root = click.get_current_context().find_root().command
    play = _Player(root, folder)
    verbose = not quiet
    click.echo(
        f"Demo of the exosome-ms trial in {folder}/ (SQLite). Demo passwords are "
        "'demo-<user>-password'."
    )
    click.echo(
        "[host ...] steps run on the trial's host, with the key file and the database; "
        "[remote NAME] steps on NAME's own machine, through the trial server "
        "(--server URL after 'randomizer login')."
    )
    click.echo(
        "\n# On the host, the admin creates the trial, its users and the sealed list "
        "(custody: generated where the key is, before anyone else can log in)."
    )
    play.run(None, "init", "--design", "exosome-ms", "--admin", "alice")
    for name, role in USERS.items():
        if role != "admin":
            play.run(
                "alice",
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-stdin",
                stdin=_password(name) + "\n",
                show=verbose,
            )
    play.run("alice", "list", "generate")
    click.echo("\n# The list is a draft: whoever generated it may not approve it.")
    play.run("alice", "list", "approve", expect=1)

    click.echo(
        "\n# The host starts the trial server: it alone holds the key and opens the "
        "database. Everyone else logs in to it from their own machine."
    )
    server = _TrialServer(play.base, folder / "server.log")
    click.get_current_context().call_on_close(server.stop)  # also when a step fails
    click.echo(f"\n[host] $ randomizer {' '.join(server.args)} &")
    server.wait_until_up()
    play.server = server.url
    click.echo(f"Serving {server.url} (process {server.process.pid}; its log: {server.log}).")
    for name in ("ivan", "petra", "mona", "stan"):
        play.login(name)

    click.echo(
        "\n# Go-live: the new list is a draft. A second person, not the one who generated "
        "it, reviews its blinded QC summary and approves it; until then no one can be "
        "randomized."
    )
    play.run("stan", "list", "status")
    play.run("stan", "list", "approve")

    start = date.today() - timedelta(days=420)
    _date_list_back(folder / "trial.db", start - timedelta(days=7))
    click.echo("\n# Screening: one candidate fails eligibility (EDSS 7.0) and uses no slot.")
    play.run(
        "ivan",
        "randomize",
        "P-000",
        "--site",
        "WAW",
        *_answers(0)[:4],
        "--answer",
        "edss=7.0",
        *_answers(0)[6:],
        "--date",
        start.isoformat(),
        expect=1,
    )

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
            out = play.run(
                "ivan",
                "randomize",
                pid,
                "--site",
                "WAW",
                *_answers(n),
                "--date",
                when.isoformat(),
                show=verbose or n <= 2,
            )
        else:
            out = play.run(
                "ivan",
                "kit",
                "request",
                pid,
                "--visit",
                str(visit),
                "--date",
                when.isoformat(),
                show=verbose or (n == 1 and visit == 2),
            )
        kit = _kit_code(out)
        if n == 5 and visit == 2:
            click.echo("\n# The week-12 kit of P-005 arrives damaged: it is replaced.")
            replaced = play.run(
                "ivan", "kit", "replace", kit, "--reason", "infusion bag damaged in transit"
            )
            click.echo("\n# The pharmacy scans the voided kit by mistake and is stopped:")
            play.run("petra", "pharmacy", "prepare", kit, expect=1)
            kit = _kit_code(replaced)
        play.run("petra", "pharmacy", "prepare", kit, show=verbose or (n == 1 and visit == 1))
        if n == 11 and visit == 3:
            click.echo(
                "\n# P-011 has a serious adverse reaction: the investigator breaks "
                "the code for P-011 alone, at once, with a reason."
            )
            play.run(
                "ivan",
                "unblind",
                "emergency",
                pid,
                "--reason",
                "suspected anaphylaxis; treating physician needs to know the product",
            )
    click.echo("\n# Blinded views stay blinded: the monitor's report has no arm in it.")
    play.run("mona", "report")
    play.run("mona", "audit", "verify")
    click.echo("\n# A statistician cannot unblind before the lock.")
    play.run("stan", "unblind", "all", "--out", str(folder / "too-early.csv"), expect=1)
    click.echo("\n# The admin locks from her own machine, where the QA signing key lives too.")
    play.login("alice")
    play.run("alice", "lock", "--reason", "last participant completed week 48; data cleaned")
    play.run("ivan", "randomize", "P-021", "--site", "WAW", *_answers(21), expect=1)
    play.run("stan", "unblind", "all", "--out", str(folder / "final-unblinding.csv"))
    play.run("stan", "list", "verify")
    play.run("alice", "audit", "keygen", "--out", str(folder / "qa-signing.pem"))
    note = folder / "checkpoint.note"
    play.run(
        "alice",
        "audit",
        "checkpoint",
        "--signing-key",
        str(folder / "qa-signing.pem"),
        "--out",
        str(note),
    )
    play.run(
        "mona",
        "audit",
        "verify",
        "--checkpoint",
        str(note),
        "--public-key",
        str(folder / "qa-signing.pem.pub"),
    )
    click.echo("\n# Everyone logs out; the host stops the server (SIGTERM, as systemd does).")
    for name in ("ivan", "petra", "mona", "stan", "alice"):
        play.logout(name)
    click.echo(f"\n[host] $ kill -TERM {server.process.pid}")
    server.stop()
    click.echo(f"Server stopped; its access log is {server.log}.")
    click.echo("\n# Final balance (admin view, after lock):")
    play.run("alice", "report")
    click.echo("\n# Go on exploring this trial (it is locked now); for example:")
    for user, *args in (
        ("mona", "report"),
        ("mona", "audit", "show", "--limit", "20"),
        ("petra", "pharmacy", "list"),
        ("stan", "list", "verify"),
        ("alice", "user", "list"),
    ):
        click.echo(play.command_line(user, *args))

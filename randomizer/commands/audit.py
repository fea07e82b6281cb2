"""Commands on the audit trail (show, verify, keygen, checkpoint) and ``randomizer verify``."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import click

from randomizer.commands.base import Settings, emit, json_option, pass_settings
from randomizer.errors import Hint, IntegrityFailure, InvalidInput
from randomizer.exportfiles import create_private
from randomizer.results import AuditEvent, Checkpoint

SEQ_MAX = 2**31 - 1
"""The largest sequence number: audit_events.seq is a 32-bit INTEGER on PostgreSQL. Larger
--since/--limit values are clamped to it (they mean the same), not sent to the database,
where they overflowed (an internal error on SQLite, a database error on PostgreSQL)."""


@click.group("audit")
def audit_group() -> None:
    """Read, verify and anchor the audit trail.

    Example: randomizer --user alice audit verify
    """


@audit_group.command("show")
@click.option(
    "--since", type=click.IntRange(min=0), default=0, help="Only events after this sequence number."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@json_option
@pass_settings
def audit_show(settings: Settings, since: int, limit: int | None) -> None:
    """Print audit events (admin, monitor). Arms never appear in the trail.

    Example: randomizer audit show --since 100 --json
    """
    events = settings.backend().audit_events(
        min(since, SEQ_MAX), None if limit is None else min(limit, SEQ_MAX)
    )

    def text() -> str:
        return "\n".join(event_line(e) for e in events) if events else "(no events)"

    emit(settings, events, text)


# Characters that could end a line, move the cursor or disguise text on a terminal:
# controls (C0, DEL, C1), format characters (bidi overrides, zero widths), line and
# paragraph separators, unassigned and private code points, and every space but " ".
_UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _UNSAFE or char == " ":
        return char
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes one
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def shown(value: object) -> str:
    """``value`` as JSON (a string in double quotes), with no character that could break
    or disguise the line it is printed on: those are written as ``\\uXXXX`` escapes."""
    return "".join(_escape(c) for c in json.dumps(value, ensure_ascii=False))


def event_line(event: AuditEvent) -> str:
    """One event as one line of text; every field a user could have typed is quoted.

    The user name of a failed login, a subject or a reason may hold anything,
    line breaks included: printed raw, it could add lines that look like events.
    """
    reason = f" reason={shown(event.reason)}" if event.reason else ""
    rest = dict(event.details)
    signature = rest.pop("signature", None)
    signed = ""
    if isinstance(signature, dict):
        # an electronic signature: printed name, date and time, meaning
        signed = (
            f" signed-by={shown(signature.get('name'))} signed-at={shown(signature.get('at'))}"
            f" meaning={shown(signature.get('meaning'))}"
        )
    else:
        rest = dict(event.details)
    details = f" {shown(rest)}" if rest else ""
    return (
        f"{event.seq:>6} {shown(event.at)[1:-1]} {shown(event.user)}"
        f"({shown(event.role)[1:-1]}) {shown(event.action)[1:-1]} {shown(event.subject)}"
        f"{reason}{signed}{details}"
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None


def _signed_checkpoint(checkpoint: Path | None, public_key: Path | None) -> Checkpoint | None:
    """The checkpoint of a signed note, its signature checked here with the public key."""
    if checkpoint is None:
        return None
    if public_key is None:
        raise InvalidInput(
            "a checkpoint note is checked with the public key that "
            "signed it: give that public key too",
            hint=Hint.CHECKPOINT_KEY,
        )
    from randomizer.audit import read_checkpoint  # SQLAlchemy: only when a note is checked

    # the signature is checked here, where the public key is; the backend checks the head
    return read_checkpoint(
        _read(checkpoint, "checkpoint note").decode("utf-8", "replace"),
        _read(public_key, "public key"),
    )


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A signed note from 'audit checkpoint'.",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The public key that signed the note.",
)
@json_option
@pass_settings
def audit_verify(settings: Settings, checkpoint: Path | None, public_key: Path | None) -> None:
    """Recompute the chain; with a signed checkpoint, prove its head is still there.

    Exit 1 names the first broken event. Example:
    randomizer audit verify --checkpoint 2026-11-25.note --public-key qa.pub
    """
    report = settings.backend().audit_verify(_signed_checkpoint(checkpoint, public_key))
    anchored = (
        f"; signed checkpoint at event {report.checkpoint_seq} holds"
        if report.checkpoint_seq is not None
        else ""
    )
    emit(
        settings,
        report,
        f"Audit trail verified: {report.events} events, head {report.head_mac[:16]}...{anchored}",
    )


@audit_group.command("keygen")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key file; the public key goes to FILE.pub.",
)
@json_option
@pass_settings
def audit_keygen(settings: Settings, out: Path) -> None:
    """Make an Ed25519 key pair for signing checkpoints; keep it off the database host.

    Example: randomizer audit keygen --out qa-signing.pem
    """
    public = out.with_name(out.name + ".pub")
    for path in (out, public):
        if path.exists():
            raise InvalidInput(f"{path} already exists: refusing to overwrite it")
    from randomizer.audit import new_signing_key  # SQLAlchemy: not on other commands' path

    private_pem, public_pem = new_signing_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(public_pem)
    emit(
        settings,
        {"private_key": str(out), "public_key": str(public)},
        f"Signing key written to {out} (mode 0600), public key to {public}.",
    )


@audit_group.command("checkpoint")
@click.option(
    "--signing-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 private key from 'audit keygen'.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the note to this new file (mode 0600) instead of standard output; "
    "a refused command leaves no file.",
)
@pass_settings
def audit_checkpoint(settings: Settings, signing_key: Path, out: Path | None) -> None:
    """Print a signed note of the trail's head, to file outside the database (admin).

    Example: randomizer audit checkpoint --signing-key qa-signing.pem --out 2026-11-25.note
    """
    from randomizer.audit import load_signing_key, sign_checkpoint  # SQLAlchemy: see above

    private_pem = _read(signing_key, "signing key")
    load_signing_key(private_pem)  # a bad key is refused before anything is recorded
    # create the file first: a path that cannot be written must not leave an audited checkpoint
    fd = create_private(out) if out is not None else None
    try:
        # signed here, on the caller's side: the signing key never reaches the backend
        note = sign_checkpoint(settings.backend().audit_checkpoint(), private_pem)
    except BaseException:
        if fd is not None and out is not None:
            os.close(fd)
            out.unlink(missing_ok=True)
        raise
    if fd is None:
        click.echo(note, nl=False)
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(note)
        handle.flush()
        os.fsync(handle.fileno())
    click.echo(f"Checkpoint note written to {out}: file it away from the database host.")


@click.command("verify")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A signed note from 'audit checkpoint': also prove its head is still there.",
)
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The public key that signed the note.",
)
@json_option
@pass_settings
def verify(settings: Settings, checkpoint: Path | None, public_key: Path | None) -> None:
    """Check the whole database: row MACs, audit chain, recorded rows, list (admin, monitor).

    Every problem found is listed, naming a table and row id (never an arm); exit 1 if
    there is any. A cut tail of the trail with its head rolled back is found only with
    a signed checkpoint note. Example:
    randomizer verify --checkpoint 2026-11-25.note --public-key qa.pub
    """
    signed = _signed_checkpoint(checkpoint, public_key)
    report = settings.backend().verify_database(signed)

    def text() -> str:
        if report.problems:
            return "\n".join(f"BROKEN: {problem}" for problem in report.problems)
        anchored = (
            f"; signed checkpoint at event {report.checkpoint_seq} holds"
            if report.checkpoint_seq is not None
            else ""
        )
        listed = {
            "match": "the list matches its seed",
            "none": "no list generated yet",
        }.get(report.list, f"list: {report.list}")
        return (
            f"Database verified: {report.rows} rows in {len(report.tables)} tables, "
            f"{report.events} audit events, {listed}{anchored}"
        )

    emit(settings, report, text)
    if not report.ok:
        raise IntegrityFailure(
            f"the database failed verification: {len(report.problems)} problem(s), listed above"
        )

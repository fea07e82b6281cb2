"""Commands on the audit trail: show, verify, keygen, checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from randomizer.audit import load_signing_key, new_signing_key, read_checkpoint, sign_checkpoint
from randomizer.commands.allocation import create_private
from randomizer.commands.base import Settings, emit, json_option, pass_settings
from randomizer.errors import Hint, InvalidInput

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
@click.option("--since", type=click.IntRange(min=0), default=0,
              help="Only events after this sequence number.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@json_option
@pass_settings
def audit_show(settings: Settings, since: int, limit: int | None) -> None:
    """Print audit events (admin, monitor). Arms never appear in the trail.

    Example: randomizer audit show --since 100 --json
    """
    events = settings.backend().audit_events(min(since, SEQ_MAX),
                                             None if limit is None else min(limit, SEQ_MAX))

    def text() -> str:
        lines = []
        for e in events:
            extra = f" reason={e.reason!r}" if e.reason else ""
            details = f" {json.dumps(e.details, ensure_ascii=False)}" if e.details else ""
            lines.append(f"{e.seq:>6} {e.at} {e.user}({e.role}) {e.action} {e.subject}"
                         f"{extra}{details}")
        return "\n".join(lines) if lines else "(no events)"
    emit(settings, events, text)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from None


@audit_group.command("verify")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="A signed note from 'audit checkpoint'.")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The public key that signed the note.")
@json_option
@pass_settings
def audit_verify(settings: Settings, checkpoint: Path | None, public_key: Path | None) -> None:
    """Recompute the chain; with a signed checkpoint, prove its head is still there.

    Exit 1 names the first broken event. Example:
    randomizer audit verify --checkpoint 2026-11-25.note --public-key qa.pub
    """
    signed = None
    if checkpoint is not None:
        if public_key is None:
            raise InvalidInput("a checkpoint note is checked with the public key that "
                               "signed it: give that public key too", hint=Hint.CHECKPOINT_KEY)
        # the signature is checked here, where the public key is; the backend checks the head
        signed = read_checkpoint(_read(checkpoint, "checkpoint note").decode("utf-8", "replace"),
                                 _read(public_key, "public key"))
    report = settings.backend().audit_verify(signed)
    anchored = (f"; signed checkpoint at event {report.checkpoint_seq} holds"
                if report.checkpoint_seq is not None else "")
    emit(settings, report, f"Audit trail verified: {report.events} events, "
         f"head {report.head_mac[:16]}...{anchored}")


@audit_group.command("keygen")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file; the public key goes to FILE.pub.")
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
    private_pem, public_pem = new_signing_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(public_pem)
    emit(settings, {"private_key": str(out), "public_key": str(public)},
         f"Signing key written to {out} (mode 0600), public key to {public}.")


@audit_group.command("checkpoint")
@click.option("--signing-key", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 private key from 'audit keygen'.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the note to this new file (mode 0600) instead of standard output; "
                   "a refused command leaves no file.")
@pass_settings
def audit_checkpoint(settings: Settings, signing_key: Path, out: Path | None) -> None:
    """Print a signed note of the trail's head, to file outside the database (admin).

    Example: randomizer audit checkpoint --signing-key qa-signing.pem --out 2026-11-25.note
    """
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

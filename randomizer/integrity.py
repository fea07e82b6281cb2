"""``randomizer verify``: every row MAC, the audit chain, the rows the trail records, the list.

docs/architecture.md, "Integrity of rows". One pass over the database with the key, in
one read of one transaction: the audit chain is recomputed (and, given a signed
checkpoint, its head found); every covered row's MAC is checked and the rows are
compared with those the trail says were written (:func:`randomizer.rows.check_tables`);
the allocation list is regenerated from the sealed seed and compared. Problems are
collected, not raised, so that one run names every broken row; each names a table and
a row id, an event or the list, never an arm.
"""

from __future__ import annotations

from randomizer import audit, rows
from randomizer.context import Operation
from randomizer.errors import AuditError, InvalidInput, SealedDataError
from randomizer.results import IntegrityReport as IntegrityReport
from randomizer.results import TableReport as TableReport
from randomizer.trial import check_list

LIST_TABLES = frozenset({"trial", "strata", "slots", "kits"})
"""The tables the allocation list is stored in (the trial row holds its seed)."""

PROBLEMS_AUDITED = 100
"""At most this many problems are written into the ``verify`` event (all are returned)."""


def verify_database(op: Operation, checkpoint: audit.Checkpoint | None = None) -> IntegrityReport:
    """Check everything the key can check; audited as ``verify`` with the problems found."""
    if checkpoint is not None and checkpoint.trial != op.trial.id:
        raise InvalidInput(f"the checkpoint is for trial {checkpoint.trial!r}, not {op.trial.id!r}")
    problems: list[str] = []
    events = 0
    try:
        chain = audit.verify(op.session, op.vault.audit_key(), checkpoint)
        events = chain.events
    except AuditError as exc:
        problems.append(str(exc))
        events = audit.head(op.session)[0]
    try:
        tables, row_problems = rows.check_tables(op.session, op.vault)
    except AuditError as exc:  # the trail's record of rows is unreadable
        tables, row_problems = [], [str(exc)]
    problems.extend(row_problems)
    list_state = "none"
    if not tables or any(t.broken for t in tables if t.table in LIST_TABLES):
        # Which kits or slots disagree with the regenerated list would tell which broken
        # rows hold different arms: the list is compared only when its rows are intact.
        list_state = "not checked"
        problems.append("allocation list: not checked, rows it is stored in are broken")
    elif op.trial.seed_sealed is not None:
        try:
            # every row was checked just above; the list check reads them without re-checking
            with rows.unchecked(op.session):
                _summary, list_problems = check_list(op)
        except SealedDataError:
            list_problems = ["the sealed list does not open with this key (altered data)"]
        list_state = "mismatch" if list_problems else "match"
        problems.extend(f"allocation list: {problem}" for problem in list_problems)
    report = IntegrityReport(
        ok=not problems,
        events=events,
        rows=sum(t.rows for t in tables),
        tables=tuple(TableReport(t.table, t.rows, t.broken) for t in tables),
        list=list_state,
        checkpoint_seq=checkpoint.seq if checkpoint is not None and not problems else None,
        problems=tuple(problems),
    )
    op.audit(
        "verify",
        subject=op.trial.id,
        details={
            "result": "ok" if report.ok else "broken",
            "rows": report.rows,
            "events": events,
            "list": list_state,
            "checkpoint": report.checkpoint_seq,
            "problems": list(report.problems[:PROBLEMS_AUDITED]),
        },
    )
    return report

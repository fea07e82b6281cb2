"""The dummy unblinding: the export of ``unblind all`` with made-up arms, for dry runs.

Before the lock, the statistician runs the analysis programs on a file of exactly
the real export's shape, so that on the day of unblinding they run unchanged.
Every row says it is dummy (arm ids ``dummy-<arm>``, labels ``DUMMY <label>``,
column ``dummy`` = ``yes``; the real export says ``no`` there), and the audit
trail records it as ``unblind.dummy``.

It reveals nothing about the real arms because it never reads them: not the
sealed slots, not the seed, not the kits' contents. The made-up arms are a
fresh allocation list of the design (the same generator, block sizes and
ratio) drawn from a new seed from the operating system's generator and
discarded afterwards, handed out in the export's row order. Group sizes
therefore vary as much as a real list's can (a block may be open at the end),
so the programs meet realistic, unequal groups; taking the real group sizes
would leak the real imbalance, and the ratio's rounded expected sizes would
never show an open block.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from randomizer import rows as row_macs
from randomizer.allocation.generator import generate_schedule
from randomizer.context import Operation
from randomizer.design import TrialDesign
from randomizer.models import Participant, Stratum
from randomizer.sites import participant_in_scope
from randomizer.unblinding.lock import (
    EXPORT_ORDER,
    PARTICIPANT_COLUMNS,
    Export,
    driver_rows,
    write_export,
)


def dummy_arms(
    design: TrialDesign, participants: Mapping[str, int], seed: bytes
) -> dict[str, list[str]]:
    """Made-up arms for ``participants[stratum]`` participants of each stratum (pure).

    They are the first slots of each stratum of the design's list for
    ``seed``: pass a fresh secret seed, never the trial's.
    """
    wanted = {stratum: count for stratum, count in participants.items() if count > 0}
    if not wanted:
        return {}
    schedule = generate_schedule(design, seed, max(wanted.values()))
    lists = {stratum.stratum: stratum for stratum in schedule.strata}
    return {
        stratum: [design.arm_ids[i] for i in lists[stratum].arm_index[:count].tolist()]
        for stratum, count in wanted.items()
    }


def unblind_dummy(op: Operation, seed: bytes | None = None) -> Export:
    """The export of every randomized participant with made-up arms, audited.

    ``seed`` (32 bytes) draws the made-up arms; by default a fresh one from the
    operating system, as a dry run needs. The lock does not matter: nothing in
    the file depends on the real arms.
    """
    # the participants read (write_export checks the kits it reads in its one pass)
    row_macs.check_all(op.session, op.vault, "participants")
    connection = op.session.connection()
    statement = (
        select(*PARTICIPANT_COLUMNS)
        .join(Stratum, Stratum.id == Participant.stratum_id)
        .where(participant_in_scope(op))
        .order_by(*EXPORT_ORDER)
    )
    sizes = Counter(
        row[0]
        for batch in driver_rows(
            connection,
            select(Stratum.key)
            .join(Participant, Participant.stratum_id == Stratum.id)
            .where(participant_in_scope(op)),
        )
        for row in batch
    )
    made_up = dummy_arms(op.design, sizes, secrets.token_bytes(32) if seed is None else seed)
    handed = {stratum: iter(arms) for stratum, arms in made_up.items()}

    def with_arms() -> Iterator[tuple[Sequence[Sequence[Any]], Sequence[str]]]:
        for rows in driver_rows(connection, statement):
            yield rows, [next(handed[row[3]]) for row in rows]

    data, count, files = write_export(op, with_arms(), dummy=True)
    op.audit(
        "unblind.dummy",
        subject=op.trial.id,
        details={
            "participants": count,
            "file_mac": op.vault.mac(data).hex(),
            "files_mac": {name: op.vault.mac(content).hex() for name, content in files.items()},
        },
    )
    return Export(
        csv=data,
        sha256=hashlib.sha256(data).hexdigest(),
        participants=count,
        files=files,
        file_sha256={name: hashlib.sha256(content).hexdigest() for name, content in files.items()},
    )

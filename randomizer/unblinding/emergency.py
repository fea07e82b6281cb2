"""Emergency unblinding of one participant (docs/architecture.md section 7, step 8).

Never gated on anyone's approval and never delayed: an authorised user with a
non-empty reason gets the arm at once. The audit event is written in the same
transaction before the arm is opened, so a failed audit write reveals nothing.
"""

from __future__ import annotations

from randomizer.allocation.service import check_participant_id, participant_row
from randomizer.context import Operation, fault_point
from randomizer.errors import Hint, InvalidInput
from randomizer.results import Unblinding as Unblinding
from randomizer.sealed import participant_arm
from randomizer.unblinding.review import open_review


def emergency_unblind(op: Operation, participant: str, reason: str) -> Unblinding:
    """Reveal one participant's arm, mark the participant unblinded, audit who/when/why.

    Also opens the unblinding's second-person review and queues its notification
    e-mail (:mod:`randomizer.unblinding.review`), in the same transaction.
    """
    participant = check_participant_id(participant)
    if not reason or not reason.strip():
        raise InvalidInput("a reason is required to break the code: say why", hint=Hint.REASON)
    row = participant_row(op, participant)
    previously = row.emergency_unblinded_at is not None
    if not previously:
        # marked before the event, so that the event records the row it changed
        row.emergency_unblinded_at = op.now
        row.emergency_unblinded_by = op.user.name
    event = op.audit(
        "unblind.emergency",
        subject=participant,
        reason=reason.strip(),
        details={
            "randomization_number": row.randomization_number,
            "previously_unblinded": previously,
        },
    )
    # the review and the notification are written before the arm is opened, in this
    # transaction: an unblinding that commits always has both (and neither holds the arm)
    open_review(op, row, reason.strip(), event.seq)
    arm = op.design.arm(participant_arm(op, row))
    fault_point("unblind.emergency:opened")
    op.session.flush()
    return Unblinding(
        participant=participant,
        randomization_number=row.randomization_number,
        arm=arm.id,
        label=arm.label,
        unblinded_at=op.now.isoformat(),
    )

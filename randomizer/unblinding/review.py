"""Second-person review of emergency unblindings, and their notification e-mails.

An emergency unblinding is never gated or delayed (:mod:`randomizer.unblinding.emergency`);
in the same transaction it opens a review item and puts a notification in the
outbox. A second user, an admin or a monitor who is not the one who unblinded,
closes the review with a note. Neither the review nor the e-mail holds the arm:
they say who broke the code of which participant, when and why.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select

from randomizer.audit import utc_text
from randomizer.context import Operation
from randomizer.errors import Hint, InvalidInput, NotAuthorized, NotFound, StateError
from randomizer.models import OutboxMessage, Participant, UnblindingReview
from randomizer.results import ReviewItem as ReviewItem

NOTIFICATION_KIND = "unblind.emergency"
"""The outbox kind of an emergency-unblinding notification."""


def open_review(op: Operation, participant: Participant, reason: str, audit_seq: int) -> None:
    """Open the review of an unblinding just made, and queue its notification (same transaction)."""
    review = UnblindingReview(
        participant_id=participant.id,
        audit_seq=audit_seq,
        unblinded_at=op.now,
        unblinded_by=op.user.name,
        reason=reason,
    )
    op.session.add(review)
    op.session.flush()
    op.session.add(notification(op, participant, review))


def notification(
    op: Operation, participant: Participant, review: UnblindingReview
) -> OutboxMessage:
    """The e-mail of one emergency unblinding: participant, site, user, time, reason; no arm.

    Its Message-ID is fixed here, so a message sent twice (see :mod:`randomizer.mail`)
    reaches its readers as two copies of one message, recognisably.
    """
    when = utc_text(review.unblinded_at)
    domain = re.sub(r"[^A-Za-z0-9-]", "-", op.trial.id) + ".randomizer.invalid"
    body = "\n".join(
        [
            f"An emergency unblinding was made in trial {op.trial.id}.",
            "",
            f"Participant: {participant.code}",
            f"Site:        {participant.site}",
            f"User:        {review.unblinded_by}",
            f"Time (UTC):  {when}",
            f"Reason:      {review.reason}",
            "",
            f"Review item {review.id} is open: an admin or monitor other than "
            f"{review.unblinded_by} closes it with",
            f"  randomizer unblind review close {review.id} --note TEXT",
            "",
            "This message never carries the allocated treatment.",
            "",
        ]
    )
    return OutboxMessage(
        message_id=f"<unblinding-{review.id}.{secrets.token_hex(8)}@{domain}>",
        kind=NOTIFICATION_KIND,
        subject=f"[{op.trial.id}] Emergency unblinding of {participant.code} at {participant.site}",
        body=body,
        created_at=op.now,
        status="pending",
        attempts=0,
        next_attempt_at=op.now,
    )


def _item(review: UnblindingReview, participant: Participant) -> ReviewItem:
    return ReviewItem(
        id=review.id,
        participant=participant.code,
        site=participant.site,
        randomization_number=participant.randomization_number,
        unblinded_at=utc_text(review.unblinded_at),
        unblinded_by=review.unblinded_by,
        reason=review.reason,
        status="open" if review.closed_at is None else "closed",
        closed_at=None if review.closed_at is None else utc_text(review.closed_at),
        closed_by=review.closed_by,
        note=review.note,
    )


def reviews(op: Operation, open_only: bool = True) -> list[ReviewItem]:
    """Review items in the order the unblindings happened (open ones only by default)."""
    statement = (
        select(UnblindingReview, Participant)
        .join(Participant, Participant.id == UnblindingReview.participant_id)
        .order_by(UnblindingReview.id)
    )
    if open_only:
        statement = statement.where(UnblindingReview.closed_at.is_(None))
    return [_item(review, participant) for review, participant in op.session.execute(statement)]


def list_reviews(op: Operation, open_only: bool = True) -> list[ReviewItem]:
    """:func:`reviews`, audited as a look at them (admin, monitor)."""
    found = reviews(op, open_only)
    op.audit("unblind.review.list", details={"open_only": open_only, "items": len(found)})
    return found


def close_review(op: Operation, review_id: int, note: str) -> ReviewItem:
    """Close one review with a note; the unblinder may not review their own unblinding."""
    if not note or not note.strip():
        raise InvalidInput("a note is required to close a review: say what was checked")
    found = op.session.execute(
        select(UnblindingReview, Participant)
        .join(Participant, Participant.id == UnblindingReview.participant_id)
        .where(UnblindingReview.id == review_id)
    ).one_or_none()
    if found is None:
        raise NotFound(f"no review item {review_id}", hint=Hint.LIST_REVIEWS)
    review, participant = found
    if review.unblinded_by == op.user.name:
        raise NotAuthorized(
            f"user {op.user.name} made unblinding {review_id} of {participant.code} and may "
            "not review it: another admin or monitor closes it"
        )
    if review.closed_at is not None:
        raise StateError(
            f"review item {review_id} was already closed by {review.closed_by} at "
            f"{utc_text(review.closed_at)}"
        )
    op.audit(
        "unblind.review.close",
        subject=participant.code,
        reason=note.strip(),
        details={"review": review_id, "unblinded_by": review.unblinded_by},
    )
    review.closed_at = op.now
    review.closed_by = op.user.name
    review.note = note.strip()
    op.session.flush()
    return _item(review, participant)

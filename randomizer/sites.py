"""Per-site rights: which sites' participants a user may act on and see.

A user with no rows in ``user_sites`` is trial-wide; one with rows is limited
to those sites (REDCap's data access groups, OpenClinica's site roles). The
limit narrows what a role may do, never widens it: an investigator limited to
a site randomizes there only and requests kits for, replaces kits of, unblinds
and lists only participants of that site; a limited pharmacist, statistician,
monitor or admin sees only those participants and their kits.

Another site's participant (or kit) is not found: the lookups below put the
limit into the query itself, so a participant of another site and one that
does not exist give the same refusal, raised from the same place, audited
alike, after the same queries.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Select, bindparam, literal_column, select, true

from randomizer import audit
from randomizer.context import Operation
from randomizer.errors import NotAuthorized
from randomizer.models import Kit, Participant, User, UserSite


def user_sites(op: Operation, user: User) -> tuple[str, ...]:
    """The sites ``user`` is limited to, sorted; empty when the user is trial-wide."""
    return tuple(op.session.connection().execute(_SITES_OF, {"user_id": user.id}).scalars())


_SITES_OF = (
    select(UserSite.site).where(UserSite.user_id == bindparam("user_id")).order_by(UserSite.site)
)


def scope(op: Operation) -> frozenset[str] | None:
    """The sites the acting user is limited to; None when trial-wide.

    Read inside the action's transaction, so a change of a user's sites counts
    from the next action on, as a disabled account does.
    """
    cached: frozenset[str] | None
    if _SCOPE in op.session.info:
        cached = op.session.info[_SCOPE]
        return cached
    sites = user_sites(op, op.user)
    cached = op.session.info[_SCOPE] = frozenset(sites) if sites else None
    return cached


_SCOPE = "randomizer.sites.scope"
"""Session info: the acting user's scope, read once per action (a change counts from the
user's next action on)."""


def participant_in_scope(op: Operation) -> ColumnElement[bool]:
    """The condition "this participant row is of a site the acting user may see".

    It holds no bound parameter (the user's id is written as a number), so the
    exports' driver-level statements can take it too.
    """
    if scope(op) is None:
        return true()
    return Participant.site.in_(_own_sites(op))


def _own_sites(op: Operation) -> Select[str]:
    # int(): only digits reach the SQL text
    user_id: ColumnElement[int] = literal_column(str(int(op.user.id)))
    return select(UserSite.site).where(UserSite.user_id == user_id)


def kit_in_scope(op: Operation) -> ColumnElement[bool]:
    """The condition "this kit is issued to a participant the acting user may see".

    A limited user sees no kit that is not issued to one of their sites'
    participants: not another site's, and no unissued stock either.
    """
    if scope(op) is None:
        return true()
    return Kit.participant_id.in_(
        select(Participant.id).where(Participant.site.in_(_own_sites(op)))
    )


def require_site(op: Operation, site: str, what: str) -> None:
    """Refuse an action at ``site`` by a user limited to other sites.

    Sites are public (the design lists them), so this refusal may name them.
    """
    sites = scope(op)
    if sites is not None and site not in sites:
        raise NotAuthorized(
            f"user {op.user.name} may not {what} at site {site}: limited to site "
            f"{', '.join(sorted(sites))}"
        )


def check_sites(op: Operation, sites: Iterable[str]) -> tuple[str, ...]:
    """Sites as given to ``user add --site`` or ``user sites --set``: checked, sorted, unique."""
    # imported here: the allocation service imports this module for its lookups
    from randomizer.allocation.service import check_site

    return tuple(sorted({check_site(op.design, site) for site in sites}))


def require_within_scope(
    op: Operation, sites: Iterable[str], target: str, what: str | None = None
) -> None:
    """Refuse a limited admin acting on users beyond their own sites.

    A trial-wide admin may set any sites; an admin limited to sites may only
    limit a user (and disable them or set their password) whose current and new
    sites all lie within their own. ``what`` names the refused action; by default,
    giving ``target`` rights.
    """
    own = scope(op)
    if own is None:
        return
    wanted = set(sites)
    if not wanted or not wanted <= own:
        raise NotAuthorized(
            f"user {op.user.name} is limited to site {', '.join(sorted(own))}: only a "
            f"trial-wide admin may {what or f'give {target} rights'} beyond those sites"
        )


PARTICIPANT_ACTIONS = frozenset(
    {"randomize", "kit.request", "kit.replace", "unblind.emergency", "pharmacy.prepare"}
)
"""Actions about one participant (or one of their kits): a refusal of one is too."""

EVENT_BATCH = 1000
"""Audit events read at a time while those a limited reader may see are picked out."""


def visible_events(
    op: Operation, since: int = 0, limit: int | None = None
) -> list[audit.AuditEvent]:
    """Audit events after ``since`` the acting user may read, at most ``limit`` of them.

    A trial-wide reader gets every event. A reader limited to sites gets the
    trial-level events (logins, users, the list, the lock, reports) and those about
    their sites' participants and kits; an event about another site's participant,
    and a refusal naming an id that is none of their sites' participants (another
    site's or none at all, alike), is left out.
    """
    sites = scope(op)
    if sites is None:
        return audit.events(op.session, since, limit)
    own = {
        code.upper()
        for code in op.session.scalars(
            select(Participant.code).where(Participant.site.in_(sorted(sites)))
        )
    }
    own |= set(op.session.scalars(select(Kit.code).where(kit_in_scope(op))))
    shown: list[audit.AuditEvent] = []
    after = since
    while True:
        batch = audit.events(op.session, after, EVENT_BATCH)
        for event in batch:
            if _visible(event, sites, own):
                shown.append(event)
                if limit is not None and len(shown) == limit:
                    return shown
        if len(batch) < EVENT_BATCH:
            return shown
        after = batch[-1].seq


def _visible(event: audit.AuditEvent, sites: frozenset[str], own: set[str]) -> bool:
    details = event.details
    if "site" in details:  # randomize, a screen failure, a participant list
        return details["site"] in sites
    participant = details.get("participant")
    if isinstance(participant, str):  # kit.replace, pharmacy.prepare
        return participant.upper() in own
    command = details.get("command") if event.action in ("refused", "screen_failure") else None
    if event.action in PARTICIPANT_ACTIONS or command in PARTICIPANT_ACTIONS:
        return event.subject.strip().upper() in own
    return True

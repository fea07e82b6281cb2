"""Commands about randomized participants: the participant view per site."""

from __future__ import annotations

import click

from randomizer.commands.base import (
    Settings,
    emit,
    json_option,
    pass_settings,
    reason_option,
    table,
)


@click.group()
def participant() -> None:
    """Randomized participants: who, visits done, the next visit's window; void a
    randomization made in error (admin).

    Example: randomizer --user ivan participant list --site WAW
    """


@participant.command("list")
@click.option("--site", metavar="SITE", help="Only this site's participants.")
@json_option
@pass_settings
def participant_list(settings: Settings, site: str | None) -> None:
    """List the participants you may see, by id: number, visits done, next visit's window.

    A user limited to sites sees only those sites' participants.

    Example: randomizer participant list --site WAW --json
    """
    rows = settings.backend().participant_view(site)
    emit(
        settings,
        rows,
        lambda: (
            table(
                [
                    (
                        p.participant,
                        p.randomization_number,
                        p.site,
                        p.visits_done,
                        p.last_visit_date or "",
                        f"{p.next_visit} ({p.next_visit_name})" if p.next_visit else "none",
                        f"{p.window_from} to {p.window_to}" if p.window_from else "",
                    )
                    for p in rows
                ],
                [
                    "participant",
                    "number",
                    "site",
                    "visits done",
                    "last visit",
                    "next visit",
                    "window",
                ],
            )
            if rows
            else "No participants to show."
        ),
    )


@participant.command("void")
@click.argument("participant_id", metavar="PARTICIPANT")
@reason_option()
@json_option
@pass_settings
def participant_void(settings: Settings, participant_id: str, reason: str) -> None:
    """Mark a randomization made in error (admin); its slot stays used (intention to treat).

    The participant stays in every export with its status and reason, and gets no
    further kit.
    Example: randomizer participant void P-007 --reason "randomized under the wrong id"
    """
    result = settings.backend().void_participant(
        participant_id, reason, signature=settings.signature("participant.void")
    )
    emit(
        settings,
        result,
        f"Participant {result.participant} ({result.randomization_number}) voided by "
        f"{result.voided_by} at {result.voided_at}: randomized in error. The slot stays "
        "used; no further kit will be issued to this participant.",
    )

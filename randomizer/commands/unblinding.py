"""Commands that end blinding: unblind emergency|all|dummy, lock, and the report."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from randomizer.commands.base import (
    Settings,
    emit,
    json_option,
    pass_settings,
    reason_option,
    table,
)
from randomizer.errors import InvalidInput
from randomizer.exportfiles import ANALYSIS_FILES as ANALYSIS_FILES
from randomizer.exportfiles import ExportFiles, create_private
from randomizer.exportfiles import companion as companion
from randomizer.results import LEGACY_FILE, Export, Report, ReviewItem


@click.group()
def unblind() -> None:
    """Emergency unblinding of one participant; full unblinding after lock; dummy export.

    Example: randomizer --user ivan unblind emergency P-007 --reason "anaphylaxis"
    """


@unblind.command("emergency")
@click.argument("participant")
@reason_option()
@json_option
@pass_settings
def unblind_emergency(settings: Settings, participant: str, reason: str) -> None:
    """Break the code for ONE participant now (investigator or admin; reason required).

    Never waits for approval; it is audited and reviewed afterwards.
    Example: randomizer unblind emergency P-007 --reason "anaphylaxis, treating physician needs arm"
    """
    result = settings.backend().emergency_unblind(
        participant, reason, signature=settings.signature("unblind.emergency")
    )
    emit(
        settings,
        {
            "participant": result.participant,
            "arm": result.arm,
            "label": result.label,
            "randomization_number": result.randomization_number,
            "unblinded_at": result.unblinded_at,
        },
        f"EMERGENCY UNBLINDING of {result.participant} ({result.randomization_number}): "
        f"{result.label} [{result.arm}]. This has been recorded with your reason.",
    )


@unblind.command("all")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write (must not exist; mode 0600).",
)
@json_option
@pass_settings
def unblind_all(settings: Settings, out: Path) -> None:
    """Write every participant's arm and kits as CSV (statistician, after lock only).

    Beside --out FILE.csv: FILE.participants.csv, FILE.kits.csv (one row per kit),
    FILE.adsl.csv (CDISC ADaM subject-level) and FILE.columns.json (every column).

    Example: randomizer unblind all --out final-unblinding.csv
    """
    backend = settings.backend()
    signature = settings.signature("unblind.all")
    # streamed to disk: kept only when whole, never over a file (randomizer.exportfiles)
    export = backend.unblind_all(signature=signature, out=out)
    emit(
        settings,
        {
            "file": str(out),
            "sha256": export.sha256,
            "participants": export.participants,
            "analysis_files": _files_json(out, export),
        },
        f"Wrote {export.participants} participants to {out}\nSHA-256: {export.sha256}\n"
        f"Analysis files:\n{_files_text(out, export)}",
    )


@unblind.command("dummy")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV file to write: its name must contain 'dummy' (must not exist; mode 0600).",
)
@json_option
@pass_settings
def unblind_dummy(settings: Settings, out: Path) -> None:
    """Write the 'unblind all' CSV with made-up arms, for a dry run (statistician, any time).

    Same columns as the real export; every row is marked dummy (arm dummy-<arm>,
    column dummy = yes). The arms are drawn afresh and say nothing about the real ones.
    Example: randomizer unblind dummy --out dummy-unblinding.csv
    """
    if DUMMY not in out.name.lower():
        raise InvalidInput(
            f"{out}: the file name of a dummy export must contain "
            f"'{DUMMY}' (for example dummy-unblinding.csv), so that it is "
            "never taken for the real one"
        )
    export = _write_export(out, settings.backend().unblind_dummy)
    emit(
        settings,
        {
            "file": str(out),
            "sha256": export.sha256,
            "participants": export.participants,
            "dummy": True,
            "analysis_files": _files_json(out, export),
        },
        f"Wrote {export.participants} participants with DUMMY arms (made up, not the "
        f"trial's) to {out}\nSHA-256: {export.sha256}\n"
        f"Analysis files:\n{_files_text(out, export)}",
    )


DUMMY = "dummy"
"""What the file name of a dummy export must contain."""


@unblind.group("review")
def unblind_review() -> None:
    """Second-person review of emergency unblindings (admin or monitor, not the unblinder).

    Example: randomizer --user mona unblind review list
    """


def _review_rows(items: list[ReviewItem]) -> str:
    return table(
        [
            (i.id, i.participant, i.site, i.unblinded_at, i.unblinded_by, i.status, i.reason)
            for i in items
        ],
        ["review", "participant", "site", "unblinded at", "by", "status", "reason"],
    )


@unblind_review.command("list")
@click.option("--all", "show_all", is_flag=True, help="Closed reviews too, with their notes.")
@json_option
@pass_settings
def review_list(settings: Settings, show_all: bool) -> None:
    """List emergency unblindings to review: who, when and why, never the arm.

    Example: randomizer unblind review list --all
    """
    items = settings.backend().unblinding_reviews(open_only=not show_all)
    emit(
        settings,
        items,
        lambda: _review_rows(items) if items else "No emergency unblinding awaits review.",
    )


@unblind_review.command("close")
@click.argument("review_id", metavar="ID", type=click.IntRange(min=1, max=2**31 - 1))
@click.option("--note", required=True, help="What the reviewer checked (required).")
@json_option
@pass_settings
def review_close(settings: Settings, review_id: int, note: str) -> None:
    """Close one review with a note (admin or monitor who did not unblind).

    Example: randomizer unblind review close 3 --note "called the site; reason confirmed"
    """
    item = settings.backend().close_review(review_id, note)
    emit(
        settings,
        item,
        f"Review {item.id} of the unblinding of {item.participant} closed by "
        f"{item.closed_by} at {item.closed_at}.",
    )


def _write_export(out: Path, export_of: Callable[[], Export]) -> Export:
    """Write the export ``export_of`` returns into ``out`` and its analysis files (0600,
    never overwriting, kept only when all are written: :class:`ExportFiles`)."""
    with ExportFiles(out) as files:
        export = export_of()
        files.write({LEGACY_FILE: export.csv, **export.files})
        files.publish()
    return export


def _files_text(out: Path, export: Export) -> str:
    return "\n".join(
        f"  {companion(out, name)} (SHA-256 {export.file_sha256[name]})" for name in ANALYSIS_FILES
    )


def _files_json(out: Path, export: Export) -> dict[str, dict[str, str]]:
    return {
        name: {"file": str(companion(out, name)), "sha256": export.file_sha256[name]}
        for name in ANALYSIS_FILES
    }


@click.command()
@reason_option()
@json_option
@pass_settings
def lock(settings: Settings, reason: str) -> None:
    """Lock the database: no more randomization or dispensing (admin).

    Example: randomizer lock --reason "database lock after last participant's week 48 visit"
    """
    result = settings.backend().lock(reason, signature=settings.signature("lock"))
    emit(
        settings,
        result,
        f"Trial {result.trial} locked at {result.locked_at} by "
        f"{result.locked_by} with {result.participants} participants. Statisticians may now "
        "run 'randomizer unblind all'.",
    )


def _report_text(rep: Report) -> str:
    lines = [
        f"Trial {rep.trial}: {rep.randomized} of {rep.planned} planned randomized"
        f"{' (LOCKED)' if rep.locked else ''}; {rep.screen_failures} screen failures; "
        f"{rep.emergency_unblindings} emergency unblindings",
        "",
        "Recruitment by site:",
        table(list(rep.by_site.items()), ["site", "participants"]),
        "",
        "Recruitment by date:",
        table(list(rep.by_date.items()), ["date", "participants"]),
        "",
        "Kits by status:",
        table(list(rep.kits.items()), ["status", "kits"]),
        "",
        f"Emergency unblindings awaiting second-person review: {rep.open_reviews}",
    ]
    if rep.reviews:
        lines.append(_review_rows(rep.reviews))
    if rep.arms_shown:
        arms = list(next(iter(rep.by_arm.values())).keys()) if rep.by_arm else []
        lines += [
            "",
            "Balance by arm (unblinded view):",
            table([(s, *c.values()) for s, c in rep.by_arm.items()], ["stratum", *arms]),
            "",
            "Balance by block:",
            table(
                [(b.stratum, b.block, b.block_size, *b.assigned.values()) for b in rep.by_block],
                ["stratum", "block", "size", *arms],
            ),
            f"Imbalance now: {rep.imbalance:g} (the design allows at most {rep.imbalance_bound:g})",
        ]
    return "\n".join(lines)


def _chart_option(name: str, what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        name,
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Also draw {what} into this file (.svg or .png); never overwrites.",
    )


@click.command()
@_chart_option("--chart", "recruitment over time per site (no arm)")
@_chart_option("--balance-chart", "the running balance by arm per stratum (admin; after lock)")
@_chart_option("--kit-chart", "kits requested, prepared and voided per visit, and spares")
@json_option
@pass_settings
def report(
    settings: Settings, chart: Path | None, balance_chart: Path | None, kit_chart: Path | None
) -> None:
    """Recruitment and kit status; balance by arm only for admins (and statisticians after lock).

    Example: randomizer report --chart recruitment.svg
    """
    targets = [p for p in (chart, balance_chart, kit_chart) if p is not None]
    if targets:
        from randomizer import charts  # matplotlib only for the commands that draw

        formats = [charts.chart_format(p.name) for p in targets]
    backend = settings.backend()
    rep = backend.report()
    if targets:
        visits = [v.name for v in backend.trial_design().visits] if kit_chart else []
        drawings = {
            chart: lambda fmt: charts.recruitment_chart(rep, fmt),
            balance_chart: lambda fmt: charts.balance_chart(rep, fmt),
            kit_chart: lambda fmt: charts.kit_chart(rep, fmt, visit_names=visits),
        }
        pictures = [drawings[p](fmt) for p, fmt in zip(targets, formats, strict=True)]
        for path, picture in zip(targets, pictures, strict=True):
            with os.fdopen(create_private(path), "wb") as out:
                out.write(picture)
    emit(settings, rep, lambda: _report_text(rep))

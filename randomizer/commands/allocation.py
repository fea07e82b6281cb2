"""Commands of the blinded path: randomize, kit request|replace, pharmacy prepare|list,
participant void."""

from __future__ import annotations

import functools
import io
import json
import os
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import TextIO

import click

from randomizer.backends.wire import MAX_TEXT
from randomizer.commands.base import (
    Settings,
    emit,
    json_option,
    on_terminal,
    pass_settings,
    reason_option,
    table,
)
from randomizer.design import Criterion, TrialDesign
from randomizer.errors import InvalidInput
from randomizer.exportfiles import create_private
from randomizer.results import PharmacyKit

date_option = click.option(
    "--date",
    "on",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Date of the visit, YYYY-MM-DD (default: today on this machine's local calendar).",
)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, level = value.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"{option} {value[:40]!r} must look like NAME=VALUE")
        if name.strip() in pairs:
            raise InvalidInput(f"{option} {name.strip()!r} is given twice")
        pairs[name.strip()] = level.strip()
    return pairs


def _answers_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"cannot read answers file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError; nesting
        raise InvalidInput(
            f"answers file {path} is not valid "
            f"{'JSON' if path.suffix == '.json' else 'TOML'}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"answers file {path} must map criterion ids to answers")
    answers: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, bool):
            answers[name] = "yes" if value else "no"
        elif isinstance(value, int | float | str):
            answers[name] = str(value)
        else:
            raise InvalidInput(f"answers file {path}: {name} must be a number, yes/no or text")
        if max(len(name), len(answers[name])) > MAX_TEXT:
            # as for an argument: the server takes no longer field
            raise InvalidInput(
                f"answers file {path}: an answer is longer than {MAX_TEXT} characters"
            )
    return answers


def _ask_answers(design: TrialDesign, answers: dict[str, str]) -> bool:
    """Ask each criterion without an answer, again until it parses; whether any was asked."""
    asked = False
    for criterion in design.criteria:
        if criterion.id not in answers:
            answers[criterion.id] = str(
                click.prompt(
                    f"{criterion.question} ({_answer_form(criterion)})",
                    value_proc=functools.partial(_checked, criterion),
                )
            )
            asked = True
    return asked


def _answer_form(criterion: Criterion) -> str:
    return f"number, eligible {criterion.rule()}" if criterion.kind == "range" else "yes/no"


def _checked(criterion: Criterion, raw: str) -> str:
    try:
        criterion.parse(raw)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from None
    return raw.strip()


def _confirm(participant: str, site: str, levels: dict[str, str], answers: dict[str, str]) -> None:
    click.echo(
        f"\nParticipant {participant} at site {site}"
        + "".join(f", {name}={level}" for name, level in sorted(levels.items()))
    )
    for name, value in answers.items():
        click.echo(f"  {name}: {value}")
    click.confirm(f"Randomize {participant} with these answers?", abort=True)


def _date(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@click.command()
@click.argument("participant")
@click.option("--site", required=True, help="Site code, e.g. WAW.")
@click.option(
    "--stratum",
    "strata",
    multiple=True,
    metavar="FACTOR=LEVEL",
    help="Stratification factor level (repeat for each factor).",
)
@click.option(
    "--answer",
    "answer_pairs",
    multiple=True,
    metavar="CRITERION=VALUE",
    help="Eligibility answer (repeat); numbers or yes/no.",
)
@click.option(
    "--answers",
    "answers_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML or JSON file of eligibility answers.",
)
@date_option
@json_option
@pass_settings
def randomize(
    settings: Settings,
    participant: str,
    site: str,
    strata: tuple[str, ...],
    answer_pairs: tuple[str, ...],
    answers_path: Path | None,
    on: datetime | None,
) -> None:
    """Check eligibility and randomize a participant; prints the visit-1 kit code.

    Participant ids are read without surrounding spaces and in upper case: p-007 is P-007.

    Example: randomizer randomize P-001 --site WAW --answer age=45 --answer progressive_ms=yes
    --answer edss=4.5 --answer recent_relapse_or_steroids=no --answer other_neuro_autoimmune=no
    --answer infection_malignancy_systemic=no
    """
    answers = _answers_file(answers_path) if answers_path else {}
    answers.update(_pairs(answer_pairs, "--answer"))
    levels = _pairs(strata, "--stratum")
    backend = settings.backend()
    if on_terminal():
        # the password first: typed ahead of a question, it would be echoed as an answer
        settings.credentials()
        if _ask_answers(backend.trial_design(), answers):
            _confirm(participant, site, levels, answers)
    result = backend.randomize(
        participant, site, levels, answers, _date(on), signature=settings.signature("randomize")
    )
    emit(
        settings,
        result,
        lambda: (
            f"Participant {result.participant} randomized at {result.site}: "
            f"randomization number {result.randomization_number}.\n"
            f"Visit 1 kit: {result.kit}"
        ),
    )


@click.group()
def kit() -> None:
    """Request and replace kits (investigator).

    Example: randomizer --user ivan kit request P-001 --visit 2
    """


@kit.command("request")
@click.argument("participant")
@click.option("--visit", type=click.IntRange(min=1), required=True, help="Dosing visit number.")
@date_option
@click.option(
    "--override-window", is_flag=True, help="Dose outside the visit window (needs --reason)."
)
@reason_option(required=False)
@json_option
@pass_settings
def kit_request(
    settings: Settings,
    participant: str,
    visit: int,
    on: datetime | None,
    override_window: bool,
    reason: str | None,
) -> None:
    """The kit code for a participant's dosing visit (the same code if asked again).

    Dated today unless --date gives an earlier day.
    Example: randomizer kit request P-001 --visit 2
    """
    if override_window and reason is None:
        raise InvalidInput("--override-window needs --reason TEXT")
    if reason is not None and not override_window:
        raise InvalidInput("--reason is only used with --override-window")
    issued = settings.backend().request_kit(
        participant, visit, _date(on), reason if override_window else None
    )
    again = " (issued earlier)" if issued.repeat else ""
    note = f"\nNote: {issued.note}." if issued.note else ""
    emit(
        settings,
        issued,
        f"{issued.participant} ({issued.randomization_number}) visit "
        f"{issued.visit} ({issued.visit_name}) on {issued.visit_date}: kit {issued.kit}{again}"
        f"{note}",
    )


@kit.command("replace")
@click.argument("code")
@reason_option()
@json_option
@pass_settings
def kit_replace(settings: Settings, code: str, reason: str) -> None:
    """Void a damaged or lost kit and issue a spare of the same content.

    Example: randomizer kit replace ABCD-EFGC --reason "bag punctured"
    """
    result = settings.backend().replace_kit(code, reason)
    emit(
        settings,
        result,
        f"Kit {result.voided} voided. {result.participant} visit "
        f"{result.visit}: use kit {result.kit}",
    )


@click.group()
def pharmacy() -> None:
    """Kit contents and preparation (pharmacist, unblinded).

    Example: randomizer --user petra pharmacy prepare ABCD-EFGC
    """


@pharmacy.command("prepare")
@click.argument("code")
@json_option
@pass_settings
def pharmacy_prepare(settings: Settings, code: str) -> None:
    """Show what a kit holds and how to prepare it; records the preparation.

    Example: randomizer pharmacy prepare ABCD-EFGC
    """
    prep = settings.backend().prepare_kit(code)
    emit(
        settings,
        prep,
        lambda: (
            f"Kit {prep.kit} for {prep.participant} ({prep.randomization_number}), visit "
            f"{prep.visit} ({prep.visit_name})\n"
            f"CONTENT: {prep.label} [{prep.arm}]\n{prep.description}\n"
            f"Preparation: {prep.instructions}\n"
            "Label the infusion with the kit code only; never tell blinded staff the content."
        ),
    )


STDOUT = Path("-")
"""``-`` as a file argument: standard output."""


def _write_kits_csv(handle: TextIO, kits: list[PharmacyKit]) -> None:
    from randomizer.allocation import service  # SQLAlchemy: not on a remote command's path

    service.write_kits_csv(handle, kits)


@pharmacy.command("list")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Also write the list as CSV (new file, mode 0600); '-' prints the CSV "
    "alone to standard output.",
)
@json_option
@pass_settings
def pharmacy_list(settings: Settings, csv_path: Path | None) -> None:
    """List every kit with its content and status, sorted by code.

    Example: randomizer pharmacy list --csv kits.csv
    """
    if csv_path == STDOUT:
        if settings.as_json:
            raise InvalidInput("--csv - and --json both write to standard output: choose one")
        buffer = io.StringIO()
        _write_kits_csv(buffer, settings.backend().pharmacy_list())
        click.echo(buffer.getvalue(), nl=False)
        return
    # create the file first: a path that cannot be written must not leave an audited listing
    fd = create_private(csv_path) if csv_path is not None else None
    try:
        kits = settings.backend().pharmacy_list()
    except BaseException:
        if fd is not None and csv_path is not None:
            os.close(fd)
            csv_path.unlink(missing_ok=True)
        raise
    if fd is not None:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            _write_kits_csv(handle, kits)
    emit(
        settings,
        kits,
        lambda: table(
            [
                (k.kit, k.label, k.status, "spare" if k.spare else "", k.participant, k.visit or "")
                for k in kits
            ],
            ["kit", "content", "status", "spare", "participant", "visit"],
        ),
    )

"""Commands on designs and the allocation list: design show|check, list preview|generate|verify."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from randomizer.commands.base import (
    Settings,
    emit,
    json_option,
    on_terminal,
    pass_settings,
    table,
)
from randomizer.design import TrialDesign, load_design
from randomizer.errors import InvalidInput
from randomizer.results import ListApproval, ListStatus, ListSummary

if TYPE_CHECKING:
    from randomizer.predictability import PredictabilityReport


def _design_text(design: TrialDesign) -> str:
    lines = [
        f"{design.id}: {design.title}",
        f"Planned participants: {design.planned_participants} "
        f"(list length per stratum: {design.stratum_length})",
        "Arms (ratio): "
        + ", ".join(
            f"{a.id} = {a.label} ({r})" for a, r in zip(design.arms, design.ratio, strict=True)
        ),
        "Block sizes: " + ", ".join(str(s) for s in design.block_sizes),
        "Strata: " + ", ".join(design.strata()),
    ]
    if design.sites:
        lines.append("Sites: " + ", ".join(design.sites))
    lines.append("Eligibility:")
    for c in design.criteria:
        lines.append(f"  {c.id}: {c.question} [must be {c.rule()}]")
    lines.append("Dosing visits:")
    for v in design.visits:
        lines.append(f"  {v.number}. {v.name}: day {v.day} (window +/-{v.window} days)")
    lines.append(
        f"Spare kits per arm: {design.spares_per_arm()} (spare fraction {design.spare_fraction})"
    )
    return "\n".join(lines)


@click.group()
def design() -> None:
    """Show or check trial designs (no database needed).

    Example: randomizer design show exosome-ms
    """


@design.command("show")
@click.argument("name_or_file")
@json_option
@pass_settings
def design_show(settings: Settings, name_or_file: str) -> None:
    """Show a design: arms, ratio, blocks, strata, eligibility, visits, kits.

    Example: randomizer design show exosome-ms
    """
    loaded = load_design(name_or_file)
    emit(settings, loaded.to_dict(), lambda: _design_text(loaded))


@design.command("check")
@click.argument("file")
@click.option(
    "--predictability",
    is_flag=True,
    help="Also show how well the next arm could be guessed and the largest "
    "imbalance, for these blocks and the usual alternatives.",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --predictability: draw correct guesses against largest imbalance, one "
    "point per way of making blocks, into this file (.svg or .png).",
)
@json_option
@pass_settings
def design_check(settings: Settings, file: str, predictability: bool, chart: Path | None) -> None:
    """Validate a design file (or shipped design); exit 2 with the field named if it is wrong.

    Example: randomizer design check my-trial.toml --predictability --chart blocks.svg
    """
    if chart is not None and not predictability:
        raise click.UsageError("--chart draws the predictability figures: add --predictability")
    if chart is not None:
        from randomizer import charts  # matplotlib only for the commands that draw

        chart_format = charts.chart_format(chart.name)
    loaded = load_design(file)
    data: dict[str, Any] = {"design": loaded.id, "valid": True, "digest": loaded.digest()}
    text = f"{file}: valid design {loaded.id} (digest {loaded.digest()})"
    if predictability:
        from randomizer.predictability import predictability_report  # numpy

        report = predictability_report(loaded)
        data["predictability"] = report
        text += "\n\n" + _predictability_text(report)
        if chart is not None:
            chart.write_bytes(charts.predictability_chart(report, chart_format))
            text += f"\n\nChart written to {chart}"
    emit(settings, data, text)


def _predictability_text(report: PredictabilityReport) -> str:
    strata = f"{report.strata} strat{'um' if report.strata == 1 else 'a'}"
    ratio = ":".join(str(r) for r in report.ratio)
    lines = [
        f"Predictability per stratum of {report.participants} participants ({strata}), "
        f"ratio {':'.join(report.arms)} = {ratio}.",
        "Correct guesses: the expected share of right guesses by an investigator who",
        "always guesses the arm furthest below its share so far (Blackwell-Hodges;",
        "ties guessed at random). Largest imbalance: the most the arms' counts",
        "(divided by the ratio) can differ at any point in the stratum.",
        "",
    ]
    rows = []
    for row in report.rows:
        figure = (
            "exact"
            if row.method == "exact"
            else f"simulated: {row.trials} lists, SE {row.standard_error:.2%}"
        )
        rows.append(
            (
                row.label + (" (this design)" if row.design else ""),
                f"{row.correct_guesses:.1%}",
                figure,
                f"{row.largest_imbalance:g}",
            )
        )
    lines.append(table(rows, ["blocks", "correct guesses", "figure", "largest imbalance"]))
    return "\n".join(lines)


@click.group("list")
def list_group() -> None:
    """Preview, generate, approve and verify the allocation list.

    Example: randomizer --user alice list generate
    """


@list_group.command("preview")
@click.option("--design", "design_ref", required=True, help="Design name or file.")
@click.option("--seed", required=True, help="The seed as 64 hexadecimal digits.")
@click.option(
    "--participants",
    type=int,
    default=None,
    help="List length per stratum (default: the design's).",
)
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    help="CSV output: stratum,sequence,block,block_size,arm (its SHA-256 is the list digest).",
)
@json_option
@pass_settings
def list_preview(
    settings: Settings, design_ref: str, seed: str, participants: int | None, as_csv: bool
) -> None:
    """Print the list a seed gives, without any database (validation and dummy runs).

    With --json or --csv the rows are written as they are laid out, a few thousand at
    a time, so a list of millions needs little memory.
    Example: randomizer list preview --design exosome-ms --seed 00...01 --participants 20
    """
    if as_csv and settings.as_json:
        raise InvalidInput("--csv and --json exclude each other: give one")
    # numpy only for the commands that lay out a list here: the others may run remotely
    from randomizer.allocation.generator import generate_schedule
    from randomizer.allocation.stream import format_seed, parse_seed

    loaded = load_design(design_ref)
    seed_bytes = parse_seed(seed)
    schedule = generate_schedule(loaded, seed_bytes, participants)
    if as_csv:
        _write_chunks(schedule.csv_chunks())
        return
    if settings.as_json:
        # The document json.dumps(indent=2) would print (as emit does), built piece by piece.
        head = json.dumps(
            {"design": loaded.id, "seed": format_seed(seed_bytes)}, indent=2, ensure_ascii=False
        )
        _write_chunks(
            itertools.chain(
                [head[:-2].encode("utf-8") + b',\n  "slots": ['],
                schedule.json_slot_chunks(),
                [b"\n  ]\n}\n"],
            )
        )
        return

    def text() -> str:
        parts = [
            table(
                [(s.stratum, s.sequence, s.block, s.block_size, s.arm) for s in schedule.slots()],
                ["stratum", "sequence", "block", "block_size", "arm"],
            ),
            "",
            "Balance per stratum:",
        ]
        for stratum, counts in schedule.counts().items():
            parts.append(f"  {stratum}: " + ", ".join(f"{a} {n}" for a, n in counts.items()))
        parts.append(f"List digest: {schedule.digest()}")
        return "\n".join(parts)

    click.echo(text())


def _write_chunks(chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        click.echo(chunk, nl=False)  # bytes go to the binary stdout as they are


def _summary_text(summary: ListSummary, verb: str) -> str:
    rows = [(s.stratum, s.planned, s.generated) for s in summary.strata]
    return (
        f"{verb}\n"
        + table(rows, ["stratum", "planned", "generated"])
        + f"\nKits: {summary.kits} ({summary.spare_kits} spares)"
        f"\nList commitment: {summary.commitment}"
    )


@list_group.command("generate")
@json_option
@pass_settings
def list_generate(settings: Settings) -> None:
    """Generate the sealed list and kits from a fresh secret seed (admin, once).

    Prints counts and the list commitment, never the sequence.
    Example: randomizer --user alice list generate
    """
    summary = settings.backend().generate_list()
    emit(
        settings,
        summary,
        lambda: _summary_text(
            summary,
            "Allocation list generated.\nState: DRAFT: a second admin or statistician "
            "reviews this summary and runs 'randomizer list approve' before any "
            "participant can be randomized.",
        ),
    )


@list_group.command("status")
@json_option
@pass_settings
def list_status(settings: Settings) -> None:
    """Show whether the list exists and how much of each stratum is used (any role).

    Counts only, never an arm. Example: randomizer --user mona list status
    """
    status = settings.backend().list_status()
    emit(settings, status, lambda: _status_text(status))


def _status_text(status: ListStatus) -> str:
    if not status.generated:
        return "No allocation list yet: an admin generates it first."
    rows = [
        (s.stratum, s.planned, s.generated, s.used, s.generated - s.used) for s in status.strata
    ]
    kits = ", ".join(f"{name} {count}" for name, count in status.kits.items())
    if status.state == "draft":
        state = (
            "State: DRAFT, awaiting approval by a second admin or statistician "
            f"(generated by {status.generated_by}); no participant can be randomized yet."
        )
    else:
        by = f" by {status.approved_by} at {status.approved_at}" if status.approved_by else ""
        state = f"State: approved{by}."
    return (
        f"Allocation list generated {status.generated_at}"
        f"{' (database locked)' if status.locked else ''}.\n{state}\n"
        + table(rows, ["stratum", "planned", "generated", "used", "free"])
        + f"\nKits: {kits}; spares {status.spare_kits_left} of "
        f"{status.spare_kits} left\nList commitment: {status.commitment}"
    )


@list_group.command("approve")
@json_option
@pass_settings
def list_approve(settings: Settings) -> None:
    """Approve the draft list for go-live (admin or statistician, not the one who generated it).

    Review the blinded QC summary first ('randomizer list status': counts per stratum,
    planned against generated, kits, the list commitment); on a terminal it is shown
    again and the approval asked for. No participant can be randomized before it.
    Example: randomizer --user stan list approve
    """
    backend = settings.backend()
    if on_terminal() and not settings.as_json:
        status = backend.list_status()
        click.echo(_status_text(status))
        click.confirm("Approve this allocation list for go-live?", abort=True)
    approval = backend.approve_list(signature=settings.signature("list.approve"))
    emit(settings, approval, lambda: _approval_text(approval))


def _approval_text(approval: ListApproval) -> str:
    rows = [(s.stratum, s.planned, s.generated) for s in approval.strata]
    return (
        f"Allocation list approved by {approval.approved_by} at {approval.approved_at} "
        f"(generated by {approval.generated_by}); randomization may begin.\n"
        + table(rows, ["stratum", "planned", "generated"])
        + f"\nKits: {approval.kits} ({approval.spare_kits} spares)"
        f"\nList commitment: {approval.commitment}"
    )


@list_group.command("verify")
@json_option
@pass_settings
def list_verify(settings: Settings) -> None:
    """Regenerate the list from its sealed seed and compare every slot and kit.

    Admin, or statistician after the lock. Example: randomizer list verify
    """
    summary = settings.backend().verify_list()
    emit(
        settings,
        summary,
        lambda: _summary_text(summary, "Allocation list verified: it matches its seed."),
    )

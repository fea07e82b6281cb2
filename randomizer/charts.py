"""Pictures of the library's figures: recruitment, balance, predictability and kit status.

This module has no rule of its own: it draws what :mod:`randomizer.reports` and
:mod:`randomizer.predictability` give, and asks the reports module whether
balance by arm may be drawn (:func:`~randomizer.reports.require_balance`).
Every chart comes with its text alternative, a :class:`ChartTable` holding the
same numbers.

matplotlib (Agg backend) is imported only inside the functions that draw, so
the CLI's start-up and the pages that draw nothing never pay for it. SVG
output is deterministic (a fixed hash salt, no date, text kept as text), so
two trials with the same dates and sites give byte-identical recruitment
charts. Colours come from the Okabe-Ito palette, which colour-blind readers
can tell apart; every series also differs by line style, marker or hatch, so
the charts read in grey-scale.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from randomizer.errors import InvalidInput
from randomizer.predictability import PredictabilityReport
from randomizer.reports import Report, require_balance, running_imbalance

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Format = Literal["svg", "png"]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
"""Okabe-Ito colours (without black, kept for totals and bounds)."""

LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx")

SVG_SALT = "randomizer-charts"
"""matplotlib's ``svg.hashsalt``: the ids inside an SVG no longer change from run to run."""


@dataclass(frozen=True)
class ChartTable:
    """A chart's text alternative: the same numbers as a table."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def chart_format(filename: str) -> Format:
    """``svg`` or ``png`` from a file name's extension; anything else is refused."""
    lowered = filename.lower()
    if lowered.endswith(".svg"):
        return "svg"
    if lowered.endswith(".png"):
        return "png"
    raise InvalidInput(f"a chart file must end in .svg or .png, got {filename!r}")


# recruitment --------------------------------------------------------------------


def recruitment_table(rep: Report) -> ChartTable:
    """Cumulative participants per date, per site and in total, and screen failures."""
    sites = list(rep.by_site_date)
    days = sorted(
        {d for counts in rep.by_site_date.values() for d in counts}
        | set(rep.screen_failures_by_date)
    )
    rows = []
    running = dict.fromkeys(sites, 0)
    for day in days:
        for site in sites:
            running[site] += rep.by_site_date[site].get(day, 0)
        rows.append(
            (
                day,
                *(str(running[s]) for s in sites),
                str(sum(running.values())),
                str(rep.screen_failures_by_date.get(day, 0)),
            )
        )
    return ChartTable(
        title=f"Recruitment of {rep.trial}: {rep.randomized} of {rep.planned} planned",
        header=("date", *sites, "total", "screen failures"),
        rows=tuple(rows),
    )


def recruitment_chart(rep: Report, fmt: Format = "svg", planned_end: date | None = None) -> bytes:
    """Cumulative participants randomized over time, per site and in total (never an arm).

    The planned total is a horizontal line, ``planned_end`` (when the design
    gives one) a vertical one, and screen failures are marks on the total.
    """
    table = recruitment_table(rep)
    sites = list(rep.by_site_date)

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        axes = figure.add_subplot()
        days = [_day_number(row[0]) for row in table.rows]
        total = [int(row[len(sites) + 1]) for row in table.rows]
        if days:
            for i, site in enumerate(sites):
                values = [int(row[1 + i]) for row in table.rows]
                axes.step(
                    days,
                    values,
                    where="post",
                    color=PALETTE[i % len(PALETTE)],
                    linestyle=LINE_STYLES[(i + 1) % len(LINE_STYLES)],
                    marker=MARKERS[i % len(MARKERS)],
                    markersize=4,
                    label=f"site {site}",
                    zorder=3,  # over the total, which it equals at a one-site trial
                )
            axes.step(days, total, where="post", color="black", linewidth=2.5, label="total")
            failed = [
                (d, t) for d, t, row in zip(days, total, table.rows, strict=True) if row[-1] != "0"
            ]
            if failed:
                axes.plot(
                    [d for d, _ in failed],
                    [t for _, t in failed],
                    linestyle="none",
                    marker="x",
                    markersize=9,
                    markeredgewidth=2,
                    color=PALETTE[5],
                    label=f"screen failures ({rep.screen_failures})",
                )
            axes.xaxis_date()
            figure.autofmt_xdate()
        else:
            axes.text(
                0.5,
                0.5,
                "No participant randomized yet",
                ha="center",
                va="center",
                transform=axes.transAxes,
            )
            axes.set_xticks([])
        axes.axhline(
            rep.planned,
            color="black",
            linestyle=":",
            linewidth=1.5,
            label=f"planned total ({rep.planned})",
        )
        if planned_end is not None:
            axes.axvline(
                _day_number(planned_end.isoformat()),
                color="grey",
                linestyle="--",
                label=f"planned end ({planned_end})",
            )
        axes.set_ylim(0, rep.planned * 1.08)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(table.title)
        axes.set_xlabel("date randomized")
        axes.set_ylabel("participants randomized (cumulative)")
        axes.grid(True, color="#dddddd")
        axes.legend(loc="upper left", fontsize="small")

    return _render(draw, fmt)


# balance ------------------------------------------------------------------------


def balance_table(rep: Report) -> ChartTable:
    """Per stratum, the running imbalance after each participant in list order.

    Refused (:class:`~randomizer.errors.NotAuthorized`) exactly as the balance
    table is, when the report does not show arms.
    """
    require_balance(rep)
    arm_ids, ratio = _arms(rep)
    running = running_imbalance(rep.allocations, arm_ids, ratio)
    blocks = [a.block for a in rep.allocations]
    rows = []
    index = 0
    for stratum, values in running.items():
        for n, value in enumerate(values, start=1):
            rows.append((stratum, str(n), str(blocks[index]), f"{value:g}"))
            index += 1
    measure = f"{arm_ids[0]} - {arm_ids[1]}" if len(arm_ids) == 2 else "spread between arms"
    return ChartTable(
        title=f"Balance of {rep.trial} in list order (design bound {rep.imbalance_bound:g})",
        header=("stratum", "participant in stratum", "block", measure),
        rows=tuple(rows),
    )


def balance_chart(rep: Report, fmt: Format = "svg") -> bytes:
    """The running difference between arms per stratum, the design's bound as a band,
    and block boundaries; refused like the balance table when arms are not shown."""
    table = balance_table(rep)
    arm_ids, _ = _arms(rep)
    bound = rep.imbalance_bound or 0.0
    strata: dict[str, list[tuple[int, int, float]]] = {}
    for stratum, n, block, value in table.rows:
        strata.setdefault(stratum, []).append((int(n), int(block), float(value)))
    signed = len(arm_ids) == 2

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        shown = list(strata) or [""]
        columns = min(3, len(shown))
        rows = -(-len(shown) // columns)
        figure.set_size_inches(max(8.0, 4.2 * columns), 2.8 * rows + 1.6)
        grid = figure.subplots(rows, columns, squeeze=False, sharey=True)
        for i, cell in enumerate(grid.flat):
            if i >= len(shown):
                cell.set_axis_off()
                continue
            stratum = shown[i]
            points = strata.get(stratum, [])
            last = max((n for n, _, _ in points), default=1)
            cell.axhspan(-bound if signed else 0, bound, color="#e5e5e5", label="design bound")
            for edge in (-bound, bound) if signed else (bound,):
                cell.axhline(edge, color="black", linestyle=":", linewidth=1)
            cell.axhline(0, color="grey", linewidth=0.8)
            for (n, block, _), (_, following, _) in zip(points, points[1:], strict=False):
                if following != block:
                    cell.axvline(n + 0.5, color="grey", linestyle="--", linewidth=0.8)
            if points:
                cell.step(
                    [0] + [n for n, _, _ in points],
                    [0.0] + [v for _, _, v in points],
                    where="post",
                    color=PALETTE[0],
                    linewidth=2,
                    marker="o",
                    markersize=3,
                )
                cell.set_title(f"stratum {stratum}", fontsize="small")
            else:
                cell.text(
                    0.5,
                    0.5,
                    "No participant randomized yet",
                    ha="center",
                    va="center",
                    transform=cell.transAxes,
                )
            cell.set_xlim(0, last + 0.5)
            cell.xaxis.set_major_locator(MaxNLocator(integer=True))
            cell.set_ylim(-(bound + 1) if signed else 0, bound + 1)
            cell.set_xlabel("participant in stratum (list order)", fontsize="small")
            if i % columns == 0:
                cell.set_ylabel(
                    f"{arm_ids[0]} minus {arm_ids[1]}" if signed else "spread between arms",
                    fontsize="small",
                )
        figure.suptitle(
            table.title + "\nshaded: largest imbalance the design allows; dashed: block boundaries"
        )

    return _render(draw, fmt)


def _arms(rep: Report) -> tuple[tuple[str, ...], tuple[int, ...]]:
    return tuple(rep.arm_ratio), tuple(rep.arm_ratio.values())


# predictability -----------------------------------------------------------------


def predictability_table(report: PredictabilityReport) -> ChartTable:
    """One row per way of making blocks: correct guesses (%) and largest imbalance."""
    return ChartTable(
        title=(
            f"Predictability of {report.design} per stratum of {report.participants}: "
            "correct guesses against largest imbalance"
        ),
        header=("blocks", "this design", "correct guesses (%)", "largest imbalance"),
        rows=tuple(
            (
                row.label,
                "yes" if row.design else "",
                f"{100 * row.correct_guesses:.2f}",
                f"{row.largest_imbalance:g}",
            )
            for row in report.rows
        ),
    )


def predictability_points(report: PredictabilityReport) -> list[tuple[str, float, float, bool]]:
    """The chart's points: (label, largest imbalance, correct guesses in %, is the design's)."""
    return [
        (row.label, row.largest_imbalance, 100 * row.correct_guesses, row.design)
        for row in report.rows
    ]


def predictability_chart(report: PredictabilityReport, fmt: Format = "svg") -> bytes:
    """Correct guesses under the convergence strategy against the largest imbalance,
    one point per way of making blocks, the design's own marked."""
    table = predictability_table(report)
    points = predictability_points(report)
    errors = [100 * row.standard_error for row in report.rows]

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        # a legend names each point: labels beside close points would overlap
        for i, ((label, x, y, own), error) in enumerate(zip(points, errors, strict=True)):
            axes.errorbar(
                [x],
                [y],
                yerr=[1.96 * error] if error else None,
                marker="*" if own else MARKERS[i % len(MARKERS)],
                markersize=18 if own else 9,
                color="black" if own else PALETTE[i % len(PALETTE)],
                markeredgecolor="black",
                linestyle="none",
                label=f"{label}{' (THIS DESIGN)' if own else ''}: {y:.1f}%, imbalance {x:g}",
                zorder=3 if own else 2,
            )
        top = max((x for _, x, _, _ in points), default=1.0)
        axes.set_xlim(0, top * 1.1 + 0.5)
        axes.set_ylim(
            min(45.0, min((y for _, _, y, _ in points), default=50.0) - 3),
            max(100.0, max((y for _, _, y, _ in points), default=100.0) + 2),
        )
        axes.axhline(100 / len(report.arms), color="grey", linestyle=":", label="a coin's guess")
        axes.set_title(table.title, fontsize="medium")
        axes.set_xlabel("largest imbalance (count / ratio, between arms)")
        axes.set_ylabel("expected correct guesses (%)")
        axes.grid(True, color="#dddddd")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        figure.set_size_inches(10, 4.8)

    return _render(draw, fmt)


# kits ---------------------------------------------------------------------------


def kit_table(rep: Report, visit_names: Sequence[str] = ()) -> ChartTable:
    """Per visit, kits requested (not yet prepared), prepared and voided; spares left."""
    rows = []
    for i, (visit, counts) in enumerate(rep.kits_by_visit.items()):
        name = visit_names[i] if i < len(visit_names) else f"visit {visit}"
        rows.append((name, *(str(n) for n in counts.values()), ""))
    rows.append(("spares", "", "", "", str(rep.spares_left)))
    return ChartTable(
        title=f"Kits of {rep.trial} per visit",
        header=("visit", "requested", "prepared", "voided", "spares left"),
        rows=tuple(rows),
    )


def kit_chart(rep: Report, fmt: Format = "svg", *, visit_names: Sequence[str] = ()) -> bytes:
    """Kits requested, prepared and voided per visit as bars, and the spares left."""
    table = kit_table(rep, visit_names)

    def draw(figure: Figure) -> None:
        from matplotlib.ticker import MaxNLocator

        axes = figure.add_subplot()
        visits = [row[0] for row in table.rows[:-1]]
        statuses = table.header[1:4]
        width = 0.8 / len(statuses)
        for j, status in enumerate(statuses):
            heights = [int(row[1 + j]) for row in table.rows[:-1]]
            places = [i + (j - 1) * width for i in range(len(visits))]
            bars = axes.bar(
                places,
                heights,
                width,
                color=PALETTE[j],
                hatch=HATCHES[j + 1],
                edgecolor="black",
                label="requested (not yet prepared)" if status == "requested" else status,
            )
            axes.bar_label(bars, fontsize="x-small")
        spare = axes.bar(
            [len(visits) + 0.2],
            [rep.spares_left],
            width * 1.5,
            color="white",
            edgecolor="black",
            hatch="\\\\",
            label="spares left",
        )
        axes.bar_label(spare, fontsize="x-small")
        axes.set_xticks([*range(len(visits)), len(visits) + 0.2], [*visits, "spares"])
        axes.set_title(table.title)
        axes.set_xlabel("dosing visit")
        axes.set_ylabel("kits")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylim(0, max(1, *(int(c) for row in table.rows for c in row[1:] if c)) * 1.45)
        axes.legend(loc="upper right", fontsize="small")

    return _render(draw, fmt)


EPOCH = date(1970, 1, 1)
"""Day 0 of the date axes (matplotlib's ``date.epoch``, set while drawing)."""


def _day_number(day: str) -> float:
    """A date as matplotlib's date axis counts it: days since :data:`EPOCH`."""
    return float((date.fromisoformat(day) - EPOCH).days)


# rendering ----------------------------------------------------------------------


def _render(draw: Callable[[Figure], None], fmt: Format) -> bytes:
    """Draw on a new figure and return it as SVG or PNG bytes, the same for the same input."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "svg.hashsalt": SVG_SALT,
            "date.epoch": EPOCH.isoformat(),
            "svg.fonttype": "none",
            "font.family": "DejaVu Sans",
            "font.size": 10,
        }
    ):
        figure = Figure(figsize=(8, 4.8), dpi=100, layout="constrained")
        draw(figure)
        buffer = io.BytesIO()
        metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
        figure.savefig(buffer, format=fmt, metadata=metadata)
    if fmt == "svg":
        return without_style(buffer.getvalue().decode()).encode()
    return buffer.getvalue()


_STYLE_ATTRIBUTE = re.compile(r' style="([^"]*)"')
_STYLE_ELEMENT = re.compile(r"\s*<style[^>]*>\*\{([^}]*)\}</style>")


def without_style(svg: str) -> str:
    """matplotlib's SVG with each ``style`` turned into presentation attributes.

    The pages' Content-Security-Policy (``style-src 'self'``) blocks inline
    styles, also in an SVG opened on its own, where the chart would turn black;
    presentation attributes (``fill="#fff"``) are not styles, so the chart looks
    the same everywhere. matplotlib's one ``<style>`` element (``*{...}``)
    becomes attributes of the root, which every element inherits.
    """
    root = _STYLE_ELEMENT.search(svg)
    if root is not None:
        svg = svg.replace(root.group(0), "", 1)
        svg = svg.replace("<svg ", f"<svg{_attributes(root.group(1))} ", 1)
    return _STYLE_ATTRIBUTE.sub(lambda m: _attributes(m.group(1)), svg)


def _attributes(declarations: str) -> str:
    """``fill: #fff; stroke-width: 0.8`` as `` fill="#fff" stroke-width="0.8"``."""
    pairs = [d.split(":", 1) for d in declarations.split(";") if d.strip()]
    return "".join(f' {name.strip()}="{value.strip()}"' for name, value in pairs)

"""The pharmacist's pages: the queue, kit lookup and preparation, labels, the kit list."""

from __future__ import annotations

import io

import segno
from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from randomizer import charts
from randomizer.allocation import service
from randomizer.errors import RandomizerError
from randomizer.server.pages.core import (
    Checked,
    FormPage,
    Signed,
    State,
    Visitor,
    acting,
    design_of,
    logged_in_again,
    pages,
    render,
    resumable,
)
from randomizer.server.state import ServerState


def _kits(state: ServerState, who: Visitor) -> list[service.PharmacyKit]:
    with acting(state, who) as backend:
        return backend.pharmacy_list()


@pages.get("/pharmacy")
def pharmacy_queue(request: Request, state: State, who: Signed) -> HTMLResponse:
    """Kits requested and not yet prepared, oldest request first."""
    with acting(state, who) as backend:
        queue = backend.pharmacy_queue()
    return render(request, "pharmacy_queue.html", who, title="Kits to prepare", queue=queue)


_lookup_form = FormPage("pharmacy_lookup.html", "Look up a kit", {"kit": None})


@resumable("/pharmacy/lookup")
def resume_lookup(request: Request, who: Visitor, kept: dict[str, str]) -> HTMLResponse:
    """The lookup form with the code typed before a new login."""
    return _lookup_form(request, who, {"code": kept.get("code", "")}, notice=logged_in_again())


@pages.get("/pharmacy/lookup")
def pharmacy_lookup(request: Request, state: State, who: Signed, code: str = "") -> HTMLResponse:
    """Find a kit by its typed or scanned code (read forgivingly, as the CLI does)."""
    if not code.strip():
        return _lookup_form(request, who, {"code": code})
    try:
        with acting(state, who) as backend:
            found = backend.lookup_kit(code)
    except RandomizerError as exc:
        return _lookup_form.refused(request, who, {"code": code}, exc, "code")
    return _lookup_form(request, who, {"code": found.kit}, kit=found)


@pages.post("/pharmacy/prepare")
def pharmacy_prepare(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Record the preparation and show what to prepare; never cached."""
    who, form = posted_form
    code = form.get("code")
    with acting(state, who) as backend:
        try:
            prepared = backend.prepare_kit(code)
        except RandomizerError as exc:
            return _lookup_form.refused(request, who, {"code": code}, exc, "code")
    return render(request, "pharmacy_prepared.html", who, title="Prepare the kit", prep=prepared)


@pages.get("/pharmacy/label/{code}")
def pharmacy_label(request: Request, state: State, who: Signed, code: str) -> HTMLResponse:
    """A printable label for the prepared infusion bag: never the arm."""
    with acting(state, who) as backend:
        label = backend.kit_label(code)
    qr = segno.make(label.kit, error="m").svg_inline(
        scale=4, title=f"Kit code {label.kit}", omitsize=True
    )
    return render(
        request,
        "pharmacy_label.html",
        who,
        title=f"Label of kit {label.kit}",
        label=label,
        qr=Markup(qr),
    )


@pages.get("/pharmacy/kits")
def pharmacy_kits(request: Request, state: State, who: Signed) -> HTMLResponse:
    """Every kit with content, status and history; above it, kits per visit as a chart."""
    kits = _kits(state, who)
    with acting(state, who) as backend:
        result = backend.report()
    per_visit = charts.kit_table(result, [v.name for v in design_of(state).visits])
    return render(
        request, "pharmacy_kits.html", who, title="Kit list", kits=kits, kit_chart=per_visit
    )


@pages.get("/pharmacy/kits.csv")
def pharmacy_kits_csv(state: State, who: Signed) -> Response:
    """The kit list as CSV, the columns of ``pharmacy list --csv``; never cached."""
    buffer = io.StringIO()
    service.write_kits_csv(buffer, _kits(state, who))
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="kits.csv"',
        },
    )

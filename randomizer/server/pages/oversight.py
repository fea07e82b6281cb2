"""The pages of oversight: the report, the audit trail, verification, the final unblinding."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from randomizer import audit, charts
from randomizer.errors import (
    Hint,
    InvalidInput,
    RandomizerError,
)
from randomizer.reports import BALANCE_REFUSAL
from randomizer.server.pages.core import (
    Checked,
    FormPage,
    Signed,
    State,
    Visitor,
    acting,
    design_of,
    pages,
    render,
    see_other,
    signature_errors,
    signature_of,
    status_of_error,
)
from randomizer.signatures import meaning_of


@pages.get("/report")
def report(request: Request, state: State, who: Signed) -> HTMLResponse:
    """The report the role may see (balance by arm only when the library shows it).

    Its charts come from the ``/report/*.svg`` routes; each has its numbers
    in a table beside it.
    """
    with acting(state, who) as backend:
        result = backend.report()
    design = design_of(state)
    balance = charts.balance_table(result) if result.arms_shown else None
    return render(
        request,
        "report.html",
        who,
        title="Report",
        report=result,
        recruitment=charts.recruitment_table(result),
        balance=balance,
        balance_refusal=BALANCE_REFUSAL,
        kit_chart=charts.kit_table(result, [v.name for v in design.visits]),
    )


def _svg(picture: bytes) -> Response:
    """A chart as an image, never cached (it changes with every randomization)."""
    return Response(picture, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@pages.get("/report/recruitment.svg")
def recruitment_chart(state: State, who: Signed) -> Response:
    """Cumulative participants randomized per site and in total (every role; no arm)."""
    with acting(state, who) as backend:
        result = backend.report()
    return _svg(charts.recruitment_chart(result))


@pages.get("/report/balance.svg")
def balance_chart(state: State, who: Signed) -> Response:
    """Running balance by arm per stratum; refused as the balance table is."""
    with acting(state, who) as backend:
        result = backend.report()
    return _svg(charts.balance_chart(result))


@pages.get("/report/kits.svg")
def kit_chart(state: State, who: Signed) -> Response:
    """Kits requested, prepared and voided per visit, and spares left (no arm)."""
    with acting(state, who) as backend:
        result = backend.report()
    names = [v.name for v in design_of(state).visits]
    return _svg(charts.kit_chart(result, visit_names=names))


AUDIT_PAGE = 50
"""Audit events per page."""


@pages.get("/audit")
def audit_trail(
    request: Request,
    state: State,
    who: Signed,
    since: int = 0,
    action: str = "",
    user: str = "",
    subject: str = "",
) -> HTMLResponse:
    """The audit trail, a page at a time, filtered by action, user and subject."""
    shown: list[Any] = []
    position = max(0, since)
    more = False
    with acting(state, who) as backend:
        while len(shown) <= AUDIT_PAGE:
            batch = backend.audit_events(position, AUDIT_PAGE * 4)
            if not batch:
                break
            for event in batch:
                position = event.seq
                if (
                    (not action or event.action == action)
                    and (not user or event.user == user)
                    and (not subject or event.subject == subject)
                ):
                    shown.append(event)
                    if len(shown) > AUDIT_PAGE:
                        break
            if len(batch) < AUDIT_PAGE * 4:
                break
    if len(shown) > AUDIT_PAGE:
        more = True
        shown = shown[:AUDIT_PAGE]
    filters = {"action": action, "user": user, "subject": subject}
    next_since = shown[-1].seq if more and shown else None
    next_query = (
        urlencode({"since": next_since, **{k: v for k, v in filters.items() if v}})
        if next_since is not None
        else ""
    )
    return render(
        request,
        "audit.html",
        who,
        title="Audit trail",
        events=shown,
        values=filters,
        since=since,
        next_query=next_query,
    )


_verify_form = FormPage("verify.html", "Verify the audit trail", {"result": None})


@pages.get("/verify")
def verify_form(request: Request, who: Signed) -> HTMLResponse:
    """Verify the audit trail, optionally against a signed checkpoint note."""
    return _verify_form(request, who, {})


@pages.post("/verify")
def verify(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """Recompute the chain; a pasted checkpoint note is checked with its public key here."""
    who, form = posted_form
    note = form.get("checkpoint").strip()
    public_key = form.get("public_key").strip()
    try:
        signed = None
        if note or public_key:
            if not (note and public_key):
                raise InvalidInput(
                    "a checkpoint note is checked with the public key that signed it: give both",
                    hint=Hint.CHECKPOINT_KEY,
                )
            signed = audit.read_checkpoint(note, public_key.encode("utf-8"))
        with acting(state, who) as backend:
            result = backend.audit_verify(signed)
    except RandomizerError as exc:
        return _verify_form.refused(request, who, form.kept(), exc)
    return _verify_form(request, who, {}, result=result)


# the statistician -------------------------------------------------------------------


_unblinding_form = FormPage(
    "unblinding.html", "Final unblinding", {"meaning": meaning_of("unblind.all")}
)


@pages.get("/unblinding")
def unblinding_page(request: Request, who: Signed) -> HTMLResponse:
    """The final unblinding export (after lock), as a download."""
    return _unblinding_form(request, who, {})


@pages.post("/unblinding")
def unblinding_export(request: Request, state: State, posted_form: Checked) -> Response:
    """The export, audited before it is sent; never cached."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            export = backend.unblind_all(signature=signature_of(form, "unblind.all"))
        except RandomizerError as exc:
            errors = signature_errors(exc)
            return _unblinding_form.refused(request, who, {}, exc, errors=errors)
    return Response(
        export.csv,
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="unblinding.csv"',
            "X-Randomizer-SHA256": export.sha256,
        },
    )


_list_verify_form = FormPage("list_verify.html", "Verify the list", {"result": None})


@pages.get("/list/verify")
def list_verify_page(request: Request, who: Signed) -> HTMLResponse:
    """Regenerate the list from its sealed seed and compare (admin; statistician after lock)."""
    return _list_verify_form(request, who, {})


@pages.post("/list/verify")
def list_verify(request: Request, state: State, posted_form: Checked) -> HTMLResponse:
    """The verification's result."""
    who, _ = posted_form
    with acting(state, who) as backend:
        try:
            result = backend.verify_list()
        except RandomizerError as exc:
            return _list_verify_form.refused(request, who, {}, exc)
    return _list_verify_form(request, who, {}, result=result)


# reviews of emergency unblindings ------------------------------------------------------


def _reviews_page(
    request: Request,
    state: State,
    who: Visitor,
    show_all: bool,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    with acting(state, who) as backend:
        items = backend.unblinding_reviews(open_only=not show_all)
    context.setdefault("values", {})
    return render(
        request,
        "reviews.html",
        who,
        status,
        title="Unblinding reviews",
        items=items,
        show_all=show_all,
        **context,
    )


@pages.get("/reviews")
def reviews(
    request: Request, state: State, who: Signed, show: str = "", done: str = ""
) -> HTMLResponse:
    """The open reviews of emergency unblindings (every one with ``show=all``); never an arm."""
    notice = f"Review {done} is closed." if done.isdigit() else ""
    return _reviews_page(request, state, who, show == "all", notice=notice)


@pages.post("/reviews/{review_id}/close")
def close_review(request: Request, state: State, posted_form: Checked, review_id: int) -> Response:
    """Close one review with a note (the library decides who may)."""
    who, form = posted_form
    with acting(state, who) as backend:
        try:
            backend.close_review(review_id, form.get("note"))
        except RandomizerError as exc:
            field_name = f"note-{review_id}"
            return _reviews_page(
                request,
                state,
                who,
                False,
                status_of_error(exc),
                error=str(exc),
                errors={field_name: str(exc)},
                values={field_name: form.get("note")},
            )
    return see_other(f"/reviews?done={review_id}")

"""The JSON API under ``/api/v1``: one route per Backend operation, nothing more.

Each route parses its body (unknown fields, wrong types and oversized values
are refused with 422 before anything runs), takes the caller's principal from
the bearer token, calls one :class:`~randomizer.backends.interface.Backend`
method and returns its dataclass as JSON. Roles, states, messages and audit
events all come from the library behind that call.

An identifier in the path (participant, kit code, user name) takes everything
up to the route's last segment (``:path``), so one holding a ``/`` still
reaches the library, which refuses it with its own message as a local run does.

The OpenAPI document says what each route answers: its result, and every
refusal as :class:`ErrorBody` under the status of its class
(:data:`randomizer.server.app.STATUS`). ``docs/openapi.json`` is that
document as committed (``python -m randomizer.server.openapi``).
"""

from __future__ import annotations

import inspect
import io
import zipfile
from collections.abc import Callable
from datetime import date as Date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from randomizer import __version__, audit, integrity, logins, participants, reports, trial
from randomizer.access import Role
from randomizer.allocation import service
from randomizer.backends.interface import Backend
from randomizer.backends.local import LocalBackend
from randomizer.backends.wire import MAX_TEXT, error_classes, to_wire
from randomizer.context import Credentials, Principal
from randomizer.errors import AuthenticationFailed, Hint
from randomizer.server.state import ServerState, client_address, server_state
from randomizer.sessions import INVALID_TOKEN
from randomizer.signatures import Signature
from randomizer.unblinding import emergency, review
from randomizer.unblinding import lock as locking

SEQ_MAX = 2**31 - 1
"""The largest audit sequence number (a 32-bit column on PostgreSQL)."""


def _no_nul(value: str) -> str:
    # PostgreSQL stores no NUL in text, and no identifier or reason needs one
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]
"""Any text field of a request: at most MAX_TEXT characters, no NUL."""

Name = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]
"""An identifier field (participant, site, user, kit code, answer key).

Its bound is the CLI's (MAX_TEXT), not the identifier's own: the library checks
the role first and the identifier after, with its own message, and a tighter
bound here would answer a long one differently in remote and in local runs."""


class Body(BaseModel):
    """Base of every request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class TokenRequest(Body):
    """A login: user name and password."""

    user: Name
    password: Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]


class TokenResponse(BaseModel):
    """A bearer token and when it expires at the latest."""

    token: str
    token_id: str
    expires_at: str


class Health(BaseModel):
    """What anyone may ask without logging in."""

    status: str
    version: str


class DesignResponse(BaseModel):
    """The trial's design as its TOML text (public: no allocation in it)."""

    toml: str


class SignatureBody(Body):
    """An electronic signature: the password re-entered now and the meaning shown to the signer.

    Required by every signed action even with a valid token; the meaning must be
    the action's own (``randomizer.signatures.MEANINGS``).
    """

    password: Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]
    meaning: Text

    def value(self) -> Signature:
        """The library's signature."""
        return Signature(password=self.password, meaning=self.meaning)


class Signed(Body):
    """A signed action without other fields."""

    signature: SignatureBody


class RandomizeRequest(Body):
    """Randomize one participant (signed)."""

    participant: Name
    site: Name
    levels: dict[Name, Name] = Field(default_factory=dict, max_length=32)
    answers: dict[Name, Name] = Field(default_factory=dict, max_length=64)
    date: Date | None = None
    signature: SignatureBody


class KitRequest(Body):
    """Request the kit of one dosing visit."""

    visit: int = Field(ge=1)  # no upper bound: the library refuses it naming the design's visits
    date: Date | None = None
    override_reason: Text | None = None


class Reason(Body):
    """A state change that needs a reason."""

    reason: Text


class SignedReason(Body):
    """A signed state change that needs a reason."""

    reason: Text
    signature: SignatureBody


class NewUser(Body):
    """A user to add."""

    name: Name
    role: Role
    password: Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]
    sites: list[Name] = Field(default_factory=list, max_length=64)


class NewPassword(Body):
    """A new password for oneself or (admin) another user."""

    password: Annotated[str, Field(max_length=1024), AfterValidator(_no_nul)]


class UnlockRequest(Body):
    """Whose login lock to lift besides the user name's: a client address, if any."""

    client: Name | None = None


class CheckpointBody(Body):
    """A checkpoint whose signature the client has already checked."""

    trial: Name
    seq: int = Field(ge=0, le=SEQ_MAX)
    head_mac: Annotated[str, Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")]
    at: Name


class VerifyRequest(Body):
    """Verify the trail, optionally against a checkpoint."""

    checkpoint: CheckpointBody | None = None


class ErrorBody(BaseModel):
    """A refusal: the library's message on one line, the error class and maybe a next step."""

    model_config = ConfigDict(extra="forbid")

    error: Annotated[
        str,
        Field(pattern=r"^[^\r\n]+$", description="What was refused and what to do, on one line."),
    ]
    kind: Annotated[
        str,
        Field(
            json_schema_extra={"enum": sorted(error_classes())},
            description="The library's error class; the client raises it.",
        ),
    ]
    hint: Annotated[
        str | None,
        Field(
            default=None,
            json_schema_extra={"enum": [h.name for h in Hint]},
            description="The next step the refusal points to, for the client to word "
            "(present only when there is one).",
        ),
    ] = None


def _refusal(
    status: int, description: str, headers: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    response: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        response["headers"] = headers
    return {status: response}


TOO_LARGE = _refusal(413, "The request body is over 1 MiB (InvalidInput).")
MALFORMED = _refusal(
    422,
    "The request does not fit this operation's parameters or body "
    "(InvalidInput); nothing was attempted.",
)
UNAVAILABLE = _refusal(
    503, "The database is busy or cannot be reached (Busy, StoreError, KeyFileError); try again."
)
REFUSED_LOGIN = _refusal(
    401,
    "The login or token is not valid (AuthenticationFailed); the "
    "message never says whether the user exists.",
    {
        "WWW-Authenticate": {
            "description": "Always 'Bearer'.",
            "required": True,
            "schema": {"type": "string", "enum": ["Bearer"]},
        }
    },
)

PUBLIC_ERRORS: dict[int | str, dict[str, Any]] = {**TOO_LARGE}
"""What a route without a login can refuse."""

LOGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_refusal(400, "Malformed input the library refused (InvalidInput)."),
    **REFUSED_LOGIN,
    **_refusal(409, "Any other refusal of the library (an integrity failure)."),
    **TOO_LARGE,
    **MALFORMED,
    **_refusal(
        429,
        "Too many failed logins for this user name or from this address "
        "(TooManyAttempts); the password was not checked.",
        {
            "Retry-After": {
                "description": "Whole seconds until a login may be tried again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    ),
    **UNAVAILABLE,
}
"""What the login route can refuse."""

SIGNED_IN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_refusal(
        400, "Malformed input the library refused (InvalidInput, DesignError, KitCodeError)."
    ),
    **REFUSED_LOGIN,
    **_refusal(403, "The caller's role may not do this, or not yet (NotAuthorized)."),
    **_refusal(404, "The participant, kit or user does not exist (NotFound)."),
    **_refusal(
        409,
        "The trial's state refuses it, the participant is not eligible, or an "
        "integrity check failed (StateError, Ineligible, AuditError...).",
    ),
    **TOO_LARGE,
    **MALFORMED,
    **UNAVAILABLE,
}
"""What a route that needs a login can refuse."""


class DocumentedRoute(APIRoute):
    """A route whose OpenAPI summary is the first line of its endpoint's docstring."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        """Fill the summary in, then build the route as FastAPI does."""
        if options.get("summary") is None:
            options["summary"] = inspect.cleandoc(endpoint.__doc__ or "").partition("\n")[0]
        super().__init__(path, endpoint, **options)


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its endpoint's name (``randomize``, ``issue_token``)."""
    return route.name


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="The token from POST /api/v1/auth/token, as 'Authorization: Bearer TOKEN'.",
)
"""The bearer scheme, declared for clients; refusals stay the library's own (401, never 403)."""


async def serving_state(request: Request) -> ServerState:
    """The server's state, as a dependency run on the event loop (it only reads an attribute)."""
    return server_state(request)


def caller(
    request: Request,
    state: Annotated[ServerState, Depends(serving_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The principal of the bearer token; the user and role never come from the request."""
    if credentials is None:
        raise AuthenticationFailed(
            "log in first: send the token from POST /api/v1/auth/token "
            "as 'Authorization: Bearer TOKEN'"
        )
    principal = logins.principal_for(
        state.store, credentials.credentials, state.clock(), client=client_address(request, state)
    )
    if principal.channel != "api":
        # a page's session token is for its cookie only (CSRF-checked there)
        raise AuthenticationFailed(INVALID_TOKEN)
    return principal


async def backend(
    principal: Annotated[Principal, Depends(caller)],
    state: Annotated[ServerState, Depends(serving_state)],
) -> Backend:
    """A backend acting as the caller, on the server's store and held key.

    Made on the event loop: it only holds the store, the key and the principal
    (nothing to close: the store is the server's), so no worker thread is taken
    to make it nor to close it.
    """
    return LocalBackend.serving(state.store, state.trial_key, principal, state.clock)


Caller = Annotated[Principal, Depends(caller)]
Acting = Annotated[Backend, Depends(backend)]
State = Annotated[ServerState, Depends(serving_state)]

public = APIRouter(
    prefix="/api/v1",
    route_class=DocumentedRoute,
    responses=PUBLIC_ERRORS,
    generate_unique_id_function=operation_id,
)
"""The routes anyone may call: health and the login."""

router = APIRouter(
    prefix="/api/v1",
    route_class=DocumentedRoute,
    responses=SIGNED_IN_ERRORS,
    generate_unique_id_function=operation_id,
)
"""Every route that acts as a logged-in user."""


@public.get("/health")
def health() -> Health:
    """Whether the server is up (no login needed): status and version only."""
    return Health(status="ok", version=__version__)


@public.post("/auth/token", responses=LOGIN_ERRORS)
def issue_token(body: TokenRequest, request: Request, state: State) -> TokenResponse:
    """Log in: check the password once and return a bearer token."""
    issued = logins.login(
        state.store,
        state.key_source,
        Credentials(body.user, body.password),
        state.clock(),
        kind="api",
        client=client_address(request, state),
        idle=state.token_idle,
        absolute=state.token_absolute,
    )
    return TokenResponse(
        token=issued.token, token_id=issued.token_id, expires_at=audit.utc_text(issued.expires_at)
    )


@router.post("/auth/logout", status_code=204)
def logout(principal: Caller, state: State) -> Response:
    """Revoke the caller's token."""
    logins.logout(state.store, state.key_source, principal, state.clock())
    return Response(status_code=204)


@router.get("/design")
def design(principal: Caller, state: State) -> DesignResponse:
    """The trial's design as TOML (any logged-in user)."""
    return DesignResponse(toml=logins.design_toml(state.store))


# the blinded path ----------------------------------------------------------------


@router.post("/participants")
def randomize(body: RandomizeRequest, acting: Acting) -> service.Randomization:
    """Randomize one participant (investigator)."""
    return acting.randomize(
        body.participant,
        body.site,
        dict(body.levels),
        dict(body.answers),
        body.date,
        signature=body.signature.value(),
    )


@router.post("/participants/{participant:path}/kits")
def request_kit(participant: Name, body: KitRequest, acting: Acting) -> service.KitIssue:
    """The kit of one dosing visit (investigator)."""
    return acting.request_kit(participant, body.visit, body.date, body.override_reason)


@router.post(
    "/participants/{participant:path}/emergency-unblinding", response_model=emergency.Unblinding
)
def emergency_unblind(participant: Name, body: SignedReason, acting: Acting) -> JSONResponse:
    """Break the code for one participant (investigator, admin; signed); never cached."""
    result: emergency.Unblinding = acting.emergency_unblind(
        participant, body.reason, signature=body.signature.value()
    )
    return JSONResponse(to_wire(result), headers={"Cache-Control": "no-store"})


@router.post("/kits/{code:path}/replace")
def replace_kit(code: Name, body: Reason, acting: Acting) -> service.KitReplacement:
    """Void a kit and issue a spare of the same content (investigator)."""
    return acting.replace_kit(code, body.reason)


@router.post("/kits/{code:path}/prepare", response_model=service.Preparation)
def prepare_kit(code: Name, acting: Acting) -> JSONResponse:
    """What a kit holds; records its preparation (pharmacist); never cached."""
    result: service.Preparation = acting.prepare_kit(code)
    return JSONResponse(to_wire(result), headers={"Cache-Control": "no-store"})


@router.get("/pharmacy/kits", response_model=list[service.PharmacyKit])
def pharmacy_list(acting: Acting) -> JSONResponse:
    """Every kit with content and status (pharmacist); never cached."""
    kits: list[service.PharmacyKit] = acting.pharmacy_list()
    return JSONResponse(to_wire(kits), headers={"Cache-Control": "no-store"})


@router.post("/participants/{participant:path}/void")
def void_participant(
    participant: Name, body: SignedReason, acting: Acting
) -> service.ParticipantVoid:
    """Mark a randomization made in error; the slot stays used (admin; signed)."""
    return acting.void_participant(participant, body.reason, signature=body.signature.value())


@router.post("/lock")
def lock(body: SignedReason, acting: Acting) -> locking.LockResult:
    """Lock the database (admin; signed)."""
    return acting.lock(body.reason, signature=body.signature.value())


@router.post(
    "/unblinding",
    response_class=Response,
    responses={
        200: {
            "description": "The export: one row per participant, with its digest in the headers.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "headers": {
                "X-Randomizer-SHA256": {
                    "description": "SHA-256 of the CSV, 64 hexadecimal digits.",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                },
                "X-Randomizer-Participants": {
                    "description": "Rows in the CSV.",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            },
        }
    },
)
def unblind_all(body: Signed, acting: Acting) -> Response:
    """The full unblinding as CSV (statistician, after lock; signed); audited before it is sent."""
    export: locking.Export = acting.unblind_all(signature=body.signature.value())
    return _csv(export)


def _csv(export: locking.Export) -> Response:
    """An export as a CSV response, never cached, its digest and count in headers."""
    return Response(
        export.csv,
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Randomizer-SHA256": export.sha256,
            "X-Randomizer-Participants": str(export.participants),
        },
    )


@router.post(
    "/unblinding/dummy", response_class=Response, responses={200: {"content": {"text/csv": {}}}}
)
def unblind_dummy(acting: Acting) -> Response:
    """The full unblinding's CSV with made-up arms, marked dummy (statistician); audited."""
    export: locking.Export = acting.unblind_dummy()
    return _csv(export)


@router.get("/report")
def report(acting: Acting) -> reports.Report:
    """The report the caller's role may see."""
    return acting.report()


# the list, users and the audit trail --------------------------------------------------


@router.post("/list/generate")
def generate_list(acting: Acting) -> trial.ListSummary:
    """Generate the sealed list and kits (admin)."""
    return acting.generate_list()


@router.get("/list")
def list_status(acting: Acting) -> trial.ListStatus:
    """Whether the list exists and how much of each stratum is used: counts only (any role)."""
    return acting.list_status()


@router.post("/list/verify")
def verify_list(acting: Acting) -> trial.ListSummary:
    """Regenerate the list from the sealed seed and compare (admin; statistician after lock)."""
    return acting.verify_list()


@router.post("/list/approve")
def approve_list(body: Signed, acting: Acting) -> trial.ListApproval:
    """Approve the draft list for go-live (admin or statistician, not its generator; signed)."""
    return acting.approve_list(signature=body.signature.value())


@router.get("/users")
def list_users(acting: Acting) -> list[trial.UserInfo]:
    """Every user (admin)."""
    return acting.list_users()


@router.post("/users")
def add_user(body: NewUser, acting: Acting) -> trial.UserInfo:
    """Add a user (admin)."""
    return acting.add_user(body.name, body.role, body.password, body.sites)


@router.post("/users/{name:path}/disable")
def disable_user(name: Name, body: Reason, acting: Acting) -> trial.UserInfo:
    """Disable a user; their tokens are revoked at once (admin)."""
    return acting.disable_user(name, body.reason)


@router.post("/users/{name:path}/password")
def change_password(name: Name, body: NewPassword, acting: Acting) -> trial.UserInfo:
    """Set a password: one's own, or (admin) anyone's; the user's tokens are revoked."""
    return acting.change_password(name, body.password)


@router.post("/users/{name}/unlock")
def lift_login_lock(name: Name, body: UnlockRequest, acting: Acting) -> logins.LoginUnlock:
    """Lift a user name's login lock, and a client address's if given (admin)."""
    return acting.lift_login_lock(name, body.client)


class EventsPage(Body):
    """Which audit events to read: after ``since``, at most ``limit`` (all when absent)."""

    since: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)


@router.get("/audit/events")
def audit_events(acting: Acting, page: Annotated[EventsPage, Query()]) -> list[audit.AuditEvent]:
    """Audit events after ``since`` (admin, monitor); unknown parameters are refused."""
    return acting.audit_events(
        min(page.since, SEQ_MAX), None if page.limit is None else min(page.limit, SEQ_MAX)
    )


@router.post("/audit/verify")
def audit_verify(body: VerifyRequest, acting: Acting) -> audit.ChainReport:
    """Verify the chain and, given a checkpoint, that its head is still there."""
    checkpoint = None
    if body.checkpoint is not None:
        checkpoint = audit.Checkpoint(**body.checkpoint.model_dump())
    return acting.audit_verify(checkpoint)


@router.post("/audit/checkpoint")
def audit_checkpoint(acting: Acting) -> audit.Checkpoint:
    """Record a checkpoint and return it unsigned: the client signs it (admin)."""
    return acting.audit_checkpoint()


# per-site rights ------------------------------------------------------------------


class SitesBody(Body):
    """The sites a user is limited to; an empty list makes the user trial-wide."""

    sites: list[Name] = Field(max_length=64)


class SiteFilter(Body):
    """Which site's participants to list (all the caller may see when absent)."""

    site: Name | None = None


@router.get("/users/{name:path}/sites")
def user_sites(name: Name, acting: Acting) -> trial.UserInfo:
    """One user and the sites they are limited to (admin)."""
    return acting.user_sites(name)


@router.put("/users/{name:path}/sites")
def set_user_sites(name: Name, body: SitesBody, acting: Acting) -> trial.UserInfo:
    """Limit a user to sites, or make them trial-wide with an empty list (admin)."""
    return acting.set_user_sites(name, body.sites)


@router.get("/participants")
def participant_view(
    acting: Acting, query: Annotated[SiteFilter, Query()]
) -> list[participants.ParticipantVisits]:
    """The participants the caller may see (of one site): visits done, next window."""
    return acting.participant_view(query.site)


@router.get("/kits/{code:path}/label")
def kit_label(code: Name, acting: Acting) -> service.KitLabel:
    """The label of a prepared kit's infusion bag, never the arm (pharmacist)."""
    return acting.kit_label(code)


# second-person review of emergency unblindings ----------------------------------------


class ReviewsPage(Body):
    """Which review items to list: the open ones only (default) or all."""

    open_only: bool = True


class ReviewNote(Body):
    """The note that closes a review."""

    note: Text


@router.get("/unblinding/reviews")
def unblinding_reviews(
    acting: Acting, page: Annotated[ReviewsPage, Query()]
) -> list[review.ReviewItem]:
    """Emergency unblindings to review, with reason, never the arm (admin, monitor)."""
    return acting.unblinding_reviews(page.open_only)


@router.post("/unblinding/reviews/{review_id}/close")
def close_review(
    review_id: Annotated[int, Path(ge=1, le=SEQ_MAX)], body: ReviewNote, acting: Acting
) -> review.ReviewItem:
    """Close one review with a note; not by the user who unblinded (admin, monitor)."""
    return acting.close_review(review_id, body.note)


# the exports with their analysis files --------------------------------------------------

_BUNDLE = {
    200: {
        "description": "The export and its analysis files as one ZIP archive "
        "(unblinding.csv, participants.csv, kits.csv, adsl.csv, columns.json), with "
        "the digest of unblinding.csv and its row count in the headers.",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _bundle(export: locking.Export) -> Response:
    """An export and its analysis files as a ZIP response, never cached."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(locking.LEGACY_FILE, export.csv)
        for name, content in export.files.items():
            archive.writestr(name, content)
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={
            "Cache-Control": "no-store",
            "X-Randomizer-SHA256": export.sha256,
            "X-Randomizer-Participants": str(export.participants),
        },
    )


@router.post("/unblinding/bundle", response_class=Response, responses=_BUNDLE)  # type: ignore[arg-type]
def unblind_all_bundle(body: Signed, acting: Acting) -> Response:
    """The full unblinding with its analysis files (statistician, after lock; signed); audited."""
    export: locking.Export = acting.unblind_all(signature=body.signature.value())
    return _bundle(export)


@router.post("/unblinding/dummy/bundle", response_class=Response, responses=_BUNDLE)  # type: ignore[arg-type]
def unblind_dummy_bundle(acting: Acting) -> Response:
    """The dummy export with its analysis files (statistician); audited."""
    export: locking.Export = acting.unblind_dummy()
    return _bundle(export)


@router.post("/verify")
def verify_database(body: VerifyRequest, acting: Acting) -> integrity.IntegrityReport:
    """Check every row MAC, the audit chain, the rows it records and the list (admin, monitor)."""
    checkpoint = None
    if body.checkpoint is not None:
        checkpoint = audit.Checkpoint(**body.checkpoint.model_dump())
    return acting.verify_database(checkpoint)


@router.get("/pharmacy/queue", response_model=list[service.PharmacyKit])
def pharmacy_queue(acting: Acting) -> JSONResponse:
    """Kits requested and not yet prepared, oldest request first (pharmacist); never cached."""
    kits: list[service.PharmacyKit] = acting.pharmacy_queue()
    return JSONResponse(to_wire(kits), headers={"Cache-Control": "no-store"})


@router.get("/pharmacy/kits/{code:path}", response_model=service.PharmacyKit)
def lookup_kit(code: Name, acting: Acting) -> JSONResponse:
    """One kit with content, status and history, by its code (pharmacist); never cached."""
    kit: service.PharmacyKit = acting.lookup_kit(code)
    return JSONResponse(to_wire(kit), headers={"Cache-Control": "no-store"})

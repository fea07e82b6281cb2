"""The one exception hierarchy of randomizer.

Every failure the library reports is a :class:`RandomizerError`. Each skin maps
the class to its own signal at its boundary (the CLI to an exit code, the server
to an HTTP status); the library itself knows neither. What the library does
decide is whether a refusal belongs in the audit trail: :attr:`RandomizerError.audited`.
Messages name the thing and what to do next, and never name an arm.

A message says what to do in words every front end's user understands ("an
admin generates the allocation list"), never a command-line flag. Where a
front end has its own way to do it, the error carries a :class:`Hint` naming
the next step, and the front end adds its own wording (the CLI adds the command
or flags to type).
"""

from __future__ import annotations

from enum import StrEnum


class Hint(StrEnum):
    """The next step a refusal points to, for a front end to word in its own terms."""

    INIT = "create the trial"
    MISSING_DATABASE = "check the database location, or create the trial"
    OTHER_DATABASE = "choose another database"
    KEY_FILE = "choose the key file"
    GENERATE_LIST = "generate the allocation list"
    VERIFY_LIST = "verify the allocation list"
    VERIFY_COPY = "verify the audit trail and the allocation list"
    VERIFY = "verify the whole database with the key"
    LIST_USERS = "list the users"
    UPGRADE_SCHEMA = "upgrade the database schema"
    LOCK = "lock the database"
    REASON = "give a reason"
    OVERRIDE_WINDOW = "override the visit window with a reason"
    CHECKPOINT = "make a signed checkpoint note"
    CHECKPOINT_KEY = "give the checkpoint's public key"
    ANSWERS = "give the eligibility answers"
    LOGIN = "log in to the trial server"
    APPROVE_LIST = "approve the allocation list"
    LIST_REVIEWS = "list the open reviews of emergency unblindings"


class RandomizerError(Exception):
    """Base of every error the library raises on purpose."""

    audited: bool = True
    """Whether a user action refused with this error is recorded in the audit trail.

    Refusals that matter (a role, a state, an integrity failure, a screen failure)
    are; malformed input is not, since nothing was attempted."""

    audit_details: dict[str, str] | None = None
    """Facts the refusal's audit record keeps besides the message (a screen failure's
    site); never shown to the caller."""

    def __init__(self, message: str = "", *, hint: Hint | None = None) -> None:
        """``message`` for every reader; ``hint`` names the next step a front end may spell out."""
        super().__init__(message)
        self.hint = hint


class InvalidInput(RandomizerError):
    """Malformed input: a bad seed, id, date, code or option value."""

    audited = False


class DesignError(InvalidInput):
    """A trial design file is missing, unreadable or invalid."""


class KitCodeError(InvalidInput):
    """A kit code is malformed or fails its check character."""


class NotAuthorized(RandomizerError):
    """The user's role may not do this."""


class AuthenticationFailed(RandomizerError):
    """Unknown user, wrong password or disabled account."""


class TooManyAttempts(AuthenticationFailed):
    """Logins are paused for this user name or client after failed attempts (retry later)."""

    def __init__(
        self, message: str = "", retry_after: int = 0, *, hint: Hint | None = None
    ) -> None:
        """``retry_after``: whole seconds until a login may be tried again (0: unknown)."""
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class NotFound(RandomizerError):
    """The participant, kit, user or trial does not exist."""


class StateError(RandomizerError):
    """The trial is not in a state that allows this (locked, no list, already done)."""


class Ineligible(RandomizerError):
    """The participant fails one or more eligibility criteria."""


class KeyFileError(RandomizerError):
    """The key file is missing, malformed, of the wrong size or too widely readable."""


class SealedDataError(RandomizerError):
    """A sealed value could not be opened: wrong key or altered data (deliberately vague)."""


class AuditError(RandomizerError):
    """The audit trail failed verification or could not be written."""


class ListMismatch(RandomizerError):
    """The stored list or kits differ from what the sealed seed regenerates."""


class DamagedRecord(RandomizerError):
    """A stored row holds a value no release writes: the database was altered or damaged."""


class IntegrityFailure(RandomizerError):
    """A row's MAC does not match its columns, or the rows differ from those the trail records.

    The message names the table and the row id only, never a column's value, so it
    reads the same whatever arm the row's participant or kit has.
    """


class BackupFailed(RandomizerError):
    """A backup could not be written or verified, or a backup file could not be restored."""

    # backup records its own ``backup.failed`` event; a failed restore has no trail to write to
    audited = False


class StoreError(RandomizerError):
    """The database cannot be opened, reached or used (schema version, connection)."""


class Busy(RandomizerError):
    """Concurrent writers kept the database busy past the retry limit."""


class ServerUnavailable(RandomizerError):
    """The trial server could not be reached or answered something unreadable."""

    audited = False

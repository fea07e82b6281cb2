"""The one exception hierarchy of randomizer.

Every failure the library reports is a :class:`RandomizerError`. The CLI turns
them into one ``Error:`` line: exit 2 for bad usage or malformed input
(:class:`InvalidInput` and its subclasses), exit 1 for every refusal.
Messages name the thing and what to do next, and never name an arm.
"""

from __future__ import annotations


class RandomizerError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: int = 1


class InvalidInput(RandomizerError):
    """Malformed input: a bad seed, id, date, code or option value."""

    exit_code = 2


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

    def __init__(self, message: str, retry_after: int = 0) -> None:
        """``retry_after``: whole seconds until a login may be tried again (0: unknown)."""
        super().__init__(message)
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


class StoreError(RandomizerError):
    """The database cannot be opened, reached or used (schema version, connection)."""


class Busy(RandomizerError):
    """Concurrent writers kept the database busy past the retry limit."""

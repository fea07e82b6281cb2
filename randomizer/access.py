"""Users, roles, password hashing and permission checks (docs/architecture.md section 2)."""

from __future__ import annotations

import base64
import hmac
import os
import re
from enum import StrEnum

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from randomizer.errors import DamagedRecord, InvalidInput

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
USER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

# scrypt cost: 2**15 x 8 x 128 bytes = 32 MiB and ~0.1 s per login on one core.
# Parameters are stored beside each hash, so raising them later keeps old hashes valid.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1

# The highest scrypt cost a stored hash may ask for. Parameters are read from the database,
# so an altered hash could ask for any amount of memory or time (or for parameters OpenSSL
# rejects as a MemoryError); beyond these, the hash is refused as damaged, not computed.
MAX_SCRYPT_N = 2**20
MAX_SCRYPT_R = 32
MAX_SCRYPT_P = 16
MAX_SCRYPT_MEMORY = 2**30
"""Bytes scrypt needs, 128 x n x r: 1 GiB (n = 2**20, r = 8; about 10 s on one core)."""
MAX_SCRYPT_WORK = 2**24
"""n x r x p: 64 times today's default cost."""


class Role(StrEnum):
    """The roles of docs/architecture.md section 2."""

    ADMIN = "admin"
    INVESTIGATOR = "investigator"
    PHARMACIST = "pharmacist"
    STATISTICIAN = "statistician"
    MONITOR = "monitor"


class Permission(StrEnum):
    """Things a role may do; checked before anything is read."""

    LOG_IN = "log in"
    MANAGE_USERS = "manage users"
    ROTATE_KEY = "rotate the trial key"
    GENERATE_LIST = "generate the allocation list"
    VERIFY_LIST = "verify the allocation list"
    RANDOMIZE = "randomize participants"
    DISPENSE = "request or replace kits"
    PREPARE = "prepare kits in the pharmacy"
    LIST_KITS = "see the pharmacy's list of kit contents"
    EMERGENCY_UNBLIND = "break the code for one participant"
    UNBLIND_ALL = "unblind the whole trial"
    DUMMY_UNBLIND = "write a dummy unblinding"
    LOCK = "lock the database"
    READ_AUDIT = "read the audit trail"
    CHECKPOINT_AUDIT = "sign audit checkpoints"
    REPORT = "see blinded reports"
    REPORT_ARMS = "see balance by arm"
    MAINTAIN = "back up, restore or upgrade the database"
    READ_PARTICIPANTS = "list participants and their visits"
    APPROVE_LIST = "approve the allocation list"
    VOID_PARTICIPANT = "void a randomization made in error"
    REVIEW_UNBLINDING = "review emergency unblindings"
    SEND_MAIL = "send the notification e-mails"
    VERIFY = "verify the database"


BLINDED_ROLES = frozenset({Role.INVESTIGATOR, Role.STATISTICIAN, Role.MONITOR})

_ALL = set(Role)
ROLE_PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.LOG_IN: frozenset(_ALL),
    Permission.MANAGE_USERS: frozenset({Role.ADMIN}),
    Permission.ROTATE_KEY: frozenset({Role.ADMIN}),
    Permission.GENERATE_LIST: frozenset({Role.ADMIN}),
    Permission.VERIFY_LIST: frozenset({Role.ADMIN, Role.STATISTICIAN}),
    Permission.RANDOMIZE: frozenset({Role.INVESTIGATOR}),
    Permission.DISPENSE: frozenset({Role.INVESTIGATOR}),
    Permission.PREPARE: frozenset({Role.PHARMACIST}),
    Permission.LIST_KITS: frozenset({Role.PHARMACIST}),
    Permission.EMERGENCY_UNBLIND: frozenset({Role.INVESTIGATOR, Role.ADMIN}),
    Permission.UNBLIND_ALL: frozenset({Role.STATISTICIAN}),
    # the dry run of the statistician's analysis; the unblinded roles have no use for it
    Permission.DUMMY_UNBLIND: frozenset({Role.STATISTICIAN}),
    Permission.LOCK: frozenset({Role.ADMIN}),
    Permission.READ_AUDIT: frozenset({Role.ADMIN, Role.MONITOR}),
    Permission.CHECKPOINT_AUDIT: frozenset({Role.ADMIN}),
    Permission.REPORT: frozenset(_ALL),
    Permission.REPORT_ARMS: frozenset({Role.ADMIN, Role.STATISTICIAN}),
    Permission.MAINTAIN: frozenset({Role.ADMIN}),
    Permission.READ_PARTICIPANTS: frozenset(
        {Role.ADMIN, Role.INVESTIGATOR, Role.PHARMACIST, Role.MONITOR}
    ),
    # the QC summary it shows is blinded (counts and the commitment), so a
    # statistician may approve before the lock
    Permission.APPROVE_LIST: frozenset({Role.ADMIN, Role.STATISTICIAN}),
    Permission.VOID_PARTICIPANT: frozenset({Role.ADMIN}),
    # the second person of an emergency unblinding; the library refuses the unblinder
    Permission.REVIEW_UNBLINDING: frozenset({Role.ADMIN, Role.MONITOR}),
    Permission.SEND_MAIL: frozenset({Role.ADMIN}),
    Permission.VERIFY: frozenset({Role.ADMIN, Role.MONITOR}),
}
"""Which roles hold each permission. Statisticians' arm-revealing permissions
(VERIFY_LIST, UNBLIND_ALL, REPORT_ARMS) apply only after the database lock;
the service layer enforces that state check."""

UNLOCK_GATED = frozenset({Permission.VERIFY_LIST, Permission.UNBLIND_ALL, Permission.REPORT_ARMS})
"""Permissions a statistician holds only once the trial is locked."""


def allowed(role: str, permission: Permission, locked: bool) -> bool:
    """Whether ``role`` holds ``permission`` in a trial that is (or is not) locked."""
    if role not in ROLE_PERMISSIONS[permission]:
        return False
    return not (role == Role.STATISTICIAN and permission in UNLOCK_GATED and not locked)


def parse_role(text: str) -> Role:
    """The role named by ``text``; unknown names are bad input."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown role {text!r}: use one of {', '.join(r.value for r in Role)}"
        ) from None


def check_user_name(name: str) -> str:
    """Validate a user name (letter first; letters, digits, . _ -; at most 64)."""
    if not USER_NAME.fullmatch(name):  # match() would let "alice\n" through
        raise InvalidInput(
            f"user name {name!r} is not valid: start with a letter, then "
            "letters, digits, '.', '_' or '-' (at most 64)"
        )
    return name


def check_password(password: str) -> str:
    """Refuse empty, short or absurdly long passwords."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password too short: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        # invalid UTF-8 from the environment or stdin arrives as lone surrogates
        raise InvalidInput("password is not valid text: use UTF-8 characters") from None
    return password


def hash_password(
    password: str,
    *,
    n: int | None = None,
    r: int = SCRYPT_R,
    p: int = SCRYPT_P,
    salt: bytes | None = None,
) -> str:
    """A salted scrypt hash, stored as ``scrypt$n$r$p$salt$hash`` (base64 parts).

    ``n`` defaults to the module's ``SCRYPT_N`` at call time.
    """
    n = SCRYPT_N if n is None else n
    salt = os.urandom(16) if salt is None else salt
    digest = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash from :func:`hash_password` (constant time).

    A malformed hash matches nothing. A well-formed one whose cost exceeds
    :data:`MAX_SCRYPT_N`, :data:`MAX_SCRYPT_R`, :data:`MAX_SCRYPT_P`,
    :data:`MAX_SCRYPT_MEMORY` or :data:`MAX_SCRYPT_WORK`, or breaks scrypt's rule
    n < 2**(16 r), raises :class:`DamagedRecord` without being computed.
    """
    try:
        scheme, n_text, r_text, p_text, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_text), int(r_text), int(p_text)
    except ValueError:
        return False
    if not (
        n <= MAX_SCRYPT_N
        and r <= MAX_SCRYPT_R
        and p <= MAX_SCRYPT_P
        and 128 * n * r <= MAX_SCRYPT_MEMORY
        and n * r * p <= MAX_SCRYPT_WORK
        and (r < 1 or n < 2 ** (16 * r))
    ):
        raise DamagedRecord(
            f"a stored password hash asks for scrypt n={n_text[:20]}, r={r_text[:20]}, "
            f"p={p_text[:20]}, a cost no release writes: the users table was altered or "
            "damaged"
        )
    try:
        candidate = Scrypt(salt=base64.b64decode(salt), length=32, n=n, r=r, p=p).derive(
            password.encode("utf-8", "surrogatepass")
        )
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(candidate, base64.b64decode(digest))


_DUMMY_HASHES: dict[int, str] = {}


def dummy_hash() -> str:
    """A hash of no one's password at today's cost, checked for unknown or disabled users.

    Checking it costs the same as checking a real user's password, so the
    time a refused login takes does not say whether the account exists.
    """
    if SCRYPT_N not in _DUMMY_HASHES:
        _DUMMY_HASHES[SCRYPT_N] = hash_password(base64.b64encode(os.urandom(24)).decode())
    return _DUMMY_HASHES[SCRYPT_N]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

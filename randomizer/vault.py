"""Keys and sealing: the key file, the wrapped data key and sealed values.

docs/architecture.md section 3. The *trial key* lives in a key file outside the database
(32 random bytes, base64, mode 0600). The database holds a random *data key*
wrapped by the trial key (AES key wrap with padding, RFC 5649), and, from key
format 2 on, the audit MAC key and the row MAC key wrapped the same way (in key
format 1 both are derived from the data key by HKDF). Rotating the trial key makes
a new data key (see :mod:`randomizer.rotation`). Every blinded value is sealed under the
data key with AES-256-GCM, a fresh 96-bit nonce and associated data naming the
trial, the kind of value and the row, so a ciphertext copied elsewhere fails to
open. Values of one kind are padded to one width, so a sealed value's length
says nothing about it.

Every failure to open, whatever its cause (wrong key, flipped bit, moved or
truncated ciphertext), raises the same :class:`~randomizer.errors.SealedDataError`
with the same message, as Fernet's ``InvalidToken`` does.

Keys and nonces always come from the OS CSPRNG. The one exception is
:meth:`Vault.seal`'s ``nonce`` argument, which exists only so the frozen format
vectors in the tests can fix a sealed value's bytes; no library code passes it.
"""

from __future__ import annotations

import base64
import binascii
import hmac as std_hmac
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from randomizer.errors import Hint, InvalidInput, KeyFileError, SealedDataError, StateError
from randomizer.sealed import SEALED_WIDTHS

KEY_SIZE = 32
"""Bytes in the trial key and in the data key (AES-256)."""

NONCE_SIZE = 12
"""Bytes in an AES-GCM nonce (96 bits), stored in front of the ciphertext."""

TAG_SIZE = 16
"""Bytes in an AES-GCM authentication tag, at the end of the ciphertext."""

AUDIT_MAC_INFO = b"randomizer/v1 audit-mac"
"""HKDF info label of the audit MAC key (key format 1)."""

ROW_MAC_INFO = b"randomizer/v1 row-mac"
"""HKDF info label of the row MAC key (key format 1)."""

KEY_FORMAT_DERIVED = 1
"""Key format 1: the database stores the wrapped data key only; the audit and row MAC
keys are HKDF-SHA256 of the data key (:data:`AUDIT_MAC_INFO`, :data:`ROW_MAC_INFO`)."""

KEY_FORMAT_WRAPPED = 2
"""Key format 2: the database stores the data key, the audit MAC key and the row MAC key,
each wrapped by the trial key on its own, so a new data key leaves the MAC keys as they are."""

KEY_FORMATS = (KEY_FORMAT_DERIVED, KEY_FORMAT_WRAPPED)
"""Every key format this release opens."""

_ASSOCIATED_DATA_PREFIX = b"randomizer/v1\0"
_KEY_FILE_MAX = 4096
_OPAQUE = "the key file does not open this trial's data: wrong key file or altered data"
NOT_CURRENT_KEY = (
    "the key file does not open this trial: it is not the trial's current key "
    "(was the key rotated?)"
)
"""The message when the trial key does not unwrap the data key (a wrong or rotated key file)."""


def create_key_file(path: Path) -> bytes:
    """Write a new trial key to ``path`` (base64 and a newline, mode 0600) and return it.

    The file is created exclusively, so an existing file, or a symlink in its
    place, is never overwritten: that raises :class:`~randomizer.errors.KeyFileError`.
    """
    key = secrets.token_bytes(KEY_SIZE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"key file {path} already exists: refusing to overwrite it; "
            "choose another path or move the old file away"
        ) from None
    except OSError as error:
        raise KeyFileError(f"cannot create key file {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as key_file:
            # the umask may have taken bits away from 0o600; set the mode exactly
            os.fchmod(key_file.fileno(), 0o600)
            key_file.write(base64.b64encode(key) + b"\n")
            key_file.flush()
            os.fsync(key_file.fileno())
    except OSError as error:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write key file {path}: {error.strerror}") from None
    _sync_directory(path.parent)
    return key


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a file just created in it survives a power cut by name too.

    A rotation commits a database that only the new key file opens: the file's name
    must be on disk before that commit, not only its bytes.
    """
    if os.name == "nt":
        return  # no directory handles to fsync; NTFS journals the entry itself
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: Path) -> bytes:
    """Read the trial key from ``path``.

    Refused with :class:`~randomizer.errors.KeyFileError`, as ssh refuses a
    private key: a missing file, a file that group or others may access, and a
    file that does not hold exactly 32 base64-encoded bytes.
    """
    try:
        # O_NONBLOCK: a FIFO in the key file's place is refused below, not waited on
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileError(
            f"key file {path} not found: give the path of the trial's key file",
            hint=Hint.KEY_FILE,
        ) from None
    except OSError as error:
        raise KeyFileError(f"cannot read key file {path}: {error.strerror}") from None
    try:
        # check the file that was opened, not whatever the path names by now
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            who, read_bit = ("others", 0o004) if mode & 0o007 else ("its group", 0o040)
            access = "readable" if mode & read_bit else "accessible"
            raise KeyFileError(
                f"key file {path} is {access} by {who} (mode {mode:04o}): chmod 600 {path}"
            )
        content = _read_at_most(fd, _KEY_FILE_MAX + 1)
    except OSError as error:
        raise KeyFileError(f"cannot read key file {path}: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(content) > _KEY_FILE_MAX:
        raise KeyFileError(f"key file {path} is too large to be a key file: is it the right file?")
    try:
        key = base64.b64decode(content.strip(), validate=True)
    except binascii.Error:
        raise KeyFileError(
            f"key file {path} does not hold a base64-encoded key: is it the right file?"
        ) from None
    if len(key) != KEY_SIZE:
        raise KeyFileError(
            f"key file {path} holds a {len(key)}-byte key, not {KEY_SIZE} bytes: "
            "is it the right file?"
        )
    return key


def new_data_key() -> bytes:
    """Draw a new random 32-byte data key from the OS CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def wrap_data_key(trial_key: bytes, data_key: bytes) -> bytes:
    """Wrap ``data_key`` under ``trial_key`` (AES key wrap with padding, RFC 5649)."""
    _check_key_size(trial_key, "trial key")
    _check_key_size(data_key, "data key")
    return aes_key_wrap_with_padding(trial_key, data_key)


def unwrap_data_key(trial_key: bytes, wrapped: bytes) -> bytes:
    """Unwrap a data key wrapped by :func:`wrap_data_key`.

    A trial key that does not unwrap it raises :class:`~randomizer.errors.SealedDataError`
    saying the key file is not the trial's current key: the usual cause is an old key
    file after a rotation, so a site is not told of tampering it did not suffer. Sealed
    values stay opaque (:meth:`Vault.open`).
    """
    _check_key_size(trial_key, "trial key")
    try:
        data_key = aes_key_unwrap_with_padding(trial_key, bytes(wrapped))
    except (InvalidUnwrap, ValueError):
        # ValueError: a length that is not a multiple of 8 bytes
        raise SealedDataError(NOT_CURRENT_KEY) from None
    if len(data_key) != KEY_SIZE:
        raise SealedDataError(NOT_CURRENT_KEY)
    return data_key


@dataclass(frozen=True)
class KeyMaterial:
    """What a trial row stores of its keys: the key format and the keys wrapped by the trial key.

    Key format 1 (:data:`KEY_FORMAT_DERIVED`) has the wrapped data key alone; key format 2
    (:data:`KEY_FORMAT_WRAPPED`) has the audit and row MAC keys too.
    """

    key_format: int
    wrapped_data_key: bytes
    wrapped_audit_key: bytes | None = None
    wrapped_row_key: bytes | None = None


def wrap_keys(trial_key: bytes, data_key: bytes, audit_key: bytes, row_key: bytes) -> KeyMaterial:
    """Wrap the data key and both MAC keys under ``trial_key``, each on its own (key format 2)."""
    _check_key_size(audit_key, "MAC key of the audit trail")
    _check_key_size(row_key, "MAC key of the rows")
    return KeyMaterial(
        key_format=KEY_FORMAT_WRAPPED,
        wrapped_data_key=wrap_data_key(trial_key, data_key),
        wrapped_audit_key=aes_key_wrap_with_padding(trial_key, audit_key),
        wrapped_row_key=aes_key_wrap_with_padding(trial_key, row_key),
    )


def open_keys(trial_key: bytes, trial_id: str, material: KeyMaterial) -> Vault:
    """The vault of the trial ``trial_id`` whose stored keys are ``material``.

    A trial key that does not unwrap the data key is refused as :func:`unwrap_data_key`
    refuses it (not the current key). Once the data key unwraps, a MAC key that does
    not, or key material that does not fit its format (a format 2 without its MAC keys,
    a format 1 with them), can only be altered data: refused with the opaque message of
    sealed values. A key format this release does not know is refused as such.
    """
    if material.key_format not in KEY_FORMATS:
        raise StateError(
            f"the trial's keys are stored in key format {material.key_format}, which this "
            "randomizer does not know: use the newer release that wrote them"
        )
    data_key = unwrap_data_key(trial_key, material.wrapped_data_key)
    audit_wrapped, row_wrapped = material.wrapped_audit_key, material.wrapped_row_key
    if material.key_format == KEY_FORMAT_DERIVED:
        if audit_wrapped is not None or row_wrapped is not None:
            raise SealedDataError(_OPAQUE)
        return Vault(data_key, trial_id)
    if audit_wrapped is None or row_wrapped is None:
        raise SealedDataError(_OPAQUE)
    return Vault(
        data_key,
        trial_id,
        audit_key=_unwrap_mac_key(trial_key, audit_wrapped),
        row_key=_unwrap_mac_key(trial_key, row_wrapped),
    )


def _unwrap_mac_key(trial_key: bytes, wrapped: bytes) -> bytes:
    try:
        key = aes_key_unwrap_with_padding(trial_key, bytes(wrapped))
    except (InvalidUnwrap, ValueError):
        raise SealedDataError(_OPAQUE) from None
    if len(key) != KEY_SIZE:
        raise SealedDataError(_OPAQUE)
    return key


def sealed_size(kind: str) -> int:
    """Return the length in bytes of every sealed value of ``kind``."""
    return NONCE_SIZE + 1 + _width(kind) + TAG_SIZE


class Vault:
    """Seals and opens one trial's blinded values under its unwrapped data key.

    Build it from a trial's stored keys with :func:`open_keys` (key format 1 or 2);
    ``Vault(data_key, trial_id)`` derives the MAC keys as key format 1 does.
    A sealed value is ``nonce || AES-256-GCM ciphertext and tag``; its associated
    data is ``b"randomizer/v1\\0" + trial id + b"\\0" + kind + b"\\0" + row``
    (UTF-8), and its plaintext is one length byte, the UTF-8 value and zero
    padding up to the kind's width in :data:`SEALED_WIDTHS`.
    """

    def __init__(
        self,
        data_key: bytes,
        trial_id: str,
        *,
        audit_key: bytes | None = None,
        row_key: bytes | None = None,
    ) -> None:
        """Hold ``data_key`` (32 bytes) for the trial ``trial_id``.

        ``audit_key`` and ``row_key`` are the MAC keys of key format 2 (32 bytes each);
        left out, each is derived from the data key as key format 1 derives it.
        """
        _check_key_size(data_key, "data key")
        if "\0" in trial_id:
            raise ValueError("a trial id must not contain NUL")
        self._trial_id = trial_id
        self._aead = AESGCM(data_key)
        if audit_key is None:
            audit_key = _derive(data_key, AUDIT_MAC_INFO)
        if row_key is None:
            row_key = _derive(data_key, ROW_MAC_INFO)
        _check_key_size(audit_key, "MAC key of the audit trail")
        _check_key_size(row_key, "MAC key of the rows")
        self._audit_key = audit_key
        self._row_key = row_key

    @property
    def trial_id(self) -> str:
        """The trial whose values this vault seals."""
        return self._trial_id

    def __repr__(self) -> str:
        """Name the trial and nothing of the key."""
        return f"Vault(trial_id={self._trial_id!r})"

    def seal(self, kind: str, row: str, value: str, *, nonce: bytes | None = None) -> bytes:
        """Seal ``value`` as the ``kind`` of ``row``, under a fresh nonce.

        A value longer than the kind's width (UTF-8 bytes) raises
        :class:`~randomizer.errors.InvalidInput`; the message does not show it.

        ``nonce`` is for tests and known-answer vectors only: it fixes the
        12-byte nonce so a sealed value's bytes can be checked exactly. Sealing
        two values under one data key and one nonce breaks AES-GCM (it reveals
        both plaintexts' XOR and lets tags be forged), so callers leave it
        ``None`` and a fresh 96-bit nonce comes from the OS CSPRNG.
        """
        width = _width(kind)
        encoded = value.encode("utf-8")
        if len(encoded) > width:
            raise InvalidInput(
                f"a value is too long to seal as {kind}: at most {width} bytes of UTF-8"
            )
        plaintext = bytes([len(encoded)]) + encoded + bytes(width - len(encoded))
        if nonce is None:
            nonce = secrets.token_bytes(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce has {NONCE_SIZE} bytes, not {len(nonce)}")
        return nonce + self._aead.encrypt(nonce, plaintext, self._associated_data(kind, row))

    def seal_many(self, kind: str, rows: Sequence[str], values: Sequence[str]) -> list[bytes]:
        """Seal ``values[k]`` as the ``kind`` of ``rows[k]``, each under its own fresh nonce.

        The same as :meth:`seal` value by value, for lists of thousands: the nonces are
        drawn from the OS CSPRNG in one call (12 random bytes per value, as before) and
        each distinct value is padded once.
        """
        if len(rows) != len(values):
            raise ValueError("seal_many needs one row per value")
        width = _width(kind)
        plaintexts: dict[str, bytes] = {}
        for value in set(values):
            encoded = value.encode("utf-8")
            if len(encoded) > width:
                raise InvalidInput(
                    f"a value is too long to seal as {kind}: at most {width} bytes of UTF-8"
                )
            plaintexts[value] = bytes([len(encoded)]) + encoded + bytes(width - len(encoded))
        size = NONCE_SIZE * len(values)
        random = secrets.token_bytes(size)
        nonces = [random[k : k + NONCE_SIZE] for k in range(0, size, NONCE_SIZE)]
        prefix = self._associated_data(kind, "")
        encrypt = self._aead.encrypt
        return [
            nonce + encrypt(nonce, plaintexts[value], prefix + row.encode("utf-8"))
            for nonce, value, row in zip(nonces, values, rows, strict=True)
        ]

    def open(self, kind: str, row: str, sealed: bytes) -> str:
        """Open a value sealed by :meth:`seal` as the ``kind`` of ``row``.

        Every failure raises :class:`~randomizer.errors.SealedDataError` with
        one message that does not say what failed.
        """
        width = _width(kind)
        sealed = bytes(sealed)
        if len(sealed) != sealed_size(kind):
            raise SealedDataError(_OPAQUE)
        nonce, ciphertext = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, self._associated_data(kind, row))
        except InvalidTag:
            raise SealedDataError(_OPAQUE) from None
        size = plaintext[0]
        if size > width or any(plaintext[1 + size :]):
            raise SealedDataError(_OPAQUE)
        try:
            return plaintext[1 : 1 + size].decode("utf-8")
        except UnicodeDecodeError:
            raise SealedDataError(_OPAQUE) from None

    def open_many(self, kind: str, rows: Sequence[str], sealed: Sequence[bytes]) -> list[str]:
        """Open ``sealed[k]`` as the ``kind`` of ``rows[k]``: :meth:`open` for whole lists.

        The same checks and the same single error as :meth:`open`, with the constant
        part of the associated data built once.
        """
        if len(rows) != len(sealed):
            raise ValueError("open_many needs one row per sealed value")
        width = _width(kind)
        size = sealed_size(kind)
        prefix = self._associated_data(kind, "")
        decrypt = self._aead.decrypt
        opened: list[str] = []
        for row, value in zip(rows, sealed, strict=True):
            value = bytes(value)
            if len(value) != size:
                raise SealedDataError(_OPAQUE)
            try:
                plaintext = decrypt(
                    value[:NONCE_SIZE], value[NONCE_SIZE:], prefix + row.encode("utf-8")
                )
                length = plaintext[0]
                if length > width or plaintext.count(0, 1 + length) != width - length:
                    raise SealedDataError(_OPAQUE)  # padding that is not all zero
                opened.append(plaintext[1 : 1 + length].decode("utf-8"))
            except (InvalidTag, UnicodeDecodeError):
                raise SealedDataError(_OPAQUE) from None
        return opened

    def audit_key(self) -> bytes:
        """Return the audit MAC key (key format 1: HKDF-SHA256 of the data key, info
        :data:`AUDIT_MAC_INFO`; key format 2: the stored one)."""
        return self._audit_key

    @property
    def row_key(self) -> bytes:
        """The row MAC key (key format 1: HKDF-SHA256 of the data key, info
        :data:`ROW_MAC_INFO`; key format 2: the stored one)."""
        return self._row_key

    def mac(self, data: bytes) -> bytes:
        """Return HMAC-SHA256 of ``data`` under :meth:`audit_key`."""
        authenticator = hmac.HMAC(self._audit_key, hashes.SHA256())
        authenticator.update(data)
        return authenticator.finalize()

    def mac_chunks(self, chunks: Iterable[bytes]) -> bytes:
        """:meth:`mac` of the concatenated ``chunks`` (a file read a piece at a time)."""
        authenticator = hmac.HMAC(self._audit_key, hashes.SHA256())
        for chunk in chunks:
            authenticator.update(chunk)
        return authenticator.finalize()

    def verify_mac(self, data: bytes, mac: bytes) -> bool:
        """Tell, in constant time, whether ``mac`` is :meth:`mac` of ``data``."""
        authenticator = hmac.HMAC(self._audit_key, hashes.SHA256())
        authenticator.update(data)
        try:
            authenticator.verify(mac)
        except InvalidSignature:
            return False
        return True

    def row_mac(self, data: bytes) -> bytes:
        """Return HMAC-SHA256 of ``data`` under :attr:`row_key`."""
        return std_hmac.digest(self._row_key, data, "sha256")

    def verify_row_mac(self, data: bytes, mac: bytes) -> bool:
        """Tell, in constant time, whether ``mac`` is :meth:`row_mac` of ``data``."""
        return std_hmac.compare_digest(self.row_mac(data), bytes(mac))

    def _associated_data(self, kind: str, row: str) -> bytes:
        return (
            _ASSOCIATED_DATA_PREFIX
            + self._trial_id.encode("utf-8")
            + b"\0"
            + kind.encode("utf-8")
            + b"\0"
            + row.encode("utf-8")
        )


def _derive(data_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(data_key)


def _width(kind: str) -> int:
    try:
        return SEALED_WIDTHS[kind]
    except KeyError:
        raise ValueError(
            f"unknown kind of sealed value {kind!r}: add it to sealed.SEALED_WIDTHS"
        ) from None


def _read_at_most(fd: int, limit: int) -> bytes:
    content = b""
    while len(content) < limit:
        chunk = os.read(fd, limit - len(content))
        if not chunk:
            break
        content += chunk
    return content


def _check_key_size(key: bytes, name: str) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a {name} has {KEY_SIZE} bytes, not {len(key)}")

"""The files of an export on disk: written as hidden temporary files, kept only when whole.

``unblind all --out FILE.csv`` writes FILE.csv and its analysis files beside it
(:func:`companion`). The export streams into :class:`ExportFiles`' temporary files
(mode 0600, created exclusively in the same directory) while it checks every row it
reads; only :meth:`ExportFiles.publish`, called once every row has passed and the
audit event is committed, gives them their names, never over an existing file. On any
failure :meth:`ExportFiles.discard` removes them: a refused export leaves nothing.

A light module (no SQLAlchemy): the remote client writes its downloaded export here too.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from randomizer.errors import InvalidInput
from randomizer.results import LEGACY_FILE

ANALYSIS_FILES = ("participants.csv", "kits.csv", "adsl.csv", "columns.json")
"""The analysis files written beside every export (randomizer.unblinding.analysis)."""

_CHUNK = 1 << 20


def companion(out: Path, name: str) -> Path:
    """Where an analysis file of the export ``out`` goes: ``final.csv`` -> ``final.kits.csv``."""
    base = out.name[:-4] if out.name.lower().endswith(".csv") else out.name
    return out.with_name(f"{base}.{name}")


def create_private(path: Path, shown: Path | None = None) -> int:
    """Create ``path`` exclusively with mode 0600 and return its descriptor; never overwrite.

    Refusals name ``shown`` (the file asked for, when ``path`` is a temporary one).
    """
    shown = path if shown is None else shown
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(f"{path} already exists: refusing to overwrite it") from None
    except OSError as exc:
        raise InvalidInput(f"cannot create {shown}: {exc.strerror}") from None


def _hashing(chunks: Iterator[bytes], sha: Any) -> Iterator[bytes]:
    for chunk in chunks:
        sha.update(chunk)
        yield chunk


class ExportFiles:
    """An export's files by name (:data:`~randomizer.results.LEGACY_FILE` for ``out``
    itself, then :data:`ANALYSIS_FILES`), open for writing as temporary files.

    Refuses (:class:`~randomizer.errors.InvalidInput`) when a final file exists
    already; use as a context manager, or call :meth:`discard` on every failure.
    """

    def __init__(self, out: Path) -> None:
        self.final: dict[str, Path] = {LEGACY_FILE: out}
        self.final.update({name: companion(out, name) for name in ANALYSIS_FILES})
        for path in self.final.values():
            if path.exists():
                raise InvalidInput(f"{path} already exists: refusing to overwrite it")
        self.temporary: dict[str, Path] = {}
        self._streams: dict[str, BinaryIO] = {}
        try:
            for name, path in self.final.items():
                temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
                descriptor = create_private(temporary, path)
                self.temporary[name] = temporary
                self._streams[name] = os.fdopen(descriptor, "wb")
        except BaseException:
            self.discard()
            raise

    def __enter__(self) -> ExportFiles:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if error is not None:
            self.discard()

    @property
    def streams(self) -> Mapping[str, BinaryIO]:
        """The open temporary file of each name, to write the export into."""
        return self._streams

    def write(self, contents: Mapping[str, bytes]) -> None:
        """Write whole contents (an export received in memory) into the files."""
        for name, stream in self._streams.items():
            stream.write(contents[name])

    def close(self) -> None:
        """Flush every file to disk and close it (before :meth:`digests`)."""
        for stream in self._streams.values():
            if not stream.closed:
                stream.flush()
                os.fsync(stream.fileno())
                stream.close()

    def chunks(self, name: str) -> Iterator[bytes]:
        """The written content of ``name`` (after :meth:`close`), a MiB at a time."""
        with self.temporary[name].open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk

    def digests(
        self, mac: Callable[[Iterator[bytes]], bytes] | None = None
    ) -> dict[str, tuple[str, bytes]]:
        """Each file's SHA-256 (hex) and ``mac`` of its content (empty without ``mac``),
        read back a MiB at a time: no file is ever whole in memory."""
        found: dict[str, tuple[str, bytes]] = {}
        for name in self.final:
            sha = hashlib.sha256()
            chunks = _hashing(self.chunks(name), sha)
            code = b"" if mac is None else mac(chunks)
            for _rest in chunks:  # without mac, or what mac left unread
                pass
            found[name] = (sha.hexdigest(), code)
        return found

    def publish(self) -> None:
        """Give each file its final name, never over an existing file (a hard link, then
        the temporary name removed); on failure, remove every file this export made."""
        self.close()
        linked: list[Path] = []
        try:
            for name, temporary in self.temporary.items():
                final = self.final[name]
                try:
                    os.link(temporary, final)
                except FileExistsError:
                    raise InvalidInput(
                        f"{final} already exists: refusing to overwrite it"
                    ) from None
                linked.append(final)
        except BaseException:
            for path in linked:
                path.unlink(missing_ok=True)
            self.discard()
            raise
        self.discard()  # the temporary names only: the files live on under their own
        directory = os.open(next(iter(self.final.values())).parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        """Close and remove the temporary files (all that a refused export wrote)."""
        for stream in self._streams.values():
            stream.close()
        for path in self.temporary.values():
            path.unlink(missing_ok=True)

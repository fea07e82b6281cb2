"""What a command's result must look like: success, a clean refusal, no arm for the blinded."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from click.testing import Result

from randomizer.commands.base import CLI_HINTS
from randomizer.errors import RandomizerError
from tests.support.exosome import arm_words_in

OPAQUE = "the key file does not open this trial's data: wrong key file or altered data"
"""The one message of every failure to open a sealed value."""

NOT_CURRENT_KEY = (
    "the key file does not open this trial: it is not the trial's current key "
    "(was the key rotated?)"
)
"""The message when the key file does not unwrap the trial's data key (old, wrong or altered)."""


def describe(result: Result) -> str:
    """Exit code, stdout, stderr and exception of a result, for an assertion's message."""
    return (
        f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
        f"exception: {result.exception!r}"
    )


def assert_ok(result: Result) -> None:
    """Exit 0, nothing on stderr, no exception."""
    assert result.exit_code == 0, describe(result)
    assert result.exception is None, describe(result)
    assert result.stderr == "", describe(result)


def assert_error(result: Result, exit_code: int, *fragments: str) -> str:
    """A clean refusal: the exit code, exactly one stderr line ``Error: ...`` holding each
    fragment, no traceback anywhere. Returns the message after ``Error: ``."""
    assert result.exit_code == exit_code, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert "Traceback" not in result.output, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("Error: "), describe(result)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0].removeprefix("Error: ")


def assert_no_arm(result: Result, what: str = "", inputs: Iterable[str] = ()) -> None:
    """Neither stdout nor stderr of ``result`` names an arm (see ``exosome.ARM_WORDS``).

    An arm word that one of ``inputs`` (the command's own arguments) contains
    is let pass, since a refusal may echo what it was given; every other arm
    word still fails.
    """
    given = [value.lower() for value in inputs]
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        found = [word for word in arm_words_in(text) if not any(word in value for value in given)]
        assert not found, f"{what}: {stream} names {found}: {text!r}"


def without_cli_hint(message: str) -> str:
    """The library's message in an ``Error:`` line: the line less the CLI's hint, if any.

    Refusals are audited with the library's message, which every front end shares.
    """
    for hint in CLI_HINTS.values():
        if message.endswith(f" ({hint})"):
            return message.removesuffix(f" ({hint})")
    return message


def refused(error: type[RandomizerError], call: Callable[[], object]) -> RandomizerError:
    """Call ``call()``, which must raise exactly ``error`` (not a subclass); the error."""
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error, f"{type(raised.value).__name__}: {raised.value}"
    return raised.value

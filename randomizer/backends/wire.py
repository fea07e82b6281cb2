"""Results and refusals as JSON, and back: what crosses between the server and its clients.

A result is one of the library's frozen dataclasses; :func:`to_wire` gives its
JSON form (the same as the CLI's ``--json``), :func:`from_wire` rebuilds the
dataclass from it using the class's type hints. A refusal travels as
``{"error": message, "kind": class name, "hint": next step}`` (``hint`` only
when the library gave one); :func:`error_from_wire` raises the
same class on the client, so a remote command prints the same ``Error:`` line
and exits with the same code as a local one.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from randomizer import errors
from randomizer.errors import Hint, RandomizerError

T = TypeVar("T")

MAX_TEXT = 2000
"""The longest text one field of a request may hold, and one argument of the CLI.

The CLI refuses a longer argument itself, before it opens anything, so that a
local and a remote run refuse it alike; the server refuses a longer field with 422."""


def to_wire(data: Any) -> Any:
    """Dataclasses, tuples and paths as plain JSON values."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return {f.name: to_wire(getattr(data, f.name)) for f in dataclasses.fields(data)}
    if isinstance(data, dict):
        return {str(k): to_wire(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [to_wire(v) for v in data]
    if isinstance(data, Path):
        return str(data)
    return data


def from_wire(cls: type[T], data: Any) -> T:
    """Rebuild a dataclass of type ``cls`` from :func:`to_wire`'s JSON form.

    Anything that does not fit the class (a missing or unknown field, a wrong
    type) raises :class:`ValueError`, which the HTTP client reports as a server
    answering garbage.
    """
    return typing.cast(T, _build(cls, data))


def _build(hint: Any, data: Any) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(data, dict):
            raise ValueError(f"expected an object for {hint.__name__}")
        hints, fields = _fields(hint)
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unexpected fields {sorted(unknown)} for {hint.__name__}")
        return hint(**{name: _build(hints[name], value) for name, value in data.items()})
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if data is None and type(None) in options:
            return None
        last: Exception | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return _build(option, data)
            except (ValueError, TypeError) as exc:
                last = exc
        raise ValueError(f"no type of {hint} fits: {last}")
    if origin is list:
        (item,) = get_args(hint)
        return [_build(item, v) for v in _sequence(data)]
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in _sequence(data))
        return tuple(_build(a, v) for a, v in zip(args, _sequence(data), strict=True))
    if origin is dict:
        key, value = get_args(hint)
        if not isinstance(data, dict):
            raise ValueError("expected an object")
        return {_build(key, k): _build(value, v) for k, v in data.items()}
    if hint is Any:
        return data
    if hint is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    if isinstance(hint, type):
        if not isinstance(data, hint) or (hint is int and isinstance(data, bool)):
            raise ValueError(f"expected {hint.__name__}, got {type(data).__name__}")
        return data
    raise ValueError(f"cannot read a value of type {hint}")


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    # resolving the hints' strings is most of a result's reading; a class's never change
    return get_type_hints(cls), frozenset(f.name for f in dataclasses.fields(cls))


def _sequence(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError("expected a list")
    return data


def error_classes() -> dict[str, type[RandomizerError]]:
    """Every error class of the library by name (what ``kind`` may say)."""
    found: dict[str, type[RandomizerError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, RandomizerError):
            found[value.__name__] = value
    return found


def error_to_wire(error: RandomizerError) -> dict[str, str]:
    """The JSON body of a refusal: message, class and (when there is one) the next step."""
    body = {"error": " ".join(str(error).split()) or "refused", "kind": type(error).__name__}
    if error.hint is not None:
        body["hint"] = error.hint.name
    return body


def error_from_wire(body: Any, fallback: type[RandomizerError]) -> RandomizerError:
    """The library error a refusal's JSON body names (``fallback`` when it names none)."""
    message = "the server refused the request"
    kind = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body["error"].strip():
            message = " ".join(body["error"].split())
        if isinstance(body.get("kind"), str):
            kind = body["kind"]
    cls = error_classes().get(kind or "", fallback)
    hint = body.get("hint") if isinstance(body, dict) else None
    return cls(message, hint=Hint.__members__.get(hint) if isinstance(hint, str) else None)

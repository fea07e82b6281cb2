"""Trial designs written for the tests and the benchmarks: one TOML builder.

:func:`design_toml` writes a design file from its parts, in the layout of
``randomizer/designs/exosome-ms.toml`` (one table per block, blank lines
between them), so tests that edit the text with ``str.replace`` find the
lines they expect. :func:`make_design` is the generator's view of a design
(arms, ratio, block sizes, length, factors), parsed and validated.

The benchmarks import this module too (``python benchmarks/X.py`` puts the
repository root on ``sys.path``), so it imports nothing from pytest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from randomizer.design import TrialDesign, parse_design

ArmSpec = str | tuple[str, str, str]
"""An arm: its id (label ``Id``, preparation ``Prepare id.``) or ``(id, label, preparation)``."""

CriterionSpec = Mapping[str, str | float]
"""One ``[[criteria]]`` table, keys in the order written; see :func:`in_range`."""

VisitSpec = tuple[str, int, int]
"""A dosing visit: name, day, window (a window of 0 is left out, as the default)."""

FIRST_VISIT_ONLY: tuple[VisitSpec, ...] = (("Day 0", 0, 0),)

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def in_range(criterion_id: str, question: str, minimum: float, maximum: float) -> CriterionSpec:
    """A ``range`` criterion from ``minimum`` to ``maximum``."""
    return {
        "id": criterion_id,
        "kind": "range",
        "question": question,
        "min": minimum,
        "max": maximum,
    }


def must_be_yes(criterion_id: str, question: str) -> CriterionSpec:
    """A ``must_be_yes`` criterion."""
    return {"id": criterion_id, "kind": "must_be_yes", "question": question}


AGE = in_range("age", "Age", 18, 65)
"""The age criterion of the test and benchmark designs (not exosome-ms's wording)."""


def design_toml(
    *,
    planned_participants: int,
    arms: Sequence[ArmSpec],
    block_sizes: Sequence[int],
    ratio: Sequence[int] | None = None,
    trial_id: str = "t1",
    title: str = "Test trial",
    stratum_length: int | None = None,
    factors: Mapping[str, Sequence[str]] | None = None,
    criteria: Sequence[CriterionSpec] = (),
    visits: Sequence[VisitSpec] = FIRST_VISIT_ONLY,
    spare_fraction: float | None = None,
) -> str:
    """The text of a design file; ``ratio`` defaults to 1 for every arm.

    Optional parts left at ``None`` (stratum length, spare fraction) are not
    written, so the design's own defaults apply.
    """
    arm_specs = [
        (arm, arm.capitalize(), f"Prepare {arm}.") if isinstance(arm, str) else arm for arm in arms
    ]
    arm_ids = [arm_id for arm_id, _, _ in arm_specs]
    trial: dict[str, object] = {
        "id": trial_id,
        "title": title,
        "planned_participants": planned_participants,
    }
    if stratum_length is not None:
        trial["stratum_length"] = stratum_length
    weights = ratio if ratio is not None else [1] * len(arm_ids)
    tables = [
        _table("[trial]", trial),
        _table(
            "[allocation]",
            {"ratio": dict(zip(arm_ids, weights, strict=True)), "block_sizes": list(block_sizes)},
        ),
        *(
            _table("[[arms]]", {"id": arm_id, "label": label, "preparation": preparation})
            for arm_id, label, preparation in arm_specs
        ),
        *(
            _table("[[factors]]", {"name": name, "levels": list(levels)})
            for name, levels in (factors or {}).items()
        ),
        *(_table("[[criteria]]", criterion) for criterion in criteria),
        *(
            _table(
                "[[visits]]", {"name": name, "day": day, **({"window": window} if window else {})}
            )
            for name, day, window in visits
        ),
    ]
    if spare_fraction is not None:
        tables.append(_table("[kits]", {"spare_fraction": spare_fraction}))
    return "\n".join(tables)


def make_design(
    arms: Sequence[str],
    ratio: Sequence[int],
    block_sizes: Sequence[int],
    length: int,
    factors: Mapping[str, Sequence[str]] | None = None,
) -> TrialDesign:
    """A validated design with just what the generator reads (the keys of the vector files)."""
    return parse_design(
        design_toml(
            trial_id="gen-test",
            title="Generator test",
            planned_participants=length,
            arms=arms,
            ratio=ratio,
            block_sizes=block_sizes,
            factors=factors,
        )
    )


def _table(header: str, values: Mapping[str, object]) -> str:
    return header + "\n" + "".join(f"{_key(k)} = {_value(v)}\n" for k, v in values.items())


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    escaped = "".join(
        f"\\{c}" if c in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or c == "\x7f" else c
        for c in text
    )
    return f'"{escaped}"'

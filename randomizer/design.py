"""Trial designs: arms, ratio, block sizes, strata, eligibility, visits and kits.

A design is a TOML file (see ``randomizer/designs/exosome-ms.toml``) loaded into
a frozen :class:`TrialDesign`. Every mistake in a file is reported as a
:class:`~randomizer.errors.DesignError` whose message names the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from randomizer.errors import DesignError, Hint, InvalidInput

CriterionKind = Literal["range", "must_be_yes", "must_be_no"]
CRITERION_KINDS: tuple[CriterionKind, ...] = ("range", "must_be_yes", "must_be_no")

MAX_LIST_LENGTH = 10_000_000
"""The most slots (per-stratum length x strata) a design may plan."""

_ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}


@dataclass(frozen=True)
class Arm:
    """One treatment arm: its id, label and what the pharmacy prepares for it."""

    id: str
    label: str
    description: str
    preparation: str


@dataclass(frozen=True)
class Factor:
    """A stratification factor and its levels, in design order."""

    name: str
    levels: tuple[str, ...]
    question: str

    def check_level(self, level: str | None) -> str:
        """``level`` if it is one of this factor's; missing or unknown is :class:`InvalidInput`."""
        if level is None:
            raise InvalidInput(
                f"missing stratum {self.name}=LEVEL (one of: {', '.join(self.levels)})"
            )
        if level not in self.levels:
            raise InvalidInput(
                f"stratum {self.name}={level!r} is not a level; "
                f"use one of: {', '.join(self.levels)}"
            )
        return level


@dataclass(frozen=True)
class Criterion:
    """An eligibility criterion; ``range`` bounds are inclusive."""

    id: str
    kind: CriterionKind
    question: str
    minimum: float | None = None
    maximum: float | None = None

    def rule(self) -> str:
        """What an eligible answer is, in words: ``18 to 65``, ``yes`` or ``no``."""
        if self.kind == "range":
            return format_range(self.minimum, self.maximum)
        return "yes" if self.kind == "must_be_yes" else "no"

    def parse(self, raw: str) -> float | bool:
        """A textual answer as a number (range) or yes/no; malformed is :class:`InvalidInput`.

        Numbers may use a decimal comma (``4,5``) as well as a point.
        """
        text = raw.strip()
        if self.kind != "range":
            return _yes_no(self.id, text)
        if text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"answer {self.id}={raw.strip()!r} must be a number") from None
        if not math.isfinite(value):
            raise InvalidInput(f"answer {self.id}={raw.strip()!r} must be a finite number")
        return value

    def check(self, raw: str | None) -> float | bool:
        """A given answer parsed (:meth:`parse`); a missing one is :class:`InvalidInput`."""
        if raw is None:
            raise InvalidInput(
                f"missing answer for {self.id} ({self.question}): "
                "every eligibility criterion needs an answer",
                hint=Hint.ANSWERS,
            )
        return self.parse(raw)

    def failure(self, raw: str) -> str | None:
        """Why this answer makes a participant ineligible, as a readable line; None if it passes."""
        value = self.parse(raw)
        if self.kind == "range":
            lo, hi = self.minimum, self.maximum
            passes = (lo is None or value >= lo) and (hi is None or value <= hi)
            shown = raw.strip()
        else:
            passes = value == (self.kind == "must_be_yes")
            shown = "yes" if value else "no"
        if passes:
            return None
        return f"{self.id}: answered {shown}, must be {self.rule()} ({self.question})"


@dataclass(frozen=True)
class Visit:
    """A dosing visit: number (from 1), name, target day and window (± days)."""

    number: int
    name: str
    day: int
    window: int


@dataclass(frozen=True)
class TrialDesign:
    """A validated trial design. Build it with :func:`load_design` or :func:`parse_design`."""

    id: str
    title: str
    arms: tuple[Arm, ...]
    ratio: tuple[int, ...]
    block_sizes: tuple[int, ...]
    planned_participants: int
    stratum_length: int
    factors: tuple[Factor, ...]
    criteria: tuple[Criterion, ...]
    visits: tuple[Visit, ...]
    spare_fraction: float
    sites: tuple[str, ...] = ()

    @property
    def arm_ids(self) -> tuple[str, ...]:
        """Arm ids in design order."""
        return tuple(arm.id for arm in self.arms)

    def arm(self, arm_id: str) -> Arm:
        """The arm with this id."""
        for arm in self.arms:
            if arm.id == arm_id:
                return arm
        raise DesignError(f"design {self.id}: no arm {arm_id!r}")

    def strata(self) -> tuple[str, ...]:
        """Canonical keys of every stratum: the product of the factors' levels, design order."""
        if not self.factors:
            return ("all",)
        combos = itertools.product(*[[(f.name, lv) for lv in f.levels] for f in self.factors])
        return tuple(stratum_key(dict(combo)) for combo in combos)

    def stratum_of(self, levels: Mapping[str, str]) -> str:
        """The stratum key for a participant's factor levels; every factor must be given."""
        names = {f.name for f in self.factors}
        unknown = sorted(set(levels) - names)
        if unknown:
            raise InvalidInput(
                f"unknown stratification factor {unknown[0]!r}; "
                f"this design has: {', '.join(sorted(names)) or 'none'}"
            )
        for factor in self.factors:
            factor.check_level(levels.get(factor.name))
        return stratum_key(levels)

    def visit(self, number: int) -> Visit:
        """The dosing visit with this number (1-based)."""
        if not 1 <= number <= len(self.visits):
            raise InvalidInput(f"visit {number} does not exist; visits are 1 to {len(self.visits)}")
        return self.visits[number - 1]

    def spares_per_arm(self) -> int:
        """Spare kits per arm: spare_fraction of the dosing kits of one arm's share, rounded up."""
        kits = self.stratum_length * len(self.strata()) * len(self.visits)
        share = max(self.ratio) / sum(self.ratio)
        return math.ceil(kits * share * self.spare_fraction)

    def imbalance_bound(self) -> float:
        """The largest ``count / ratio`` spread between arms permuted blocks allow at any point."""
        return max(self.block_sizes) / sum(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready form of the design."""
        return asdict(self)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: names the exact design a list came from."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def check_answers(self, answers: Mapping[str, str]) -> list[str]:
        """Failing criteria (as readable lines) for textual answers; empty when eligible.

        A missing or malformed answer is bad input (:class:`InvalidInput`), not a failure.
        """
        known = {c.id for c in self.criteria}
        unknown = sorted(set(answers) - known)
        if unknown:
            raise InvalidInput(
                f"unknown eligibility criterion {unknown[0]!r}; "
                f"criteria are: {', '.join(sorted(known))}"
            )
        failures: list[str] = []
        for criterion in self.criteria:
            criterion.check(answers.get(criterion.id))
            failure = criterion.failure(answers[criterion.id])
            if failure is not None:
                failures.append(failure)
        return failures


def stratum_key(levels: Mapping[str, str]) -> str:
    """Canonical stratum key: ``factor=level`` pairs sorted by factor, joined by ``;``."""
    if not levels:
        return "all"
    return ";".join(f"{name}={levels[name]}" for name in sorted(levels))


def format_range(minimum: float | None, maximum: float | None) -> str:
    """The one way a range is written: ``18 to 65``, ``18 or more``, ``65 or less`` (inclusive)."""
    if minimum is not None and maximum is not None:
        return f"{_num(minimum)} to {_num(maximum)}"
    if minimum is not None:
        return f"{_num(minimum)} or more"
    if maximum is not None:
        return f"{_num(maximum)} or less"
    return "any number"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _yes_no(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in _YES:
        return True
    if low in _NO:
        return False
    raise InvalidInput(f"answer {name}={raw!r} must be yes or no")


def shipped_designs() -> list[str]:
    """Names of the designs shipped inside the package."""
    folder = resources.files("randomizer").joinpath("designs")
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def design_text(name_or_path: str) -> str:
    """The TOML text of a shipped design name (``exosome-ms``) or a design file path."""
    if name_or_path in shipped_designs():
        resource = resources.files("randomizer").joinpath("designs")
        return resource.joinpath(f"{name_or_path}.toml").read_text(encoding="utf-8")
    try:
        return Path(name_or_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DesignError(
            f"design {name_or_path!r} not found: give a file path or one of "
            f"{', '.join(shipped_designs())}"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DesignError(
            f"cannot read design file {name_or_path!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None


def load_design(name_or_path: str) -> TrialDesign:
    """Load a design by shipped name (``exosome-ms``) or by file path."""
    return parse_design(design_text(name_or_path), source=name_or_path)


def parse_design(text: str, source: str = "<design>") -> TrialDesign:
    """Parse and validate design TOML text; ``source`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DesignError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise DesignError(f"{source}: not valid TOML: nested too deeply") from None
    return _Validator(source).design(data)


class _Validator:
    """Turns parsed TOML into a TrialDesign, naming the field of the first mistake."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> DesignError:
        return DesignError(f"{self.source}: {field}: {problem}")

    def table(
        self,
        data: Mapping[str, Any],
        key: str,
        field: str,
        allowed: Sequence[str],
        required: Sequence[str],
    ) -> dict[str, Any]:
        value = data.get(key)
        if not isinstance(value, dict):
            raise self.fail(field, "missing table" if value is None else "must be a table")
        self.keys(value, field, allowed, required)
        return value

    def keys(
        self, value: Mapping[str, Any], field: str, allowed: Sequence[str], required: Sequence[str]
    ) -> None:
        for key in value:
            if key not in allowed:
                raise self.fail(f"{field}.{key}", f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(f"{field}.{key}", "missing")

    def string(self, value: Any, field: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(field, "must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(field, f"{value!r} must match {pattern.pattern}")
        return value

    def integer(self, value: Any, field: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, "must be an integer")
        if value < minimum:
            raise self.fail(field, f"must be at least {minimum}, got {value}")
        if value > 10_000_000:
            raise self.fail(field, f"must be at most 10000000, got {value}")
        return value

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(field, "must be a number")
        if not math.isfinite(value):
            raise self.fail(field, "must be finite")
        return float(value)

    def array(self, data: Mapping[str, Any], key: str, field: str) -> list[Any]:
        value = data.get(key)
        if value is None:
            raise self.fail(field, "missing")
        if not isinstance(value, list):
            raise self.fail(field, "must be an array")
        return value

    def unique(self, values: Sequence[str], field: str) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise self.fail(field, f"duplicate id {value!r}")
            seen.add(value)

    def design(self, data: dict[str, Any]) -> TrialDesign:
        self.keys(
            data,
            "design",
            ("trial", "allocation", "arms", "factors", "criteria", "visits", "kits"),
            ("trial", "allocation", "arms", "visits"),
        )
        trial = self.table(
            data,
            "trial",
            "trial",
            ("id", "title", "planned_participants", "stratum_length", "sites"),
            ("id", "title", "planned_participants"),
        )
        trial_id = self.string(trial["id"], "trial.id", _ID)
        title = self.string(trial["title"], "trial.title")
        planned = self.integer(trial["planned_participants"], "trial.planned_participants", 1)
        length = self.integer(trial.get("stratum_length", planned), "trial.stratum_length", 1)
        sites_raw = trial.get("sites", [])
        if not isinstance(sites_raw, list):
            raise self.fail("trial.sites", "must be an array")
        sites = tuple(self.string(s, f"trial.sites[{i}]", _LEVEL) for i, s in enumerate(sites_raw))
        self.unique(sites, "trial.sites")

        arms = self.arms(self.array(data, "arms", "arms"))
        ratio, block_sizes = self.allocation(data, arms)
        factors = self.factors(data.get("factors", []))
        criteria = self.criteria(data.get("criteria", []))
        visits = self.visits(self.array(data, "visits", "visits"))
        kits = data.get("kits", {})
        if not isinstance(kits, dict):
            raise self.fail("kits", "must be a table")
        self.keys(kits, "kits", ("spare_fraction",), ())
        spare = self.number(kits.get("spare_fraction", 0.1), "kits.spare_fraction")
        if not 0 <= spare <= 1:
            raise self.fail("kits.spare_fraction", f"must be between 0 and 1, got {spare}")
        strata = math.prod(len(f.levels) for f in factors)
        if length * strata > MAX_LIST_LENGTH:
            raise self.fail(
                "trial.stratum_length",
                f"{length} per stratum x {strata} strata is more than {MAX_LIST_LENGTH} slots",
            )
        return TrialDesign(
            id=trial_id,
            title=title,
            arms=arms,
            ratio=ratio,
            block_sizes=block_sizes,
            planned_participants=planned,
            stratum_length=length,
            factors=factors,
            criteria=criteria,
            visits=visits,
            spare_fraction=spare,
            sites=sites,
        )

    def arms(self, raw: list[Any]) -> tuple[Arm, ...]:
        if len(raw) < 2:
            raise self.fail("arms", f"a randomized trial needs at least 2 arms, got {len(raw)}")
        arms: list[Arm] = []
        for i, entry in enumerate(raw):
            field = f"arms[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(field, "must be a table")
            self.keys(
                entry,
                field,
                ("id", "label", "description", "preparation"),
                ("id", "label", "preparation"),
            )
            arms.append(
                Arm(
                    id=self.string(entry["id"], f"{field}.id", _ID),
                    label=self.string(entry["label"], f"{field}.label"),
                    description=self.string(
                        entry.get("description", entry["label"]), f"{field}.description"
                    ),
                    preparation=self.string(entry["preparation"], f"{field}.preparation"),
                )
            )
        self.unique([a.id for a in arms], "arms.id")
        self.unique([a.label for a in arms], "arms.label")
        return tuple(arms)

    def allocation(
        self, data: dict[str, Any], arms: tuple[Arm, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        alloc = self.table(
            data, "allocation", "allocation", ("ratio", "block_sizes"), ("ratio", "block_sizes")
        )
        ratio_raw = alloc["ratio"]
        if not isinstance(ratio_raw, dict):
            raise self.fail("allocation.ratio", "must be a table of arm id = integer")
        ids = [a.id for a in arms]
        for arm_id in ratio_raw:
            if arm_id not in ids:
                raise self.fail(f"allocation.ratio.{arm_id}", "unknown arm")
        for arm_id in ids:
            if arm_id not in ratio_raw:
                raise self.fail(f"allocation.ratio.{arm_id}", "missing: every arm needs a ratio")
        ratio = tuple(self.integer(ratio_raw[a], f"allocation.ratio.{a}", 1) for a in ids)
        sizes_raw = alloc["block_sizes"]
        if not isinstance(sizes_raw, list) or not sizes_raw:
            raise self.fail("allocation.block_sizes", "must be a non-empty array of integers")
        total = sum(ratio)
        sizes = tuple(
            self.integer(s, f"allocation.block_sizes[{i}]", 1) for i, s in enumerate(sizes_raw)
        )
        for i, size in enumerate(sizes):
            if size % total:
                raise self.fail(
                    f"allocation.block_sizes[{i}]",
                    f"{size} is not a multiple of the ratio's sum {total}",
                )
            if size > 1000:
                raise self.fail(f"allocation.block_sizes[{i}]", f"{size} is above 1000")
        if len(set(sizes)) != len(sizes):
            raise self.fail("allocation.block_sizes", "duplicate block size")
        return ratio, sizes

    def factors(self, raw: Any) -> tuple[Factor, ...]:
        if not isinstance(raw, list):
            raise self.fail("factors", "must be an array of tables")
        factors: list[Factor] = []
        for i, entry in enumerate(raw):
            field = f"factors[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(field, "must be a table")
            self.keys(entry, field, ("name", "levels", "question"), ("name", "levels"))
            name = self.string(entry["name"], f"{field}.name", _ID)
            levels_raw = entry["levels"]
            if not isinstance(levels_raw, list) or len(levels_raw) < 2:
                raise self.fail(f"{field}.levels", "must list at least 2 levels")
            levels = tuple(
                self.string(lv, f"{field}.levels[{j}]", _LEVEL) for j, lv in enumerate(levels_raw)
            )
            self.unique(levels, f"{field}.levels")
            question = self.string(entry.get("question", name), f"{field}.question")
            factors.append(Factor(name=name, levels=levels, question=question))
        self.unique([f.name for f in factors], "factors.name")
        if math.prod(len(f.levels) for f in factors) > 1000:
            raise self.fail("factors", "more than 1000 strata")
        return tuple(factors)

    def criteria(self, raw: Any) -> tuple[Criterion, ...]:
        if not isinstance(raw, list):
            raise self.fail("criteria", "must be an array of tables")
        criteria: list[Criterion] = []
        for i, entry in enumerate(raw):
            field = f"criteria[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(field, "must be a table")
            self.keys(
                entry, field, ("id", "kind", "question", "min", "max"), ("id", "kind", "question")
            )
            kind = entry["kind"]
            if kind not in CRITERION_KINDS:
                raise self.fail(
                    f"{field}.kind", f"{kind!r} is not one of {', '.join(CRITERION_KINDS)}"
                )
            lo = hi = None
            if kind == "range":
                if "min" not in entry and "max" not in entry:
                    raise self.fail(field, "a range criterion needs min, max or both")
                lo = self.number(entry["min"], f"{field}.min") if "min" in entry else None
                hi = self.number(entry["max"], f"{field}.max") if "max" in entry else None
                if lo is not None and hi is not None and lo > hi:
                    raise self.fail(f"{field}.min", f"min {lo} is above max {hi}")
            elif "min" in entry or "max" in entry:
                raise self.fail(field, f"min and max apply only to range criteria, not {kind}")
            criteria.append(
                Criterion(
                    id=self.string(entry["id"], f"{field}.id", _ID),
                    kind=kind,
                    question=self.string(entry["question"], f"{field}.question"),
                    minimum=lo,
                    maximum=hi,
                )
            )
        self.unique([c.id for c in criteria], "criteria.id")
        return tuple(criteria)

    def visits(self, raw: list[Any]) -> tuple[Visit, ...]:
        if not raw:
            raise self.fail("visits", "at least one dosing visit is needed")
        visits: list[Visit] = []
        for i, entry in enumerate(raw):
            field = f"visits[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(field, "must be a table")
            self.keys(entry, field, ("name", "day", "window"), ("name", "day"))
            day = self.integer(entry["day"], f"{field}.day", 0)
            window = entry.get("window", 0)
            if isinstance(window, int) and not isinstance(window, bool) and window < 0:
                raise self.fail(f"{field}.window", f"must not be negative, got {window}")
            name = self.string(entry["name"], f"{field}.name")
            if _CONTROL.search(name):
                # a visit's name is printed in one-line messages and listings
                raise self.fail(
                    f"{field}.name",
                    f"{name!r} must not hold control characters (line breaks, tabs)",
                )
            visits.append(
                Visit(
                    number=i + 1,
                    name=name,
                    day=day,
                    window=self.integer(window, f"{field}.window", 0),
                )
            )
        self.unique([v.name for v in visits], "visits.name")
        if visits[0].day != 0:
            raise self.fail(
                "visits[0].day", "the first dosing visit must be day 0 (the day of randomization)"
            )
        for prev, cur in itertools.pairwise(visits):
            if cur.day <= prev.day:
                raise self.fail(
                    f"visits[{cur.number - 1}].day", f"day {cur.day} must come after day {prev.day}"
                )
            if cur.day - cur.window <= prev.day + prev.window:
                raise self.fail(
                    f"visits[{cur.number - 1}].window", "windows of consecutive visits overlap"
                )
        return tuple(visits)

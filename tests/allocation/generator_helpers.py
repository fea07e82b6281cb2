"""Shared helpers of the generator tests: vector files and the designs they name."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from randomizer.allocation.generator import Schedule
from randomizer.design import TrialDesign
from tests.allocation.reference import RefSlot
from tests.support.designs import make_design

DATA = Path(__file__).resolve().parent.parent / "data"

F = TypeVar("F", bound=Callable[..., object])


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The ``cases`` of the JSON vector file ``tests/data/<name>``."""
    with (DATA / name).open(encoding="utf-8") as file:
        cases: list[dict[str, Any]] = json.load(file)["cases"]
    return cases


def vector_cases(name: str) -> Callable[[F], F]:
    """Parametrize a test over a vector file's cases (argument ``case``, ids by name)."""
    cases = load_vectors(name)
    return pytest.mark.parametrize("case", cases, ids=[c["name"] for c in cases])


def design_of_vector(case: Mapping[str, Any]) -> TrialDesign:
    """The design a generator.json case describes."""
    return make_design(
        case["arms"], case["ratio"], case["block_sizes"], case["length"], case["factors"]
    )


def rows(schedule: Schedule) -> list[RefSlot]:
    """A schedule's slots as reference tuples, in list order."""
    return [(s.stratum, s.sequence, s.block, s.block_size, s.arm) for s in schedule.slots()]

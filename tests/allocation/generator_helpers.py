"""Shared helpers of the generator tests: vector files and small designs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from randomizer.allocation.generator import Schedule
from randomizer.design import TrialDesign, parse_design
from tests.allocation.reference import RefSlot

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


def design_toml(arms: Sequence[str], ratio: Sequence[int], block_sizes: Sequence[int],
                length: int, factors: Mapping[str, Sequence[str]] | None = None) -> str:
    """Design TOML text with just what the generator reads."""
    lines = [
        "[trial]", 'id = "gen-test"', 'title = "Generator test"',
        f"planned_participants = {length}",
        "[allocation]",
        "ratio = { " + ", ".join(f"{a} = {r}" for a, r in zip(arms, ratio, strict=True)) + " }",
        f"block_sizes = {list(block_sizes)}",
    ]
    for arm in arms:
        lines += ["[[arms]]", f'id = "{arm}"', f'label = "Arm {arm}"',
                  'preparation = "As labelled."']
    for name, levels in (factors or {}).items():
        lines += ["[[factors]]", f'name = "{name}"', f"levels = {json.dumps(list(levels))}"]
    lines += ["[[visits]]", 'name = "Day 0"', "day = 0"]
    return "\n".join(lines) + "\n"


def make_design(arms: Sequence[str], ratio: Sequence[int], block_sizes: Sequence[int],
                length: int, factors: Mapping[str, Sequence[str]] | None = None) -> TrialDesign:
    """A validated design (through ``parse_design``) from the generator's parameters."""
    return parse_design(design_toml(arms, ratio, block_sizes, length, factors))


def design_of_vector(case: Mapping[str, Any]) -> TrialDesign:
    """The design a generator.json case describes."""
    return make_design(case["arms"], case["ratio"], case["block_sizes"], case["length"],
                       case["factors"])


def rows(schedule: Schedule) -> list[RefSlot]:
    """A schedule's slots as reference tuples, in list order."""
    return [(s.stratum, s.sequence, s.block, s.block_size, s.arm) for s in schedule.slots()]

"""Predictability of the next arm and the largest imbalance (issue 12, item 2).

The exact figures are checked against a brute-force enumeration that lists
every block-size sequence the generator can draw and every arrangement of
every block, weighted by its probability, in exact fractions; the simulated
figures against the exact ones; and the figures quoted in the shipped
design and in docs/algorithm.md against the computation.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from randomizer import predictability
from randomizer.commands import cli
from randomizer.design import design_text
from randomizer.errors import InvalidInput
from randomizer.predictability import (
    block_predictability,
    exact_affordable,
    exact_correct_guesses,
    guess_hits,
    largest_imbalance,
    predictability_report,
)
from tests.support.designs import make_design
from tests.support.exosome import DESIGN

ROOT = Path(__file__).resolve().parents[1]


# brute force -------------------------------------------------------------------------------


def _size_sequences(
    sizes: Sequence[int], length: int, held: int = 0
) -> Iterator[tuple[tuple[int, ...], Fraction]]:
    """Every block-size sequence the generator can draw for ``length``, with its probability."""
    if held >= length:
        yield (), Fraction(1)
        return
    for size in sizes:
        for rest, p in _size_sequences(sizes, length, held + size):
            yield (size, *rest), p / len(sizes)


def _arrangements(ratio: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """Every distinct order of one block (all equally likely)."""
    block = [arm for arm, share in enumerate(ratio) for _ in range(share * size // sum(ratio))]
    return sorted(set(itertools.permutations(block)))


def _right_guesses(arms: Sequence[int], ratio: Sequence[int]) -> Fraction:
    """Right guesses of the arm furthest below its share, straight from the stratum's counts."""
    counts = [0] * len(ratio)
    right = Fraction(0)
    for t, arm in enumerate(arms):
        behind = [Fraction(share * t, sum(ratio)) - counts[a] for a, share in enumerate(ratio)]
        guessed = [a for a, value in enumerate(behind) if value == max(behind)]
        if arm in guessed:
            right += Fraction(1, len(guessed))
        counts[arm] += 1
    return right


def _spread(counts: Sequence[int], ratio: Sequence[int]) -> Fraction:
    scaled = [Fraction(c, r) for c, r in zip(counts, ratio, strict=True)]
    return max(scaled) - min(scaled)


def brute_force(
    ratio: Sequence[int], sizes: Sequence[int], length: int
) -> tuple[Fraction, Fraction]:
    """(expected share of right guesses, largest imbalance) over the first ``length`` slots."""
    expected = Fraction(0)
    worst = Fraction(0)
    for sequence, p in _size_sequences(sizes, length):
        blocks = [_arrangements(ratio, size) for size in sequence]
        weight = p / math.prod(len(b) for b in blocks)
        for arrangement in itertools.product(*blocks):
            arms = [arm for block in arrangement for arm in block][:length]
            expected += weight * _right_guesses(arms, ratio)
            counts = [0] * len(ratio)
            for arm in arms:
                counts[arm] += 1
                worst = max(worst, _spread(counts, ratio))
    return expected / length, worst


BRUTE_FORCE_CASES = [
    ((1, 1), (2,), 6),
    ((1, 1), (4,), 8),
    ((1, 1), (4,), 7),
    ((1, 1), (2, 4), 8),
    ((1, 1), (2, 4), 9),
    ((1, 1), (2, 4, 6), 10),
    ((1, 1), (4, 6), 10),
    ((1, 1), (10,), 10),
    ((2, 1), (3, 6), 9),
    ((1, 2), (6,), 7),
    ((1, 1, 1), (3, 6), 6),
    ((2, 1, 1), (4,), 8),
]


@pytest.mark.parametrize(
    ("ratio", "sizes", "length"),
    BRUTE_FORCE_CASES,
    ids=[f"{':'.join(map(str, r))}-{s}-{n}" for r, s, n in BRUTE_FORCE_CASES],
)
def test_exact_figures_equal_brute_force(
    ratio: tuple[int, ...], sizes: tuple[int, ...], length: int
) -> None:
    share, worst = brute_force(ratio, sizes, length)
    assert exact_correct_guesses(ratio, sizes, length) == pytest.approx(float(share), rel=1e-12)
    assert largest_imbalance(ratio, sizes, length) == pytest.approx(float(worst), rel=1e-12)


def test_known_values_for_one_to_one() -> None:
    # blocks of 2: a coin toss, then certain; blocks of 4: (1/2 + 2/3 + 2/3 + 1) / 4
    assert exact_correct_guesses((1, 1), (2,), 20) == 0.75
    assert exact_correct_guesses((1, 1), (4,), 20) == pytest.approx(17 / 24, rel=1e-15)
    # a stratum stopped after one slot: one coin toss, whatever the blocks
    assert exact_correct_guesses((1, 1), (4, 6), 1) == 0.5
    assert largest_imbalance((1, 1), (4, 6), 2) == 2
    assert largest_imbalance((1, 1), (4, 6), 20) == 3


# the report -----------------------------------------------------------------------------------


EXOSOME_TABLE = [
    ("random sizes {4, 6}", "68.5%", 3.0, True),
    ("fixed blocks of 2", "75.0%", 1.0, False),
    ("fixed blocks of 4", "70.8%", 2.0, False),
    ("random sizes {2, 4}", "71.9%", 2.0, False),
    ("random sizes {2, 4, 6}", "69.7%", 3.0, False),
    ("one block of 20", "61.7%", 10.0, False),
]


def test_the_exosome_report() -> None:
    report = predictability_report(DESIGN)
    assert (report.design, report.participants, report.strata, report.imbalance_bound) == (
        "exosome-ms",
        20,
        1,
        3.0,
    )
    assert [
        (row.label, f"{row.correct_guesses:.1%}", row.largest_imbalance, row.design)
        for row in report.rows
    ] == EXOSOME_TABLE
    assert {(row.method, row.standard_error, row.trials) for row in report.rows} == {
        ("exact", 0.0, 0)
    }


def test_alternatives_that_do_not_fit_the_ratio_are_left_out() -> None:
    design = make_design(["a", "b", "c"], [1, 1, 1], [3, 6], 10)
    report = predictability_report(design)
    assert [(row.label, row.block_sizes) for row in report.rows] == [
        ("random sizes {3, 6}", (3, 6)),
        ("one block of 12", (12,)),
    ]
    two_to_one = make_design(["a", "b"], [2, 1], [6], 20)
    assert [row.label for row in predictability_report(two_to_one).rows] == [
        "fixed blocks of 6",
        "one block of 21",
    ]


def test_a_design_among_the_alternatives_is_listed_once() -> None:
    design = make_design(["a", "b"], [1, 1], [4, 2], 12)
    labels = [row.label for row in predictability_report(design).rows]
    assert labels == [
        "random sizes {2, 4}",
        "fixed blocks of 2",
        "fixed blocks of 4",
        "random sizes {4, 6}",
        "random sizes {2, 4, 6}",
        "one block of 12",
    ]


def _quoted(text: str, label: str) -> str:
    found = re.search(re.escape(label) + r" \.+ (\d+\.\d%)", text)
    assert found, label
    return found.group(1)


def test_the_shipped_design_quotes_the_exact_figures() -> None:
    text = design_text("exosome-ms")
    figures = {row.label: row for row in predictability_report(DESIGN).rows}
    for label in (
        "fixed blocks of 4",
        "random sizes {2, 4}",
        "random sizes {4, 6}",
        "one block of 20",
    ):
        row = figures[label]
        assert _quoted(text, label) == f"{row.correct_guesses:.1%}"
        imbalance = re.search(re.escape(label) + r" .*largest imbalance[^:]*: (\d+)", text)
        assert imbalance and float(imbalance.group(1)) == row.largest_imbalance


def test_the_algorithm_page_quotes_the_exact_figures() -> None:
    text = (ROOT / "docs" / "algorithm.md").read_text(encoding="utf-8")
    section = text[text.index("## Predictability and imbalance") : text.index("## The list digest")]
    flat = " ".join(section.split())
    figures = {
        row.label: f"{row.correct_guesses:.1%}" for row in predictability_report(DESIGN).rows
    }
    assert (
        f"random blocks of 4 or 6: {figures['random sizes {4, 6}']}, against "
        f"{figures['fixed blocks of 4']} for fixed blocks of 4 and "
        f"{figures['one block of 20']} for one block of 20"
    ) in flat


# simulation ---------------------------------------------------------------------------------------


SIMULATED = [
    ((1, 1), (4, 6), 20),
    ((1, 1), (2, 4, 6), 15),
    ((2, 1), (3, 6), 17),
    ((1, 1, 1), (3, 6), 12),
]


@pytest.mark.parametrize(("ratio", "sizes", "length"), SIMULATED)
def test_simulation_agrees_with_exact(
    ratio: tuple[int, ...], sizes: tuple[int, ...], length: int
) -> None:
    design = make_design([f"arm{i}" for i in range(len(ratio))], ratio, sizes, length)
    exact = block_predictability(design, sizes, method="exact")
    simulated = block_predictability(design, sizes, method="simulation", trials=1500)
    assert (simulated.method, simulated.trials) == ("simulation", 1500)
    assert 0 < simulated.standard_error < 0.01
    assert abs(simulated.correct_guesses - exact.correct_guesses) <= 4 * simulated.standard_error
    assert simulated.largest_imbalance == exact.largest_imbalance


def test_simulation_is_repeatable_and_follows_its_seed() -> None:
    first = block_predictability(DESIGN, (4, 6), method="simulation", trials=50)
    again = block_predictability(DESIGN, (4, 6), method="simulation", trials=50)
    other = block_predictability(DESIGN, (4, 6), method="simulation", trials=50, seed=bytes(32))
    assert first == again
    assert other.correct_guesses != first.correct_guesses


def test_exact_is_used_while_affordable() -> None:
    assert exact_affordable((1, 1), (4, 6), 300)
    assert exact_affordable((1, 1), (1000,), 1000)
    assert not exact_affordable((1, 1), (20_000,), 20_000)  # one block: 20000 x 10001 cells
    assert not exact_affordable((1, 1), (2, 4, 6), 1_000_000)  # too many block starts
    assert not exact_affordable((1, 1, 1, 1), (400,), 400)


def test_too_costly_for_exact_is_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predictability, "EXACT_WORK_LIMIT", 1000)
    monkeypatch.setattr(predictability, "SIMULATION_WORK", 0)  # the fewest trials
    design = make_design(["a", "b"], [1, 1], [4, 6], 300)
    report = predictability_report(design)
    whole = report.rows[-1]
    assert (whole.label, whole.method, whole.trials, whole.largest_imbalance) == (
        "one block of 300",
        "simulation",
        predictability.SIMULATED_TRIALS[0],
        150,
    )
    exact = block_predictability(design, (300,), method="exact")
    assert 0 < whole.standard_error < 0.02
    assert abs(whole.correct_guesses - exact.correct_guesses) <= 4 * whole.standard_error
    assert report.rows[0].method == "exact"


def test_guess_hits_scores_ties_and_the_arm_behind() -> None:
    # A A B B A: a tie, B is behind (wrong), B (right), B (right), a tie
    assert guess_hits(np.array([0, 0, 1, 1, 0]), (1, 1)).tolist() == [0.5, 0.0, 1.0, 1.0, 0.5]
    # 2:1, A A B: a tie at first (both on target); then B is 1/3 behind (wrong), 2/3 (right)
    assert guess_hits(np.array([0, 0, 1]), (2, 1)).tolist() == [0.5, 0.0, 1.0]


@pytest.mark.parametrize(
    ("sizes", "length", "message"),
    [
        ((3,), 10, "block size 3 is not a positive multiple of the ratio's sum 2"),
        ((), 10, "at least one block size is needed"),
        ((4,), 0, "participants per stratum must be at least 1, got 0"),
    ],
)
def test_bad_input_is_refused(sizes: tuple[int, ...], length: int, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        exact_correct_guesses((1, 1), sizes, length)
    assert str(raised.value) == message


# properties ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.sets(st.sampled_from([2, 4, 6, 8, 10]), min_size=1, max_size=3),
    length=st.integers(1, 80),
)
def test_one_to_one_guesses_beat_a_coin_and_imbalance_stays_in_bound(
    sizes: set[int], length: int
) -> None:
    design = make_design(["a", "b"], [1, 1], sorted(sizes), length)
    row = block_predictability(design, sorted(sizes))
    assert 0.5 <= row.correct_guesses <= 1
    assert row.largest_imbalance <= design.imbalance_bound()
    assert row.largest_imbalance == min(max(sizes) // 2, length)


@settings(max_examples=40, deadline=None)
@given(
    ratio=st.lists(st.integers(1, 3), min_size=2, max_size=3),
    multiples=st.sets(st.integers(1, 3), min_size=1, max_size=2),
    length=st.integers(1, 30),
)
def test_any_ratio_stays_in_bound(ratio: list[int], multiples: set[int], length: int) -> None:
    sizes = sorted(m * sum(ratio) for m in multiples)
    design = make_design([f"arm{i}" for i in range(len(ratio))], ratio, sizes, length)
    row = block_predictability(design, sizes)
    assert 0 <= row.correct_guesses <= 1
    assert 0 < row.largest_imbalance <= design.imbalance_bound()


# the command -----------------------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="randomizer")
    return result.exit_code, result.stdout, result.stderr


def test_design_check_prints_the_table() -> None:
    code, out, err = _invoke("design", "check", "exosome-ms", "--predictability")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("exosome-ms: valid design exosome-ms (digest ")
    assert lines[2] == (
        "Predictability per stratum of 20 participants (1 stratum), ratio exosome:saline = 1:1."
    )
    header = lines.index(next(line for line in lines if line.startswith("blocks ")))
    rows = [re.split(r"\s{2,}", line) for line in lines[header + 2 :]]
    assert rows == [
        [f"{label}{' (this design)' if own else ''}", share, "exact", f"{imbalance:g}"]
        for label, share, imbalance, own in EXOSOME_TABLE
    ]


def test_design_check_json() -> None:
    code, out, _ = _invoke("--json", "design", "check", "exosome-ms", "--predictability")
    assert code == 0
    data = json.loads(out)
    assert (data["design"], data["valid"]) == ("exosome-ms", True)
    report = data["predictability"]
    assert (report["participants"], report["ratio"], report["imbalance_bound"]) == (20, [1, 1], 3.0)
    first = report["rows"][0]
    assert (
        first["label"],
        first["block_sizes"],
        first["method"],
        first["design"],
        first["largest_imbalance"],
    ) == ("random sizes {4, 6}", [4, 6], "exact", True, 3.0)
    assert first["correct_guesses"] == pytest.approx(0.68515625)
    assert [row["label"] for row in report["rows"]] == [label for label, *_ in EXOSOME_TABLE]


def test_design_check_shows_a_simulated_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictability, "EXACT_WORK_LIMIT", 1000)
    monkeypatch.setattr(predictability, "SIMULATION_WORK", 0)
    design = tmp_path / "big.toml"
    design.write_text(
        design_text("exosome-ms").replace("planned_participants = 20", "planned_participants = 300")
    )
    code, out, _ = _invoke("design", "check", str(design), "--predictability")
    assert code == 0
    last = re.split(r"\s{2,}", out.splitlines()[-1])
    assert last[0] == "one block of 300" and last[3] == "150"
    assert re.fullmatch(r"5\d\.\d%", last[1]), last
    assert re.fullmatch(r"simulated: 20 lists, SE 0\.\d\d%", last[2]), last


def test_design_check_without_the_flag_is_unchanged() -> None:
    code, out, _ = _invoke("design", "check", "exosome-ms")
    assert code == 0 and "Predictability" not in out and len(out.splitlines()) == 1

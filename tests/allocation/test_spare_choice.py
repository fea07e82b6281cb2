"""Spare kits reveal no arm pairs to whoever reads the kits table (issue 10, item 3).

The attacker holds a raw copy of the database and no key. A kit replacement
shows them which spare was issued in place of which kit, and which spares are
still available. If the spare were the lowest-id available one of its arm,
every available spare with a lower id than the chosen one would hold the other
arm: the attacker's classifier "every available spare below the chosen one is
of the other arm" would always be right. With the spare chosen uniformly among
the available spares of its arm, the classifier is right exactly when the chosen
spare happens to be the lowest of its arm's ``a`` available spares: probability
``1/a``, whatever the layout of the kits table.

The simulation replaces kits through the library, many rounds over one real
trial database, each round in a transaction that is rolled back. Its own
choices (whose kit to replace) come from a seeded generator; the library draws
from the OS CSPRNG, so the outcome differs from run to run. Two tests at
alpha = 0.001 judge it: a correct implementation fails this test with
probability at most 0.002; the lowest-id rule fails it with certainty.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.stats import chi2
from sqlalchemy import select

from randomizer.access import Permission
from randomizer.allocation.service import replace_kit
from randomizer.context import Operation, Principal, key_file_source, operation
from randomizer.models import Kit, Participant
from randomizer.sealed import KIT_KIND, kit_row
from randomizer.store import Store
from tests.support.blinded_path import participant_arms
from tests.support.database import dump_database, execute
from tests.support.exosome import DESIGN
from tests.support.trial import Run, TrialFiles, open_trial_vault

ROUNDS = 120
"""Rounds of replacements; each replaces kits until the spares could run out for an arm."""

SIMULATION_SEED = 20_240_610
ALPHA = 0.001

Observation = tuple[int, int]
"""One replacement: how many spares of its arm were available (a), and the chosen spare's
rank among them by id (0 = the lowest)."""


class _RollBack(Exception):
    """Ends a round: its transaction is rolled back, so every round starts alike."""


def spare_arms(files: TrialFiles) -> dict[str, tuple[int, str]]:
    """Every spare kit's id and arm by code, read as the key holder."""
    vault = open_trial_vault(files)
    rows = execute(
        files.db_url, "SELECT id, code, content_sealed FROM kits WHERE spare = :s", s=True
    )
    return {
        code: (kit_id, vault.open(KIT_KIND, kit_row(code), bytes(sealed)))
        for kit_id, code, sealed in rows
    }


def live_visit_1_kit(op: Operation, participant: str) -> str:
    return op.session.scalars(
        select(Kit.code)
        .join(Participant, Participant.id == Kit.participant_id)
        .where(Participant.code == participant, Kit.visit == 1, Kit.status != "voided")
    ).one()


def available_spares(op: Operation) -> list[str]:
    return list(
        op.session.scalars(select(Kit.code).where(Kit.spare.is_(True), Kit.status == "available"))
    )


def simulate(files: TrialFiles, rounds: int) -> list[Observation]:
    """Replace kits through the library in ``rounds`` rolled-back rounds; observe each choice."""
    spares = spare_arms(files)
    arms = participant_arms(files)
    participants = sorted(arms)
    simulation = random.Random(SIMULATION_SEED)
    # issued spares >= the fewest spares of any arm refuses every replacement
    per_round = min(Counter(arm for _, arm in spares.values()).values())
    observations: list[Observation] = []
    store = Store(files.db_url)
    try:
        for _ in range(rounds):
            try:
                with operation(
                    store,
                    key_file_source(files.key_file),
                    Principal("ivan"),
                    Permission.DISPENSE,
                    "kit.replace",
                    datetime.now(UTC),
                ) as op:
                    for _ in range(per_round):
                        participant = simulation.choice(participants)
                        same_arm = sorted(
                            spares[code][0]
                            for code in available_spares(op)
                            if spares[code][1] == arms[participant]
                        )
                        issued = replace_kit(op, live_visit_1_kit(op, participant), "simulation")
                        assert spares[issued.kit][1] == arms[participant]
                        observations.append((len(same_arm), same_arm.index(spares[issued.kit][0])))
                    raise _RollBack
            except _RollBack:
                pass
    finally:
        store.dispose()
    return observations


def classifier_p_value(observations: Sequence[Observation]) -> float:
    """P(the classifier is right at least as often as observed), if the choice is uniform.

    The classifier is right when the chosen spare is the lowest of its arm's
    available spares (rank 0): probability 1/a, independently per replacement,
    so the count is Poisson-binomial; its upper tail is computed exactly.
    Replacements with one spare of their arm left (a = 1) teach nothing and are left out.
    """
    informative = [(a, rank) for a, rank in observations if a > 1]
    right = sum(rank == 0 for _, rank in informative)
    distribution = np.array([1.0])
    for a, _ in informative:
        distribution = np.convolve(distribution, [1 - 1 / a, 1 / a])
    return float(distribution[right:].sum())


def rank_p_value(observations: Sequence[Observation]) -> float:
    """Chi-square p-value of the chosen ranks against uniform, pooled over the values of a.

    Within each a the rank is uniform on 0..a-1; the per-a statistics are
    independent and add up, with a - 1 degrees of freedom each.
    """
    by_a: dict[int, Counter[int]] = defaultdict(Counter)
    for a, rank in observations:
        if a > 1:
            by_a[a][rank] += 1
    statistic, freedom = 0.0, 0
    for a, ranks in by_a.items():
        n = sum(ranks.values())
        expected = n / a
        assert expected >= 5, (a, n)  # the chi-square approximation holds
        statistic += sum((ranks[r] - expected) ** 2 / expected for r in range(a))
        freedom += a - 1
    return float(chi2.sf(statistic, freedom))


@pytest.mark.slow
def test_the_spares_chosen_and_left_reveal_no_arm_pairs(run: Run, by_arm: dict[str, str]) -> None:
    before = dump_database(run.files.db_url)
    observations = simulate(run.files, ROUNDS)
    assert dump_database(run.files.db_url) == before  # every round was rolled back
    assert len(observations) == ROUNDS * DESIGN.spares_per_arm()
    assert {a for a, _ in observations} >= {2, 3, 4}

    assert classifier_p_value(observations) > ALPHA
    assert rank_p_value(observations) > ALPHA

    # The test can fail: the same replacements under the lowest-id rule (the
    # classifier always right) and under a highest-id rule are caught.
    lowest = [(a, 0) for a, _ in observations]
    highest = [(a, a - 1) for a, _ in observations]
    assert classifier_p_value(lowest) < ALPHA
    assert rank_p_value(lowest) < ALPHA
    assert rank_p_value(highest) < ALPHA

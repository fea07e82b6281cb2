"""One participant, one randomization (issue 10, item 4).

``PARTICIPANT_ID.match`` with ``$`` accepted a trailing line break, so
``randomize P-007`` and then ``randomize $'P-007\\n'`` randomized one person
twice. Ids are now normalised in the library (surrounding white space
dropped, upper case) and checked whole (``fullmatch``) before uniqueness is
checked, so every channel compares one form.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from randomizer.access import Permission
from randomizer.allocation.service import PARTICIPANT_ID, check_participant_id, randomize
from randomizer.backends.local import LocalBackend
from randomizer.context import Credentials, Principal, key_file_source, operation
from randomizer.errors import InvalidInput, StateError
from randomizer.signatures import MEANINGS, SignedBy
from randomizer.store import Store
from tests.support.blinded_path import FOUR_DAY0, refused
from tests.support.blinded_path import randomize as randomize_cli
from tests.support.database import execute
from tests.support.exosome import ELIGIBLE, answer_args
from tests.support.rows import reseal
from tests.support.trial import PASSWORDS, Run, TrialFiles, signature

DAY0 = FOUR_DAY0


def participant_codes(files: TrialFiles) -> list[str]:
    return [
        str(code)
        for (code,) in execute(files.db_url, "SELECT code FROM participants ORDER BY code")
    ]


@pytest.mark.parametrize("typed", ["P-007", "p-007", "P-007\n", " P-007 ", "\tp-007\r\n"])
def test_normalised_ids(typed: str) -> None:
    assert check_participant_id(typed) == "P-007"


@pytest.mark.parametrize(
    "typed",
    [
        "P-007\nP-008",
        "P 007",
        "",
        " ",
        "\n",
        "-P",
        "P/1",
        "P-\ufb01",  # "fi" ligature: upper() would make it "FI"
        "P\u0131",  # dotless i: upper() would make it "I"
        "P" * 33,
    ],
)
def test_invalid_ids(typed: str) -> None:
    with pytest.raises(InvalidInput, match="is not valid"):
        check_participant_id(typed)


@pytest.mark.parametrize("again", ["P-007\n", "p-007", "  P-007  ", "P-007\t"])
def test_the_same_participant_cannot_be_randomized_twice_through_the_cli(
    run: Run, trial_with_list: TrialFiles, again: str
) -> None:
    first = randomize_cli(run, "P-007", DAY0)
    message = refused(
        run,
        "randomize",
        again,
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
        command="randomize",
    )
    assert message == f"participant P-007 is already randomized as {first['randomization_number']}"
    assert participant_codes(trial_with_list) == ["P-007"]


def test_a_lower_case_id_is_stored_and_shown_upper_case(
    run: Run, trial_with_list: TrialFiles
) -> None:
    data = randomize_cli(run, " p-007 ", DAY0)
    assert data["participant"] == "P-007"
    assert participant_codes(trial_with_list) == ["P-007"]
    issued = run.ok("kit", "request", "p-007", "--visit", "1", "--json", user="ivan")
    assert '"participant": "P-007"' in issued.stdout


def test_the_same_participant_cannot_be_randomized_twice_through_the_library(
    trial_with_list: TrialFiles,
) -> None:
    files = trial_with_list
    backend = LocalBackend(
        files.db_url, files.key_file, credentials=lambda: Credentials("ivan", PASSWORDS["ivan"])
    )
    try:
        first = backend.randomize(
            "P-007", "WAW", {}, dict(ELIGIBLE), DAY0, signature=signature("ivan", "randomize")
        )
        with pytest.raises(StateError) as refusal:
            backend.randomize(
                "P-007\n", "WAW", {}, dict(ELIGIBLE), DAY0, signature=signature("ivan", "randomize")
            )
        assert str(refusal.value) == (
            f"participant P-007 is already randomized as {first.randomization_number}"
        )
    finally:
        backend.close()
    assert participant_codes(files) == ["P-007"]


def test_an_id_stored_in_lower_case_before_normalisation_still_counts(
    run: Run, trial_with_list: TrialFiles
) -> None:
    """A database written before ids were normalised may hold ``p-007``: it is still found,
    and ``P-007`` is not randomized a second time."""
    first = randomize_cli(run, "P-007", DAY0)
    execute(trial_with_list.db_url, "UPDATE participants SET code = 'p-007'")
    # written so by that release, with the key: the row's MAC matches it
    reseal(
        trial_with_list,
        "participants",
        execute(trial_with_list.db_url, "SELECT id FROM participants")[0][0],
    )
    refused(
        run,
        "randomize",
        "P-007",
        "--site",
        "WAW",
        *answer_args(),
        "--date",
        DAY0.isoformat(),
        user="ivan",
        code=1,
        command="randomize",
        fragments=(f"participant p-007 is already randomized as {first['randomization_number']}",),
    )
    run.ok("kit", "request", "P-007", "--visit", "1", user="ivan")


class _RollBack(Exception):
    """Ends one example: its transaction is rolled back, so every example starts alike."""


WHITE_SPACE = st.text(st.sampled_from(" \t\n\r\x0b\x0c"), max_size=3)


@st.composite
def spellings(draw: st.DrawFn) -> tuple[str, str]:
    """Two spellings of one id that differ only in white space (anywhere in the second) and
    case."""
    base = draw(st.from_regex(PARTICIPANT_ID, fullmatch=True))

    def respell(inside: bool) -> str:
        letters = [c.lower() if draw(st.booleans()) else c for c in base]
        if inside:
            letters = [draw(WHITE_SPACE) + c for c in letters]
        return draw(WHITE_SPACE) + "".join(letters) + draw(WHITE_SPACE)

    return respell(inside=False), respell(inside=draw(st.booleans()))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pair=spellings())
def test_ids_differing_only_in_white_space_or_case_are_one_participant(
    trial_with_list: TrialFiles, pair: tuple[str, str]
) -> None:
    files = trial_with_list
    first, second = pair
    store = Store(files.db_url)
    try:
        with operation(
            store,
            key_file_source(files.key_file),
            Principal("ivan"),
            Permission.RANDOMIZE,
            "randomize",
            datetime.now(UTC),
            signature=SignedBy(
                "ivan", "2026-01-01T00:00:00.000000Z", MEANINGS["randomize"], "randomize"
            ),
        ) as op:
            accepted = randomize(op, first, "WAW", {}, dict(ELIGIBLE), DAY0)
            assert accepted.participant == first.strip().upper()
            with pytest.raises((StateError, InvalidInput)) as refusal:
                randomize(op, second, "WAW", {}, dict(ELIGIBLE), DAY0)
            if isinstance(refusal.value, StateError):
                assert str(refusal.value).startswith(
                    f"participant {accepted.participant} is already randomized as "
                )
            raise _RollBack
    except _RollBack:
        pass
    finally:
        store.dispose()


def test_the_help_says_how_ids_are_read(run: Run) -> None:
    text = " ".join(run.ok("randomize", "--help").stdout.split())
    assert (
        "Participant ids are read without surrounding spaces and in upper case: p-007 is P-007."
    ) in text

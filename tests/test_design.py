"""Trial designs: the shipped exosome-ms design, one test per validation rule, and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.stream import parse_seed
from randomizer.commands import cli
from randomizer.design import Criterion, format_range, load_design, parse_design, shipped_designs
from randomizer.errors import DesignError, Hint, InvalidInput
from tests.support.designs import design_toml, in_range, must_be_yes

VALID = design_toml(
    planned_participants=12,
    arms=[("a", "Arm A", "Prepare A."), ("b", "Arm B", "Prepare B.")],
    block_sizes=[2, 4],
    factors={"type": ["PPMS", "SPMS"]},
    criteria=[in_range("age", "Age?", 18, 65), must_be_yes("consent", "Consent?")],
    visits=[("Day 0", 0, 0), ("Day 84", 84, 7)],
)
"""A valid design that each rule's test breaks in one place (by replacing text in it)."""


def with_change(old: str, new: str) -> str:
    """The valid design with one piece of text replaced (which must exist)."""
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def test_the_shipped_first_trial_is_the_seed_trial() -> None:
    design = load_design("exosome-ms")
    assert "exosome-ms" in shipped_designs()
    assert design.planned_participants == 20
    assert design.arm_ids == ("exosome", "saline")
    assert design.ratio == (1, 1)
    assert design.block_sizes == (4, 6)
    assert design.strata() == ("all",)
    assert [v.day for v in design.visits] == [0, 84, 168, 252]
    assert [c.kind for c in design.criteria].count("must_be_no") == 3
    assert {c.id: (c.minimum, c.maximum) for c in design.criteria if c.kind == "range"} == {
        "age": (18, 65),
        "edss": (3.0, 6.5),
    }
    assert design.sites == ("WAW",)
    assert design.imbalance_bound() == 3


def test_eligibility_answers_name_every_failing_criterion() -> None:
    design = load_design("exosome-ms")
    answers = {
        "age": "70",
        "progressive_ms": "no",
        "edss": "4",
        "recent_relapse_or_steroids": "yes",
        "other_neuro_autoimmune": "no",
        "infection_malignancy_systemic": "no",
    }
    failures = design.check_answers(answers)
    assert [f.split(":")[0] for f in failures] == [
        "age",
        "progressive_ms",
        "recent_relapse_or_steroids",
    ]
    answers.update(age="18", progressive_ms="Yes", recent_relapse_or_steroids="n")
    assert design.check_answers(answers) == []
    with pytest.raises(InvalidInput, match="answer age='abc' must be a number"):
        design.check_answers({**answers, "age": "abc"})
    with pytest.raises(InvalidInput, match="must be yes or no"):
        design.check_answers({**answers, "progressive_ms": "maybe"})
    with pytest.raises(InvalidInput, match="missing answer for edss") as missing:
        design.check_answers({k: v for k, v in answers.items() if k != "edss"})
    assert missing.value.hint is Hint.ANSWERS
    with pytest.raises(InvalidInput, match="unknown eligibility criterion 'height'"):
        design.check_answers({**answers, "height": "180"})


@pytest.mark.parametrize(
    ("raw", "value"), [("4.5", 4.5), ("4,5", 4.5), (" 4,5 ", 4.5), ("18", 18.0), ("-0,25", -0.25)]
)
def test_numeric_answers_take_a_decimal_point_or_comma(raw: str, value: float) -> None:
    edss = Criterion("edss", "range", "EDSS score", 3.0, 6.5)
    assert edss.parse(raw) == value


@pytest.mark.parametrize("raw", ["1,2,3", "4,5.0", "4;5", "", "nan", "inf", ",", "4 5"])
def test_malformed_numeric_answers_are_refused(raw: str) -> None:
    edss = Criterion("edss", "range", "EDSS score", 3.0, 6.5)
    with pytest.raises(InvalidInput, match=r"^answer edss=.* must be a (finite )?number$"):
        edss.parse(raw)


def test_a_decimal_comma_answer_is_judged_like_a_point() -> None:
    design = load_design("exosome-ms")
    answers = {
        "age": "45",
        "progressive_ms": "yes",
        "edss": "6,5",
        "recent_relapse_or_steroids": "no",
        "other_neuro_autoimmune": "no",
        "infection_malignancy_systemic": "no",
    }
    assert design.check_answers(answers) == []
    assert design.check_answers({**answers, "edss": "6,6"}) == [
        "edss: answered 6,6, must be 3 to 6.5 (EDSS score at screening)"
    ]


@pytest.mark.parametrize(
    ("minimum", "maximum", "text"),
    [
        (18.0, 65.0, "18 to 65"),
        (3.0, 6.5, "3 to 6.5"),
        (18.0, None, "18 or more"),
        (None, 6.5, "6.5 or less"),
    ],
)
def test_a_range_is_written_one_way(
    minimum: float | None, maximum: float | None, text: str
) -> None:
    assert format_range(minimum, maximum) == text
    criterion = Criterion("x", "range", "X?", minimum, maximum)
    assert criterion.rule() == text
    outside = (maximum or 0) + 1 if maximum is not None else (minimum or 0) - 1
    assert criterion.failure(f"{outside:g}") == f"x: answered {outside:g}, must be {text} (X?)"


def test_the_eligibility_ranges_are_written_alike_everywhere() -> None:
    """design show, the screen failure and the question on a terminal say '18 to 65'."""
    design = load_design("exosome-ms")
    age = next(c for c in design.criteria if c.id == "age")
    assert "18" not in age.question  # the range is the rule's, not repeated in the question
    code, out, _ = invoke("design", "show", "exosome-ms")
    assert code == 0
    assert "  age: Age in years at screening [must be 18 to 65]" in out.splitlines()
    assert "  edss: EDSS score at screening [must be 3 to 6.5]" in out.splitlines()
    assert (
        "  progressive_ms: Confirmed primary or secondary progressive MS? [must be yes]"
        in out.splitlines()
    )
    assert age.failure("70") == "age: answered 70, must be 18 to 65 (Age in years at screening)"


def test_strata_are_every_combination_with_canonical_keys() -> None:
    design = parse_design(
        with_change(
            'levels = ["PPMS", "SPMS"]',
            'levels = ["PPMS", "SPMS"]\n\n[[factors]]\nname = "edss"\nlevels = ["low", "high"]',
        )
    )
    assert design.strata() == (
        "edss=low;type=PPMS",
        "edss=high;type=PPMS",
        "edss=low;type=SPMS",
        "edss=high;type=SPMS",
    )
    assert design.stratum_of({"type": "SPMS", "edss": "high"}) == "edss=high;type=SPMS"
    with pytest.raises(InvalidInput, match="missing stratum edss=LEVEL"):
        design.stratum_of({"type": "SPMS"})
    with pytest.raises(InvalidInput, match="is not a level"):
        design.stratum_of({"type": "RRMS", "edss": "low"})


RULES = [
    (
        "block size not a multiple of the ratio's sum",
        "block_sizes = [2, 4]",
        "block_sizes = [2, 3]",
        "allocation.block_sizes[1]: 3 is not a multiple of the ratio's sum 2",
    ),
    (
        "unknown arm in ratio",
        "ratio = { a = 1, b = 1 }",
        "ratio = { a = 1, b = 1, c = 1 }",
        "allocation.ratio.c: unknown arm",
    ),
    (
        "arm without ratio",
        "ratio = { a = 1, b = 1 }",
        "ratio = { a = 1 }",
        "allocation.ratio.b: missing: every arm needs a ratio",
    ),
    (
        "zero ratio",
        "ratio = { a = 1, b = 1 }",
        "ratio = { a = 0, b = 1 }",
        "allocation.ratio.a: must be at least 1, got 0",
    ),
    (
        "duplicate arm id",
        'id = "b"\nlabel = "Arm B"',
        'id = "a"\nlabel = "Arm B"',
        "arms.id: duplicate id 'a'",
    ),
    (
        "one arm only",
        '[[arms]]\nid = "b"\nlabel = "Arm B"\npreparation = "Prepare B."\n',
        "",
        "arms: a randomized trial needs at least 2 arms, got 1",
    ),
    (
        "negative window",
        "window = 7",
        "window = -3",
        "visits[1].window: must not be negative, got -3",
    ),
    (
        "unknown key",
        'title = "Test trial"',
        'title = "Test trial"\ncolour = "blue"',
        "trial.colour: unknown key",
    ),
    (
        "missing planned participants",
        "planned_participants = 12\n",
        "",
        "trial.planned_participants: missing",
    ),
    (
        "planned participants < 1",
        "planned_participants = 12",
        "planned_participants = 0",
        "trial.planned_participants: must be at least 1, got 0",
    ),
    (
        "duplicate block size",
        "block_sizes = [2, 4]",
        "block_sizes = [2, 2]",
        "allocation.block_sizes: duplicate block size",
    ),
    (
        "empty block sizes",
        "block_sizes = [2, 4]",
        "block_sizes = []",
        "allocation.block_sizes: must be a non-empty array of integers",
    ),
    (
        "bad criterion kind",
        'kind = "must_be_yes"',
        'kind = "maybe"',
        "criteria[1].kind: 'maybe' is not one of range, must_be_yes, must_be_no",
    ),
    (
        "range without bounds",
        "min = 18\nmax = 65\n",
        "",
        "criteria[0]: a range criterion needs min, max or both",
    ),
    (
        "min above max",
        "min = 18\nmax = 65",
        "min = 70\nmax = 65",
        "criteria[0].min: min 70.0 is above max 65.0",
    ),
    ("duplicate criterion", 'id = "consent"', 'id = "age"', "criteria.id: duplicate id 'age'"),
    (
        "first visit not day 0",
        'name = "Day 0"\nday = 0',
        'name = "Day 0"\nday = 3',
        "visits[0].day: the first dosing visit must be day 0",
    ),
    ("visits out of order", "day = 84", "day = 0", "visits[1].day: day 0 must come after day 0"),
    (
        "one level only",
        'levels = ["PPMS", "SPMS"]',
        'levels = ["PPMS"]',
        "factors[0].levels: must list at least 2 levels",
    ),
    (
        "duplicate level",
        'levels = ["PPMS", "SPMS"]',
        'levels = ["PPMS", "PPMS"]',
        "factors[0].levels: duplicate id 'PPMS'",
    ),
    (
        "bad arm id",
        'id = "a"\nlabel = "Arm A"',
        'id = "A;B"\nlabel = "Arm A"',
        "arms[0].id: 'A;B' must match",
    ),
    # fullmatch: "$" would let a trailing line break through
    (
        "trailing newline in an id",
        'id = "a"\nlabel = "Arm A"',
        'id = "a\\n"\nlabel = "Arm A"',
        "arms[0].id: 'a\\n' must match",
    ),
    (
        "trailing newline in a level",
        'levels = ["PPMS", "SPMS"]',
        'levels = ["PPMS", "SPMS\\n"]',
        "factors[0].levels[1]: 'SPMS\\n' must match",
    ),
    (
        "line break in a visit name",
        'name = "Day 0"',
        'name = "Day 0\\nDay 1"',
        "visits[0].name: 'Day 0\\nDay 1' must not hold control characters",
    ),
    (
        "spare fraction out of range",
        '[[visits]]\nname = "Day 0"',
        '[kits]\nspare_fraction = 1.5\n\n[[visits]]\nname = "Day 0"',
        "kits.spare_fraction: must be between 0 and 1, got 1.5",
    ),
    (
        "list too long",
        "planned_participants = 12",
        "planned_participants = 6000000",
        "trial.stratum_length: 6000000 per stratum x 2 strata is more than 10000000 slots",
    ),
    (
        "wrong type",
        "planned_participants = 12",
        'planned_participants = "twelve"',
        "trial.planned_participants: must be an integer",
    ),
]


@pytest.mark.parametrize(("rule", "old", "new", "message"), RULES, ids=[r[0] for r in RULES])
def test_each_validation_rule_names_the_field(rule: str, old: str, new: str, message: str) -> None:
    with pytest.raises(DesignError) as caught:
        parse_design(with_change(old, new), source="t1.toml")
    assert str(caught.value).startswith("t1.toml: ")
    assert message in str(caught.value)


def test_empty_arms_are_refused() -> None:
    text = VALID.split("[[arms]]")[0] + "[[criteria]]" + VALID.split("[[criteria]]", 1)[1]
    with pytest.raises(DesignError, match="arms: missing"):
        parse_design(text, source="t1.toml")
    with pytest.raises(DesignError, match="at least 2 arms, got 0"):
        parse_design("arms = []\n" + text, source="t1.toml")


def test_not_toml_and_missing_files_are_design_errors(tmp_path: Path) -> None:
    with pytest.raises(DesignError, match="not valid TOML"):
        parse_design("[trial\n")
    with pytest.raises(DesignError, match="design 'nope.toml' not found"):
        load_design("nope.toml")


# CLI ------------------------------------------------------------------------------

SEED = "0000000000000000000000000000000000000000000000000000000000000001"


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (no database is involved in these commands)."""
    result = CliRunner().invoke(cli, list(args), prog_name="randomizer")
    return result.exit_code, result.stdout, result.stderr


def test_design_show_and_check(tmp_path: Path) -> None:
    code, out, _ = invoke("design", "show", "exosome-ms")
    assert code == 0
    assert "Block sizes: 4, 6" in out and "Week 36: day 252" in out
    code, out, _ = invoke("--json", "design", "show", "exosome-ms")
    assert json.loads(out)["planned_participants"] == 20
    good = tmp_path / "good.toml"
    good.write_text(VALID, encoding="utf-8")
    code, out, _ = invoke("design", "check", str(good))
    assert code == 0 and "valid design t1" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(with_change("block_sizes = [2, 4]", "block_sizes = [3]"), encoding="utf-8")
    code, out, err = invoke("design", "check", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"Error: {bad}: allocation.block_sizes[0]: 3 is not a multiple of the ratio's sum 2"
    ]


def test_list_preview_json_matches_the_shared_vector() -> None:
    vectors = json.loads((Path(__file__).parent / "data" / "generator.json").read_text())
    case = next(c for c in vectors["cases"] if c["name"] == "one-to-one-4-6")
    code, out, _ = invoke(
        "list",
        "preview",
        "--design",
        "exosome-ms",
        "--seed",
        case["seed"],
        "--participants",
        str(case["length"]),
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["design"] == "exosome-ms" and data["seed"] == case["seed"]
    assert [
        {k: s[k] for k in ("sequence", "block", "block_size", "arm")} for s in data["slots"]
    ] == case["expected"]["all"]
    assert {s["stratum"] for s in data["slots"]} == {"all"}


def test_list_preview_json_is_the_document_json_dumps_would_print() -> None:
    # The rows are written piece by piece; the bytes are those of the whole document.
    code, out, _ = invoke(
        "list",
        "preview",
        "--design",
        "exosome-ms",
        "--seed",
        SEED,
        "--participants",
        "1234",
        "--json",
    )
    schedule = generate_schedule(load_design("exosome-ms"), parse_seed(SEED), 1234)
    document = {
        "design": "exosome-ms",
        "seed": SEED,
        "slots": [
            {
                "stratum": s.stratum,
                "sequence": s.sequence,
                "block": s.block,
                "block_size": s.block_size,
                "arm": s.arm,
            }
            for s in schedule.slots()
        ],
    }
    assert code == 0
    assert out == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def test_list_preview_csv_is_the_text_of_the_list_digest() -> None:
    code, out, _ = invoke(
        "list",
        "preview",
        "--design",
        "exosome-ms",
        "--seed",
        SEED,
        "--participants",
        "1234",
        "--csv",
    )
    schedule = generate_schedule(load_design("exosome-ms"), parse_seed(SEED), 1234)
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "stratum,sequence,block,block_size,arm" and len(lines) == 1 + len(schedule)
    assert lines[1:3] == [
        f"all,{s.sequence},{s.block},{s.block_size},{s.arm}" for s in list(schedule.slots())[:2]
    ]
    assert hashlib.sha256(out.encode()).hexdigest() == schedule.digest()


@pytest.mark.parametrize("args", [("--json", "--csv"), ("--csv", "--json")])
def test_list_preview_csv_and_json_exclude_each_other(args: tuple[str, ...]) -> None:
    code, out, err = invoke("list", "preview", "--design", "exosome-ms", "--seed", SEED, *args)
    assert (code, out) == (2, "")
    assert err == "Error: --csv and --json exclude each other: give one\n"
    code, out, err = invoke(
        "--json", "list", "preview", "--design", "exosome-ms", "--seed", SEED, "--csv"
    )
    assert (code, out) == (2, "") and "exclude each other" in err


def test_list_preview_table_shows_balance() -> None:
    code, out, _ = invoke("list", "preview", "--design", "exosome-ms", "--seed", SEED)
    assert code == 0
    assert "Balance per stratum:" in out and "all: exosome 12, saline 12" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", "12"), "seed must be 64 hexadecimal digits, got 2 characters"),
        (("--seed", "g" * 64), "seed must be 64 hexadecimal digits"),
        (("--seed", SEED, "--participants", "0"), "participants per stratum must be between 1"),
        (("--seed", SEED, "--participants", "x"), "'x' is not a valid integer"),
    ],
)
def test_list_preview_bad_input_is_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = invoke("list", "preview", "--design", "exosome-ms", *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and message in err
    assert "Traceback" not in err


def test_list_preview_missing_design_is_exit_2() -> None:
    code, _, err = invoke("list", "preview", "--design", "no-such.toml", "--seed", SEED)
    assert code == 2 and err.startswith("Error: design 'no-such.toml' not found")

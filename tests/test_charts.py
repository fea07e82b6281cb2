"""Charts: recruitment, balance, predictability and kits, from the CLI (pages: tests/server)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest

from randomizer import charts
from randomizer.backends.wire import from_wire
from randomizer.design import load_design
from randomizer.errors import NotAuthorized
from randomizer.predictability import predictability_report
from randomizer.reports import BALANCE_REFUSAL, ListedAllocation, Report, running_imbalance
from tests.support.assertions import assert_error
from tests.support.blinded_path import FOUR_DAY0, participant_arms
from tests.support.exosome import answer_args, arm_words_in
from tests.support.trial import (
    ADMIN,
    USERS,
    Run,
    TrialFiles,
    approve_list,
    backdate_list,
    scratch_trial,
)

DAY0 = FOUR_DAY0
STAGES = ("empty", "in progress", "locked")

SITES = ("WAW", "KRK", "WAW", "GDA", "KRK", "WAW")
"""Where six participants are randomized in a trial with three sites."""


def randomize_six(run: Run, sites: tuple[str, ...] = ("WAW",) * 6) -> None:
    """Six participants over four days, and one screen failure."""
    for n, site in enumerate(sites, start=1):
        day = DAY0 + timedelta(days=n // 2)
        run.ok(
            "randomize",
            f"P-{n:03d}",
            "--site",
            site,
            *answer_args(),
            "--date",
            day.isoformat(),
            user="ivan",
        )
    run("randomize", "P-900", "--site", sites[0], *answer_args(age="80"), user="ivan")


@pytest.fixture(params=STAGES)
def staged(request: pytest.FixtureRequest, run: Run, trial_with_list: TrialFiles) -> str:
    """The trial empty, with six participants, or with six participants and locked."""
    stage: str = request.param
    if stage != "empty":
        randomize_six(run)
    if stage == "locked":
        run.ok("lock", "--reason", "end of trial", user="alice")
    return stage


def drawn(path: Path) -> str:
    text = path.read_text()
    assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    # the pages' CSP blocks inline styles: presentation attributes only, and no script
    assert "style" not in text and "<script" not in text
    ElementTree.fromstring(text.encode())
    return text


def test_every_chart_renders_at_every_stage(run: Run, staged: str, tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.svg" for name in ("recruitment", "balance", "kits")}
    run.ok(
        "report",
        "--chart",
        str(files["recruitment"]),
        "--balance-chart",
        str(files["balance"]),
        "--kit-chart",
        str(files["kits"]),
        user="alice",
    )
    recruitment = drawn(files["recruitment"])
    planned = f"Recruitment of exosome-ms: {0 if staged == 'empty' else 6} of 20 planned"
    assert planned in recruitment
    assert "participants randomized (cumulative)" in recruitment
    assert ("No participant randomized yet" in recruitment) == (staged == "empty")
    assert ("site WAW" in recruitment) == (staged != "empty")
    assert ("screen failures (1)" in recruitment) == (staged != "empty")
    balance = drawn(files["balance"])
    assert "Balance of exosome-ms in list order (design bound 3)" in balance
    assert ("exosome minus saline" in balance) is True
    kits = drawn(files["kits"])
    assert "Kits of exosome-ms per visit" in kits and "spares left" in kits
    assert "Week 12" in kits  # the visits by name, from the design
    png = tmp_path / "recruitment.png"
    run.ok("report", "--chart", str(png), user="mona")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_predictability_chart_renders(run: Run, tmp_path: Path) -> None:
    svg = tmp_path / "blocks.svg"
    result = run.ok("design", "check", "exosome-ms", "--predictability", "--chart", str(svg))
    assert f"Chart written to {svg}" in result.stdout
    text = drawn(svg)
    assert "expected correct guesses (%)" in text and "(THIS DESIGN)" in text


def test_a_blinded_recruitment_chart_has_no_arm_and_does_not_move_with_the_arms(
    tmp_path: Path,
) -> None:
    """Two trials with the same dates and sites but other arms (other names, other list)."""
    design_text = (Path(charts.__file__).parent / "designs" / "exosome-ms.toml").read_text()
    three_sites = design_text.replace('sites = ["WAW"]', 'sites = ["WAW", "KRK", "GDA"]')
    assert three_sites != design_text
    renamed = (
        three_sites.replace('id = "exosome"\n', 'id = "verum"\n')
        .replace('id = "saline"\n', 'id = "vehicle"\n')
        .replace("{ exosome = 1, saline = 1 }", "{ verum = 1, vehicle = 1 }")
        .replace("MSC-derived exosomes", "Active product")
        .replace("0.9% saline (placebo)", "Matching vehicle")
    )
    pictures = []
    arms = []
    for name, text in (("original", three_sites), ("renamed", renamed)):
        (tmp_path / name).mkdir()
        design = tmp_path / f"{name}.toml"
        design.write_text(text)
        with scratch_trial(tmp_path / name) as trial:
            build_trial_with(trial, str(design))
            randomize_six(trial, SITES)
            arms.append(set(participant_arms(trial.files).values()))
            for user in ("ivan", "mona", "stan", "petra"):
                path = tmp_path / f"{name}-{user}.svg"
                trial.ok("report", "--chart", str(path), user=user)
                pictures.append(path.read_bytes())
    assert arms == [{"exosome", "saline"}, {"verum", "vehicle"}]
    assert len(set(pictures)) == 1
    text = pictures[0].decode()
    assert arm_words_in(text) == []
    assert not re.search(r"verum|vehicle|active product", text, re.IGNORECASE)
    assert "Recruitment of exosome-ms: 6 of 20 planned" in text
    assert all(f"site {site}" in text for site in ("WAW", "KRK", "GDA"))


def build_trial_with(run: Run, design: str) -> None:
    """A trial of another design file with its users and list, as ``build_trial`` makes one."""
    run.init(design=design)
    for name, role in USERS.items():
        if name != ADMIN:
            run.add_user(name, role)
    run.ok("list", "generate", user=ADMIN)
    approve_list(run)
    backdate_list(run.files)


@pytest.mark.parametrize("user", ["ivan", "mona", "stan", "petra"])
def test_a_balance_chart_is_refused_to_blinded_roles_like_the_balance_table(
    run: Run, trial_with_list: TrialFiles, tmp_path: Path, user: str
) -> None:
    randomize_six(run)
    chart = tmp_path / "balance.svg"
    result = run("report", "--balance-chart", str(chart), user=user)
    assert_error(result, 1, BALANCE_REFUSAL)
    assert not chart.exists()
    assert "Balance" not in run.ok("report", user=user).stdout


def test_the_statistician_gets_the_balance_chart_after_the_lock(
    run: Run, trial_with_list: TrialFiles, tmp_path: Path
) -> None:
    randomize_six(run)
    before = run("report", "--balance-chart", str(tmp_path / "before.svg"), user="stan")
    assert_error(before, 1, BALANCE_REFUSAL)
    run.ok("lock", "--reason", "end of trial", user="alice")
    run.ok("report", "--balance-chart", str(tmp_path / "after.svg"), user="stan")
    assert "exosome minus saline" in drawn(tmp_path / "after.svg")


def test_the_predictability_points_are_the_figures_of_the_json(run: Run) -> None:
    data = json.loads(run.ok("design", "check", "exosome-ms", "--predictability", "--json").stdout)
    figures = [
        (row["label"], row["largest_imbalance"], 100 * row["correct_guesses"], row["design"])
        for row in data["predictability"]["rows"]
    ]
    points = charts.predictability_points(predictability_report(load_design("exosome-ms")))
    assert points == figures
    assert sum(own for *_, own in points) == 1
    assert {label for label, *_ in points} >= {
        "fixed blocks of 2",
        "fixed blocks of 4",
        "random sizes {2, 4}",
        "random sizes {2, 4, 6}",
        "one block of 20",
    }


def test_a_chart_file_must_be_svg_or_png(run: Run, trial_with_list: TrialFiles) -> None:
    result = run("report", "--chart", "recruitment.pdf", user="mona")
    assert_error(result, 2, "a chart file must end in .svg or .png, got 'recruitment.pdf'")
    wrong = run("design", "check", "exosome-ms", "--predictability", "--chart", "blocks.gif")
    assert_error(wrong, 2, "a chart file must end in .svg or .png, got 'blocks.gif'")
    usage = run("design", "check", "exosome-ms", "--chart", "blocks.svg")
    assert usage.exit_code == 2 and "add --predictability" in usage.output


def test_the_running_balance_follows_the_list(run: Run, by_arm: dict[str, str]) -> None:
    """The balance table's last value per stratum is the report's imbalance, signed."""
    data = json.loads(run.ok("report", "--json", user="alice").stdout)
    arms = participant_arms(run.files)
    exosome = sum(1 for a in arms.values() if a == "exosome")
    table = charts.balance_table(from_wire(Report, data))
    assert table.rows[-1][-1] == f"{exosome - (len(arms) - exosome):g}"
    assert [row[1] for row in table.rows] == [str(n) for n in range(1, len(arms) + 1)]


def test_drawing_is_not_paid_for_at_start_up() -> None:
    """``randomizer --help`` imports no matplotlib."""
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from randomizer.commands import cli\n"
        "CliRunner().invoke(cli, ['--help'])\n"
        "CliRunner().invoke(cli, ['report', '--help'])\n"
        "print('matplotlib' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_the_running_balance_of_three_arms_is_their_spread() -> None:
    listed = [
        ListedAllocation("all", n, 1 + n // 6, arm)
        for n, arm in enumerate(["a", "b", "a", "c", "c", "b", "a"], start=1)
    ]
    assert running_imbalance(listed, ("a", "b", "c"), (2, 1, 1)) == {
        "all": [0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 0.5]
    }
    signed = running_imbalance(listed[:3], ("a", "b"), (1, 1))
    assert signed == {"all": [1.0, 0.0, 1.0]}
    rep = Report(
        trial="three",
        locked=True,
        planned=12,
        randomized=7,
        screen_failures=0,
        emergency_unblindings=0,
        by_site={},
        by_date={},
        kits={},
        arms_shown=True,
        imbalance_bound=1.5,
        allocations=listed,
        arm_ratio={"a": 2, "b": 1, "c": 1},
    )
    table = charts.balance_table(rep)
    assert table.header[-1] == "spread between arms"
    assert [row[2] for row in table.rows] == ["1", "1", "1", "1", "1", "2", "2"]
    assert "spread between arms" in charts.balance_chart(rep).decode()
    with pytest.raises(NotAuthorized, match=re.escape(BALANCE_REFUSAL)):
        charts.balance_chart(dataclasses.replace(rep, arms_shown=False))

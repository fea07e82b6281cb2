"""``randomizer demo``: the whole story, refusals included, on standard output (issue 8)."""

from __future__ import annotations

import shlex
from pathlib import Path

from click.testing import CliRunner

from randomizer.commands import cli

REFUSALS = (
    "Error: participant P-000 is not eligible, no slot used: edss: answered 7.0, must be 3 to 6.5",
    "Error: kit ",  # the voided kit, scanned by mistake
    "Error: role statistician may unblind the whole trial only after the database lock",
    "Error: the database is locked: no more randomization",
)


def test_the_demo_tells_its_story_on_stdout_and_ends_with_commands_to_go_on(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = tmp_path / "demo-trial"
    env = {
        "RANDOMIZER_PASSWORD": None,
        "RANDOMIZER_USER": None,
        "RANDOMIZER_DB": None,
        "RANDOMIZER_KEY_FILE": None,
    }
    result = runner.invoke(
        cli, ["demo", "--dir", str(folder), "--quiet"], env=env, prog_name="randomizer"
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    for refusal in REFUSALS:
        found = [i for i, line in enumerate(lines) if line.startswith(refusal)]
        assert len(found) == 1, refusal
        assert lines[found[0] - 1].startswith("[")  # right under the command that was refused
    assert any("is VOIDED" in line for line in lines if line.startswith("Error: kit "))

    heading = lines.index("# Go on exploring this trial (it is locked now); for example:")
    commands = lines[heading + 1 :]
    assert len(commands) == 5
    for line in commands:
        password, command = line.split(" ", 1)
        argv = shlex.split(command)
        assert argv[0] == "randomizer"
        assert argv[1:5] == [
            "--db",
            f"sqlite:///{(folder / 'trial.db').resolve()}",
            "--key-file",
            str((folder / "trial.key").resolve()),
        ]
        name, _, value = password.partition("=")
        assert name == "RANDOMIZER_PASSWORD"
        went_on = runner.invoke(cli, argv[1:], env={**env, name: value}, prog_name="randomizer")
        assert went_on.exit_code == 0, (line, went_on.output)
        assert went_on.stderr == ""

"""``randomize`` for a person at a terminal, and what it says when no one is there (issue 8).

On a terminal the password is asked first (a password typed ahead of a
question would otherwise be echoed as the answer), each eligibility question
is asked again until its answer parses, and the answers are shown for a yes
before anything is randomized. CliRunner is no terminal: most tests here make
the CLI believe it is on one; one runs the real command under a pseudo-terminal.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from randomizer.commands import allocation, base
from randomizer.signatures import MEANINGS
from tests.support.assertions import assert_error
from tests.support.blinded_path import live_kit
from tests.support.database import dump_database, execute
from tests.support.exosome import ELIGIBLE, answer_args
from tests.support.trial import PASSWORDS, Run, TrialFiles

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = {
    "age": "Age in years at screening (number, eligible 18 to 65): ",
    "progressive_ms": "Confirmed primary or secondary progressive MS? (yes/no): ",
    "edss": "EDSS score at screening (number, eligible 3 to 6.5): ",
    "recent_relapse_or_steroids": (
        "Relapse or corticosteroids within 3 months before screening? (yes/no): "
    ),
    "other_neuro_autoimmune": "Another significant neurological or autoimmune disorder? (yes/no): ",
    "infection_malignancy_systemic": (
        "Active infection, malignancy or uncontrolled systemic disease? (yes/no): "
    ),
}


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI believe standard input is a terminal."""
    monkeypatch.setattr(base, "on_terminal", lambda: True)
    monkeypatch.setattr(allocation, "on_terminal", lambda: True)


def _participants(files: TrialFiles) -> list[tuple[str, str]]:
    return [
        (str(code), str(answers))
        for code, answers in execute(
            files.db_url, "SELECT code, answers FROM participants ORDER BY code"
        )
    ]


def test_the_password_comes_first_then_each_question_until_its_answer_parses(
    run: Run, trial_with_list: TrialFiles, terminal: None
) -> None:
    typed = [PASSWORDS["ivan"], "45", "maybe", "yes", "four", "4,5", "no", "no", "no", "y"]
    typed.append(PASSWORDS["ivan"])  # the signature: re-entered at the moment of signing
    result = run(
        "randomize",
        "P-001",
        "--site",
        "WAW",
        user="ivan",
        env={"RANDOMIZER_PASSWORD": None},
        input="\n".join(typed) + "\n",
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("Password for ivan: ") < out.index(QUESTIONS["age"])
    assert PASSWORDS["ivan"] not in result.output
    # a bad answer is named and its question asked again; a good one is asked once
    assert out.count(QUESTIONS["progressive_ms"]) == 2
    assert "Error: answer progressive_ms='maybe' must be yes or no" in out
    assert out.count(QUESTIONS["edss"]) == 2
    assert "Error: answer edss='four' must be a number" in out
    assert out.count(QUESTIONS["age"]) == 1
    summary = out[out.index("Participant P-001 at site WAW\n") :]
    assert summary.startswith(
        "Participant P-001 at site WAW\n  age: 45\n  progressive_ms: yes\n  edss: 4,5\n"
        "  recent_relapse_or_steroids: no\n  other_neuro_autoimmune: no\n"
        "  infection_malignancy_systemic: no\n"
        "Randomize P-001 with these answers? [y/N]: "
        f"y\n{MEANINGS['randomize']}\nPassword of ivan to sign: \n"
    )
    kit = live_kit(trial_with_list, "P-001", 1)
    assert out.endswith(
        f"Participant P-001 randomized at WAW: randomization number R-001.\nVisit 1 kit: {kit}\n"
    )


def test_answers_given_as_options_are_not_asked_again(
    run: Run, trial_with_list: TrialFiles, terminal: None
) -> None:
    given = answer_args()[:-2]  # all but infection_malignancy_systemic
    result = run("randomize", "P-001", "--site", "WAW", *given, user="ivan", input="no\ny\n")
    assert result.exit_code == 0, result.output
    assert [q for q in QUESTIONS.values() if q in result.stdout] == [
        QUESTIONS["infection_malignancy_systemic"]
    ]
    assert "  age: 45\n" in result.stdout  # the summary shows every answer, given or typed


def test_declining_the_summary_randomizes_no_one(
    run: Run, trial_with_list: TrialFiles, terminal: None
) -> None:
    before = dump_database(trial_with_list.db_url)
    typed = [ELIGIBLE[c] for c in QUESTIONS] + ["n"]
    result = run("randomize", "P-001", "--site", "WAW", user="ivan", input="\n".join(typed) + "\n")
    assert result.exit_code == 1
    assert "Randomize P-001 with these answers? [y/N]: " in result.stdout
    assert result.stderr == "Error: aborted; nothing was changed by the unfinished command\n"
    assert dump_database(trial_with_list.db_url) == before


def test_without_a_terminal_the_answers_must_come_as_options(
    run: Run, trial_with_list: TrialFiles
) -> None:
    before = dump_database(trial_with_list.db_url)
    result = run("randomize", "P-001", "--site", "WAW", user="ivan", input="45\nyes\n")
    assert_error(
        result,
        2,
        "missing answer for age (Age in years at screening): every "
        "eligibility criterion needs an answer (when not on a terminal, the answers "
        "must be given with --answer CRITERION=VALUE (repeated) or --answers FILE)",
    )
    assert dump_database(trial_with_list.db_url) == before


def test_a_decimal_comma_is_accepted_from_every_channel(
    run: Run, trial_with_list: TrialFiles, tmp_path: Path
) -> None:
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(edss="4,5"), user="ivan")
    answers = tmp_path / "answers.toml"
    answers.write_text(
        "\n".join(f'{k} = "{v}"' for k, v in {**ELIGIBLE, "edss": "6,5"}.items()) + "\n"
    )
    run.ok("randomize", "P-002", "--site", "WAW", "--answers", str(answers), user="ivan")
    assert_error(
        run("randomize", "P-003", "--site", "WAW", *answer_args(edss="6,6"), user="ivan"),
        1,
        "edss: answered 6,6, must be 3 to 6.5 (EDSS score at screening)",
    )
    assert [code for code, _ in _participants(trial_with_list)] == ["P-001", "P-002"]


# the real command under a pseudo-terminal --------------------------------------------------


class _Terminal:
    """A pseudo-terminal whose other end is a command's stdin, stdout and stderr."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        # a new session: no controlling terminal, so nothing reaches the developer's own
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, cwd=ROOT
        )
        os.close(slave)
        self.master = master
        self.transcript = b""

    def expect(self, text: str) -> None:
        """Read until ``text`` has appeared (a generous bound so a broken run cannot hang)."""
        wanted = text.encode()
        deadline = time.monotonic() + 60
        while wanted not in self.transcript:
            assert time.monotonic() < deadline, f"no {text!r} in {self.transcript!r}"
            ready, _, _ = select.select([self.master], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the command closed the terminal
                chunk = b""
            assert chunk, f"the command ended before {text!r}: {self.transcript!r}"
            self.transcript += chunk

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> int:
        """Read what is left, wait for the command and return its exit code."""
        while select.select([self.master], [], [], 10)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.transcript += chunk
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        os.close(self.master)
        return code


def test_on_a_real_terminal_the_password_is_asked_first_and_never_echoed(
    trial_with_list: TrialFiles,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env["TERM"] = "dumb"
    term = _Terminal(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "--db",
            trial_with_list.db_url,
            "--key-file",
            str(trial_with_list.key_file),
            "--user",
            "ivan",
            "randomize",
            "P-001",
            "--site",
            "WAW",
        ],
        env,
    )
    try:
        term.expect("Password for ivan: ")
        assert b"Age" not in term.transcript
        term.type(PASSWORDS["ivan"])
        for criterion, question in QUESTIONS.items():
            term.expect(question.rstrip())
            term.type(ELIGIBLE[criterion])
        term.expect("Randomize P-001 with these answers? [y/N]:")
        term.type("y")
        term.expect(MEANINGS["randomize"])
        term.expect("Password of ivan to sign: ")
        term.type(PASSWORDS["ivan"])
        term.expect("Visit 1 kit: ")
    finally:
        code = term.close()
    assert code == 0, term.transcript
    assert PASSWORDS["ivan"].encode() not in term.transcript
    assert live_kit(trial_with_list, "P-001", 1).encode() in term.transcript

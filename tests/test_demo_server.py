"""``randomizer demo`` plays the real deployment: custody on the host, everyone else remote.

The demo starts ``randomizer serve`` in a process of its own; the trail it
leaves shows which steps went through that server (``via`` names the API
channel) and which ran on the host, and that the server started and stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from randomizer.commands import cli
from tests.support.database import audit_rows

REMOTE_USERS = ("ivan", "petra", "mona", "stan")


def _started(lines: list[str], prefix: str) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(prefix)]


def test_the_demo_runs_custody_on_the_host_and_the_roles_through_its_server(tmp_path: Path) -> None:
    folder = tmp_path / "demo-trial"
    env = {
        name: None
        for name in (
            "RANDOMIZER_PASSWORD",
            "RANDOMIZER_USER",
            "RANDOMIZER_DB",
            "RANDOMIZER_KEY_FILE",
            "RANDOMIZER_SERVER",
        )
    }
    result = CliRunner().invoke(
        cli, ["demo", "--dir", str(folder), "--quiet"], env=env, prog_name="randomizer"
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    lines = result.stdout.splitlines()

    # the output says where each step ran
    for prefix in (
        "[host] $ randomizer init --design exosome-ms --admin alice",
        "[host alice] $ randomizer list generate",
        "[host] $ randomizer serve --port ",
        "[remote ivan] $ randomizer randomize P-001 ",
        "[remote petra] $ randomizer pharmacy prepare ",
        "[remote mona] $ randomizer report",
        "[remote stan] $ randomizer unblind all ",
        "[remote alice] $ randomizer lock ",
        "[host] $ kill -TERM ",
    ):
        assert _started(lines, prefix), prefix
    for name in (*REMOTE_USERS, "alice"):
        logins = _started(lines, f"[remote {name}] $ randomizer login")
        logouts = _started(lines, f"[remote {name}] $ randomizer logout")
        assert len(logins) == len(logouts) == 1, name
        assert logins[0] < logouts[0] < _started(lines, "[host] $ kill -TERM ")[0]
    assert lines.index("[host alice] $ randomizer report") > _started(lines, "[host] $ kill")[0]

    # the trail: the server started once and stopped once, around every remote step
    events = audit_rows(f"sqlite:///{folder / 'trial.db'}")
    actions = [e["action"] for e in events]
    assert actions.count("server.start") == actions.count("server.stop") == 1
    start, stop = actions.index("server.start"), actions.index("server.stop")
    assert events[start]["details"]["pid"] == events[stop]["details"]["pid"]

    def via(event: dict[str, Any]) -> Any:
        return event["details"].get("via")

    before, during, after = events[:start], events[start + 1 : stop], events[stop + 1 :]
    assert {e["action"] for e in before} >= {"trial.init", "user.add", "list.generate"}
    assert all(via(e) is None for e in before + after)  # the host's own CLI
    assert after[-1]["action"] == "report" and {e["user"] for e in after} == {"alice"}
    assert {e["user"] for e in during} == {*REMOTE_USERS, "alice"}
    for event in during:
        assert via(event)["channel"] == "api", event
        assert via(event)["client"] == "127.0.0.1", event
    for name in (*REMOTE_USERS, "alice"):
        mine = [e["action"] for e in during if e["user"] == name]
        assert mine[0] == "auth.login" and mine[-1] == "auth.logout", (name, mine)
    assert actions.count("randomize") == 20
    # every token was removed from its user's machine at logout
    assert list((folder / "machines").rglob("*.token")) == []

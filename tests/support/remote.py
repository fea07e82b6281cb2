"""The CLI with ``--server``, invoked in-process: the remote twin of ``trial.Run``.

Pair it with a live server (``tests/backends/live.py:live_server``) for
tests that need many remote commands quickly; ``processes.remote_cli`` runs
the same in a real process.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from click.testing import CliRunner, Result

from tests.support.trial import invoke_cli


class RemoteRun:
    """Invoke ``cli`` in-process with ``--server URL`` and no database or key file.

    ``remote("report", user="ivan")`` passes ``--user ivan`` and sets
    RANDOMIZER_PASSWORD to ivan's password from :data:`PASSWORDS` unless
    ``password`` is given (a login for this one command); without ``user`` the
    command uses the token saved by ``login``. Token files go under
    ``state_home`` (XDG_STATE_HOME).
    """

    def __init__(self, server: str, state_home: Path) -> None:
        self.server = server
        self.state_home = state_home
        self.runner = CliRunner()

    def __call__(
        self,
        *args: str,
        user: str | None = None,
        password: str | None = None,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        return invoke_cli(
            self.runner,
            ["--server", self.server],
            args,
            user=user,
            password=password,
            input=input,
            env={"XDG_STATE_HOME": str(self.state_home), **(env or {})},
        )

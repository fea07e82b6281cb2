"""What every command group shares: the root group, the error boundary, output, credentials.

This is the only place a :class:`~randomizer.errors.RandomizerError` becomes
an exit code: 1 for a refusal, 2 for bad usage or malformed input, always as
one line starting ``Error:`` on stderr, never a traceback.

It imports neither the library's database layer nor its backends at module level:
``randomizer --help`` and ``--version`` load only click and this module (see
:class:`LazyGroup`), and a command imports the backend it uses when it asks for one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from randomizer.backends.wire import MAX_TEXT, to_wire
from randomizer.errors import Hint, InvalidInput, RandomizerError
from randomizer.signatures import Signature, meaning_of

if TYPE_CHECKING:
    from randomizer.backends.http import HttpBackend
    from randomizer.backends.interface import Backend, Custody
    from randomizer.backends.local import LocalBackend
    from randomizer.results import Credentials

DEFAULT_DB_URL = "sqlite:///randomizer.db"
"""The --db default: :data:`randomizer.store.DEFAULT_URL` (a test keeps them equal),
spelled out here so that the root's help does not import the store (and alembic)."""

MAX_PASSWORD_LENGTH = 1024
""":data:`randomizer.access.MAX_PASSWORD_LENGTH` (a test keeps them equal), spelled
out here so that reading a password does not import the password hashing."""

DEBUG_ENV = "RANDOMIZER_DEBUG"

CLI_HINTS: dict[Hint, str] = {
    Hint.INIT: "run 'randomizer init'",
    Hint.MISSING_DATABASE: "check --db URL (RANDOMIZER_DB), or run 'randomizer init' to start "
    "a trial",
    Hint.OTHER_DATABASE: "pass another --db URL",
    Hint.KEY_FILE: "pass --key-file PATH or set RANDOMIZER_KEY_FILE",
    Hint.GENERATE_LIST: "run 'randomizer list generate'",
    Hint.VERIFY_LIST: "run 'randomizer list verify'",
    Hint.VERIFY_COPY: "run 'randomizer audit verify' and 'randomizer list verify' on the copy",
    Hint.VERIFY: "run 'randomizer verify'",
    Hint.LIST_USERS: "see 'randomizer user list'",
    Hint.UPGRADE_SCHEMA: "run 'randomizer backup --out FILE', then 'randomizer db upgrade'",
    Hint.LOCK: "run 'randomizer lock --reason TEXT'",
    Hint.REASON: "give --reason TEXT",
    Hint.OVERRIDE_WINDOW: "add --override-window --reason TEXT",
    Hint.CHECKPOINT: "made by 'randomizer audit checkpoint'",
    Hint.CHECKPOINT_KEY: "give --public-key FILE with --checkpoint",
    Hint.ANSWERS: "when not on a terminal, the answers must be given with --answer "
    "CRITERION=VALUE (repeated) or --answers FILE",
    Hint.LOGIN: "run 'randomizer --server URL --user NAME login'",
    Hint.APPROVE_LIST: "a second admin or statistician runs 'randomizer list approve'",
    Hint.LIST_REVIEWS: "see 'randomizer unblind review list'",
}
"""How the CLI spells out each :class:`~randomizer.errors.Hint`: the command or flags to type."""


def error_text(exc: RandomizerError) -> str:
    """The ``Error:`` line's text: the library's message, then the CLI's hint if it has one."""
    hint = CLI_HINTS.get(exc.hint) if exc.hint is not None else None
    return f"{exc} ({hint})" if hint else str(exc)


def exit_code(error: RandomizerError) -> int:
    """The CLI's exit code for a library error: 2 for malformed input, 1 for a refusal."""
    return 2 if isinstance(error, InvalidInput) else 1


def _fail(message: str, code: int) -> NoReturn:
    text = " ".join(str(message).split()) or "failed"
    click.echo(f"Error: {text}", err=True)
    sys.exit(code)


@dataclass(frozen=True)
class LazyCommand:
    """A command the root group imports only when it runs (or its own help is asked for)."""

    target: str
    """Where it is: ``"module:attribute"``, e.g. ``"randomizer.commands.setup:init"``."""
    short_help: str
    """Its one-line help as ``randomizer --help`` lists it (a test keeps it equal to the
    command's own ``get_short_help_str``)."""

    def load(self) -> click.Command:
        """Import the command's module and return the command."""
        module, _, attribute = self.target.partition(":")
        command = getattr(import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group whose subcommands' modules are imported only when one of them runs.

    ``randomizer --help`` lists the commands from their :class:`LazyCommand` entries
    without importing any command module, so it loads neither SQLAlchemy, alembic nor
    numpy; running a command imports its module (and what that module imports) only.
    """

    def __init__(
        self, *args: Any, lazy_commands: dict[str, LazyCommand] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, LazyCommand] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, loaded or not, sorted as click sorts them."""
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module the first time it is asked for."""
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.add_command(self.lazy_commands[cmd_name].load(), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The ``Commands:`` section of the help, as click writes it, without imports."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                # a stand-in with the same help shortens it exactly as the command would
                stand_in = click.Command(name, help=self.lazy_commands[name].short_help)
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class RandomizerGroup(LazyGroup):
    """Root group whose ``main`` is the single error boundary of the CLI."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI, turning every failure into one ``Error:`` line and an exit code."""
        if args is not None and any("\0" in str(arg) for arg in args):
            # only in-process callers can pass NUL (no real argv holds one); PostgreSQL
            # stores no NUL in text and the OS takes none in a file name: refuse it here
            _fail("an argument holds a NUL character, which no command accepts", 2)
        if any(len(str(arg)) > MAX_TEXT for arg in (sys.argv[1:] if args is None else args)):
            # the server takes no longer field: refused here, a local run answers alike
            _fail(f"an argument is longer than {MAX_TEXT} characters, which no command accepts", 2)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except RandomizerError as exc:
            _fail(error_text(exc), exit_code(exc))
        except click.exceptions.NoArgsIsHelpError as exc:
            # a group without its subcommand: its help, as click shows it, not one flat line
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(exc.format_message() + where, 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (click.Abort, EOFError, KeyboardInterrupt):
            _fail("aborted; nothing was changed by the unfinished command", 1)
        except Exception as exc:  # the boundary: never show a traceback to a user
            if os.environ.get(DEBUG_ENV):
                raise
            if _is_database_error(exc):
                _fail(f"database error: {str(getattr(exc, 'orig', exc) or exc).splitlines()[0]}", 1)
            if isinstance(exc, OSError):
                _fail(f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "), 1)
            _fail(
                f"internal error ({type(exc).__name__}); nothing was committed. "
                f"Set {DEBUG_ENV}=1 for details and report it",
                1,
            )
        sys.exit(result if isinstance(result, int) else 0)


def _is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLAlchemy's; without importing it where no command loaded it."""
    module = sys.modules.get("sqlalchemy.exc")
    return module is not None and isinstance(exc, module.SQLAlchemyError)


@dataclass
class Settings:
    """Global options, shared by every command through the click context."""

    db: str
    key_file: Path
    user: str | None
    as_json: bool
    server: str | None = None
    _credentials: Credentials | None = field(default=None, init=False, repr=False)

    def backend(self) -> Backend:
        """The backend for this invocation: the trial server with --server, else in-process."""
        if self.server:
            return self.remote()
        return self._local()

    def remote(self) -> HttpBackend:
        """The trial server's client: the saved login's token, or a login for this command."""
        from randomizer.backends.http import HttpBackend, check_server_url, load_token

        server = check_server_url(self.server or "")
        saved = load_token(server)
        if saved is not None and self.user in (None, saved[0]):
            backend = HttpBackend(server, token=saved[1])
        else:
            backend = HttpBackend(server, credentials=self.credentials)
        click.get_current_context().call_on_close(backend.close)
        return backend

    def custody(self) -> Custody:
        """The backend for custody commands, which run on the trial's host only."""
        if self.server:
            command = click.get_current_context().command_path
            raise InvalidInput(
                f"'{command}' is a custody command: run it on the trial's host "
                "(with --db and --key-file), not through --server"
            )
        return self._local()

    def _local(self) -> LocalBackend:
        from randomizer.backends.local import LocalBackend

        backend = LocalBackend(self.db, self.key_file, self.credentials)
        # release pooled connections when the command ends (in-process callers, tests)
        click.get_current_context().call_on_close(backend.close)
        return backend

    def signature(self, action: str) -> Signature:
        """The acting user's electronic signature of ``action``: the password re-entered now.

        From RANDOMIZER_PASSWORD, or a hidden prompt on a terminal that shows the
        signature's meaning, asked at the moment of signing even when a saved login
        (a token) would do for everything else. In a local run the same password
        is the command's login, so it is asked once.
        """
        meaning = meaning_of(action)
        who = f" of {self.user}" if self.user else ""
        password = read_password(f"{meaning}\nPassword{who} to sign")
        if self._credentials is None and self.user:
            from randomizer.results import Credentials

            self._credentials = Credentials(self.user, password)
        return Signature(password=password, meaning=meaning)

    def credentials(self) -> Credentials:
        """The acting user's name and password (environment or prompt, asked once)."""
        if self._credentials is None:
            if not self.user:
                raise InvalidInput("no user: pass --user NAME or set RANDOMIZER_USER")
            from randomizer.results import Credentials

            self._credentials = Credentials(self.user, read_password(f"Password for {self.user}"))
        return self._credentials


def on_terminal() -> bool:
    """Whether standard input is a terminal, where a command may ask questions."""
    return sys.stdin.isatty()


def read_password(prompt: str, confirm: bool = False) -> str:
    """RANDOMIZER_PASSWORD, or a hidden prompt on a terminal."""
    password = os.environ.get("RANDOMIZER_PASSWORD")
    if password is None:
        if not on_terminal():
            raise InvalidInput("no password: set RANDOMIZER_PASSWORD or run on a terminal")
        password = str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))
    return check_password_length(password)


def check_password_length(password: str) -> str:
    """Refuse a password longer than any account can have, as malformed input.

    The server takes no longer one; refusing it here makes a local and a remote
    run answer alike (a local login would otherwise just fail).
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")
    return password


pass_settings = click.make_pass_decorator(Settings)


def emit(settings: Settings, data: Any, text: Callable[[], str] | str) -> None:
    """Print ``data`` as JSON with --json, else the readable text."""
    if settings.as_json:
        click.echo(json.dumps(to_wire(data), indent=2, ensure_ascii=False))
    else:
        click.echo(text() if callable(text) else text)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def root_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The global options of docs/architecture.md section 9."""
    decorators = [
        click.option(
            "--db",
            envvar="RANDOMIZER_DB",
            default=DEFAULT_DB_URL,
            show_default=True,
            help="Database URL (RANDOMIZER_DB).",
        ),
        click.option(
            "--key-file",
            envvar="RANDOMIZER_KEY_FILE",
            default="randomizer.key",
            show_default=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="Trial key file, kept outside the database (RANDOMIZER_KEY_FILE).",
        ),
        click.option(
            "--user",
            envvar="RANDOMIZER_USER",
            help="Acting user (RANDOMIZER_USER); password from RANDOMIZER_PASSWORD or a prompt.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
        click.option(
            "--server",
            envvar="RANDOMIZER_SERVER",
            metavar="URL",
            help="Work through the trial server at URL (RANDOMIZER_SERVER) instead "
            "of opening the database and key file here.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    settings = ctx.find_object(Settings)
    if value and settings is not None:
        settings.as_json = True


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    expose_value=False,
    callback=_set_json,
    is_eager=True,
    help="Machine-readable JSON output (same as the global --json).",
)
"""The per-command --json flag, equivalent to the global one."""


def reason_option(required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A --reason TEXT option whose value must not be blank."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise InvalidInput("--reason must not be empty: say why")
        if len(value) > MAX_TEXT:
            raise InvalidInput(f"--reason is too long: at most {MAX_TEXT} characters")
        return value.strip()

    return click.option(
        "--reason", required=required, callback=check, help="Why (recorded in the audit trail)."
    )

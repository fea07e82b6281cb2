"""Shared fixtures: a fast password hash, a database per test, a trial with users, a CLI runner.

The database is SQLite in ``tmp_path`` unless ``RANDOMIZER_TEST_DB`` names a
PostgreSQL server (``postgresql+psycopg://user:pw@host/postgres``): then each
test gets a schema of its own, created through that maintenance connection
and dropped afterwards. Tests that look at the SQLite file itself request the
``sqlite_only`` fixture, which skips them on PostgreSQL.

The prepared trials (``initialized_trial``, ``trial_with_users``,
``trial_with_list``, ``by_arm``) are built through the CLI; on SQLite once per
session and copied, on PostgreSQL once per test.

This file holds fixtures only. The helpers the tests share (``assert_ok``,
``assert_error``, ``dump_database``, ``audit_rows``, ``execute``, ``Run``, the
users and their passwords...) live in ``tests/support/``; import them from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from randomizer import access
from tests.support.blinded_path import four_participants
from tests.support.database import postgres_url, scratch_db_url
from tests.support.sites import build_two_site_trial
from tests.support.trial import FAST_SCRYPT_N, Run, TrialFiles, TrialTemplates


@pytest.fixture(autouse=True)
def fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap password hashes in-process (stored parameters keep verification exact)."""
    monkeypatch.setattr(access, "SCRYPT_N", FAST_SCRYPT_N)


@pytest.fixture
def is_postgres() -> bool:
    """Whether this run uses PostgreSQL rather than SQLite."""
    return postgres_url() is not None


@pytest.fixture
def sqlite_only(is_postgres: bool) -> None:
    """Skip a test about the SQLite file itself when running on PostgreSQL."""
    if is_postgres:
        pytest.skip("looks at the SQLite database file; this run uses PostgreSQL")


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new schema on PostgreSQL."""
    with scratch_db_url(tmp_path) as url:
        yield url


@pytest.fixture
def trial_files(db_url: str, tmp_path: Path) -> TrialFiles:
    """Paths for a trial that does not exist yet (the key file is not created)."""
    return TrialFiles(db_url=db_url, key_file=tmp_path / "trial.key", directory=tmp_path)


@pytest.fixture
def run(trial_files: TrialFiles) -> Run:
    """The CLI bound to this test's trial files."""
    return Run(trial_files)


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> TrialTemplates:
    return TrialTemplates(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def initialized_trial(run: Run, _templates: TrialTemplates) -> TrialFiles:
    """The exosome-ms trial with its admin alice and nothing else."""
    return _templates.stage("init", run)


@pytest.fixture
def trial_with_users(run: Run, _templates: TrialTemplates) -> TrialFiles:
    """The trial with one user per role: alice, ivan, petra, stan, mona (no list yet)."""
    return _templates.stage("users", run)


@pytest.fixture
def trial_with_list(run: Run, _templates: TrialTemplates) -> TrialFiles:
    """The trial with its users and the generated allocation list."""
    return _templates.stage("list", run)


@pytest.fixture
def two_sites(run: Run, _templates: TrialTemplates) -> TrialFiles:
    """A trial at sites WAW and KRK with its list, the usual users (trial-wide) and users
    limited to one site (tests.support.sites.SITE_USERS)."""
    _templates.install("two-sites", run, build_two_site_trial)
    return run.files


@pytest.fixture
def by_arm(run: Run, _templates: TrialTemplates) -> dict[str, str]:
    """The trial with its list and P-001..P-004 randomized on ``FOUR_DAY0`` (visit 1 kits
    only), in ``run``'s files: arm -> the first participant in that arm."""
    return four_participants(run, _templates)

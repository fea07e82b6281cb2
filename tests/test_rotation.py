"""Key rotation that revokes (issue 10, item 2).

``key rotate`` makes a new trial key and a new data key and seals every sealed value
again; the audit and row MAC keys are kept (stored wrapped: key format 2). Afterwards
the old key file opens nothing in the current database, not even together with a
backup taken before the rotation, while everything sealed still opens with the new key
and the audit chain and its checkpoints still verify.
"""

from __future__ import annotations

import csv
import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from randomizer import rotation
from randomizer import trial as trial_module
from randomizer.access import Permission
from randomizer.context import Principal, key_file_source, operation
from randomizer.errors import SealedDataError, StateError
from randomizer.sealed import KIT_KIND, SEALED_WIDTHS, SEED_KIND, SLOT_KIND, slot_row
from randomizer.store import Store
from randomizer.vault import (
    KEY_FORMAT_DERIVED,
    KEY_FORMAT_WRAPPED,
    KeyMaterial,
    Vault,
    open_keys,
    read_key_file,
    unwrap_data_key,
    wrap_keys,
)
from tests.support.assertions import NOT_CURRENT_KEY, assert_error
from tests.support.blinded_path import live_kit, participant_arms
from tests.support.database import audit_rows, dump_database, execute
from tests.support.exosome import DESIGN
from tests.support.processes import Finished, cli_process, finish
from tests.support.trial import ADMIN, Run, TrialFiles, open_trial_vault

LOCK_REASON = "last participant completed week 48; data cleaned"


def rotate(run: Run, name: str = "rotated.key") -> Path:
    """Rotate the trial's key to a new key file; the trial's files now name it."""
    files = run.files
    new_key = files.directory / name
    run.ok("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)
    return new_key


def key_rows(files: TrialFiles) -> tuple[int, bytes, bytes | None, bytes | None]:
    [(key_format, data, audit_key, row_key)] = execute(
        files.db_url,
        "SELECT key_format, wrapped_data_key, wrapped_audit_key, wrapped_row_key FROM trial",
    )
    return (
        int(key_format),
        bytes(data),
        None if audit_key is None else bytes(audit_key),
        None if row_key is None else bytes(row_key),
    )


def sealed_rows(files: TrialFiles) -> list[tuple[str, str, bytes]]:
    """Every sealed value of the database: (kind, row name, sealed bytes)."""
    slots = execute(
        files.db_url,
        "SELECT st.key, s.sequence, s.allocation_sealed FROM slots s "
        "JOIN strata st ON st.id = s.stratum_id",
    )
    kits = execute(files.db_url, "SELECT code, content_sealed FROM kits")
    [(seed,)] = execute(files.db_url, "SELECT seed_sealed FROM trial")
    return [
        *((SLOT_KIND, slot_row(key, sequence), bytes(v)) for key, sequence, v in slots),
        *((KIT_KIND, code, bytes(v)) for code, v in kits),
        (SEED_KIND, DESIGN.id, bytes(seed)),
    ]


# the old key file opens nothing ------------------------------------------------------------


def test_after_rotation_the_old_key_file_opens_nothing(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    old_key = read_key_file(files.key_file)
    format_before, wrapped_before, *_ = key_rows(files)
    old_vault = open_trial_vault(files)
    sealed_before = sealed_rows(files)
    assert format_before == KEY_FORMAT_DERIVED

    new_key_file = rotate(run)

    # every command with the old key file is refused as "not the current key"
    for argv, user in (
        (("list", "verify"), ADMIN),
        (("user", "list"), ADMIN),
        (("audit", "verify"), ADMIN),
        (("pharmacy", "list"), "petra"),
        (("report",), "stan"),
    ):
        assert assert_error(run(*argv, user=user), 1) == NOT_CURRENT_KEY, argv
    # the old trial key unwraps none of the stored keys
    key_format, wrapped_data, wrapped_audit, wrapped_row = key_rows(files)
    assert key_format == KEY_FORMAT_WRAPPED
    with pytest.raises(SealedDataError, match="not the trial's current key"):
        unwrap_data_key(old_key, wrapped_data)
    for wrapped in (wrapped_audit, wrapped_row):
        assert wrapped is not None
        with pytest.raises(InvalidUnwrap):
            aes_key_unwrap_with_padding(old_key, wrapped)
    # the old data key (what the old key file and an old copy still yield) opens no
    # sealed value of the current database, of any kind
    sealed_after = sealed_rows(files)
    assert {kind for kind, _, _ in sealed_after} == set(SEALED_WIDTHS)
    assert len(sealed_after) == len(sealed_before)
    for kind, row, value in sealed_after:
        with pytest.raises(SealedDataError):
            old_vault.open(kind, row, value)
    # ... and the new key file opens every one of them, to the same values
    new_vault = open_trial_vault(files, new_key_file)
    assert {(kind, row, new_vault.open(kind, row, value)) for kind, row, value in sealed_after} == {
        (kind, row, old_vault.open(kind, row, value)) for kind, row, value in sealed_before
    }
    assert wrapped_data != wrapped_before


def test_an_old_backup_opens_with_the_old_key_only(
    trial_with_list: TrialFiles, run: Run, sqlite_only: None
) -> None:
    files = trial_with_list
    old_key_file = files.key_file
    backup = files.directory / "before-rotation.db"
    run.ok("backup", "--out", str(backup), user=ADMIN)
    backup_url = f"sqlite:///{backup}"

    new_key_file = rotate(run)

    # the backup with the new key: refused
    for argv in (("list", "verify"), ("audit", "verify")):
        result = run(*argv, user=ADMIN, db=backup_url, key_file=new_key_file)
        assert assert_error(result, 1) == NOT_CURRENT_KEY
    # the current database with the old key: refused
    assert assert_error(run("list", "verify", user=ADMIN), 1) == NOT_CURRENT_KEY
    # the backup with the old key: it opens, and only the backup
    commitment = json.loads(run.ok("list", "verify", "--json", user=ADMIN, db=backup_url).stdout)[
        "commitment"
    ]
    run.ok("audit", "verify", user=ADMIN, db=backup_url)
    assert (
        json.loads(run.ok("list", "verify", "--json", user=ADMIN, key_file=new_key_file).stdout)[
            "commitment"
        ]
        == commitment
    )
    # the old backup's data key opens none of the current database's sealed values
    backup_vault = open_trial_vault(TrialFiles(backup_url, old_key_file, files.directory))
    for kind, row, value in sealed_rows(files):
        with pytest.raises(SealedDataError):
            backup_vault.open(kind, row, value)


# everything sealed still opens with the new key --------------------------------------------


def test_every_sealed_value_still_opens_to_the_same_arm(
    run: Run, by_arm: dict[str, str], tmp_path: Path
) -> None:
    files = run.files
    arms = participant_arms(files)
    kits = {participant: live_kit(files, participant, 1) for participant in arms}
    commitment = json.loads(run.ok("list", "verify", "--json", user=ADMIN).stdout)["commitment"]

    files.key_file = rotate(run)

    assert participant_arms(files) == arms
    verified = json.loads(run.ok("list", "verify", "--json", user=ADMIN).stdout)
    assert verified["commitment"] == commitment
    # the pharmacy's lookup of each kit
    for participant, code in kits.items():
        prepared = json.loads(run.ok("pharmacy", "prepare", code, "--json", user="petra").stdout)
        assert (prepared["participant"], prepared["arm"]) == (participant, arms[participant])
    # emergency unblinding of one participant per arm
    for arm, participant in by_arm.items():
        result = run.ok(
            "unblind", "emergency", participant, "--reason", "SAE", "--json", user="ivan"
        )
        assert json.loads(result.stdout)["arm"] == arm
    # lock and unblind all
    run.ok("lock", "--reason", LOCK_REASON, user=ADMIN)
    out = tmp_path / "final.csv"
    run.ok("unblind", "all", "--out", str(out), user="stan")
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert {row["participant"]: row["arm"] for row in rows} == arms


def test_the_chain_and_a_checkpoint_made_before_rotation_still_verify(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    signing = files.directory / "qa.pem"
    run.ok("audit", "keygen", "--out", str(signing))
    note = files.directory / "head.note"
    note.write_text(
        run.ok("audit", "checkpoint", "--signing-key", str(signing), user=ADMIN).stdout,
        encoding="utf-8",
    )
    events_before = audit_rows(files.db_url)
    old_audit_key = open_trial_vault(files).audit_key()

    files.key_file = rotate(run)

    # the chain was not rewritten: every earlier event is byte for byte what it was
    assert audit_rows(files.db_url)[: len(events_before)] == events_before
    assert open_trial_vault(files).audit_key() == old_audit_key
    result = run.ok(
        "audit",
        "verify",
        "--checkpoint",
        str(note),
        "--public-key",
        f"{signing}.pub",
        user=ADMIN,
    )
    assert result.stdout.startswith("Audit trail verified: ")
    [event] = [e for e in audit_rows(files.db_url) if e["action"] == "key.rotate"]
    assert event["user"] == ADMIN
    assert event["details"]["key_format"] == {"before": 1, "after": 2}


def test_a_second_rotation_retires_both_earlier_keys(trial_with_list: TrialFiles, run: Run) -> None:
    files = trial_with_list
    first = files.key_file
    mac_keys = open_trial_vault(files)
    second = rotate(run, "second.key")
    files.key_file = second
    format_2 = key_rows(files)
    third = rotate(run, "third.key")
    files.key_file = third

    key_format, wrapped_data, wrapped_audit, wrapped_row = key_rows(files)
    assert key_format == KEY_FORMAT_WRAPPED
    # all three wrapped keys were made again under the third key
    assert (wrapped_data, wrapped_audit, wrapped_row) != format_2[1:]
    for old in (first, second):
        result = run("list", "verify", user=ADMIN, key_file=old)
        assert assert_error(result, 1) == NOT_CURRENT_KEY
    vault = open_trial_vault(files)
    assert (vault.audit_key(), vault.row_key) == (mac_keys.audit_key(), mac_keys.row_key)
    run.ok("list", "verify", user=ADMIN)
    run.ok("audit", "verify", user=ADMIN)
    assert [
        e["details"]["key_format"] for e in audit_rows(files.db_url) if e["action"] == "key.rotate"
    ] == [
        {"before": 1, "after": 2},
        {"before": 2, "after": 2},
    ]


def test_a_trial_without_a_list_rotates(trial_with_users: TrialFiles, run: Run) -> None:
    files = trial_with_users
    new_key = rotate(run)
    [event] = [e for e in audit_rows(files.db_url) if e["action"] == "key.rotate"]
    assert event["details"]["resealed"] == {KIT_KIND: 0, SEED_KIND: 0, SLOT_KIND: 0}
    assert assert_error(run("user", "list", user=ADMIN), 1) == NOT_CURRENT_KEY
    run.ok("list", "generate", user=ADMIN, key_file=new_key)
    run.ok("list", "verify", user=ADMIN, key_file=new_key)


# crash safety and failures -----------------------------------------------------------------


def _rotation_killed_at(files: TrialFiles, new_key: Path, point: str) -> Finished:
    """``key rotate`` in a process of its own, killed at the fault point ``point``."""
    killed = finish(
        cli_process(
            files.db_url,
            files.key_file,
            ADMIN,
            "key",
            "rotate",
            "--new-key-file",
            str(new_key),
            fault=f"key.rotate:{point}",
        ),
        timeout=120,
    )
    assert killed.code == -signal.SIGKILL, killed.stderr
    return killed


@pytest.mark.slow
def test_a_rotation_killed_before_its_commit_leaves_the_old_key_working(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    before = dump_database(files.db_url)
    new_key = files.directory / "new.key"
    _rotation_killed_at(files, new_key, "before-commit")
    assert dump_database(files.db_url) == before
    # the new key file is there (written before the commit) but opens nothing
    assert assert_error(run("list", "verify", user=ADMIN, key_file=new_key), 1) == NOT_CURRENT_KEY
    run.ok("list", "verify", user=ADMIN)
    # the admin removes it and rotates again
    new_key.unlink()
    rotate(run, "new.key")
    run.ok("list", "verify", user=ADMIN, key_file=new_key)


@pytest.mark.slow
def test_a_rotation_killed_after_its_commit_leaves_the_new_key_working(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    new_key = files.directory / "new.key"
    killed = _rotation_killed_at(files, new_key, "after-commit")
    assert killed.stdout == ""  # died before it could say so: the key file must be there
    assert key_rows(files)[0] == KEY_FORMAT_WRAPPED
    assert assert_error(run("list", "verify", user=ADMIN), 1) == NOT_CURRENT_KEY
    run.ok("list", "verify", user=ADMIN, key_file=new_key)
    run.ok("audit", "verify", user=ADMIN, key_file=new_key)


def test_a_kind_of_sealed_value_rotation_does_not_know_stops_it(
    trial_with_list: TrialFiles, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = trial_with_list
    monkeypatch.setattr(rotation, "SEALED_WIDTHS", {**SEALED_WIDTHS, "site.secret": 16})
    before = dump_database(files.db_url)
    new_key = files.directory / "new.key"
    result = run("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)
    assert_error(result, 1, "internal error (RuntimeError); nothing was committed")
    assert not new_key.exists()
    assert dump_database(files.db_url) == before
    run.ok("list", "verify", user=ADMIN)


def test_every_kind_of_sealed_value_has_a_resealer() -> None:
    assert set(rotation.RESEALERS) == set(SEALED_WIDTHS)


def test_a_failure_after_the_commit_keeps_the_new_key_file(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    new_key = rotate(run)
    store = Store(files.db_url)
    try:
        # as after an error reported although the commit went through: the file stays
        rotation.discard_new_key_file(store, new_key)
        assert new_key.exists()
        # a key file that does not open the database is removed
        stray = files.directory / "stray.key"
        stray.write_bytes(files.key_file.read_bytes())
        stray.chmod(0o600)
        rotation.discard_new_key_file(store, stray)
        assert not stray.exists()
    finally:
        store.dispose()
    run.ok("list", "verify", user=ADMIN, key_file=new_key)


def test_list_generation_refuses_keys_rotated_under_it(trial_with_users: TrialFiles) -> None:
    files = trial_with_users
    store = Store(files.db_url)
    try:
        with (
            pytest.raises(StateError, match="^the trial key was rotated while this command ran"),
            operation(
                store,
                key_file_source(files.key_file),
                Principal(ADMIN),
                Permission.GENERATE_LIST,
                "list.generate",
                datetime.now(UTC),
            ) as op,
        ):
            # as if another process had rotated since this operation read the trial row
            op.session.expunge(op.trial)
            op.trial.wrapped_data_key = bytes(40)
            trial_module.generate_list(op)
    finally:
        store.dispose()
    assert execute(files.db_url, "SELECT count(*) FROM slots") == [(0,)]
    assert execute(files.db_url, "SELECT seed_sealed FROM trial") == [(None,)]
    assert audit_rows(files.db_url)[-1]["details"]["refusal"] == "StateError"


# key material --------------------------------------------------------------------------


def test_key_material_that_does_not_fit_its_format_is_refused() -> None:
    trial_key, data_key = bytes(range(32)), bytes(range(32, 64))
    material = wrap_keys(trial_key, data_key, bytes(32), bytes([1] * 32))
    vault = open_keys(trial_key, "t", material)
    assert (vault.audit_key(), vault.row_key) == (bytes(32), bytes([1] * 32))
    data, audit_wrapped, row_wrapped = (
        material.wrapped_data_key,
        material.wrapped_audit_key,
        material.wrapped_row_key,
    )
    assert audit_wrapped is not None and row_wrapped is not None
    altered = bytearray(audit_wrapped)
    altered[3] ^= 1
    broken = [
        KeyMaterial(KEY_FORMAT_WRAPPED, data, None, row_wrapped),  # a MAC key missing
        KeyMaterial(KEY_FORMAT_WRAPPED, data, audit_wrapped, None),
        KeyMaterial(KEY_FORMAT_DERIVED, data, audit_wrapped, row_wrapped),  # format lowered
        KeyMaterial(KEY_FORMAT_WRAPPED, data, bytes(altered), row_wrapped),  # a flipped bit
        KeyMaterial(KEY_FORMAT_WRAPPED, data, audit_wrapped[:-8], row_wrapped),  # cut short
    ]
    for case in broken:
        with pytest.raises(SealedDataError, match="^the key file does not open this trial's data"):
            open_keys(trial_key, "t", case)
    with pytest.raises(StateError, match="^the trial's keys are stored in key format 3"):
        open_keys(trial_key, "t", KeyMaterial(3, material.wrapped_data_key))


def test_explicit_mac_keys_replace_the_derived_ones() -> None:
    data_key = bytes(range(32))
    derived = Vault(data_key, "t")
    explicit = Vault(data_key, "t", audit_key=bytes(32), row_key=bytes([7] * 32))
    assert derived.audit_key() != explicit.audit_key() == bytes(32)
    assert derived.row_key != explicit.row_key == bytes([7] * 32)
    # the data key, and so every sealed value, is the same either way
    sealed = derived.seal(KIT_KIND, "ABCD-EFGH", "saline")
    assert explicit.open(KIT_KIND, "ABCD-EFGH", sealed) == "saline"
    with pytest.raises(ValueError, match="a MAC key of the audit trail has 32 bytes, not 31"):
        Vault(data_key, "t", audit_key=bytes(31))

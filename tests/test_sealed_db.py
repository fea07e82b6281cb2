"""Sealed storage: what a stolen database reveals, tampering, key files and key rotation."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sqlite3
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from randomizer import rotation as rotation_module
from randomizer import trial as trial_module
from randomizer.design import design_text, load_design
from randomizer.sealed import KIT_KIND, SEED_KIND, SLOT_KIND, open_allocation, seal_allocation
from randomizer.vault import NONCE_SIZE, sealed_size
from tests.support.assertions import NOT_CURRENT_KEY, OPAQUE, assert_error, assert_ok
from tests.support.database import audit_rows, dump_database, execute, without_audit
from tests.support.exosome import ARM_LABELS, ARMS, TRIAL_ID, answer_args
from tests.support.rows import integrity_refusal, reseal, reseal_all
from tests.support.trial import (
    ADMIN,
    PASSWORDS,
    Run,
    TrialFiles,
    approve_list,
    open_trial_vault,
    write_key_file,
)

# What a stolen database must not reveal ------------------------------------------------


def toml_escaped(text: str) -> str:
    """A TOML basic string spelling every character as \\uXXXX: the text is nowhere in it."""
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


def leak_test_design() -> str:
    """The exosome-ms design with every arm word escaped, so the stored design text does
    not contain them and any plaintext arm in the database file is a leak."""
    shipped = load_design("exosome-ms")
    arms = "".join(
        f"\n[[arms]]\nid = {toml_escaped(a.id)}\nlabel = {toml_escaped(a.label)}\n"
        f"description = {toml_escaped(a.description)}\n"
        f"preparation = {toml_escaped(a.preparation)}\n"
        for a in shipped.arms
    )
    ratio = ", ".join(f"{toml_escaped(a)} = 1" for a in ARMS)
    rest = design_text("exosome-ms").split("# Inclusion criteria", 1)[1]
    return (
        f'[trial]\nid = "leak-test"\ntitle = "Sealed storage leak test"\n'
        f'planned_participants = 20\nsites = ["WAW"]\n\n[allocation]\n'
        f"ratio = {{ {ratio} }}\nblock_sizes = [4, 6]\n{arms}\n# criteria{rest}"
    )


def forbidden_strings() -> list[str]:
    """Every arm id and label, lower-cased."""
    return [s.lower() for s in (*ARMS, *ARM_LABELS)]


def find_arms(data: bytes) -> list[str]:
    """Arm ids or labels in raw bytes, as UTF-8 or UTF-16 in any letter case."""
    lowered = data.lower()
    found = []
    for word in forbidden_strings():
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if word.encode(encoding) in lowered:
                found.append(f"{word} ({encoding})")
    return found


def test_the_leak_test_design_hides_its_arm_words_but_means_the_same_arms(tmp_path: Path) -> None:
    text = leak_test_design()
    assert find_arms(text.encode()) == []
    path = tmp_path / "leak.toml"
    path.write_text(text, encoding="utf-8")
    design = load_design(str(path))
    assert design.arm_ids == ARMS
    assert tuple(a.label for a in design.arms) == ARM_LABELS
    # the scanner does find arms where they are (a scan that finds nothing proves nothing)
    assert find_arms(design_text("exosome-ms").encode())
    assert find_arms("Exosome".encode("utf-16-le"))


def raw_bytes(db_file: Path) -> bytes:
    """The database file and its write-ahead log, as bytes."""
    return b"".join(
        Path(f"{db_file}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{db_file}{suffix}").exists()
    )


def read_every_value(db_file: Path) -> dict[tuple[str, str], list[Any]]:
    """Every value of every column of every table, read with sqlite3 and no key."""
    connection = sqlite3.connect(db_file)
    try:
        tables = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        values: dict[tuple[str, str], list[Any]] = {}
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            for index, column in enumerate(columns):
                values[(table, column)] = [row[index] for row in rows]
        return values
    finally:
        connection.close()


def test_a_stolen_database_file_reveals_no_arm(
    trial_files: TrialFiles, run: Run, sqlite_only: None
) -> None:
    design = trial_files.directory / "leak.toml"
    design.write_text(leak_test_design(), encoding="utf-8")
    run.ok(
        "init",
        "--design",
        str(design),
        "--admin",
        ADMIN,
        env={"RANDOMIZER_PASSWORD": PASSWORDS[ADMIN]},
    )
    run.add_user("ivan", "investigator")
    assert trial_files.db_path is not None
    # an open connection keeps the write-ahead log on disk, as on a live server
    keeper = sqlite3.connect(trial_files.db_path)
    keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()  # joins the WAL
    try:
        generated = run.ok("list", "generate", user=ADMIN)
        run.ok("list", "verify", user=ADMIN)
        run.ok("audit", "show", user=ADMIN)
        wal = Path(f"{trial_files.db_path}-wal")
        assert wal.exists() and wal.stat().st_size > 0
        stolen = trial_files.directory / "stolen"
        stolen.mkdir()
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{trial_files.db_path}{suffix}")
            if source.exists():
                shutil.copy(source, stolen / f"trial.db{suffix}")
        # raw bytes: the main file and the log, free pages and old page versions included
        raw = raw_bytes(trial_files.db_path)
    finally:
        keeper.close()
    assert find_arms(raw) == []
    assert find_arms(generated.stdout.encode()) == []

    values = read_every_value(stolen / "trial.db")
    assert len(values[("slots", "allocation_sealed")]) >= 20
    assert len(values[("kits", "content_sealed")]) >= 80
    leaks = {
        column: found
        for column, column_values in values.items()
        for value in column_values
        if (found := find_arms(value if isinstance(value, bytes) else str(value).encode()))
    }
    assert leaks == {}
    # no column is there to hold an arm in plain text
    assert not [c for c in values if "arm" in c[1].lower() or "content" == c[1]]

    # the control: one plaintext arm in one kit row is found by the same scan
    connection = sqlite3.connect(stolen / "trial.db")
    with connection:
        connection.execute("UPDATE kits SET status = 'saline' WHERE id = 1")
    connection.close()
    assert find_arms(raw_bytes(stolen / "trial.db")) != []


def test_plain_columns_reveal_no_arm(trial_with_list: TrialFiles) -> None:
    """Any engine: every value outside the (public) design text is free of arm words."""
    design = load_design("exosome-ms")
    public = (TRIAL_ID, design.title)
    for table, rows in dump_database(trial_with_list.db_url).items():
        for row in rows:
            for value in row:
                if isinstance(value, bytes | memoryview):
                    assert find_arms(bytes(value)) == [], table
                    continue
                text = str(value)
                if text == design_text("exosome-ms") or "[[arms]]" in text:
                    continue  # trial.design_toml: the design is not a secret
                for known in public:
                    text = text.replace(known, "")
                assert find_arms(text.encode()) == [], (table, value)


def sealed_columns(files: TrialFiles) -> dict[str, list[bytes]]:
    slots = execute(files.db_url, "SELECT allocation_sealed FROM slots")
    kits = execute(files.db_url, "SELECT content_sealed FROM kits")
    seed = execute(files.db_url, "SELECT seed_sealed FROM trial")
    return {
        SLOT_KIND: [bytes(r[0]) for r in slots],
        KIT_KIND: [bytes(r[0]) for r in kits],
        SEED_KIND: [bytes(r[0]) for r in seed],
    }


def test_sealed_values_of_one_kind_all_have_one_length(trial_with_list: TrialFiles) -> None:
    sealed = sealed_columns(trial_with_list)
    for kind, values in sealed.items():
        assert values, kind
        assert {len(v) for v in values} == {sealed_size(kind)}, kind
    # ... whatever the arm: open them as the key holder and group the lengths by arm
    vault = open_trial_vault(trial_with_list)
    kit_rows = execute(trial_with_list.db_url, "SELECT code, content_sealed FROM kits")
    lengths_by_arm: dict[str, set[int]] = {}
    for code, content in kit_rows:
        arm = vault.open(KIT_KIND, code, bytes(content))
        lengths_by_arm.setdefault(arm, set()).add(len(bytes(content)))
    assert set(lengths_by_arm) == set(ARMS)
    assert len({frozenset(s) for s in lengths_by_arm.values()}) == 1
    slot_rows = execute(
        trial_with_list.db_url,
        "SELECT s.key, sl.sequence, sl.allocation_sealed FROM slots sl "
        "JOIN strata s ON s.id = sl.stratum_id",
    )
    arms = Counter(
        open_allocation(vault, key, sequence, bytes(value))[0] for key, sequence, value in slot_rows
    )
    assert set(arms) == set(ARMS) and arms["exosome"] == arms["saline"]
    # a fresh nonce for every value: no two sealed values share one
    nonces = [v[:NONCE_SIZE] for values in sealed.values() for v in values]
    assert len(set(nonces)) == len(nonces)


# Tampering with sealed values --------------------------------------------------------------


def _flip(value: bytes, index: int) -> bytes:
    changed = bytearray(value)
    changed[index] ^= 0x01
    return bytes(changed)


def _kits(files: TrialFiles) -> list[tuple[int, bytes]]:
    return [
        (r[0], bytes(r[1]))
        for r in execute(files.db_url, "SELECT id, content_sealed FROM kits ORDER BY id")
    ]


def _slots(files: TrialFiles) -> list[tuple[int, bytes]]:
    return [
        (r[0], bytes(r[1]))
        for r in execute(files.db_url, "SELECT id, allocation_sealed FROM slots ORDER BY id")
    ]


def _set_kit(files: TrialFiles, kit_id: int, value: bytes) -> None:
    execute(files.db_url, "UPDATE kits SET content_sealed = :v WHERE id = :id", v=value, id=kit_id)


def _set_slot(files: TrialFiles, slot_id: int, value: bytes) -> None:
    execute(
        files.db_url, "UPDATE slots SET allocation_sealed = :v WHERE id = :id", v=value, id=slot_id
    )


def copy_kit_content_to_another_kit(files: TrialFiles) -> None:
    kits = _kits(files)
    _set_kit(files, kits[1][0], kits[0][1])


def swap_two_kits(files: TrialFiles) -> None:
    kits = _kits(files)
    _set_kit(files, kits[-1][0], kits[-2][1])
    _set_kit(files, kits[-2][0], kits[-1][1])


def copy_slot_allocation_to_another_slot(files: TrialFiles) -> None:
    slots = _slots(files)
    _set_slot(files, slots[3][0], slots[2][1])


def flip_kit_ciphertext(files: TrialFiles) -> None:
    kit_id, value = _kits(files)[5]
    _set_kit(files, kit_id, _flip(value, NONCE_SIZE + 3))


def flip_kit_nonce(files: TrialFiles) -> None:
    kit_id, value = _kits(files)[5]
    _set_kit(files, kit_id, _flip(value, 0))


def flip_kit_tag(files: TrialFiles) -> None:
    kit_id, value = _kits(files)[-1]
    _set_kit(files, kit_id, _flip(value, len(value) - 1))


def truncate_kit(files: TrialFiles) -> None:
    kit_id, value = _kits(files)[0]
    _set_kit(files, kit_id, value[:-1])


def flip_slot_allocation(files: TrialFiles) -> None:
    slot_id, value = _slots(files)[7]
    _set_slot(files, slot_id, _flip(value, 20))


def flip_seed(files: TrialFiles) -> None:
    seed = bytes(execute(files.db_url, "SELECT seed_sealed FROM trial")[0][0])
    execute(files.db_url, "UPDATE trial SET seed_sealed = :v", v=_flip(seed, 30))


TAMPERING = [
    copy_kit_content_to_another_kit,
    swap_two_kits,
    copy_slot_allocation_to_another_slot,
    flip_kit_ciphertext,
    flip_kit_nonce,
    flip_kit_tag,
    truncate_kit,
    flip_slot_allocation,
    flip_seed,
]


@pytest.mark.parametrize("tamper", TAMPERING, ids=lambda f: f.__name__)
def test_moved_or_altered_ciphertext_fails_with_the_integrity_error(
    tamper: Any, trial_with_list: TrialFiles, run: Run
) -> None:
    # sealed values are outside the row MACs: AES-GCM refuses a moved or altered one, even
    # when every row MAC was recomputed with the key (a key holder's doing)
    tamper(trial_with_list)
    reseal_all(trial_with_list)
    before = dump_database(trial_with_list.db_url)
    result = run("list", "verify", user=ADMIN)
    assert assert_error(result, 1) == OPAQUE
    assert result.stdout == ""
    # nothing changed but the trail, which records the refused verification
    after = dump_database(trial_with_list.db_url)
    assert without_audit(after) == without_audit(before)
    last = audit_rows(trial_with_list.db_url)[-1]
    assert (last["action"], last["details"]["command"], last["details"]["message"]) == (
        "refused",
        "list.verify",
        OPAQUE,
    )


def test_a_flipped_bit_in_the_wrapped_data_key_stops_every_command(
    trial_with_list: TrialFiles, run: Run
) -> None:
    wrapped = bytes(execute(trial_with_list.db_url, "SELECT wrapped_data_key FROM trial")[0][0])
    execute(trial_with_list.db_url, "UPDATE trial SET wrapped_data_key = :v", v=_flip(wrapped, 9))
    before = dump_database(trial_with_list.db_url)
    for argv in (["list", "verify"], ["user", "list"], ["audit", "verify"]):
        assert assert_error(run(*argv, user=ADMIN), 1) == NOT_CURRENT_KEY
    assert dump_database(trial_with_list.db_url) == before


def test_key_holder_substitutions_are_caught_by_list_verify(
    trial_with_list: TrialFiles, run: Run
) -> None:
    """Even re-sealed under the right key, a kit holding the other arm fails verification."""
    vault = open_trial_vault(trial_with_list)
    code, kit_id = execute(
        trial_with_list.db_url,
        "SELECT code, id FROM kits WHERE slot_id IS NOT NULL ORDER BY id LIMIT 1",
    )[0]
    content = bytes(
        execute(
            trial_with_list.db_url, "SELECT content_sealed FROM kits WHERE id = :id", id=kit_id
        )[0][0]
    )
    other = {"exosome": "saline", "saline": "exosome"}[vault.open(KIT_KIND, code, content)]
    _set_kit(trial_with_list, kit_id, vault.seal(KIT_KIND, code, other))
    reseal(trial_with_list, "kits", kit_id)
    assert (
        assert_error(run("list", "verify", user=ADMIN), 1)
        == f"allocation list verification FAILED: kit {code} does not hold its slot's content"
    )


def test_an_altered_list_commitment_is_caught(trial_with_list: TrialFiles, run: Run) -> None:
    execute(trial_with_list.db_url, "UPDATE trial SET list_digest = :d", d="0" * 64)
    assert assert_error(run("list", "verify", user=ADMIN), 1) == integrity_refusal(
        "trial", "exosome-ms"
    )
    reseal(trial_with_list, "trial", "exosome-ms")
    assert (
        assert_error(run("list", "verify", user=ADMIN), 1)
        == "allocation list verification FAILED: the list commitment differs"
    )


def test_a_resealed_slot_with_another_arm_is_caught(trial_with_list: TrialFiles, run: Run) -> None:
    vault = open_trial_vault(trial_with_list)
    slot_id, key, sequence, value = execute(
        trial_with_list.db_url,
        "SELECT sl.id, s.key, sl.sequence, sl.allocation_sealed "
        "FROM slots sl JOIN strata s ON s.id = sl.stratum_id ORDER BY sl.id LIMIT 1",
    )[0]
    arm, block, size = open_allocation(vault, key, sequence, bytes(value))
    other = {"exosome": "saline", "saline": "exosome"}[arm]
    _set_slot(trial_with_list, slot_id, seal_allocation(vault, key, sequence, other, block, size))
    reseal(trial_with_list, "slots", slot_id)
    message = assert_error(run("list", "verify", user=ADMIN), 1)
    assert message.startswith("allocation list verification FAILED: ")
    assert "stored slots differ from the regenerated list" in message


# The list itself ------------------------------------------------------------------------


def test_generate_and_verify_count_spares_alike_after_replacements(
    trial_with_users: TrialFiles, run: Run
) -> None:
    generated = run.ok("list", "generate", user=ADMIN).stdout
    kits_line = next(line for line in generated.splitlines() if line.startswith("Kits: "))
    spares = load_design("exosome-ms").spares_per_arm() * len(ARMS)
    assert kits_line.endswith(f" ({spares} spares)")
    approve_list(run)
    run.ok("randomize", "P-001", "--site", "WAW", *answer_args(), user="ivan")
    for reason in ("bag punctured", "dropped"):
        kit = execute(
            trial_with_users.db_url,
            "SELECT code FROM kits WHERE participant_id IS NOT NULL AND status = 'dispensed'",
        )[0][0]
        run.ok("kit", "replace", kit, "--reason", reason, user="ivan")
    verified = run.ok("list", "verify", user=ADMIN).stdout
    assert kits_line in verified.splitlines()
    summary = json.loads(run.ok("list", "verify", "--json", user=ADMIN).stdout)
    assert summary["spare_kits"] == spares


def test_list_generate_prints_counts_and_commitment_never_the_sequence(
    trial_with_users: TrialFiles, run: Run
) -> None:
    result = run.ok("list", "generate", "--json", user=ADMIN)
    summary = json.loads(result.stdout)
    assert set(summary) == {"strata", "kits", "spare_kits", "commitment"}
    design = load_design("exosome-ms")
    [stratum] = summary["strata"]
    assert stratum["stratum"] == "all" and stratum["planned"] == 20
    assert 20 <= stratum["generated"] <= 20 + max(design.block_sizes) - 1
    spares = design.spares_per_arm() * len(ARMS)
    assert summary["spare_kits"] == spares
    assert summary["kits"] == stratum["generated"] * len(design.visits) + spares
    assert find_arms(result.stdout.encode()) == []
    rows = dump_database(trial_with_users.db_url)
    assert len(rows["slots"]) == stratum["generated"]
    assert len(rows["kits"]) == summary["kits"]
    codes = [r[0] for r in execute(trial_with_users.db_url, "SELECT code FROM kits")]
    assert len(set(codes)) == len(codes)
    verified = run.ok("list", "verify", "--json", user=ADMIN)
    assert json.loads(verified.stdout) == summary
    events = [e for e in audit_rows(trial_with_users.db_url) if e["action"].startswith("list.")]
    assert [e["action"] for e in events] == ["list.generate", "list.verify"]
    assert events[0]["details"]["commitment"] == summary["commitment"]
    assert events[1]["details"] == {"commitment": summary["commitment"], "result": "match"}


class ReversingRandom:
    """Stands in for secrets.SystemRandom: its shuffle reverses, so the order is known."""

    def shuffle(self, items: list[str]) -> None:
        items.reverse()


def test_generated_rows_come_in_list_order_in_chunks_and_spares_in_shuffled_order(
    trial_with_users: TrialFiles, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of 7 slots: the 20-odd slots and their kits are written in several chunks.
    monkeypatch.setattr(trial_module, "LIST_CHUNK", 7)
    monkeypatch.setattr(secrets, "SystemRandom", ReversingRandom)
    run.ok("list", "generate", user=ADMIN)
    design = load_design("exosome-ms")
    url = trial_with_users.db_url
    slots = execute(url, "SELECT id, sequence FROM slots ORDER BY id")
    assert [sequence for _, sequence in slots] == list(range(1, len(slots) + 1))
    kits = execute(
        url, "SELECT id, code, content_sealed, slot_id, visit, spare, status FROM kits ORDER BY id"
    )
    dosing = [k for k in kits if not k[5]]
    visits = len(design.visits)
    assert [(k[3], k[4]) for k in dosing] == [
        (slot_id, visit) for slot_id, _ in slots for visit in range(1, visits + 1)
    ]
    spare_rows = kits[len(dosing) :]
    assert all(k[5] and k[3] is None and k[4] is None for k in spare_rows)
    assert {k[6] for k in kits} == {"available"}
    vault = open_trial_vault(trial_with_users)
    by_slot = {
        slot_id: open_allocation(vault, "all", sequence, bytes(sealed))[0]
        for slot_id, sequence, sealed in execute(
            url, "SELECT id, sequence, allocation_sealed FROM slots"
        )
    }
    assert all(vault.open(KIT_KIND, k[1], bytes(k[2])) == by_slot[k[3]] for k in dosing)
    # spares in the order the shuffle left them (here: design order, reversed)
    per_arm = design.spares_per_arm()
    assert [vault.open(KIT_KIND, k[1], bytes(k[2])) for k in spare_rows] == [
        arm for arm in reversed(design.arm_ids) for _ in range(per_arm)
    ]
    assert len({k[1] for k in kits}) == len(kits)
    run.ok("list", "verify", user=ADMIN)


def test_a_second_list_is_refused(trial_with_list: TrialFiles, run: Run) -> None:
    before = dump_database(trial_with_list.db_url)
    assert assert_error(run("list", "generate", user=ADMIN), 1) == (
        "the allocation list already exists: a trial has one list; "
        "verify it instead (run 'randomizer list verify')"
    )
    after = dump_database(trial_with_list.db_url)
    assert without_audit(after) == without_audit(before)


def test_verify_before_any_list_is_refused(trial_with_users: TrialFiles, run: Run) -> None:
    assert (
        assert_error(run("list", "verify", user=ADMIN), 1)
        == "no allocation list yet: an admin generates the allocation list first "
        "(run 'randomizer list generate')"
    )


# Key files ----------------------------------------------------------------------------


def _key_path(files: TrialFiles) -> str:
    return str(files.key_file)


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


KEY_FILE_PROBLEMS = [
    (
        "mode-0644",
        lambda f: f.key_file.chmod(0o644),
        "key file {k} is readable by others (mode 0644): chmod 600 {k}",
    ),
    (
        "mode-0640",
        lambda f: f.key_file.chmod(0o640),
        "key file {k} is readable by its group (mode 0640): chmod 600 {k}",
    ),
    (
        "mode-0610",
        lambda f: f.key_file.chmod(0o610),
        "key file {k} is accessible by its group (mode 0610): chmod 600 {k}",
    ),
    (
        "mode-0601",
        lambda f: f.key_file.chmod(0o601),
        "key file {k} is accessible by others (mode 0601): chmod 600 {k}",
    ),
    (
        "missing",
        lambda f: f.key_file.unlink(),
        "key file {k} not found: give the path of the trial's key file "
        "(pass --key-file PATH or set RANDOMIZER_KEY_FILE)",
    ),
    (
        "16-bytes",
        lambda f: write_key_file(f.key_file, bytes(16)),
        "key file {k} holds a 16-byte key, not 32 bytes: is it the right file?",
    ),
    (
        "33-bytes",
        lambda f: write_key_file(f.key_file, bytes(33)),
        "key file {k} holds a 33-byte key, not 32 bytes: is it the right file?",
    ),
    (
        "empty",
        lambda f: write_key_file(f.key_file, b""),
        "key file {k} holds a 0-byte key, not 32 bytes: is it the right file?",
    ),
    (
        "not-base64",
        lambda f: (f.key_file.write_text("this is not base64!\n"), f.key_file.chmod(0o600)),
        "key file {k} does not hold a base64-encoded key: is it the right file?",
    ),
    (
        "too-large",
        lambda f: (f.key_file.write_bytes(b"A" * 100_000), f.key_file.chmod(0o600)),
        "key file {k} is too large to be a key file: is it the right file?",
    ),
    ("fifo", lambda f: _replace_with_fifo(f.key_file), "key file {k} is not a regular file"),
]


@pytest.mark.parametrize(
    "spoil, message",
    [(s, m) for _, s, m in KEY_FILE_PROBLEMS],
    ids=[i for i, _, _ in KEY_FILE_PROBLEMS],
)
@pytest.mark.parametrize("command", [["user", "list"], ["list", "verify"]])
def test_a_bad_key_file_is_refused_before_the_database_is_read(
    spoil: Any, message: str, command: list[str], trial_with_list: TrialFiles, run: Run
) -> None:
    before = dump_database(trial_with_list.db_url)
    spoil(trial_with_list)
    result = run(*command, user=ADMIN)
    assert assert_error(result, 1) == message.format(k=_key_path(trial_with_list))
    assert result.stdout == ""
    assert dump_database(trial_with_list.db_url) == before


def test_a_directory_as_key_file_is_bad_usage(trial_with_list: TrialFiles, run: Run) -> None:
    trial_with_list.key_file.unlink()
    trial_with_list.key_file.mkdir(mode=0o700)
    before = dump_database(trial_with_list.db_url)
    assert_error(
        run("user", "list", user=ADMIN), 2, "Invalid value for '--key-file'", "is a directory"
    )
    assert dump_database(trial_with_list.db_url) == before


@pytest.mark.parametrize("command", [["user", "list"], ["list", "verify"], ["audit", "show"]])
def test_a_different_key_file_is_not_the_current_key(
    command: list[str], trial_with_list: TrialFiles, run: Run
) -> None:
    other = write_key_file(trial_with_list.directory / "other.key", bytes(range(32)))
    before = dump_database(trial_with_list.db_url)
    result = run(*command, user=ADMIN, key_file=other)
    assert assert_error(result, 1) == NOT_CURRENT_KEY
    assert dump_database(trial_with_list.db_url) == before
    run.ok(*command, user=ADMIN)  # the right key still opens everything


def test_the_key_of_another_trial_is_not_the_current_key(
    trial_with_list: TrialFiles, run: Run, tmp_path: Path
) -> None:
    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    other_key = tmp_path / "other-trial.key"
    run.ok(
        "init",
        "--design",
        "exosome-ms",
        "--admin",
        ADMIN,
        db=other_db,
        key_file=other_key,
        env={"RANDOMIZER_PASSWORD": PASSWORDS[ADMIN]},
    )
    assert assert_error(run("list", "verify", user=ADMIN, key_file=other_key), 1) == NOT_CURRENT_KEY


# Key rotation -----------------------------------------------------------------------------


def test_rotation_retires_the_old_key_and_loses_nothing(
    trial_with_list: TrialFiles, run: Run
) -> None:
    files = trial_with_list
    commitment = json.loads(run.ok("list", "verify", "--json", user=ADMIN).stdout)["commitment"]
    sealed_before = sealed_columns(files)
    wrapped_before = execute(files.db_url, "SELECT wrapped_data_key FROM trial")[0][0]
    new_key = files.directory / "rotated.key"

    result = run.ok("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)

    assert f"Key rotated: use {new_key} from now on" in result.stdout
    assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
    assert len(base64.b64decode(new_key.read_bytes().strip(), validate=True)) == 32
    assert new_key.read_bytes() != files.key_file.read_bytes()
    # a new data key: every sealed value was sealed again, none is what it was
    assert execute(files.db_url, "SELECT wrapped_data_key FROM trial")[0][0] != wrapped_before
    sealed_after = sealed_columns(files)
    for kind, values in sealed_before.items():
        assert len(sealed_after[kind]) == len(values), kind
        assert not set(sealed_after[kind]) & set(values), kind
    # the old key no longer opens the trial, and the site holding it is told why, not
    # warned of tampering
    for argv in (["list", "verify"], ["user", "list"]):
        assert assert_error(run(*argv, user=ADMIN), 1) == NOT_CURRENT_KEY
    # the new one opens everything: the list verifies against the same commitment
    verified = json.loads(run.ok("list", "verify", "--json", user=ADMIN, key_file=new_key).stdout)
    assert verified["commitment"] == commitment
    run.ok("audit", "verify", user=ADMIN, key_file=new_key)
    rotation = [e for e in audit_rows(files.db_url) if e["action"] == "key.rotate"]
    assert len(rotation) == 1
    assert rotation[0]["details"] == {
        "new_key_file": str(new_key),
        "key_format": {"before": 1, "after": 2},
        "resealed": {
            KIT_KIND: len(sealed_before[KIT_KIND]),
            SLOT_KIND: len(sealed_before[SLOT_KIND]),
            SEED_KIND: 1,
        },
    }
    assert rotation[0]["user"] == ADMIN


def test_rotation_refuses_to_overwrite_a_file(trial_with_list: TrialFiles, run: Run) -> None:
    existing = trial_with_list.directory / "existing.key"
    existing.write_bytes(b"something precious\n")
    before = dump_database(trial_with_list.db_url)
    result = run("key", "rotate", "--new-key-file", str(existing), user=ADMIN)
    assert assert_error(result, 1) == (
        f"key file {existing} already exists: refusing to "
        "overwrite it; choose another path or move the old "
        "file away"
    )
    assert existing.read_bytes() == b"something precious\n"
    after = dump_database(trial_with_list.db_url)
    assert after["trial"] == before["trial"]
    run.ok("list", "verify", user=ADMIN)


def test_rotation_to_the_current_key_file_is_bad_usage(
    trial_with_list: TrialFiles, run: Run
) -> None:
    before = dump_database(trial_with_list.db_url)
    result = run("key", "rotate", "--new-key-file", str(trial_with_list.key_file), user=ADMIN)
    assert (
        assert_error(result, 2) == "the new key file must be a new path, not the current key file"
    )
    assert dump_database(trial_with_list.db_url) == before


def test_rotation_into_a_missing_directory(trial_with_list: TrialFiles, run: Run) -> None:
    target = trial_with_list.directory / "no-such-dir" / "new.key"
    result = run("key", "rotate", "--new-key-file", str(target), user=ADMIN)
    assert assert_error(result, 1) == f"cannot create key file {target}: No such file or directory"
    run.ok("list", "verify", user=ADMIN)


def test_a_failed_rotation_removes_the_new_key_file_and_keeps_the_old_key(
    trial_with_list: TrialFiles, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_wrap(*args: object) -> bytes:
        raise RuntimeError("power cut")

    monkeypatch.setattr(rotation_module, "wrap_keys", broken_wrap)
    new_key = trial_with_list.directory / "new.key"
    before = dump_database(trial_with_list.db_url)
    result = run("key", "rotate", "--new-key-file", str(new_key), user=ADMIN)
    assert_error(result, 1, "internal error (RuntimeError); nothing was committed")
    assert not new_key.exists()
    assert dump_database(trial_with_list.db_url) == before
    monkeypatch.undo()
    assert_ok(run("list", "verify", user=ADMIN))

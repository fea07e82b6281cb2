"""Trial setup and custody: init, users, list generation and verification."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from randomizer import audit, rows
from randomizer.access import (
    Permission,
    Role,
    check_password,
    check_user_name,
    hash_password,
)
from randomizer.allocation.generator import StratumSchedule, generate_schedule
from randomizer.allocation.kits import code_texts, new_code_numbers
from randomizer.allocation.stream import format_seed, parse_seed
from randomizer.context import Operation
from randomizer.design import TrialDesign
from randomizer.errors import (
    Hint,
    ListMismatch,
    NotAuthorized,
    NotFound,
    StateError,
)
from randomizer.models import Kit, Participant, Slot, Stratum, Trial, User, UserSite
from randomizer.results import ListApproval as ListApproval
from randomizer.results import ListStatus as ListStatus
from randomizer.results import ListSummary as ListSummary
from randomizer.results import StratumStatus as StratumStatus
from randomizer.results import StratumSummary as StratumSummary
from randomizer.results import UserInfo as UserInfo
from randomizer.rotation import lock_keys
from randomizer.sealed import (
    open_allocations,
    open_kit_contents,
    open_seed_text,
    seal_allocations,
    seal_kit_contents,
    seal_seed,
)
from randomizer.sessions import revoke_user_tokens
from randomizer.sites import (
    check_sites,
    kit_in_scope,
    participant_in_scope,
    require_within_scope,
    scope,
    user_sites,
)
from randomizer.store import Store
from randomizer.vault import Vault, create_key_file, new_data_key, wrap_data_key


@dataclass(frozen=True)
class InitResult:
    """What ``init`` created."""

    trial: str
    admin: str
    key_file: str
    database: str


def list_commitment(seed: bytes, digest: str) -> str:
    """SHA-256 over the seed and the list digest.

    The plain list digest of a short list could be found by trying every
    possible list; binding it to the secret seed makes the printed value
    useless to anyone without the seed, yet checkable by anyone who has it.
    """
    return hashlib.sha256(b"randomizer/v1 list\0" + seed + bytes.fromhex(digest)).hexdigest()


def init_trial(
    store: Store,
    key_file: Path,
    design: TrialDesign,
    design_toml: str,
    admin: str,
    password: str,
    now: datetime,
) -> InitResult:
    """Create schema, trial, key file and first admin, all or nothing."""
    check_user_name(admin)
    check_password(password)
    if store.has_schema():
        raise StateError(
            f"{store.url} already holds a trial: create the new trial in another "
            "database, or keep working with that one",
            hint=Hint.OTHER_DATABASE,
        )
    trial_key = create_key_file(key_file)
    try:
        with store.transaction() as session:
            store.create_schema(session)
            data_key = new_data_key()
            vault = Vault(data_key, design.id)
            rows.attach(session, vault)
            session.add(
                Trial(
                    id=design.id,
                    design_toml=design_toml,
                    design_digest=design.digest(),
                    wrapped_data_key=wrap_data_key(trial_key, data_key),
                    created_at=now,
                )
            )
            session.add(
                User(
                    name=admin,
                    role=Role.ADMIN,
                    password_hash=hash_password(password),
                    disabled=False,
                    created_at=now,
                )
            )
            audit.start_chain(session)
            session.flush()
            key = vault.audit_key()
            audit.append(
                session,
                key,
                now=now,
                user=admin,
                role=Role.ADMIN,
                action="trial.init",
                subject=design.id,
                details={"design_digest": design.digest(), "title": design.title},
            )
            audit.append(
                session,
                key,
                now=now,
                user=admin,
                role=Role.ADMIN,
                action="user.add",
                subject=admin,
                details={"before": None, "after": {"role": "admin", "disabled": False}},
            )
    except BaseException:
        key_file.unlink(missing_ok=True)
        raise
    return InitResult(trial=design.id, admin=admin, key_file=str(key_file), database=store.url)


def _user(op: Operation, name: str) -> User:
    user = op.session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise NotFound(
            f"no user {name!r}: check the name against the list of users", hint=Hint.LIST_USERS
        )
    return user


def add_user(
    op: Operation, name: str, role: Role, password: str, sites: Sequence[str] = ()
) -> UserInfo:
    """Create a user (admin only), limited to ``sites`` if any are given."""
    check_user_name(name)
    check_password(password)
    limited = check_sites(op, sites)
    require_within_scope(op, limited, name)
    if op.session.scalars(select(User).where(User.name == name)).one_or_none() is not None:
        raise StateError(f"user {name!r} already exists: pick another name")
    user = User(
        name=name,
        role=role,
        password_hash=hash_password(password),
        disabled=False,
        created_at=op.now,
    )
    op.session.add(user)
    op.session.flush()
    op.session.add_all(UserSite(user_id=user.id, site=site) for site in limited)
    after: dict[str, object] = {"role": role.value, "disabled": False}
    if limited:
        after["sites"] = list(limited)
    op.audit("user.add", subject=name, details={"before": None, "after": after})
    return _info(op, user)


def list_users(op: Operation) -> list[UserInfo]:
    """Every user, by name."""
    return [_info(op, u) for u in op.session.scalars(select(User).order_by(User.name))]


def show_user_sites(op: Operation, name: str) -> UserInfo:
    """One user and the sites they are limited to (admin)."""
    return _info(op, _user(op, name))


def set_user_sites(op: Operation, name: str, sites: Sequence[str]) -> UserInfo:
    """Limit a user to ``sites``, or (none given) make them trial-wide (admin); audited.

    The change counts from the user's next action on. An admin limited to sites
    may only move a user among those sites.
    """
    user = _user(op, name)
    limited = check_sites(op, sites)
    before = user_sites(op, user)
    require_within_scope(op, before, name)
    require_within_scope(op, limited, name)
    if limited != before:
        for row in op.session.scalars(select(UserSite).where(UserSite.user_id == user.id)):
            op.session.delete(row)
        op.session.flush()
        op.session.add_all(UserSite(user_id=user.id, site=site) for site in limited)
        op.session.flush()
    op.audit(
        "user.sites",
        subject=name,
        details={
            "before": {"sites": list(before)},
            "after": {"sites": list(limited)},
        },
    )
    return _info(op, user)


def disable_user(op: Operation, name: str, reason: str) -> UserInfo:
    """Disable an account; the last enabled admin cannot be disabled."""
    user = _user(op, name)
    require_within_scope(op, user_sites(op, user), name, f"disable {name}, who acts")
    if user.disabled:
        raise StateError(f"user {name!r} is already disabled")
    if user.role == Role.ADMIN:
        admins = op.session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN, User.disabled.is_(False))
        )
        if admins == 1:
            raise StateError(f"user {name!r} is the last enabled admin: add another admin first")
    user.disabled = True
    revoke_user_tokens(op.session, name, op.now, "user disabled")
    op.audit(
        "user.disable",
        subject=name,
        reason=reason,
        details={
            "before": {"role": user.role, "disabled": False},
            "after": {"role": user.role, "disabled": True},
        },
    )
    return _info(op, user)


def change_password(op: Operation, name: str, password: str) -> UserInfo:
    """Set a new password: one's own, or anyone's for an admin."""
    check_password(password)
    if name != op.user.name:
        op.require(Permission.MANAGE_USERS)
    user = _user(op, name)
    if name != op.user.name:
        require_within_scope(
            op, user_sites(op, user), name, f"set the password of {name}, who acts"
        )
    user.password_hash = hash_password(password)
    revoke_user_tokens(op.session, name, op.now, "password changed")
    op.audit(
        "user.passwd",
        subject=name,
        details={"before": {"password": "(old hash)"}, "after": {"password": "(new hash)"}},
    )
    return _info(op, user)


def _info(op: Operation, user: User) -> UserInfo:
    return UserInfo(
        name=user.name,
        role=user.role,
        disabled=user.disabled,
        created_at=audit.utc_text(user.created_at),
        sites=user_sites(op, user),
    )


LIST_CHUNK = 10_000
"""Slots (and their slots' kits) sealed and written at a time by :func:`generate_list`."""


def generate_list(op: Operation) -> ListSummary:
    """Draw a secret seed and store the sealed list and kits, in this one transaction.

    Slots and then kits are sealed and written a chunk at a time, as plain rows with
    the driver's bulk path (no ORM objects: a list of millions of rows stays within a
    few hundred MiB; on PostgreSQL one ``COPY`` per table, which the server works
    through while the next chunk is sealed). Kit codes are drawn at once, as numbers
    (8 bytes a code); the slots' ids are read back between the two tables. Rows come
    in the order they always did: per stratum, slots in list order; kits per stratum
    in slot order, each slot's in visit order; the spare kits last, shuffled.
    """
    if op.trial.seed_sealed is not None:
        raise StateError(
            "the allocation list already exists: a trial has one list; verify it instead",
            hint=Hint.VERIFY_LIST,
        )
    lock_keys(op)  # a rotation committed since this operation began would strand the list
    design = op.design
    seed = secrets.token_bytes(32)
    schedule = generate_schedule(design, seed)
    vault = op.vault
    strata: dict[str, Stratum] = {}
    for position, key in enumerate(design.strata(), start=1):
        strata[key] = Stratum(
            key=key,
            position=position,
            planned=design.stratum_length,
            size=len(schedule.stratum(key)),
            next_sequence=1,
        )
    op.session.add_all(strata.values())
    op.session.flush()

    visits = [visit.number for visit in design.visits]
    spares = design.spares_per_arm()
    spare_arms = [arm for arm in design.arm_ids for _ in range(spares)]
    # Rows are stored in insertion order: shuffle spares so row order says nothing of arms.
    secrets.SystemRandom().shuffle(spare_arms)
    codes = new_code_numbers(len(schedule) * len(visits) + len(spare_arms))
    connection = op.session.connection()
    # ids are given here, not by the database, so that each row's MAC (which covers
    # its id) is computed before the row is written, in bulk
    next_slot_id = _max_id(connection, Slot) + 1
    next_kit_id = _max_id(connection, Kit) + 1
    stratum_slot_ids: dict[str, list[int]] = {}

    def chunks() -> Iterator[tuple[StratumSchedule, int, int, list[str]]]:
        for stratum in schedule.strata:
            for start in range(0, len(stratum), LIST_CHUNK):
                stop = min(start + LIST_CHUNK, len(stratum))
                arm_ids = stratum.arm_ids
                yield (
                    stratum,
                    start,
                    stop,
                    [arm_ids[k] for k in stratum.arm_index[start:stop].tolist()],
                )

    with _large_cache(connection):
        with _bulk_rows(
            connection,
            Slot.__tablename__,
            ("id", "stratum_id", "sequence", "allocation_sealed", "row_mac"),
        ) as write:
            for stratum, start, stop, arms in chunks():
                stratum_id = strata[stratum.stratum].id
                sealed = seal_allocations(
                    vault,
                    stratum.stratum,
                    start + 1,
                    arms,
                    stratum.block[start:stop].tolist(),
                    stratum.block_size[start:stop].tolist(),
                )
                slot_rows = [
                    (next_slot_id + k, stratum_id, sequence, value)
                    for k, (sequence, value) in enumerate(enumerate(sealed, start=start + 1))
                ]
                next_slot_id += len(slot_rows)
                stratum_slot_ids.setdefault(stratum.stratum, []).extend(r[0] for r in slot_rows)
                macs = rows.mac_new_slots(vault, slot_rows)
                rows.record_bulk(op.session, "slots", macs)
                write([(*row, mac) for row, mac in zip(slot_rows, macs, strict=True)])
        slot_ids = {key: np.array(stratum_slot_ids.get(key, []), dtype=np.int64) for key in strata}

        used = 0

        def kit_rows(
            values: list[tuple[str, bytes, int | None, int | None]], spare: bool
        ) -> list[tuple[object, ...]]:
            nonlocal next_kit_id
            new = [
                (next_kit_id + k, code, content, slot_id, visit)
                for k, (code, content, slot_id, visit) in enumerate(values)
            ]
            next_kit_id += len(new)
            macs = rows.mac_new_kits(vault, new, spare)
            rows.record_bulk(op.session, "kits", macs)
            return [(*row, spare, "available", mac) for row, mac in zip(new, macs, strict=True)]

        with _bulk_rows(connection, Kit.__tablename__, _KIT_COLUMNS) as write:
            for stratum, start, stop, arms in chunks():
                kit_codes = code_texts(codes[used : used + len(arms) * len(visits)])
                used += len(kit_codes)
                contents = seal_kit_contents(
                    vault, kit_codes, [arm for arm in arms for _ in visits]
                )
                kit_slots = [
                    slot_id
                    for slot_id in slot_ids[stratum.stratum][start:stop].tolist()
                    for _ in visits
                ]
                write(
                    kit_rows(
                        list(zip(kit_codes, contents, kit_slots, visits * len(arms), strict=True)),
                        spare=False,
                    )
                )
            for start in range(0, len(spare_arms), LIST_CHUNK * len(visits)):
                arms = spare_arms[start : start + LIST_CHUNK * len(visits)]
                kit_codes = code_texts(codes[used : used + len(arms)])
                used += len(kit_codes)
                contents = seal_kit_contents(vault, kit_codes, arms)
                write(
                    kit_rows(
                        [
                            (code, content, None, None)
                            for code, content in zip(kit_codes, contents, strict=True)
                        ],
                        spare=True,
                    )
                )
    kits = used
    _advance_id_sequence(connection, Slot)
    _advance_id_sequence(connection, Kit)
    spare_kits = spare_kit_count(op.session)

    commitment = list_commitment(seed, schedule.digest())
    op.trial.seed_sealed = seal_seed(vault, format_seed(seed))
    op.trial.list_digest = commitment
    op.trial.list_generated_at = op.now
    op.trial.list_generated_by = op.user.name
    op.trial.list_state = LIST_DRAFT
    summary = ListSummary(
        strata=tuple(StratumSummary(k, s.planned, s.size) for k, s in strata.items()),
        kits=kits,
        spare_kits=spare_kits,
        commitment=commitment,
    )
    op.audit(
        "list.generate",
        subject=op.trial.id,
        details={
            "commitment": commitment,
            "state": LIST_DRAFT,
            "kits": kits,
            "spare_kits": spare_kits,
            "strata": {
                s.stratum: {"planned": s.planned, "generated": s.generated} for s in summary.strata
            },
        },
    )
    return summary


LIST_DRAFT = "draft"
"""A generated list no one has approved yet: no participant can be randomized."""
LIST_APPROVED = "approved"
"""A list a second user approved: it is live."""


def list_state(trial: Trial) -> str:
    """``none``, ``draft`` or ``approved``."""
    if trial.seed_sealed is None:
        return "none"
    return trial.list_state or LIST_DRAFT


def require_approved_list(op: Operation) -> None:
    """Refuse while the list is missing or still a draft (go-live needs a second person)."""
    require_list(op)
    if list_state(op.trial) != LIST_APPROVED:
        raise StateError(
            "the allocation list is a draft awaiting approval: no participant can be "
            "randomized until a second admin or statistician, not the one who "
            "generated it, approves it",
            hint=Hint.APPROVE_LIST,
        )


def approve_list(op: Operation) -> ListApproval:
    """Approve the draft list for go-live: a second admin or statistician, never its generator.

    The approver has reviewed the blinded QC summary (``list status``): counts per
    stratum, planned against generated, kit counts and the list commitment. The
    approval event carries that summary, so the trail says what was approved.
    """
    require_list(op)
    trial = op.trial
    if list_state(trial) == LIST_APPROVED:
        by = f" by {trial.list_approved_by}" if trial.list_approved_by else ""
        when = f" at {audit.utc_text(trial.list_approved_at)}" if trial.list_approved_at else ""
        raise StateError(f"the allocation list is already approved{by}{when}")
    if trial.list_generated_by is None or trial.list_generated_by == op.user.name:
        raise NotAuthorized(
            f"user {op.user.name} generated the allocation list and may not approve it: "
            "a second admin or statistician reviews and approves it"
        )
    strata = tuple(
        StratumSummary(s.key, s.planned, s.size)
        for s in op.session.scalars(select(Stratum).order_by(Stratum.position))
    )
    kits = op.session.scalar(select(func.count()).select_from(Kit)) or 0
    spare_kits = spare_kit_count(op.session)
    commitment = trial.list_digest or ""
    trial.list_state = LIST_APPROVED
    trial.list_approved_at = op.now
    trial.list_approved_by = op.user.name
    op.audit(
        "list.approve",
        subject=trial.id,
        details={
            "commitment": commitment,
            "generated_by": trial.list_generated_by,
            "state": {"before": LIST_DRAFT, "after": LIST_APPROVED},
            "kits": kits,
            "spare_kits": spare_kits,
            "strata": {s.stratum: {"planned": s.planned, "generated": s.generated} for s in strata},
        },
    )
    return ListApproval(
        strata=strata,
        kits=kits,
        spare_kits=spare_kits,
        commitment=commitment,
        generated_by=trial.list_generated_by,
        approved_by=op.user.name,
        approved_at=audit.utc_text(op.now),
    )


_KIT_COLUMNS = ("id", "code", "content_sealed", "slot_id", "visit", "spare", "status", "row_mac")


def _max_id(connection: Connection, model: type[Slot] | type[Kit]) -> int:
    return int(connection.execute(select(func.coalesce(func.max(model.id), 0))).scalar_one())


def _advance_id_sequence(connection: Connection, model: type[Slot] | type[Kit]) -> None:
    """On PostgreSQL, move the table's id sequence past the ids given by hand."""
    if connection.dialect.name != "postgresql":
        return
    table = model.__tablename__
    connection.exec_driver_sql(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
    )


@contextmanager
def _bulk_rows(
    connection: Connection, table: str, columns: Sequence[str]
) -> Iterator[Callable[[list[tuple[object, ...]]], None]]:
    """A function that inserts plain rows into ``table`` in the connection's transaction.

    PostgreSQL: one ``COPY ... FROM STDIN`` for every call, ended when the block ends;
    SQLite: the driver's ``executemany`` per call. Both take the values as they are,
    without SQLAlchemy's per-value processing (which costs more than the insert itself):
    give each column's stored form (str, int, bytes, bool, None).
    """
    names = ", ".join(columns)
    driver: Any = connection.connection.driver_connection  # psycopg's or sqlite3's
    if connection.dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:

            def copy_rows(rows: list[tuple[object, ...]]) -> None:
                for row in rows:
                    copy.write_row(row)

            yield copy_rows
        return
    statement = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    cursor = driver.cursor()
    try:
        yield lambda rows: cursor.executemany(statement, rows)
    finally:
        cursor.close()


_SQLITE_BULK_CACHE_KIB = 65_536


@contextmanager
def _large_cache(connection: Connection) -> Iterator[None]:
    """On SQLite, a page cache of 64 MiB (not 2) while rows are written in bulk.

    Kit codes are random, so each insert lands at a random place in the index of codes;
    with the whole index in the cache, that costs about a fifth less CPU. The
    connection's own size is put back afterwards (connections are pooled).
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = int(connection.exec_driver_sql("PRAGMA cache_size").scalar_one())
    connection.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {previous}")


def spare_kit_count(session: Session) -> int:
    """Spare kits in the list, issued as replacements or not: the one count of spares."""
    return session.scalar(select(func.count()).select_from(Kit).where(Kit.spare.is_(True))) or 0


def require_list(op: Operation) -> bytes:
    """The trial's sealed seed; refused while no allocation list has been generated."""
    if op.trial.seed_sealed is None:
        raise StateError(
            "no allocation list yet: an admin generates the allocation list first",
            hint=Hint.GENERATE_LIST,
        )
    return op.trial.seed_sealed


def open_seed(op: Operation) -> bytes:
    """The trial's seed (unblinded callers only)."""
    return parse_seed(open_seed_text(op.vault, require_list(op)))


def verify_list(op: Operation) -> ListSummary:
    """Regenerate the list from the sealed seed and compare it with every stored slot and kit."""
    summary, problems = check_list(op)
    details = {"commitment": summary.commitment, "result": "mismatch" if problems else "match"}
    op.audit("list.verify", subject=op.trial.id, details=details)
    if problems:
        raise ListMismatch("allocation list verification FAILED: " + "; ".join(problems))
    return summary


def check_list(op: Operation) -> tuple[ListSummary, list[str]]:
    """Regenerate the list and compare; the summary and what differs (nothing audited).

    The slots and kits are read through the driver's cursor a batch at a time and
    opened a batch per call: no ORM objects (and no row MAC checks: the callers check
    or have checked the rows).
    """
    seed = open_seed(op)
    schedule = generate_schedule(op.design, seed)
    commitment = list_commitment(seed, schedule.digest())
    strata = {s.id: s for s in op.session.scalars(select(Stratum))}
    connection = op.session.connection()
    stored: dict[tuple[str, int], tuple[str, int, int]] = {}
    slot_arm: dict[int, str] = {}
    for batch in rows.driver_batches(
        connection,
        select(Slot.id, Slot.stratum_id, Slot.sequence, Slot.allocation_sealed),
        "randomizer_list_slots",
    ):
        places = [(strata[stratum_id].key, sequence) for _id, stratum_id, sequence, _s in batch]
        opened = open_allocations(op.vault, places, [row[3] for row in batch])
        for row, place, allocation in zip(batch, places, opened, strict=True):
            stored[place] = allocation
            slot_arm[row[0]] = allocation[0]
    expected: dict[tuple[str, int], tuple[str, int, int]] = {}
    for planned in schedule.strata:
        ids = planned.arm_ids
        columns = zip(
            planned.arm_index.tolist(),
            planned.block.tolist(),
            planned.block_size.tolist(),
            strict=True,
        )
        for sequence, (arm, block, size) in enumerate(columns, start=1):
            expected[(planned.stratum, sequence)] = (ids[arm], block, size)
    problems: list[str] = []
    if commitment != op.trial.list_digest:
        problems.append("the list commitment differs")
    if stored != expected:
        problems.append("stored slots differ from the regenerated list")
    kits = 0
    wrong_kit: str | None = None
    for batch in rows.driver_batches(
        connection,
        select(Kit.code, Kit.slot_id, Kit.content_sealed).order_by(Kit.id),
        "randomizer_list_kits",
    ):
        kits += len(batch)
        contents = open_kit_contents(op.vault, [row[0] for row in batch], [row[2] for row in batch])
        if wrong_kit is None:
            wrong_kit = next(
                (
                    code
                    for (code, slot_id, _sealed), content in zip(batch, contents, strict=True)
                    if slot_id is not None and slot_arm.get(slot_id) != content
                ),
                None,
            )
    if wrong_kit is not None:
        problems.append(f"kit {wrong_kit} does not hold its slot's content")
    summary = ListSummary(
        strata=tuple(
            StratumSummary(s.key, s.planned, s.size)
            for s in sorted(strata.values(), key=lambda s: s.position)
        ),
        kits=kits,
        spare_kits=spare_kit_count(op.session),
        commitment=commitment,
    )
    return summary, problems


def list_status(op: Operation) -> ListStatus:
    """Whether the list exists, how much of each stratum is used, kits by status (any role)."""
    op.audit("list.status")
    limited = scope(op) is not None
    # a user limited to sites sees the slots their sites' participants took, and their kits
    used: dict[int, int] = {
        stratum_id: count
        for stratum_id, count in op.session.execute(
            select(Participant.stratum_id, func.count())
            .where(participant_in_scope(op))
            .group_by(Participant.stratum_id)
        )
    }
    strata = tuple(
        StratumStatus(
            s.key, s.planned, s.size, used.get(s.id, 0) if limited else s.next_sequence - 1
        )
        for s in op.session.scalars(select(Stratum).order_by(Stratum.position))
    )
    kits = dict.fromkeys(("available", "dispensed", "prepared", "voided"), 0)
    for status, count in op.session.execute(
        select(Kit.status, func.count()).where(kit_in_scope(op)).group_by(Kit.status)
    ):
        kits[status] = count
    left = (
        op.session.scalar(
            select(func.count())
            .select_from(Kit)
            .where(Kit.spare.is_(True), Kit.status == "available")
        )
        or 0
    )
    generated_at = op.trial.list_generated_at
    approved_at = op.trial.list_approved_at
    return ListStatus(
        generated=op.trial.seed_sealed is not None,
        generated_at=audit.utc_text(generated_at) if generated_at else None,
        commitment=op.trial.list_digest,
        locked=op.locked,
        strata=strata,
        kits=kits,
        spare_kits=spare_kit_count(op.session),
        spare_kits_left=left,
        state=list_state(op.trial),
        generated_by=op.trial.list_generated_by,
        approved_by=op.trial.list_approved_by,
        approved_at=audit.utc_text(approved_at) if approved_at else None,
    )

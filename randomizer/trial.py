"""Trial setup and custody: init, users, key rotation, list generation and verification."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from randomizer import audit
from randomizer.access import (
    Permission,
    Role,
    check_password,
    check_user_name,
    hash_password,
)
from randomizer.allocation.generator import generate_schedule
from randomizer.allocation.kits import new_codes
from randomizer.allocation.stream import format_seed, parse_seed
from randomizer.context import Operation
from randomizer.design import TrialDesign
from randomizer.errors import Hint, InvalidInput, ListMismatch, NotFound, StateError
from randomizer.models import Kit, Slot, Stratum, Trial, User
from randomizer.sealed import (
    open_allocation,
    open_kit_content,
    open_seed_text,
    seal_allocation,
    seal_kit_content,
    seal_seed,
)
from randomizer.sessions import revoke_user_tokens
from randomizer.store import Store
from randomizer.vault import (
    Vault,
    create_key_file,
    new_data_key,
    read_key_file,
    unwrap_data_key,
    wrap_data_key,
)


@dataclass(frozen=True)
class UserInfo:
    """A user as listed to an admin (never the hash)."""

    name: str
    role: str
    disabled: bool
    created_at: str


@dataclass(frozen=True)
class StratumSummary:
    """Planned and generated slots of one stratum."""

    stratum: str
    planned: int
    generated: int


@dataclass(frozen=True)
class ListSummary:
    """What list generation or verification may show: counts and the list commitment."""

    strata: tuple[StratumSummary, ...]
    kits: int
    spare_kits: int
    commitment: str


@dataclass(frozen=True)
class StratumStatus:
    """How far one stratum of the list has been used (no arm)."""

    stratum: str
    planned: int
    generated: int
    used: int


@dataclass(frozen=True)
class ListStatus:
    """Where the allocation list stands, as every role may see it: counts, never arms."""

    generated: bool
    generated_at: str | None
    commitment: str | None
    locked: bool
    strata: tuple[StratumStatus, ...]
    kits: dict[str, int]
    spare_kits: int
    spare_kits_left: int


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


def init_trial(store: Store, key_file: Path, design: TrialDesign, design_toml: str,
               admin: str, password: str, now: datetime) -> InitResult:
    """Create schema, trial, key file and first admin, all or nothing."""
    check_user_name(admin)
    check_password(password)
    if store.has_schema():
        raise StateError(f"{store.url} already holds a trial: create the new trial in another "
                         "database, or keep working with that one", hint=Hint.OTHER_DATABASE)
    trial_key = create_key_file(key_file)
    try:
        with store.transaction() as session:
            store.create_schema(session)
            data_key = new_data_key()
            vault = Vault(data_key, design.id)
            session.add(Trial(id=design.id, design_toml=design_toml,
                              design_digest=design.digest(),
                              wrapped_data_key=wrap_data_key(trial_key, data_key),
                              created_at=now))
            session.add(User(name=admin, role=Role.ADMIN, password_hash=hash_password(password),
                             disabled=False, created_at=now))
            audit.start_chain(session)
            session.flush()
            key = vault.audit_key()
            audit.append(session, key, now=now, user=admin, role=Role.ADMIN,
                         action="trial.init", subject=design.id,
                         details={"design_digest": design.digest(), "title": design.title})
            audit.append(session, key, now=now, user=admin, role=Role.ADMIN, action="user.add",
                         subject=admin, details={"before": None,
                                                 "after": {"role": "admin", "disabled": False}})
    except BaseException:
        key_file.unlink(missing_ok=True)
        raise
    return InitResult(trial=design.id, admin=admin, key_file=str(key_file), database=store.url)


def _user(op: Operation, name: str) -> User:
    user = op.session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise NotFound(f"no user {name!r}: check the name against the list of users",
                       hint=Hint.LIST_USERS)
    return user


def add_user(op: Operation, name: str, role: Role, password: str) -> UserInfo:
    """Create a user (admin only)."""
    check_user_name(name)
    check_password(password)
    if op.session.scalars(select(User).where(User.name == name)).one_or_none() is not None:
        raise StateError(f"user {name!r} already exists: pick another name")
    user = User(name=name, role=role, password_hash=hash_password(password), disabled=False,
                created_at=op.now)
    op.session.add(user)
    op.audit("user.add", subject=name,
             details={"before": None, "after": {"role": role.value, "disabled": False}})
    return _info(user)


def list_users(op: Operation) -> list[UserInfo]:
    """Every user, by name."""
    return [_info(u) for u in op.session.scalars(select(User).order_by(User.name))]


def disable_user(op: Operation, name: str, reason: str) -> UserInfo:
    """Disable an account; the last enabled admin cannot be disabled."""
    user = _user(op, name)
    if user.disabled:
        raise StateError(f"user {name!r} is already disabled")
    if user.role == Role.ADMIN:
        admins = op.session.scalar(select(func.count()).select_from(User).where(
            User.role == Role.ADMIN, User.disabled.is_(False)))
        if admins == 1:
            raise StateError(f"user {name!r} is the last enabled admin: add another admin first")
    user.disabled = True
    revoke_user_tokens(op.session, name, op.now, "user disabled")
    op.audit("user.disable", subject=name, reason=reason,
             details={"before": {"role": user.role, "disabled": False},
                      "after": {"role": user.role, "disabled": True}})
    return _info(user)


def change_password(op: Operation, name: str, password: str) -> UserInfo:
    """Set a new password: one's own, or anyone's for an admin."""
    check_password(password)
    if name != op.user.name:
        op.require(Permission.MANAGE_USERS)
    user = _user(op, name)
    user.password_hash = hash_password(password)
    revoke_user_tokens(op.session, name, op.now, "password changed")
    op.audit("user.passwd", subject=name,
             details={"before": {"password": "(old hash)"}, "after": {"password": "(new hash)"}})
    return _info(user)


def _info(user: User) -> UserInfo:
    return UserInfo(name=user.name, role=user.role, disabled=user.disabled,
                    created_at=audit.utc_text(user.created_at))


def rotate_key(op: Operation, old_key_file: Path, new_key_file: Path) -> str:
    """Re-wrap the data key under a new trial key written to ``new_key_file``."""
    if new_key_file.resolve() == old_key_file.resolve():
        raise InvalidInput("the new key file must be a new path, not the current key file")
    data_key = unwrap_data_key(read_key_file(old_key_file), op.trial.wrapped_data_key)
    new_key = create_key_file(new_key_file)
    try:
        op.trial.wrapped_data_key = wrap_data_key(new_key, data_key)
        op.audit("key.rotate", subject=op.trial.id,
                 details={"new_key_file": str(new_key_file)})
        op.session.flush()
    except BaseException:
        new_key_file.unlink(missing_ok=True)
        raise
    return str(new_key_file)


def generate_list(op: Operation) -> ListSummary:
    """Draw a secret seed and store the sealed list and kits, in this one transaction."""
    if op.trial.seed_sealed is not None:
        raise StateError("the allocation list already exists: a trial has one list; "
                         "verify it instead", hint=Hint.VERIFY_LIST)
    design = op.design
    seed = secrets.token_bytes(32)
    schedule = generate_schedule(design, seed)
    vault = op.vault
    strata: dict[str, Stratum] = {}
    for position, key in enumerate(design.strata(), start=1):
        strata[key] = Stratum(key=key, position=position, planned=design.stratum_length,
                              size=0, next_sequence=1)
    op.session.add_all(strata.values())
    op.session.flush()
    slots: list[tuple[Slot, str]] = []
    for entry in schedule.slots():
        stratum = strata[entry.stratum]
        stratum.size += 1
        slot = Slot(stratum_id=stratum.id, sequence=entry.sequence,
                    allocation_sealed=seal_allocation(vault, entry.stratum, entry.sequence,
                                                      entry.arm, entry.block, entry.block_size))
        slots.append((slot, entry.arm))
    op.session.add_all(s for s, _ in slots)
    op.session.flush()

    spares = design.spares_per_arm()
    dosing = len(slots) * len(design.visits)
    codes = iter(new_codes(dosing + spares * len(design.arms)))
    kits: list[Kit] = []
    for slot, arm in slots:
        for visit in design.visits:
            code = next(codes)
            kits.append(Kit(code=code, content_sealed=seal_kit_content(vault, code, arm),
                            slot_id=slot.id, visit=visit.number, spare=False, status="available"))
    spare_arms = [arm for arm in design.arm_ids for _ in range(spares)]
    # Rows are stored in insertion order: shuffle spares so row order says nothing of arms.
    secrets.SystemRandom().shuffle(spare_arms)
    for arm in spare_arms:
        code = next(codes)
        kits.append(Kit(code=code, content_sealed=seal_kit_content(vault, code, arm),
                        spare=True, status="available"))
    op.session.add_all(kits)
    spare_kits = spare_kit_count(op.session)

    commitment = list_commitment(seed, schedule.digest())
    op.trial.seed_sealed = seal_seed(vault, format_seed(seed))
    op.trial.list_digest = commitment
    op.trial.list_generated_at = op.now
    summary = ListSummary(
        strata=tuple(StratumSummary(k, s.planned, s.size) for k, s in strata.items()),
        kits=len(kits), spare_kits=spare_kits, commitment=commitment)
    op.audit("list.generate", subject=op.trial.id, details={
        "commitment": commitment, "kits": len(kits), "spare_kits": spare_kits,
        "strata": {s.stratum: {"planned": s.planned, "generated": s.generated}
                   for s in summary.strata}})
    return summary


def spare_kit_count(session: Session) -> int:
    """Spare kits in the list, issued as replacements or not: the one count of spares."""
    return session.scalar(select(func.count()).select_from(Kit)
                          .where(Kit.spare.is_(True))) or 0


def require_list(op: Operation) -> bytes:
    """The trial's sealed seed; refused while no allocation list has been generated."""
    if op.trial.seed_sealed is None:
        raise StateError("no allocation list yet: an admin generates the allocation list first",
                         hint=Hint.GENERATE_LIST)
    return op.trial.seed_sealed


def open_seed(op: Operation) -> bytes:
    """The trial's seed (unblinded callers only)."""
    return parse_seed(open_seed_text(op.vault, require_list(op)))


def verify_list(op: Operation) -> ListSummary:
    """Regenerate the list from the sealed seed and compare it with every stored slot and kit."""
    seed = open_seed(op)
    schedule = generate_schedule(op.design, seed)
    commitment = list_commitment(seed, schedule.digest())
    strata = {s.id: s for s in op.session.scalars(select(Stratum))}
    stored: dict[tuple[str, int], tuple[str, int, int]] = {}
    for slot in op.session.scalars(select(Slot)):
        key = strata[slot.stratum_id].key
        stored[(key, slot.sequence)] = open_allocation(op.vault, key, slot.sequence,
                                                       slot.allocation_sealed)
    expected = {(e.stratum, e.sequence): (e.arm, e.block, e.block_size)
                for e in schedule.slots()}
    problems: list[str] = []
    if commitment != op.trial.list_digest:
        problems.append("the list commitment differs")
    if stored != expected:
        problems.append("stored slots differ from the regenerated list")
    slot_arm = {slot_id: stored[(strata[s.stratum_id].key, s.sequence)][0]
                for slot_id, s in ((s.id, s) for s in op.session.scalars(select(Slot)))}
    kits = 0
    for kit in op.session.scalars(select(Kit)):
        kits += 1
        content = open_kit_content(op.vault, kit.code, kit.content_sealed)
        if kit.slot_id is not None and slot_arm.get(kit.slot_id) != content:
            problems.append(f"kit {kit.code} does not hold its slot's content")
            break
    details = {"commitment": commitment, "result": "mismatch" if problems else "match"}
    op.audit("list.verify", subject=op.trial.id, details=details)
    if problems:
        raise ListMismatch("allocation list verification FAILED: " + "; ".join(problems))
    return ListSummary(
        strata=tuple(StratumSummary(s.key, s.planned, s.size)
                     for s in sorted(strata.values(), key=lambda s: s.position)),
        kits=kits, spare_kits=spare_kit_count(op.session), commitment=commitment)


def list_status(op: Operation) -> ListStatus:
    """Whether the list exists, how much of each stratum is used, kits by status (any role)."""
    op.audit("list.status")
    strata = tuple(StratumStatus(s.key, s.planned, s.size, s.next_sequence - 1)
                   for s in op.session.scalars(select(Stratum).order_by(Stratum.position)))
    kits = dict.fromkeys(("available", "dispensed", "prepared", "voided"), 0)
    for status, count in op.session.execute(select(Kit.status, func.count())
                                            .group_by(Kit.status)):
        kits[status] = count
    left = op.session.scalar(select(func.count()).select_from(Kit).where(
        Kit.spare.is_(True), Kit.status == "available")) or 0
    generated_at = op.trial.list_generated_at
    return ListStatus(generated=op.trial.seed_sealed is not None,
                      generated_at=audit.utc_text(generated_at) if generated_at else None,
                      commitment=op.trial.list_digest, locked=op.locked, strata=strata,
                      kits=kits, spare_kits=spare_kit_count(op.session),
                      spare_kits_left=left)

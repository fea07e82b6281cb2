"""The analysis files of the full unblinding (and of its dummy): tidy, typed, described.

``unblind all`` writes, besides its one-row-per-participant CSV of old
(``unblinding.csv``), the files a statistician reads straight into an analysis:

- ``participants.csv``: one row per participant; the clinical randomization
  date (``--date``) and the entry time as separate columns, one column per
  stratification factor and per eligibility answer, void status, and the
  emergency unblinding's date, user and reason;
- ``kits.csv``: one row per kit issued (long form);
- ``adsl.csv``: the subject-level variables CDISC ADaM users expect (ARM/ARMCD,
  ACTARM/ACTARMCD, TRT01P/TRT01A, RANDDT, the stratum factors as STRATwR);
- ``columns.json``: every column of every file with its type and meaning, and
  the arm codes with their labels.

The dummy export (:mod:`randomizer.unblinding.dummy`) writes the same files with
its made-up, marked arms, so a program written against it runs on the real ones.
Values are text as the CSV module writes it: dates ``YYYY-MM-DD``, times ISO 8601
UTC with microseconds and ``Z``, flags ``yes``/``no`` (``Y``/``N`` in ADSL), an
empty cell for a missing value.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from randomizer.design import TrialDesign

EXPORT_FORMAT = "randomizer-export/1"
"""The version of the files' layout, written into ``columns.json``."""


@dataclass(frozen=True)
class Column:
    """One column of an export file: its name, type and meaning."""

    name: str
    type: str
    description: str


TYPES = {
    "string": "text",
    "integer": "a whole number",
    "date": "calendar date, ISO 8601 YYYY-MM-DD",
    "datetime": "UTC time, ISO 8601 with microseconds and Z",
    "flag": "yes or no",
    "flag_yn": "Y or N (ADaM convention)",
    "arm_code": "an arm code; see 'arms' for its label",
    "arm_label": "an arm label; see 'arms'",
}
"""The column types of ``columns.json`` and what their text looks like."""


def _legacy_columns() -> list[Column]:
    return [
        Column("participant", "string", "Participant id."),
        Column("site", "string", "Site that randomized the participant."),
        Column("stratum", "string", "Canonical stratum key (factor=level;...), 'all' if none."),
        Column("randomization_number", "string", "Randomization number (R-007, R-2-007)."),
        Column("arm", "arm_code", "Allocated arm."),
        Column("arm_label", "arm_label", "Allocated arm's label."),
        Column("randomized_at", "datetime", "When the randomization was entered (not --date)."),
        Column("kits", "string", "Every kit issued: VISIT:CODE, '(voided)' after a voided one."),
        Column("emergency_unblinded", "flag", "Whether the code was broken in an emergency."),
        Column("randomized_by", "string", "User who randomized (the signature's printed name)."),
        Column("status", "string", "randomized, or voided when made in error."),
        Column("voided_at", "datetime", "When the randomization was voided; empty if not."),
        Column("voided_by", "string", "User who voided it (the signature's printed name)."),
        Column("void_reason", "string", "Why the randomization was voided; empty if not."),
        Column(
            "randomization_signature_meaning",
            "string",
            "Meaning of the randomization's electronic signature; empty before signatures.",
        ),
        Column(
            "void_signature_meaning",
            "string",
            "Meaning of the void's electronic signature; empty if not voided.",
        ),
        Column("dummy", "flag", "yes in a dummy export (made-up arms), no in the real one."),
    ]


def participant_columns(design: TrialDesign) -> list[Column]:
    """The columns of ``participants.csv`` for ``design``."""
    return [
        Column("participant", "string", "Participant id."),
        Column("site", "string", "Site that randomized the participant."),
        Column("stratum", "string", "Canonical stratum key (factor=level;...), 'all' if none."),
        *[
            Column(f"stratum_{f.name}", "string", f"Stratification factor {f.name}: {f.question}")
            for f in design.factors
        ],
        Column("randomization_number", "string", "Randomization number (R-007, R-2-007)."),
        Column("arm", "arm_code", "Allocated arm."),
        Column("arm_label", "arm_label", "Allocated arm's label."),
        Column("randomization_date", "date", "Clinical randomization date (randomize --date)."),
        Column("entered_at", "datetime", "When the randomization was entered in the system."),
        Column("randomized_by", "string", "User who entered the randomization."),
        *[
            Column(f"answer_{c.id}", "string", f"Eligibility answer as entered: {c.question}")
            for c in design.criteria
        ],
        Column("voided", "flag", "Whether the randomization was voided."),
        Column("voided_at", "datetime", "When it was voided."),
        Column("voided_by", "string", "User who voided it."),
        Column("void_reason", "string", "Why it was voided."),
        Column("emergency_unblinded", "flag", "Whether the code was broken in an emergency."),
        Column("emergency_unblinded_at", "datetime", "When the code was first broken."),
        Column("emergency_unblinded_by", "string", "User who first broke the code."),
        Column("emergency_unblinding_reason", "string", "The reason given that first time."),
        Column("dummy", "flag", "yes in a dummy export (made-up arms), no in the real one."),
    ]


KIT_COLUMNS = [
    Column("participant", "string", "Participant id."),
    Column("randomization_number", "string", "Participant's randomization number."),
    Column("visit", "integer", "Dosing visit number."),
    Column("kit", "string", "Kit code."),
    Column("requested_at", "datetime", "When the kit was requested (issued)."),
    Column("dosing_date", "date", "Visit (dosing) date given with the request."),
    Column("prepared_at", "datetime", "When the pharmacy recorded its preparation."),
    Column("prepared_by", "string", "Pharmacist who prepared it."),
    Column("status", "string", "dispensed, prepared or voided."),
    Column("void_reason", "string", "Why the kit was voided (replaced)."),
    Column("replaced_by", "string", "Code of the kit issued in its place."),
    Column("dummy", "flag", "yes in a dummy export, no in the real one."),
]
"""The columns of ``kits.csv``."""


def adsl_columns(design: TrialDesign) -> list[Column]:
    """The columns of ``adsl.csv`` (CDISC ADaM subject-level names)."""
    return [
        Column("STUDYID", "string", "Study identifier (the trial id)."),
        Column("USUBJID", "string", "Unique subject identifier: STUDYID-SUBJID."),
        Column("SUBJID", "string", "Subject identifier for the study (participant id)."),
        Column("SITEID", "string", "Study site identifier."),
        Column("ARMCD", "arm_code", "Planned arm code."),
        Column("ARM", "arm_label", "Description of planned arm."),
        Column(
            "ACTARMCD", "arm_code", "Actual arm code: the allocated arm, whose kits were issued."
        ),
        Column("ACTARM", "arm_label", "Description of actual arm."),
        Column("TRT01P", "arm_label", "Planned treatment for period 01."),
        Column("TRT01A", "arm_label", "Actual treatment for period 01."),
        Column("RANDDT", "date", "Date of randomization (the clinical date, not entry time)."),
        Column("RANDFL", "flag_yn", "Randomized population flag."),
        *[
            Column(f"STRAT{w}R", "string", f"Stratification factor {f.name} used for randomization")
            for w, f in enumerate(design.factors, start=1)
        ],
        Column("DUMMYFL", "flag_yn", "Y in a dummy export (made-up arms)."),
    ]


# ParticipantFacts and KitFacts are NamedTuples, not frozen dataclasses: an export makes
# one per participant and per kit (100,000s), and a frozen dataclass costs several times
# as much to make.


class ParticipantFacts(NamedTuple):
    """What the analysis files say of one participant besides the arm."""

    row_id: int
    participant: str
    site: str
    stratum: str
    randomization_number: str
    randomization_date: str
    entered_at: str
    randomized_by: str
    answers: Mapping[str, str]
    voided_at: str
    voided_by: str
    void_reason: str
    unblinded_at: str
    unblinded_by: str
    randomization_meaning: str = ""
    void_meaning: str = ""


class KitFacts(NamedTuple):
    """One issued kit as ``kits.csv`` lists it: its cells from visit to void reason, as
    CSV text (:func:`csv_text`; an export holds every kit, so the compact form), and
    its row id, by which the export looks up the code of the kit that replaced it."""

    cells: str
    kit_id: int


def csv_text(values: Sequence[object]) -> str:
    """Cells as one CSV line's text without its end, quoted as the csv module's excel
    dialect quotes (a cell holding a comma, quote or line break, quotes doubled)."""
    out = []
    for value in values:
        text = str(value)
        if "," in text or '"' in text or "\n" in text or "\r" in text:
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out)


def stratum_levels(key: str) -> dict[str, str]:
    """``edss=high;type=SPMS`` as a mapping; ``all`` as none."""
    if key == "all":
        return {}
    return dict(pair.split("=", 1) for pair in key.split(";"))


_CSV_FILES = ("participants", "kits", "adsl")


class AnalysisFiles:
    """Builds ``participants.csv``, ``kits.csv``, ``adsl.csv`` and ``columns.json`` by batch."""

    def __init__(
        self,
        design: TrialDesign,
        marked: Mapping[str, tuple[str, str]],
        dummy: bool,
        kits: Mapping[int, Sequence[KitFacts]],
        replaced_by: Mapping[int, str],
        reasons: Mapping[int, str],
        out: Mapping[str, BinaryIO] | None = None,
    ) -> None:
        """``out``: a binary stream to write each file into, by name (``kits.csv``...);
        without it, the files are built in memory and :meth:`finish` returns them."""
        self.design = design
        self.marked = marked
        self.dummy = dummy
        self.kits = kits
        self.replaced_by = replaced_by
        self.reasons = reasons
        # UTF-8 bytes from the start: a StringIO's text, then its encoded copy, would hold
        # every file twice (an export of 100,000 participants is tens of MiB)
        self._buffers: dict[str, io.BytesIO] = {}
        if out is None:
            self._buffers = {name: io.BytesIO() for name in (*_CSV_FILES, "columns")}
        self._out: dict[str, BinaryIO] = (
            dict(self._buffers)
            if out is None
            else {
                name: out[f"{name}.{'json' if name == 'columns' else 'csv'}"]
                for name in (*_CSV_FILES, "columns")
            }
        )
        self._texts = {
            name: io.TextIOWrapper(self._out[name], encoding="utf-8", newline="")
            for name in _CSV_FILES
        }
        self._writers = {
            name: csv.writer(text, lineterminator="\n") for name, text in self._texts.items()
        }
        self._columns = {
            "participants": participant_columns(design),
            "kits": KIT_COLUMNS,
            "adsl": adsl_columns(design),
        }
        for name, columns in self._columns.items():
            self._writers[name].writerow([c.name for c in columns])

    def add(self, facts: Sequence[ParticipantFacts], arms: Sequence[str]) -> None:
        """Write the rows of one batch of participants with their arm ids."""
        flag = "yes" if self.dummy else "no"
        flag_yn = "Y" if self.dummy else "N"
        factors = [f.name for f in self.design.factors]
        criteria = [c.id for c in self.design.criteria]
        participants, adsl = self._writers["participants"], self._writers["adsl"]
        kits = self._texts["kits"]
        for fact, arm_id in zip(facts, arms, strict=True):
            code, label = self.marked[arm_id]
            levels = stratum_levels(fact.stratum)
            unblinded = fact.unblinded_at != ""
            participants.writerow(
                [
                    fact.participant,
                    fact.site,
                    fact.stratum,
                    *[levels.get(name, "") for name in factors],
                    fact.randomization_number,
                    code,
                    label,
                    fact.randomization_date,
                    fact.entered_at,
                    fact.randomized_by,
                    *[fact.answers.get(criterion, "") for criterion in criteria],
                    "yes" if fact.voided_at else "no",
                    fact.voided_at,
                    fact.voided_by,
                    fact.void_reason,
                    "yes" if unblinded else "no",
                    fact.unblinded_at,
                    fact.unblinded_by,
                    self.reasons.get(fact.row_id, "") if unblinded else "",
                    flag,
                ]
            )
            issued = self.kits.get(fact.row_id, ())
            if issued:
                who = csv_text([fact.participant, fact.randomization_number])
                kits.write(
                    "".join(
                        f"{who},{kit.cells},{csv_text([self.replaced_by.get(kit.kit_id, '')])},"
                        f"{flag}\n"
                        for kit in issued
                    )
                )
            adsl.writerow(
                [
                    self.design.id,
                    f"{self.design.id}-{fact.participant}",
                    fact.participant,
                    fact.site,
                    code,
                    label,
                    code,
                    label,
                    label,
                    label,
                    fact.randomization_date,
                    "Y",
                    *[levels.get(name, "") for name in factors],
                    flag_yn,
                ]
            )

    def finish(self, legacy_name: str) -> dict[str, bytes]:
        """Write ``columns.json``, which describes them all, and end the files; built in
        memory, the files by name (three CSVs and ``columns.json``), else nothing."""
        for text in self._texts.values():
            text.flush()
            text.detach()  # the binary stream stays open: its owner closes it
        description = {
            "format": EXPORT_FORMAT,
            "trial": self.design.id,
            "dummy": self.dummy,
            "types": TYPES,
            "arms": [
                {
                    "code": self.marked[arm.id][0],
                    "label": self.marked[arm.id][1],
                    "description": arm.description,
                }
                for arm in self.design.arms
            ],
            "files": {
                legacy_name: _described(
                    "One row per participant, kits packed into one cell (the first shape).",
                    _legacy_columns(),
                ),
                "participants.csv": _described(
                    "One row per randomized participant.", self._columns["participants"]
                ),
                "kits.csv": _described(
                    "One row per kit issued to a participant, by participant then visit.",
                    self._columns["kits"],
                ),
                "adsl.csv": _described(
                    "CDISC ADaM subject-level variables, one row per participant.",
                    self._columns["adsl"],
                ),
            },
        }
        self._out["columns"].write((json.dumps(description, indent=2) + "\n").encode("utf-8"))
        return {
            f"{name}.{'json' if name == 'columns' else 'csv'}": buffer.getvalue()
            for name, buffer in self._buffers.items()
        }


def _described(rows: str, columns: Sequence[Column]) -> dict[str, Any]:
    return {
        "rows": rows,
        "columns": [
            {"name": c.name, "type": c.type, "description": c.description} for c in columns
        ],
    }

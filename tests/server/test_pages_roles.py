"""The pharmacist's, monitor's, statistician's and admin's pages."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest

from randomizer.allocation import service
from randomizer.server.pages import oversight
from tests.support.blinded_path import FOUR_DAY0, live_kit, participant_arms
from tests.support.database import audit_rows
from tests.support.exosome import DESIGN, arm_words_in
from tests.support.trial import PASSWORDS, Run, TrialFiles
from tests.support.web import Browser, logged_in, text_of, web_app


def _actions(run: Run) -> list[str]:
    return [r["action"] for r in audit_rows(run.files.db_url)]


# the pharmacist ---------------------------------------------------------------------


def test_the_queue_lists_requested_kits_oldest_first_with_visit_and_date(
    pages: Callable[[], Browser], run: Run
) -> None:
    petra = logged_in(pages, "petra")
    page = petra.get("/pharmacy")
    assert page.status_code == 200
    kits = [live_kit(run.files, f"P-00{n}", 1) for n in range(1, 5)]
    positions = [page.text.index(kit) for kit in kits]
    assert positions == sorted(positions)  # randomized in this order, so requested in it
    assert FOUR_DAY0.isoformat() in page.text
    petra.post("/pharmacy/prepare", {"code": kits[0]})
    assert kits[0] not in petra.get("/pharmacy").text


@pytest.mark.parametrize("typed", ["{code}", "{lower}", " {nodash} ", "{oh}"])
def test_lookup_reads_a_typed_or_scanned_code_forgivingly(
    pages: Callable[[], Browser], run: Run, typed: str
) -> None:
    code = live_kit(run.files, "P-001", 1)
    variants = {
        "code": code,
        "lower": code.lower(),
        "nodash": code.replace("-", ""),
        "oh": code.replace("0", "O"),
    }
    petra = logged_in(pages, "petra")
    page = petra.get("/pharmacy/lookup", code=typed.format(**variants))
    assert page.status_code == 200
    assert f"<h2>Kit {code}</h2>" in page.text
    assert f"Prepare kit {code} and record it" in page.text


def test_lookup_of_a_typo_names_it(pages: Callable[[], Browser], run: Run) -> None:
    code = live_kit(run.files, "P-001", 1)
    typo = code[:-1] + ("0" if code[-1] != "0" else "2")
    page = logged_in(pages, "petra").get("/pharmacy/lookup", code=typo)
    assert page.status_code == 400
    assert "fails its check character: probably a typo" in text_of(page.text)
    assert 'id="code-error"' in page.text and 'aria-invalid="true"' in page.text


def test_prepare_records_shows_what_to_prepare_and_the_label_never_names_the_arm(
    pages: Callable[[], Browser], run: Run
) -> None:
    code = live_kit(run.files, "P-001", 1)
    arm = DESIGN.arm(participant_arms(run.files)["P-001"])
    petra = logged_in(pages, "petra")
    petra.get(f"/pharmacy/lookup?code={code}")
    prepared = petra.post("/pharmacy/prepare", {"code": code})
    assert prepared.status_code == 200
    assert prepared.headers["Cache-Control"] == "no-store"
    assert arm.label in text_of(prepared.text)
    assert "pharmacy.prepare" in _actions(run)
    again = petra.post("/pharmacy/prepare", {"code": code})
    assert again.status_code == 409
    assert f"kit {code} was already prepared on" in text_of(again.text)
    label = petra.get(f"/pharmacy/label/{code.lower()}")
    assert label.status_code == 200
    text = text_of(label.text)
    for shown in (DESIGN.id, "P-001", "R-001", "Visit: 1", code, "For clinical trial use only"):
        assert shown in text
    assert "<svg" in label.text and f"<title>Kit code {code}</title>" in label.text
    assert arm_words_in(label.text) == []
    assert "style=" not in label.text and "<script" not in label.text
    assert 'href="/static/print.css" media="print"' in label.text


def test_no_label_before_the_kit_is_prepared(pages: Callable[[], Browser], run: Run) -> None:
    code = live_kit(run.files, "P-001", 1)
    page = logged_in(pages, "petra").get(f"/pharmacy/label/{code}")
    assert page.status_code == 409
    assert f"kit {code} is requested, not prepared: a label is printed" in text_of(page.text)


def test_kit_list_csv_has_the_history_columns_and_is_never_cached(
    pages: Callable[[], Browser], run: Run
) -> None:
    code = live_kit(run.files, "P-002", 1)
    ivan = logged_in(pages, "ivan")
    ivan.get("/kits/replace")
    ivan.post("/kits/replace", {"code": code, "reason": "bag damaged"})
    new = live_kit(run.files, "P-002", 1)
    petra = logged_in(pages, "petra")
    petra.get("/")
    petra.post("/pharmacy/prepare", {"code": new})
    assert "Download the list as CSV" in petra.get("/pharmacy/kits").text
    download = petra.get("/pharmacy/kits.csv")
    assert download.status_code == 200
    assert download.headers["Cache-Control"] == "no-store"
    assert download.headers["content-disposition"] == 'attachment; filename="kits.csv"'
    rows = {r["kit"]: r for r in csv.DictReader(io.StringIO(download.text))}
    assert tuple(next(iter(rows.values()))) == service.KIT_CSV_COLUMNS
    assert (rows[code]["status"], rows[code]["void_reason"], rows[code]["replaced_by"]) == (
        "voided",
        "bag damaged",
        new,
    )
    assert (rows[new]["status"], rows[new]["requested_by"], rows[new]["prepared_by"]) == (
        "prepared",
        "ivan",
        "petra",
    )
    other = live_kit(run.files, "P-003", 1)
    assert rows[other]["status"] == "requested" and rows[other]["requested_at"]
    assert "dispensed" not in download.text


# the monitor ------------------------------------------------------------------------


def test_the_audit_trail_pages_and_filters(
    pages: Callable[[], Browser], run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oversight, "AUDIT_PAGE", 5)
    mona = logged_in(pages, "mona")
    first = mona.get("/audit")
    assert first.status_code == 200
    seqs = [r["seq"] for r in audit_rows(run.files.db_url)]
    assert first.text.count('<tr><th scope="row">') == 5
    assert f'<th scope="row">{seqs[0]}</th>' in first.text
    assert f'<th scope="row">{seqs[5]}</th>' not in first.text
    following = mona.follow_link("Next page")
    assert following.status_code == 200 and "First page" in following.text
    assert f'<th scope="row">{seqs[5]}</th>' in following.text
    assert f'<th scope="row">{seqs[4]}</th>' not in following.text
    filtered = mona.get("/audit", action="randomize")
    randomized = [r for r in audit_rows(run.files.db_url) if r["action"] == "randomize"]
    assert filtered.text.count("<td>randomize</td>") == len(randomized) == 4
    by_subject = mona.get("/audit", subject="P-002")
    assert "<td>P-002</td>" in by_subject.text and "<td>P-001</td>" not in by_subject.text


def test_verify_with_and_without_a_signed_checkpoint(
    pages: Callable[[], Browser], run: Run
) -> None:
    signing = run.files.directory / "qa.pem"
    run.ok("audit", "keygen", "--out", str(signing), user="alice")
    note = run.ok("audit", "checkpoint", "--signing-key", str(signing), user="alice").stdout
    public = (run.files.directory / "qa.pem.pub").read_text(encoding="utf-8")
    mona = logged_in(pages, "mona")
    mona.get("/verify")
    plain = mona.post("/verify", {"checkpoint": "", "public_key": ""})
    assert plain.status_code == 200 and "Audit trail verified:" in text_of(plain.text)
    anchored = mona.post("/verify", {"checkpoint": note, "public_key": public})
    assert "the signed checkpoint at event" in text_of(anchored.text)
    forged = mona.post(
        "/verify", {"checkpoint": note.replace("sequence: ", "sequence: 1"), "public_key": public}
    )
    assert forged.status_code in (400, 409)
    assert "Audit trail verified" not in forged.text
    half = mona.post("/verify", {"checkpoint": note, "public_key": ""})
    assert half.status_code == 400
    assert "give both" in text_of(half.text)


# the statistician --------------------------------------------------------------------


def test_the_final_unblinding_is_refused_before_the_lock_then_downloaded_and_audited(
    pages: Callable[[], Browser], run: Run
) -> None:
    stan = logged_in(pages, "stan")
    stan.get("/unblinding")
    assert "<h2>By arm</h2>" not in stan.get("/report").text
    refused = stan.post("/unblinding", stan.signed())
    assert refused.status_code in (403, 409)
    assert "lock" in text_of(refused.text)
    assert arm_words_in(refused.text) == []
    alice = logged_in(pages, "alice")
    alice.get("/lock")
    unconfirmed = alice.post("/lock", alice.signed({"reason": "database lock"}))
    assert unconfirmed.status_code == 400 and 'id="confirm-error"' in unconfirmed.text
    locked = alice.post("/lock", alice.signed({"reason": "database lock", "confirm": "yes"}))
    assert locked.status_code == 200 and "The database is locked." in locked.text
    report = stan.get("/report")
    assert "<h2>By arm</h2>" in report.text
    assert set(arm_words_in(report.text)) >= set(DESIGN.arm_ids)
    stan.get("/unblinding")
    export = stan.post("/unblinding", stan.signed())
    assert export.status_code == 200
    assert export.headers["Cache-Control"] == "no-store"
    assert export.headers["content-disposition"] == 'attachment; filename="unblinding.csv"'
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 4
    assert "unblind.all" in _actions(run)
    stan.get("/list/verify")
    verified = stan.post("/list/verify")
    assert verified.status_code == 200 and "matches" in text_of(verified.text)


# the admin ---------------------------------------------------------------------------


def test_admin_adds_disables_and_resets_users(pages: Callable[[], Browser]) -> None:
    alice = logged_in(pages, "alice")
    alice.get("/users")
    added = alice.post(
        "/users", {"name": "iris", "role": "investigator", "password": "pw-iris-123456"}
    )
    assert added.status_code == 303 and added.headers["location"] == "/users?done=added"
    listing = alice.follow()
    assert '<th scope="row">iris</th>' in listing.text and "The user is added." in listing.text
    short = alice.post("/users", {"name": "otto", "role": "monitor", "password": "short"})
    assert short.status_code == 400 and 'class="error-summary"' in short.text
    iris = pages()
    assert iris.login("iris", "pw-iris-123456").status_code == 200
    alice.get("/users")
    reset = alice.post("/users/iris/password", {"password": "pw-iris-new-123456"})
    assert reset.status_code == 303
    assert iris.get("/").status_code == 303  # her sessions ended
    iris.login("iris", "pw-iris-new-123456")
    alice.get("/users")
    alice.post("/users/iris/disable", {"reason": "left"})
    assert iris.get("/").status_code == 303
    again = pages()
    again.get("/login")
    refused = again.post("/login", {"user": "iris", "password": "pw-iris-new-123456"})
    assert refused.status_code == 401
    assert PASSWORDS["alice"] not in refused.text


def test_admin_sees_the_list_status(pages: Callable[[], Browser]) -> None:
    page = logged_in(pages, "alice").get("/list")
    assert page.status_code == 200
    assert "Commitment" in page.text and "Spare kits left" in page.text
    assert arm_words_in(page.text) == []


def test_admin_generates_the_list_once(trial_with_users: TrialFiles) -> None:
    with web_app(trial_with_users.db_url, trial_with_users.key_file) as make:
        alice = logged_in(make, "alice")
        page = alice.get("/list")
        assert "The list is not generated yet." in page.text
        done = alice.post("/list/generate")
        assert done.status_code == 303 and done.headers["location"] == "/list?done=generated"
        shown = alice.follow()
        assert "The list is generated." in shown.text and "Commitment" in shown.text
        again = alice.post("/list/generate")
        assert again.status_code == 409 and 'class="error-summary"' in again.text
        assert arm_words_in(again.text) == []
    actions = [r["action"] for r in audit_rows(trial_with_users.db_url)]
    assert actions.count("list.generate") == 1

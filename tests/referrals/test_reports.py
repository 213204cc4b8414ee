"""Reports to the physician: drafted from the record, edited, signed or sent unsigned, with a PDF whose text
carries the recorded figures."""

import datetime as dt
import io

import pytest
from pypdf import PdfReader

from referrals import reports
from referrals.errors import DomainError, ErrorCode
from referrals.models import BusinessStatus, ClinicalFacts, ReferralStatus, ReportKind, ReportStatus
from referrals.records import ComponentPlan, program_set
from referrals.reports import (
    Recorded,
    SessionFact,
    draft_build,
    report_draft,
    report_edit,
    report_recorded,
    report_send_unsigned,
    report_sign,
)
from referrals.selectors import case_time_zone
from referrals.services import referral_update
from tests.referrals.report_cases import START, accepted_referral, four_weeks, record_four_weeks, record_week

pytestmark = pytest.mark.django_db

PERIOD_END = START + dt.timedelta(days=27)


@pytest.fixture
def referral(clinic):
    return accepted_referral(clinic)


@pytest.fixture
def recorded(referral):
    """The record the drafts read: four weeks, recorded through the case records' services
    (tests/referrals/report_cases.py)."""
    record_four_weeks(referral)
    return four_weeks()


def test_the_record_is_read_back_as_recorded_in_a_fixed_number_of_queries(referral, recorded,
                                                                         django_assert_num_queries):
    tz = case_time_zone(referral)
    with django_assert_num_queries(5):
        got = report_recorded(referral=referral, until=PERIOD_END, tz=tz)
    assert got == recorded
    assert (got.first_attended, got.prescribed_minutes_per_week, got.program) == (START, 120, "aerobic 3 x 40 min/wk")
    # Up to the end of week 2: the later sessions, check-ins, the second assessment are not part of it.
    mid = report_recorded(referral=referral, until=START + dt.timedelta(days=13))
    assert len(mid.sessions) == 6 and [c.minutes_per_week for c in mid.checkins] == [60, 90]
    assert [m.value for m in mid.measured if m.code == "six-minute-walk"] == [380]
    # Twice the record, the same number of queries: no query per row.
    record_week(referral, START + dt.timedelta(days=28), minutes_per_week=(4, 40, 2))
    with django_assert_num_queries(5):
        longer = report_recorded(referral=referral, until=START + dt.timedelta(days=34), tz=tz)
    assert len(longer.sessions) == 15 and longer.checkins[-1].minutes_per_week == 160


def test_the_program_in_force_at_the_period_end_sets_the_prescribed_dose(referral, recorded):
    program_set(referral=referral, starts_on=PERIOD_END + dt.timedelta(days=1),
                components=[ComponentPlan("aerobic", 3, 45), ComponentPlan("resistance", 2, 20, type="leg press")],
                actor="user:therapist", expected_version=referral.version)
    assert report_recorded(referral=referral, until=PERIOD_END).prescribed_minutes_per_week == 120
    later = report_recorded(referral=referral, until=PERIOD_END + dt.timedelta(days=1))
    assert (later.prescribed_minutes_per_week, later.program) == (
        175, "aerobic 3 x 45 min/wk; resistance 2 x 20 min/wk (leg press)")


def _text(pdf: bytes) -> tuple[str, int]:
    reader = PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages), len(reader.pages)


def test_the_draft_answers_the_four_questions_with_the_recorded_figures(referral):
    recorded = four_weeks()
    draft = draft_build(referral=referral, facts=ClinicalFacts.objects.get(referral=referral), recorded=recorded,
                        kind=ReportKind.PROGRESS, period_start=START, period_end=PERIOD_END)
    assert draft.kind == ReportKind.PROGRESS
    pavs = draft.measure("pavs-minutes")
    assert (pavs.baseline, pavs.latest, pavs.change, pavs.goal) == (30, 135, 105, 150)
    strength = draft.measure("strength-days")
    assert (strength.baseline, strength.latest, strength.change) == (0, 2, 2)
    walk = draft.measure("six-minute-walk")
    assert (walk.baseline, walk.latest, walk.change) == (380, 430, 50)
    bp = draft.measure("bp")
    assert (bp.baseline_text, bp.latest_text, bp.change) == ("138/88", "128/82", -10)
    assert [w.minutes_per_week for w in draft.pavs_weeks] == [60, 90, 110, 135]
    # Twelve sessions booked, one missed: 11 x 40 = 440 supervised minutes against 120 min/wk for 4 weeks.
    p = draft.participation
    assert (p.attended, p.missed, p.supervised_minutes, p.weeks, p.adherence) == (11, 1, 440, 4, 0.917)
    assert [(g.status, g.baseline, g.latest) for g in draft.goals] == [("progressing", 30, 135),
                                                                       ("progressing", 380, 430)]
    assert "Attended 11 of 12 scheduled sessions (1 missed). 92% of the prescribed 120" in draft.answer_participation
    assert "1 session missed." in draft.barriers and any("fall" in b for b in draft.barriers)
    assert draft.adverse_events[0].kind == "fall"
    # Stored as JSON and read back, the draft is the same value.
    assert reports.ReportDraft.from_json(draft.as_json()) == draft


def test_a_goal_reached_is_met_and_one_without_a_recorded_measure_is_not_measured(referral):
    recorded = four_weeks()
    recorded = Recorded(checkins=recorded.checkins[:3] + (reports.CheckIn(PERIOD_END, 160, 2),),
                        sessions=recorded.sessions)
    draft = draft_build(referral=referral, facts=ClinicalFacts.objects.get(referral=referral), recorded=recorded,
                        kind=ReportKind.PROGRESS, period_start=START, period_end=PERIOD_END)
    assert [g.status for g in draft.goals] == ["met", "not-measured"]


def test_nothing_recorded_in_the_period_makes_a_no_update_report_and_no_session_a_did_not_start(referral):
    facts = ClinicalFacts.objects.get(referral=referral)
    empty = draft_build(referral=referral, facts=facts, recorded=Recorded(), kind=ReportKind.PROGRESS,
                        period_start=START, period_end=PERIOD_END)
    assert empty.kind == ReportKind.NO_UPDATE
    assert empty.participation.scheduled == 0 and empty.measure("pavs-minutes").latest is None
    never = Recorded(sessions=(SessionFact(START, "no-show"), SessionFact(START + dt.timedelta(days=2), "no-show")))
    draft = draft_build(referral=referral, facts=facts, recorded=never, kind=ReportKind.DISCHARGE,
                        period_start=START, period_end=PERIOD_END)
    assert draft.kind == ReportKind.DID_NOT_START
    assert draft.participation.missed == 2 and "No session attended." in draft.barriers


def test_a_signed_report_goes_to_the_physician_with_its_pdf(referral, recorded):
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    assert report.status == ReportStatus.DRAFT and report.pdf is None
    # The schedule asking again finds the same report.
    assert report_draft(referral=referral, period_start=START, period_end=PERIOD_END,
                        kind=ReportKind.PROGRESS).pk == report.pk

    report = report_edit(report=report, answers={"answer_barriers": "Knee pain on stairs; work shifts."},
                         actor="user:therapist", expected_version=1)
    with pytest.raises(DomainError) as stale:
        report_sign(report=report, actor="user:therapist", expected_version=1)
    assert stale.value.code == ErrorCode.STALE
    report = report_sign(report=report, actor="user:therapist", expected_version=2)

    assert report.status == ReportStatus.SIGNED and report.signed_by == "user:therapist"
    referral.refresh_from_db()
    assert referral.business_status == BusinessStatus.PROGRESS_REPORT_SENT
    assert referral.status == ReferralStatus.IN_PROGRESS  # a progress report moves nothing else
    assert "Progress report for 2026-09-07 to 2026-10-04 sent (signed by the therapist)." in [
        n.text for n in referral.notes.all()]

    text, pages = _text(bytes(report.pdf))
    assert pages == 1
    for figure in ("Rosa Martinez", "Progress report", "Sep 7, 2026 to Oct 4, 2026", "Knee pain on stairs",
                   "Attended 11 of 12 scheduled sessions", "30 min/wk", "135 min/wk", "+105 min/wk", "150 min/wk",
                   "380 m", "430 m", "+50 m", "138/88 mmHg", "128/82 mmHg", "fall, mild",
                   "reviewed and signed by therapist"):
        assert figure in text, figure
    # The chart's weekly values are drawn as text too.
    for weekly in ("60", "90", "110", "135"):
        assert weekly in text.split()

    with pytest.raises(DomainError) as again:
        report_sign(report=report, actor="user:therapist", expected_version=report.version)
    assert again.value.code == ErrorCode.TRANSITION


def test_an_unsigned_report_goes_out_preliminary_and_again_final_when_signed(referral, recorded):
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    report = report_send_unsigned(report=report)
    assert report.status == ReportStatus.SENT_UNSIGNED
    text, _ = _text(bytes(report.pdf))
    assert "Preliminary" in text and "not reviewed by the therapist" in text
    with pytest.raises(DomainError) as twice:
        report_send_unsigned(report=report)
    assert twice.value.code == ErrorCode.TRANSITION

    report = report_sign(report=report, actor="user:therapist", expected_version=report.version)
    assert report.status == ReportStatus.SIGNED
    assert "reviewed and signed" in _text(bytes(report.pdf))[0]
    referral.refresh_from_db()
    sent = [n.text for n in referral.notes.all() if n.text.startswith("Progress report")]
    assert [t.endswith("(not reviewed by the therapist).") for t in sent] == [True, False]


def test_bad_answers_and_bad_kinds_are_refused(referral, recorded):
    with pytest.raises(DomainError) as kind:
        report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind="weekly")
    assert kind.value.code == ErrorCode.INVALID
    with pytest.raises(DomainError) as backwards:
        report_draft(referral=referral, period_start=PERIOD_END, period_end=START, kind=ReportKind.PROGRESS)
    assert backwards.value.field == "period_end"
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    for answers in ({"answer_plan": "  "}, {"signed_by": "x"}, {"answer_plan": "x" * 3000}):
        with pytest.raises(DomainError) as bad:
            report_edit(report=report, answers=answers, actor="user:t", expected_version=1)
        assert bad.value.code == ErrorCode.INVALID


@pytest.mark.parametrize(
    "case, expected",
    [
        ("in-progress", (ReportKind.DISCHARGE, ReferralStatus.COMPLETED, "")),
        ("on-hold", (ReportKind.DISCHARGE, ReferralStatus.FAILED, "Knee surgery")),
        ("never-started", (ReportKind.DID_NOT_START, ReferralStatus.FAILED, "No session attended")),
        ("closed-as-failed", (ReportKind.DISCHARGE, ReferralStatus.FAILED, "Moved away")),
    ],
)
def test_the_discharge_report_closes_the_referral_as_the_case_stands(referral, case, expected):
    if case != "never-started":
        record_four_weeks(referral)  # its first attended session moves it to in-progress
        assert referral.status == ReferralStatus.IN_PROGRESS
    if case == "on-hold":
        referral = referral_update(referral=referral, status=ReferralStatus.ON_HOLD, reason="Knee surgery",
                                   actor="user:t")
    if case == "closed-as-failed":
        referral = referral_update(referral=referral, status=ReferralStatus.FAILED, reason="Moved away",
                                   actor="user:t")
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.DISCHARGE)
    report = report_send_unsigned(report=report)
    referral.refresh_from_db()
    assert (report.kind, referral.status, referral.status_reason) == expected
    assert referral.business_status == BusinessStatus.DISCHARGE_REPORT_SENT
    text, pages = _text(bytes(report.pdf))
    assert pages <= 2 and ReportKind(report.kind).label in text
def test_a_name_beyond_latin_1_is_printed_with_the_embedded_font(clinic):
    referral = accepted_referral(clinic, patient_name="Đặng Văn Bình")
    report = report_draft(referral=referral, period_start=START, period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    pdf = bytes(report_send_unsigned(report=report).pdf)
    assert "Đặng Văn Bình" in _text(pdf)[0]
    assert b"DejaVuSans" in pdf
    # A Latin-1 report embeds no font at all.
    latin = report_draft(referral=accepted_referral(clinic, patient_name="Zoë Müller"), period_start=START,
                         period_end=PERIOD_END, kind=ReportKind.PROGRESS)
    latin_pdf = bytes(report_send_unsigned(report=latin).pdf)
    assert "Zoë Müller" in _text(latin_pdf)[0] and b"DejaVuSans" not in latin_pdf


def test_a_baseline_sent_as_days_and_minutes_per_day_is_the_reports_pavs_baseline(referral):
    # PA IG Scenario 2 sends 89555-7 and 68516-4 without 82290-8: the report's baseline is their product, as PAVS
    # computes it (and as intake's screening reads it), not "no baseline".
    facts = ClinicalFacts.objects.get(referral=referral)
    facts.pavs_baseline = [{"code": "89555-7", "value": 5, "unit": "d/wk", "date": "2026-08-20"},
                           {"code": "68516-4", "value": 32, "unit": "min/d", "date": "2026-08-20"}]
    facts.save()
    draft = draft_build(referral=referral, facts=facts, recorded=four_weeks(), kind=ReportKind.PROGRESS,
                        period_start=START, period_end=PERIOD_END)
    assert draft.measure("pavs-minutes").baseline == 160
    assert facts.pavs_minutes_per_week() == 160

"""The case records: each write claims the case's version (a stale form is refused and writes nothing), leaves one
event, and the first attended session starts the case."""

import datetime as dt

import pytest
from django.utils import timezone

from referrals.reports import report_sign
from referrals.cases import case_discharge, case_fail, case_first_contact, case_hold, case_resume, case_start
from referrals.errors import DomainError, ErrorCode
from referrals.models import (
    AdverseEvent,
    Assessment,
    BusinessStatus,
    ExerciseProgram,
    Measurement,
    PavsCheckIn,
    Referral,
    ReferralEvent,
    ReferralStatus,
    Session,
)
from referrals.records import (
    ComponentPlan,
    MeasureValue,
    SessionWork,
    adverse_event_acknowledge,
    adverse_event_record,
    assessment_record,
    checkin_record,
    program_set,
    session_record,
    session_schedule,
)
from tests.network.factories import referral_make
from tests.referrals.cases import THERAPIST, aware, case_make, received_at

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(clinic):
    return case_make(clinic)


def _events(referral, kind):
    return list(ReferralEvent.objects.filter(referral=referral, kind=kind))


def _attend(case, **fields):
    values = dict(referral=case, attendance="attended", starts_at=aware(2026, 11, 20, 15), duration_minutes=45,
                  actor=THERAPIST, expected_version=case.version)
    values.update(fields)
    return session_record(**values)


def test_the_first_attended_session_starts_the_case(case):
    assert case.status == ReferralStatus.ACCEPTED
    version = case.version

    session = _attend(case, hr_average=112, hr_peak=138, rpe=5,
                      components=[SessionWork(kind="aerobic", minutes=30), SessionWork(kind="resistance", sets=2, reps=12, load_kg=10)])

    case.refresh_from_db()
    assert case.status == ReferralStatus.IN_PROGRESS
    assert case.business_status == BusinessStatus.FIRST_SESSION_ATTENDED
    assert case.version == version + 2  # the record, then the status change
    assert [c.kind for c in session.components.all()] == ["aerobic", "resistance"]
    assert [e.detail for e in _events(case, ReferralEvent.Kind.SESSION_RECORDED)] == [
        {"session": session.pk, "attendance": "attended"}
    ]
    status = _events(case, ReferralEvent.Kind.STATUS_CHANGED)[-1]
    assert (status.from_status, status.to_status) == ("accepted", "in-progress")


def test_a_second_attended_session_does_not_move_the_case_again(case):
    _attend(case)
    case.refresh_from_db()
    changes = len(_events(case, ReferralEvent.Kind.STATUS_CHANGED))

    _attend(case, starts_at=aware(2026, 11, 22, 15))

    case.refresh_from_db()
    assert case.status == ReferralStatus.IN_PROGRESS
    assert len(_events(case, ReferralEvent.Kind.STATUS_CHANGED)) == changes


def test_a_no_show_does_not_start_the_case(case):
    session_record(referral=case, attendance="no-show", starts_at=aware(2026, 11, 20, 15), actor=THERAPIST,
                   expected_version=case.version)
    case.refresh_from_db()
    assert case.status == ReferralStatus.ACCEPTED


def test_a_stale_form_is_refused_and_writes_nothing(case):
    stale = case.version
    checkin_record(referral=case, date=dt.date(2026, 11, 20), days_per_week=3, minutes_per_day=20,
                   actor=THERAPIST, expected_version=stale)

    with pytest.raises(DomainError) as refused:
        _attend(case, expected_version=stale)

    assert refused.value.code == ErrorCode.STALE and refused.value.field == "expected_version"
    assert not Session.objects.filter(referral=case).exists()
    assert not _events(case, ReferralEvent.Kind.SESSION_RECORDED)


def test_a_stale_transition_is_refused(case):
    _attend(case)
    form = Referral.objects.get(pk=case.pk)  # the discharge form, built before the hold
    case_hold(referral=case, reason="Knee injury", actor=THERAPIST, expected_version=form.version)

    with pytest.raises(DomainError) as refused:
        case_discharge(referral=form, actor=THERAPIST, expected_version=form.version)
    assert refused.value.code == ErrorCode.STALE
    case.refresh_from_db()
    assert case.status == ReferralStatus.ON_HOLD


def test_scheduling_the_first_session_tells_the_physician(case):
    session_schedule(referral=case, starts_at=aware(2026, 12, 1, 15), actor=THERAPIST, expected_version=case.version)
    case.refresh_from_db()
    assert case.business_status == BusinessStatus.FIRST_SESSION_SCHEDULED
    assert "2026-12-01" in case.business_status_text


def test_a_booked_session_is_recorded_as_attended(case):
    booked = session_schedule(referral=case, starts_at=aware(2026, 11, 20, 15), actor=THERAPIST,
                              expected_version=case.version)
    session_record(referral=case, session=booked, attendance="attended", duration_minutes=40, actor=THERAPIST,
                   expected_version=case.version)
    booked.refresh_from_db()
    assert (booked.attendance, booked.duration_minutes) == ("attended", 40)
    assert Session.objects.filter(referral=case).count() == 1


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"duration_minutes": None}, "duration_minutes"),
        ({"duration_minutes": "45"}, "duration_minutes"),
        ({"hr_average": 140, "hr_peak": 120}, "hr_peak"),
        ({"rpe": 11}, "rpe"),
        ({"starts_at": dt.datetime(2026, 11, 20, 15)}, "starts_at"),  # naive
        ({"attendance": "maybe"}, "attendance"),
        ({"attendance": "no-show"}, "attendance"),  # with a duration
    ],
)
def test_bad_session_values_are_refused_with_their_field(case, fields, field):
    with pytest.raises(DomainError) as refused:
        _attend(case, **fields)
    assert refused.value.code == ErrorCode.INVALID and refused.value.field == field
    assert not Session.objects.exists()


def test_a_requested_referral_takes_no_records(clinic):
    referral = received_at(referral_make(clinic))
    with pytest.raises(DomainError) as refused:
        _attend(referral)
    assert refused.value.code == ErrorCode.NOT_OPEN


def test_an_assessment_records_its_measures_in_their_units(case):
    assessment = assessment_record(
        referral=case, kind="static", assessed_at=aware(2026, 11, 18, 14),
        measurements=[MeasureValue("bp-systolic", 132), MeasureValue("bp-diastolic", 84),
                      MeasureValue("weight", 92.5, "kg"), MeasureValue("height", 178)],
        actor=THERAPIST, expected_version=case.version,
    )
    assert sorted(Measurement.objects.filter(assessment=assessment).values_list("code", "unit")) == [
        ("bp-diastolic", "mm[Hg]"), ("bp-systolic", "mm[Hg]"), ("height", "cm"), ("weight", "kg")
    ]
    assert _events(case, ReferralEvent.Kind.ASSESSMENT_RECORDED)[0].detail["assessment"] == assessment.pk


@pytest.mark.parametrize(
    "kind, measures, field",
    [
        ("static", [MeasureValue("weight", 200, "[lb_av]")], "measurements[0].unit"),
        ("static", [MeasureValue("height", 1.78)], "measurements[0].value"),  # metres
        ("static", [MeasureValue("six-minute-walk", 400)], "measurements[0].code"),  # a dynamic measure
        ("static", [MeasureValue("bp-systolic", 130)], "measurements"),  # without the diastolic
        ("prom", [MeasureValue("phq2", 7)], "measurements[0].value"),
        ("static", [], "measurements"),
    ],
)
def test_bad_measures_are_refused(case, kind, measures, field):
    with pytest.raises(DomainError) as refused:
        assessment_record(referral=case, kind=kind, assessed_at=aware(2026, 11, 18, 14), measurements=measures,
                          actor=THERAPIST, expected_version=case.version)
    assert refused.value.field == field
    assert not Assessment.objects.exists()


def test_a_program_is_versioned_and_one_version_is_current(case):
    aerobic = ComponentPlan(kind="aerobic", frequency_per_week=3, minutes=30, intensity_kind="hr-range",
                            intensity_low=100, intensity_high=120, type="treadmill walk")
    first = program_set(referral=case, starts_on=dt.date(2026, 11, 20), components=[aerobic], actor=THERAPIST,
                        expected_version=case.version)
    second = program_set(
        referral=case, starts_on=dt.date(2026, 12, 4),
        components=[aerobic, ComponentPlan(kind="resistance", frequency_per_week=2, minutes=20, intensity_kind="pct-1rm",
                                           intensity_low=50, intensity_high=60,
                                           progressions=[{"date": "2026-12-18", "note": "to 65 %"}])],
        actor=THERAPIST, expected_version=case.version,
    )
    assert (first.version, second.version) == (1, 2)
    assert list(ExerciseProgram.objects.filter(referral=case, is_current=True)) == [second]
    assert second.components.count() == 2


def test_a_program_intensity_out_of_its_scale_is_refused(case):
    with pytest.raises(DomainError) as refused:
        program_set(referral=case, starts_on=dt.date(2026, 11, 20),
                    components=[ComponentPlan(kind="aerobic", frequency_per_week=3, minutes=30, intensity_kind="rpe",
                                              intensity_low=5, intensity_high=14)],
                    actor=THERAPIST, expected_version=case.version)
    assert refused.value.field == "components[0].intensity_high"


def test_a_checkin_computes_minutes_per_week(case):
    checkin = checkin_record(referral=case, date=dt.date(2026, 11, 20), days_per_week=4, minutes_per_day=25,
                             strength_days_per_week=2, actor=THERAPIST, expected_version=case.version)
    assert PavsCheckIn.objects.get(pk=checkin.pk).minutes_per_week == 100


def test_an_adverse_event_can_put_the_case_on_hold_and_is_acknowledged_once(case):
    _attend(case)
    case.refresh_from_db()
    event = adverse_event_record(referral=case, occurred_at=aware(2026, 11, 21, 15), kind="chest-pain",
                                 severity="moderate", serious=True, action_taken="Stopped; called 911",
                                 put_on_hold=True, actor=THERAPIST, expected_version=case.version)
    case.refresh_from_db()
    assert case.status == ReferralStatus.ON_HOLD and "chest pain" in case.status_reason
    alert = _events(case, ReferralEvent.Kind.ADVERSE_EVENT)
    assert [a.detail["adverse_event"] for a in alert] == [event.pk] and alert[0].detail["serious"] is True

    adverse_event_acknowledge(adverse_event=event, actor="ehr-client:abc")
    adverse_event_acknowledge(adverse_event=event, actor="ehr-client:abc")

    event.refresh_from_db()
    assert event.acknowledged_at is not None and event.acknowledged_by == "ehr-client:abc"
    assert len(_events(case, ReferralEvent.Kind.ADVERSE_EVENT_ACKNOWLEDGED)) == 1


def test_an_accepted_case_cannot_be_held_by_an_adverse_event(case):
    with pytest.raises(DomainError) as refused:
        adverse_event_record(referral=case, occurred_at=aware(2026, 11, 21, 15), kind="fall", severity="mild",
                             put_on_hold=True, actor=THERAPIST, expected_version=case.version)
    assert refused.value.code == ErrorCode.TRANSITION
    assert not AdverseEvent.objects.exists()


def test_the_case_moves_through_its_transitions(case):
    case_first_contact(referral=case, contacted_at=timezone.now(), actor=THERAPIST, expected_version=case.version)
    assert case.business_status_text.startswith("Patient contacted on")
    case_start(referral=case, actor=THERAPIST, expected_version=case.version)
    assert case.status == ReferralStatus.IN_PROGRESS
    case_hold(referral=case, reason="Holiday", actor=THERAPIST, expected_version=case.version)
    assert (case.status, case.status_reason) == (ReferralStatus.ON_HOLD, "Holiday")
    with pytest.raises(DomainError) as refused:  # attended sessions wait for the resume
        _attend(case)
    assert refused.value.code == ErrorCode.NOT_OPEN
    case_resume(referral=case, actor=THERAPIST, expected_version=case.version)
    _attend(case)
    case_discharge(referral=case, actor=THERAPIST, expected_version=case.version)
    case.refresh_from_db()
    # The referral completes with its discharge report, drafted now for the therapist to sign.
    (report,) = case.reports.all()
    assert (case.status, report.kind, report.status, report.outcome_status) == (
        ReferralStatus.IN_PROGRESS, "discharge", "draft", ReferralStatus.COMPLETED)
    assert case.business_status_text.endswith("the discharge report follows")
    steps = [e.detail.get("case") for e in _events(case, ReferralEvent.Kind.STATUS_CHANGED)][-5:]
    assert steps == ["first-contact", "start", "hold", "resume", "discharge"]
    report_sign(report=report, actor=THERAPIST, expected_version=report.version)
    case.refresh_from_db()
    assert (case.status, case.business_status) == (ReferralStatus.COMPLETED, "discharge-report-sent")


def test_a_hold_needs_a_reason_and_a_finished_case_is_final(case):
    case_start(referral=case, actor=THERAPIST, expected_version=case.version)
    with pytest.raises(DomainError) as refused:
        case_hold(referral=case, reason="  ", actor=THERAPIST, expected_version=case.version)
    assert refused.value.code == ErrorCode.REASON_REQUIRED
    case_fail(referral=case, reason="Moved away", actor=THERAPIST, expected_version=case.version)
    with pytest.raises(DomainError) as refused:
        case_resume(referral=case, actor=THERAPIST, expected_version=case.version)
    assert refused.value.code == ErrorCode.TRANSITION


def test_a_first_contact_needs_a_real_moment(case):
    with pytest.raises(DomainError) as refused:
        case_first_contact(referral=case, contacted_at="yesterday", actor=THERAPIST, expected_version=case.version)
    assert (refused.value.code, refused.value.field) == (ErrorCode.INVALID, "contacted_at")


# --- The dates a record may carry (RecordWindow) ---------------------------------------------------------------

_BEFORE_RECEIPT = aware(2026, 1, 3, 9)  # two days before cases.RECEIVED
_YEAR_ONE = dt.datetime(1, 1, 1, 10, tzinfo=dt.UTC)
_YEAR_9999 = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC)


def _record(service: str, case, when):
    """One call of ``service`` with ``when`` in its date or time; the field it goes in."""
    common = dict(referral=case, actor=THERAPIST, expected_version=case.version)
    day = when.date()
    calls = {
        "schedule": (session_schedule, dict(starts_at=when), "starts_at"),
        "attended": (session_record, dict(attendance="attended", starts_at=when, duration_minutes=45), "starts_at"),
        "cancelled": (session_record, dict(attendance="cancelled", starts_at=when), "starts_at"),
        "assessment": (assessment_record, dict(kind="dynamic", assessed_at=when,
                                               measurements=[MeasureValue("six-minute-walk", 400)]), "assessed_at"),
        "measure": (assessment_record, dict(kind="dynamic", assessed_at=aware(2026, 11, 20, 15), measurements=[
            MeasureValue("six-minute-walk", 400, measured_at=when)]), "measurements[0].measured_at"),
        "checkin": (checkin_record, dict(date=day, days_per_week=3, minutes_per_day=30), "date"),
        "adverse-event": (adverse_event_record, dict(occurred_at=when, kind="fall", severity="mild"), "occurred_at"),
        "program-start": (program_set, dict(starts_on=day, components=[ComponentPlan("aerobic", 3, 30)]), "starts_on"),
        "program-end": (program_set, dict(starts_on=dt.date(2026, 11, 20), ends_on=day,
                                          components=[ComponentPlan("aerobic", 3, 30)]), "ends_on"),
        "progression": (program_set, dict(starts_on=dt.date(2026, 11, 20), components=[ComponentPlan(
            "aerobic", 3, 30, progressions=[{"date": day.isoformat(), "note": "40 min"}])]),
            "components[0].progressions[0].date"),
        "first-contact": (case_first_contact, dict(contacted_at=when), "contacted_at"),
    }
    service_function, values, field = calls[service]
    return lambda: service_function(**common, **values), field


_EVERY_DATE = ["schedule", "attended", "cancelled", "assessment", "measure", "checkin", "adverse-event",
               "program-start", "program-end", "progression", "first-contact"]


@pytest.mark.parametrize("service", _EVERY_DATE)
@pytest.mark.parametrize("when", [_YEAR_ONE, _BEFORE_RECEIPT], ids=["year-1", "before-receipt"])
def test_no_record_is_dated_before_the_referral_came_in(case, service, when):
    call, field = _record(service, case, when)
    version, events = case.version, ReferralEvent.objects.filter(referral=case).count()
    with pytest.raises(DomainError) as refused:
        call()
    assert (refused.value.code, refused.value.field) == (ErrorCode.INVALID, field)
    assert "before the referral was received" in str(refused.value)
    case.refresh_from_db()
    assert case.version == version and ReferralEvent.objects.filter(referral=case).count() == events
    assert not Session.objects.filter(referral=case).exists() and not Assessment.objects.filter(referral=case).exists()


@pytest.mark.parametrize("service", _EVERY_DATE)
def test_nothing_is_dated_in_year_9999(case, service):
    call, field = _record(service, case, _YEAR_9999)
    with pytest.raises(DomainError) as refused:
        call()
    assert (refused.value.code, refused.value.field) == (ErrorCode.INVALID, field)
    assert not Session.objects.filter(referral=case).exists()


def test_a_record_the_day_before_receipt_is_within_the_margin(case):
    the_evening_before = case.created_at - dt.timedelta(hours=20)
    session = _attend(case, starts_at=the_evening_before)
    assert session.starts_at == the_evening_before
    case.refresh_from_db()
    assert case.business_status_text == f"First session attended on {the_evening_before.date().isoformat()}"


def test_a_session_is_booked_up_to_a_year_ahead(case):
    from referrals.records import SCHEDULE_HORIZON

    now = timezone.now()
    booked = session_schedule(referral=case, starts_at=now + SCHEDULE_HORIZON - dt.timedelta(hours=1),
                              actor=THERAPIST, expected_version=case.version)
    assert booked.attendance == "scheduled"
    case.refresh_from_db()
    with pytest.raises(DomainError) as refused:
        session_schedule(referral=case, starts_at=now + SCHEDULE_HORIZON + dt.timedelta(days=1), actor=THERAPIST,
                         expected_version=case.version)
    assert refused.value.field == "starts_at" and "more than 365 days ahead" in str(refused.value)
    assert Session.objects.filter(referral=case).count() == 1


def test_a_first_contact_is_not_in_the_future(case):
    with pytest.raises(DomainError) as refused:
        case_first_contact(referral=case, contacted_at=timezone.now() + dt.timedelta(days=2), actor=THERAPIST,
                           expected_version=case.version)
    assert (refused.value.field, "in the future" in str(refused.value)) == ("contacted_at", True)

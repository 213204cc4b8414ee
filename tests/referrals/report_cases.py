"""A case to report on: a cardiac referral opened through the domain, routed and accepted, with a PAVS
baseline of 30 min/wk and the physician's goal of 150 min/wk; and a record of 4 weeks to draft from, as plain
values (``four_weeks``, for draft_build) or recorded through the case records' services (``record_four_weeks``,
for everything that reads the record)."""

import datetime as dt

import time_machine

from referrals.models import ReferralStatus
from referrals.offers import offer_accept, referral_route_first
from referrals.records import (
    ComponentPlan,
    MeasureValue,
    adverse_event_record,
    assessment_record,
    checkin_record,
    program_set,
    session_record,
)
from referrals.reports import AdverseLine, CheckIn, Measured, Recorded, SessionFact
from referrals.selectors import case_time_zone
from referrals.services import ReferralFacts, referral_create
from tests.network.factories import CARDIAC, ZIP_10001, role_make
from tests.referrals.cases import received_at

START = dt.date(2026, 9, 7)  # a Monday: the first session

GOALS = [
    {"text": "Reach 150 min/wk of moderate activity", "measure": {"system": "http://loinc.org", "code": "82290-8"},
     "target": {"value": 150, "unit": "min/wk", "comparator": ">="}, "due": "2027-01-01"},
    {"text": "Walk farther in 6 minutes", "measure": {"system": "http://loinc.org", "code": "64098-7"},
     "target": {"value": 450, "unit": "m", "comparator": ">="}, "due": ""},
]


def accepted_referral(clinic, *, email: str = "", **overrides):
    """The referral accepted by the one role there is (``email`` its address, for the nudges)."""
    role_make(at=ZIP_10001, email=email)
    facts = dict(
        patient_name="Rosa Martinez", patient_birth_date="1958-04-02", patient_gender="female",
        patient_postal_code="10001", latitude=ZIP_10001[0], longitude=ZIP_10001[1], state="NY",
        requester_reference="Practitioner/dr-lopez", requester_display="Dr Ana Lopez",
        condition_codes=list(CARDIAC), clearance="moderate",
        pavs_baseline=[{"code": "82290-8", "value": 30, "unit": "min/wk", "date": "2026-08-20"},
                       {"code": "82291-6", "value": 0, "unit": "d/wk", "date": "2026-08-20"}],
        goals=GOALS,
    )
    facts.update(overrides)
    referral = referral_create(clinic=clinic, facts=ReferralFacts(**facts), actor="user:coordinator")
    offer = referral_route_first(referral_id=referral.pk).offer
    offer_accept(offer=offer)
    referral.refresh_from_db()
    assert referral.status == ReferralStatus.ACCEPTED
    return referral


def received_before(referral, day: dt.date) -> None:
    """Date the referral's receipt back to a week before ``day``, unless it came in earlier: a record may not be
    dated before its referral was received (referrals.records.RecordWindow)."""
    when = dt.datetime.combine(day - dt.timedelta(days=7), dt.time(9), tzinfo=dt.UTC)
    if referral.created_at > when:
        received_at(referral, when)


def four_weeks(start: dt.date = START) -> Recorded:
    """Three sessions a week of 40 min for four weeks, one of them missed; weekly check-ins rising from 60 to
    135 min/wk; a 6-minute walk of 380 m then 430 m; blood pressure 138/88 then 128/82; one mild fall."""
    sessions, checkins = [], []
    for week in range(4):
        monday = start + dt.timedelta(days=7 * week)
        for day in (0, 2, 4):
            missed = week == 2 and day == 2
            sessions.append(SessionFact(monday + dt.timedelta(days=day), "no-show" if missed else "attended",
                                        0 if missed else 40))
        checkins.append(CheckIn(monday + dt.timedelta(days=6), (60, 90, 110, 135)[week], (0, 1, 2, 2)[week]))
    measured = (
        Measured("bp-systolic", 138, start), Measured("bp-diastolic", 88, start), Measured("six-minute-walk", 380, start),
        Measured("bp-systolic", 128, start + dt.timedelta(days=25)),
        Measured("bp-diastolic", 82, start + dt.timedelta(days=25)),
        Measured("six-minute-walk", 430, start + dt.timedelta(days=25)),
    )
    fall = AdverseLine((start + dt.timedelta(days=10)).isoformat(), "fall", "mild", False,
                       "Checked, no injury; balance work added", False)
    return Recorded(checkins=tuple(checkins), measured=measured, sessions=tuple(sessions), adverse_events=(fall,),
                    prescribed_minutes_per_week=120, program="aerobic 3 x 40 min/wk")


THERAPIST = "user:therapist"
# PAVS check-ins of the four weeks as the patient gives them: (days per week, minutes per day, strength days).
CHECKINS = ((3, 20, 0), (3, 30, 1), (2, 55, 2), (3, 45, 2))  # 60, 90, 110, 135 min/wk


def _at(referral, day: dt.date, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=case_time_zone(referral))


def _v(referral) -> int:
    referral.refresh_from_db()
    return referral.version


def record_week(referral, monday: dt.date, *, minutes_per_week: tuple[int, int, int], missed_day: int | None = None,
                minutes: int = 40) -> None:
    """One week of the case recorded through referrals/records.py: sessions on Monday, Wednesday and Friday at
    10:00 in the site's time zone (``minutes`` each; ``missed_day`` 0, 2 or 4 a no-show) and the patient's PAVS
    check-in on Sunday (``minutes_per_week``: days per week, minutes per day, strength days)."""
    received_before(referral, monday)
    for day in (0, 2, 4):
        missed = day == missed_day
        session_record(referral=referral, attendance="no-show" if missed else "attended",
                       starts_at=_at(referral, monday + dt.timedelta(days=day)),
                       duration_minutes=None if missed else minutes, actor=THERAPIST, expected_version=_v(referral))
    days, per_day, strength = minutes_per_week
    checkin_record(referral=referral, date=monday + dt.timedelta(days=6), days_per_week=days,
                   minutes_per_day=per_day, strength_days_per_week=strength, actor=THERAPIST,
                   expected_version=_v(referral))


def record_assessment(referral, day: dt.date, *, walk: float, systolic: float, diastolic: float) -> None:
    received_before(referral, day)
    assessment_record(referral=referral, kind="static", assessed_at=_at(referral, day, 9),
                      measurements=[MeasureValue("bp-systolic", systolic), MeasureValue("bp-diastolic", diastolic)],
                      actor=THERAPIST, expected_version=_v(referral))
    assessment_record(referral=referral, kind="dynamic", assessed_at=_at(referral, day, 9),
                      measurements=[MeasureValue("six-minute-walk", walk)], actor=THERAPIST,
                      expected_version=_v(referral))


def record_four_weeks(referral, start: dt.date = START) -> None:
    """``four_weeks`` recorded for real: the program (aerobic 3 x 40 min/wk), twelve sessions with the week-3
    Wednesday missed, the weekly check-ins, the two assessments and the fall. Recorded as of the day after the
    four weeks (the records refuse a future date), the referral received the week before."""
    received_before(referral, start)
    with time_machine.travel(_at(referral, start + dt.timedelta(days=28), 12), tick=True):
        program_set(referral=referral, starts_on=start, components=[ComponentPlan("aerobic", 3, 40)],
                    actor=THERAPIST, expected_version=_v(referral))
        record_assessment(referral, start, walk=380, systolic=138, diastolic=88)
        for week in range(4):
            record_week(referral, start + dt.timedelta(days=7 * week), minutes_per_week=CHECKINS[week],
                        missed_day=2 if week == 2 else None)
            if week == 1:
                adverse_event_record(referral=referral, occurred_at=_at(referral, start + dt.timedelta(days=10), 11),
                                     kind="fall", severity="mild", action_taken="Checked, no injury; balance work added",
                                     actor=THERAPIST, expected_version=_v(referral))
        record_assessment(referral, start + dt.timedelta(days=25), walk=430, systolic=128, diastolic=82)
    referral.refresh_from_db()

"""A case to report on: a cardiac referral opened through the domain, routed and accepted, with a PAVS
baseline of 30 min/wk and the physician's goal of 150 min/wk; and a record of 4 weeks to draft from."""

import datetime as dt

from referrals.models import ReferralStatus
from referrals.offers import offer_accept, referral_route_first
from referrals.reports import AdverseLine, CheckIn, Measured, Recorded, SessionFact
from referrals.services import ReferralFacts, referral_create
from tests.network.factories import CARDIAC, ZIP_10001, role_make

START = dt.date(2026, 9, 7)  # a Monday: the first session

GOALS = [
    {"text": "Reach 150 min/wk of moderate activity", "measure": {"system": "http://loinc.org", "code": "82290-8"},
     "target": {"value": 150, "unit": "min/wk", "comparator": ">="}, "due": "2027-01-01"},
    {"text": "Walk farther in 6 minutes", "measure": {"system": "http://loinc.org", "code": "64098-7"},
     "target": {"value": 450, "unit": "m", "comparator": ">="}, "due": ""},
]


def accepted_referral(clinic, **overrides):
    role_make(at=ZIP_10001)
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
        Measured("six-minute-walk", 380, start), Measured("bp-systolic", 138, start),
        Measured("bp-diastolic", 88, start), Measured("six-minute-walk", 430, start + dt.timedelta(days=25)),
        Measured("bp-systolic", 128, start + dt.timedelta(days=25)),
        Measured("bp-diastolic", 82, start + dt.timedelta(days=25)),
    )
    fall = AdverseLine((start + dt.timedelta(days=10)).isoformat(), "fall", "mild", False,
                       "Checked, no injury; balance work added", False)
    return Recorded(checkins=tuple(checkins), measured=measured, sessions=tuple(sessions), adverse_events=(fall,),
                    prescribed_minutes_per_week=120, program="aerobic 3 x 40 min/wk")

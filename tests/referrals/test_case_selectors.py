"""The reads of a case: its record in a fixed number of queries, its dose counted in the site's weeks, and the
cases and offers of a professional or a practice."""

import datetime as dt
import zoneinfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from referrals.models import Offer, OfferStatus
from referrals.records import (
    ComponentPlan,
    MeasureValue,
    SessionWork,
    adverse_event_record,
    assessment_record,
    checkin_record,
    program_set,
    session_record,
)
from referrals.selectors import (
    case_dose,
    case_record,
    case_time_zone,
    cases_for_organization,
    cases_for_professional,
    offers_for_organization,
    offers_for_professional,
)
from tests.network.factories import ProfessionalFactory, referral_make
from tests.referrals.cases import THERAPIST, aware, case_make

pytestmark = pytest.mark.django_db

CHICAGO = zoneinfo.ZoneInfo("America/Chicago")


def _local(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CHICAGO)


def _attend(case, starts_at, minutes, *, strength=False):
    work = [SessionWork(kind="resistance", sets=2, reps=10)] if strength else []
    session_record(referral=case, attendance="attended", starts_at=starts_at, duration_minutes=minutes,
                   components=work, actor=THERAPIST, expected_version=case.version)


def _program(case):
    program_set(
        referral=case, starts_on=dt.date(2026, 10, 26),
        components=[ComponentPlan(kind="aerobic", frequency_per_week=3, minutes=30),
                    ComponentPlan(kind="resistance", frequency_per_week=2, minutes=20)],
        actor=THERAPIST, expected_version=case.version,
    )


def test_weeks_are_counted_in_the_sites_time_zone_across_the_dst_change(clinic):
    # Chicago leaves daylight time on Sunday 1 November 2026 at 02:00.
    case = case_make(clinic, time_zone="America/Chicago")
    _program(case)
    _attend(case, _local(2026, 10, 26, 0, 30), 30)  # Monday 00:30 CDT = 05:30 UTC
    _attend(case, _local(2026, 11, 1, 23, 30), 40, strength=True)  # Sunday 23:30 CST = Monday 05:30 UTC
    _attend(case, _local(2026, 11, 2, 0, 30), 50)  # Monday 00:30 CST = 06:30 UTC
    session_record(referral=case, attendance="no-show", starts_at=_local(2026, 11, 4, 9), actor=THERAPIST,
                   expected_version=case.version)

    tz = case_time_zone(case)
    with CaptureQueriesContext(connection) as queries:
        dose = case_dose(case, tz)
    assert len(queries) == 5

    assert [(w.starts_on, w.supervised_minutes, w.strength_sessions, w.attended, w.missed) for w in dose.weeks] == [
        (dt.date(2026, 10, 26), 70, 1, 2, 0),
        (dt.date(2026, 11, 2), 50, 0, 1, 1),
    ]
    assert dose.prescribed_minutes_per_week == 130 and dose.prescribed_strength_per_week == 2
    assert [w.adherence for w in dose.weeks] == [round(70 / 130, 3), round(50 / 130, 3)]
    assert dose.adherence == round(120 / 260, 3) and dose.mean_supervised_minutes == 60

    # Counted in UTC the Sunday-night session would fall in the second week: the zone is what decides.
    utc = case_dose(case, "UTC")
    assert [w.supervised_minutes for w in utc.weeks] == [30, 90]


def test_a_dose_shows_the_baseline_the_latest_checkin_and_the_goal(clinic):
    case = case_make(
        clinic,
        pavs_baseline=[{"code": "82290-8", "value": 30, "unit": "min/wk", "date": "2026-10-01"}],
        goals=[{"text": "150 min/wk", "measure": {"system": "http://loinc.org", "code": "82290-8"},
                "target": {"value": 150, "unit": "min/wk", "comparator": ">="}, "due": "2027-03-01"}],
    )
    for day, days in ((dt.date(2026, 11, 6), 2), (dt.date(2026, 11, 20), 4)):
        checkin_record(referral=case, date=day, days_per_week=days, minutes_per_day=30, actor=THERAPIST,
                       expected_version=case.version)
    dose = case_dose(case, "America/Chicago")
    assert dose.weeks == [] and dose.adherence is None and dose.prescribed_minutes_per_week is None
    assert dose.baseline_minutes_per_week == 30 and dose.goal_minutes_per_week == 150
    assert dose.latest_checkin.minutes_per_week == 120


def _fill(case, n):
    assessment_record(referral=case, kind="static", assessed_at=aware(2026, 11, 2, 15),
                      measurements=[MeasureValue("weight", 90), MeasureValue("height", 175)], actor=THERAPIST,
                      expected_version=case.version)
    _program(case)
    for i in range(n):
        _attend(case, aware(2026, 11, 3 + i, 15), 30, strength=i % 2 == 0)
        checkin_record(referral=case, date=dt.date(2026, 11, 3 + i), days_per_week=3, minutes_per_day=30,
                       actor=THERAPIST, expected_version=case.version)
    adverse_event_record(referral=case, occurred_at=aware(2026, 11, 10, 15), kind="fall", severity="mild",
                         actor=THERAPIST, expected_version=case.version)


@pytest.mark.parametrize("sessions", [1, 6])
def test_a_case_record_costs_the_same_queries_whatever_its_size(clinic, django_assert_num_queries, sessions):
    case = case_make(clinic)
    _fill(case, sessions)

    with django_assert_num_queries(11):
        record = case_record(case)
        # Everything a case page touches is loaded: no query hides behind these.
        shown = (
            record.referral.facts.clearance, record.referral.clinic.name, record.offer.role.professional.family_name,
            record.offer.role.site.time_zone, [m.code for a in record.assessments for m in a.measurements.all()],
            [c.kind for c in record.program.components.all()], [c.kind for s in record.sessions for c in s.components.all()],
            len(record.checkins), len(record.adverse_events), len(record.notes),
        )
    assert len(record.sessions) == sessions and len(record.checkins) == sessions
    assert shown[4] == ["weight", "height"] and record.program.version == 1


def test_cases_and_offers_of_a_professional_and_their_practice(clinic):
    case = case_make(clinic)
    accepted = Offer.objects.get(referral=case, status=OfferStatus.ACCEPTED)
    professional, organization = accepted.role.professional, accepted.role.organization
    stranger = ProfessionalFactory()

    assert list(cases_for_professional(professional)) == [case]
    assert list(cases_for_organization(organization)) == [case]
    assert list(cases_for_professional(stranger)) == []
    # The accepted offer is no longer an offer.
    assert list(offers_for_professional(professional)) == [] and list(offers_for_organization(organization)) == []


def test_live_offers_are_listed_for_the_professional_and_the_practice(clinic):
    from referrals.offers import referral_route
    from tests.network.factories import km_north, role_make
    from tests.referrals.conftest import CARDIAC_PATIENT

    role = role_make(at=km_north(1))
    offer = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT).offer
    assert offer.role == role
    assert list(offers_for_professional(role.professional)) == [offer]
    assert list(offers_for_organization(role.organization)) == [offer]
    assert list(cases_for_professional(role.professional)) == []

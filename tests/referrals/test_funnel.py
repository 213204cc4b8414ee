"""The exercise funnel: the milestones rollup derived from what the domain services wrote, and the selectors'
counts, conversions, medians and PAVS figures over it."""

import datetime as dt

import pytest
from django.utils import timezone

from referrals import records
from referrals.cases import case_discharge
from referrals.funnel import (
    FunnelFilters,
    funnel_compute,
    milestones_refresh,
    milestones_refreshed_at,
    pavs_grid,
    referrals_per_week,
)
from referrals.models import ReferralMilestones, ReferralStatus
from referrals.reports import report_draft, report_sign
from tests.factories import ClinicFactory
from tests.network.factories import referral_make
from tests.referrals.report_cases import accepted_referral, received_before

pytestmark = pytest.mark.django_db
THERAPIST = "user:therapist"


def _attend(referral, when: dt.datetime):
    referral.refresh_from_db()
    return records.session_record(
        referral=referral, attendance="attended", starts_at=when, duration_minutes=40, actor=THERAPIST,
        expected_version=referral.version,
    )


def _checkin(referral, day: dt.date, days: int, minutes: int):
    referral.refresh_from_db()
    return records.checkin_record(
        referral=referral, date=day, days_per_week=days, minutes_per_day=minutes, actor=THERAPIST,
        expected_version=referral.version,
    )


@pytest.fixture
def history(clinic):
    """Four referrals of one clinic at four steps: only received (not placed, so never routed); accepted;
    started and active at 4 weeks with check-ins; and completed with its discharge report sent."""
    now = timezone.now()
    received = referral_make(clinic, postal_code="")  # stays with a coordinator: never offered
    accepted = accepted_referral(clinic)
    active = accepted_referral(clinic)
    first = now - dt.timedelta(days=30)
    received_before(active, first.date())  # a session is not dated before its referral came in
    _attend(active, first)
    _attend(active, first + dt.timedelta(days=20))  # in weeks 3-4 after the first
    _checkin(active, (now - dt.timedelta(days=2)).date(), 5, 40)  # 200 min/wk against a baseline of 30
    done = accepted_referral(clinic)
    received_before(done, first.date())
    _attend(done, first)
    _attend(done, first + dt.timedelta(days=7))  # week 2 only: not active at 4 weeks
    _checkin(done, (now - dt.timedelta(days=1)).date(), 3, 20)  # 60 min/wk: +30
    done.refresh_from_db()
    case_discharge(referral=done, actor=THERAPIST, expected_version=done.version)
    report = report_draft(referral=done, period_start=first.date(), period_end=now.date(), kind="discharge")
    report_sign(report=report, actor=THERAPIST, expected_version=report.version)
    done.refresh_from_db()
    assert done.status == ReferralStatus.COMPLETED, (report.kind, report.outcome_status, done.status_reason)
    return {"received": received, "accepted": accepted, "active": active, "done": done}


def test_the_rollup_has_each_referrals_milestones(history):
    assert milestones_refresh() == 4
    rows = {m.referral_id: m for m in ReferralMilestones.objects.all()}
    received, done, active = (rows[history[k].pk] for k in ("received", "done", "active"))
    assert received.routed_at is None and received.accepted_at is None
    assert done.routed_at and done.accepted_at and done.completed_at and not done.active_at_4_weeks
    assert active.active_at_4_weeks and active.completed_at is None
    assert active.pavs_baseline == 30 and active.pavs_latest == 200
    assert done.accept_seconds is not None and done.accept_seconds >= done.route_seconds
    assert ",cardiovascular," in done.condition_groups
    assert done.professional_id is not None and done.organization_id is not None


def test_the_funnel_counts_each_step_with_its_conversion(history):
    milestones_refresh()
    funnel = funnel_compute(None, FunnelFilters())
    counts = {s.key: s.count for s in funnel.steps}
    assert counts == {"received": 4, "routed": 3, "accepted": 3, "first_session": 2, "active_4w": 1, "completed": 1}
    conversions = {s.key: s.conversion for s in funnel.steps}
    assert conversions["received"] is None and conversions["routed"] == pytest.approx(0.75)
    assert conversions["active_4w"] == pytest.approx(0.5)
    assert funnel.pavs_patients == 2
    assert funnel.pavs_median_change == pytest.approx((170 + 30) / 2)
    assert funnel.pavs_share_gaining == pytest.approx(1.0)  # +170 and +30: both gained at least 30
    assert funnel.pavs_share_at_target == pytest.approx(0.5)  # 200 reaches 150, 60 does not
    assert funnel.median_accept_seconds is not None and funnel.median_first_session_seconds is not None
    assert sum(n for _, n in funnel.accept_histogram) == 3


def test_the_funnel_is_scoped_and_filtered(history, clinic):
    other = ClinicFactory()
    referral_make(other, postal_code="")
    milestones_refresh()
    everything = funnel_compute(None, FunnelFilters())
    assert everything.steps[0].count == 5
    mine = funnel_compute([clinic.pk], FunnelFilters())
    assert mine.steps[0].count == 4
    assert funnel_compute(None, FunnelFilters(clinic_id=other.pk)).steps[0].count == 1
    cardiac = funnel_compute(None, FunnelFilters(condition_group="cardiovascular"))
    assert cardiac.steps[0].count == 3  # the unplaced ones were never routed, so have no groups
    done = ReferralMilestones.objects.get(referral=history["done"])
    by_professional = funnel_compute(None, FunnelFilters(professional_id=done.professional_id))
    assert by_professional.steps[0].count == 3 and by_professional.steps[-1].count == 1  # one routing choice
    assert funnel_compute(None, FunnelFilters(professional_id=-1)).steps[0].count == 0
    tomorrow = timezone.now().date() + dt.timedelta(days=1)
    assert funnel_compute(None, FunnelFilters(received_from=tomorrow)).steps[0].count == 0


def test_the_weekly_counts_and_the_pavs_grid(history):
    milestones_refresh()
    weeks = referrals_per_week(None, FunnelFilters())
    assert sum(n for _, n in weeks) == 4 and all(w.weekday() == 0 for w, _ in weeks)
    grid = pavs_grid(None, FunnelFilters())
    assert grid == {(1, 6): 1, (1, 2): 1}  # baseline 30 -> 200 and 30 -> 60, in 30-minute bins


def test_an_incremental_refresh_picks_up_a_change_and_records_when(history):
    milestones_refresh()
    first = milestones_refreshed_at()
    accepted = history["accepted"]
    _attend(accepted, timezone.now() - dt.timedelta(days=1))
    assert milestones_refresh() >= 1  # only what changed since (with the margin), not every referral
    assert ReferralMilestones.objects.get(referral=accepted).first_session_at is not None
    assert milestones_refreshed_at() >= first


def test_the_funnel_is_one_query(history, django_assert_num_queries):
    milestones_refresh()
    with django_assert_num_queries(1):
        funnel_compute([history["done"].clinic_id], FunnelFilters(condition_group="x"))


def test_the_refresh_task_refreshes_the_rollup(clinic):
    from referrals.tasks import milestones_refresh_task

    referral_make(clinic, postal_code="")
    milestones_refresh_task()
    assert ReferralMilestones.objects.filter(clinic=clinic).count() == 1

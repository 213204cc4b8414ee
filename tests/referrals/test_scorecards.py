"""Outcome scorecards: per program and professional, within condition group, shown from 10 completed patients,
with Wilson and median intervals; and routing's optional outcomes component."""

import pytest

from referrals.models import ReferralStatus
from referrals.offers import referral_route
from referrals.scorecards import (
    MIN_COMPLETED,
    PROFESSIONAL,
    PROGRAM,
    median_interval,
    pavs_baseline_minutes,
    scorecards_compute,
    scorecards_current,
    scorecards_refresh,
    wilson_interval,
)
from tests.network.factories import km_north, referral_make, role_make
from tests.referrals.conftest import CARDIAC_PATIENT
from tests.referrals.scorecard_cases import closed_case_make, no_kept_scorecards  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_kept_scorecards")]


def card_of(cards, kind, subject_id, group="cardiovascular"):
    return next(c for c in cards.cards if (c.kind, c.subject_id, c.condition_group) == (kind, subject_id, group))


def test_wilson_interval_matches_the_published_value_for_8_of_10():
    interval = wilson_interval(8, 10)
    assert (round(interval.low, 3), round(interval.high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(10, 10).high == 1.0


def test_median_interval_takes_the_order_statistics_around_the_middle():
    assert median_interval([float(v) for v in range(1, 11)]) == median_interval(list(range(10, 0, -1)))
    interval = median_interval([float(v) for v in range(1, 101)])
    assert (interval.low, interval.high) == (40.0, 61.0)
    assert median_interval([]) is None


def test_the_baseline_is_minutes_per_week_or_days_times_minutes():
    assert pavs_baseline_minutes([{"code": "82290-8", "value": 45}]) == 45.0
    assert pavs_baseline_minutes([{"code": "89555-7", "value": 3}, {"code": "68516-4", "value": 20}]) == 60.0
    assert pavs_baseline_minutes([{"code": "89555-7", "value": 3}]) is None


def test_a_scorecard_is_shown_only_from_ten_completed_patients(clinic):
    role = role_make()
    for _ in range(MIN_COMPLETED - 1):
        closed_case_make(clinic, role)
    closed_case_make(clinic, role, status=ReferralStatus.FAILED)

    card = card_of(scorecards_compute(), PROFESSIONAL, role.professional_id)
    assert (card.completed, card.failed, card.shown) == (9, 1, False)

    closed_case_make(clinic, role)
    card = card_of(scorecards_compute(), PROFESSIONAL, role.professional_id)
    assert card.shown
    assert card.completion == pytest.approx(10 / 11)
    assert card.completion_interval.low < card.completion < card.completion_interval.high


def test_gain_share_and_median_change_count_completed_patients_with_both_pavs_values(clinic):
    role = role_make()
    for latest in (90, 90, 90, 90, 90, 90, 40, 40, 40, 40):  # +60 six times, +10 four times
        closed_case_make(clinic, role, baseline=30, latest=latest)
    closed_case_make(clinic, role, baseline=None, latest=200)  # no baseline: counts as completed, not measured
    closed_case_make(clinic, role, status=ReferralStatus.FAILED, latest=500)  # failed: never measured

    card = card_of(scorecards_compute(), PROGRAM, role.organization_id)
    assert (card.completed, card.measured, card.gained) == (11, 10, 6)
    assert card.gain_share == pytest.approx(0.6)
    assert card.median_change == 60.0
    assert card.median_change_interval.low == 10.0


def test_a_patient_counts_within_each_of_their_condition_groups_and_cancelled_cases_not_at_all(clinic):
    role = role_make()
    closed_case_make(clinic, role, groups=("cardiovascular", "metabolic"))
    closed_case_make(clinic, role, groups=())
    closed_case_make(clinic, role, status=ReferralStatus.CANCELLED)

    cards = scorecards_compute()
    assert card_of(cards, PROFESSIONAL, role.professional_id, "metabolic").completed == 1
    assert card_of(cards, PROFESSIONAL, role.professional_id, "cardiovascular").completed == 1
    assert card_of(cards, PROFESSIONAL, role.professional_id, "").condition_group_name == "No mapped condition"
    assert sum(c.closed for c in cards.cards if c.kind == PROGRAM) == 3  # 1 + 1 + 1 (two groups), no cancelled


def test_computing_the_scorecards_takes_two_queries_whatever_the_number_of_cases(
    clinic, django_assert_num_queries
):
    role, other = role_make(), role_make()
    for r in (role, other, role):
        closed_case_make(clinic, r)
    with django_assert_num_queries(2):
        cards = scorecards_compute()
    assert len(cards.cards) == 4  # two professionals and two programs, one group


def test_the_current_scorecards_are_kept_for_five_minutes(clinic):
    role = role_make()
    first = scorecards_current()
    closed_case_make(clinic, role)
    assert scorecards_current().computed_at == first.computed_at
    assert len(scorecards_refresh().cards) == 2


def test_a_process_reads_the_kept_cards_once_per_refresh_and_sees_another_process_refresh(clinic):
    from django.core.cache import cache

    from referrals import scorecards

    for _ in range(MIN_COMPLETED):
        closed_case_make(clinic, role_make(), baseline=30, latest=90)
    kept = scorecards_refresh()
    assert scorecards_current() is kept  # no unpickling while the refresh is the same
    assert all(not hasattr(c, "changes") for c in kept.cards)  # figures only: no patient's change is kept

    scorecards._memo.clear()  # as another process that has not read them yet
    read = scorecards_current()
    assert read is not kept and read.computed_at == kept.computed_at and len(read.cards) == len(kept.cards)
    assert scorecards_current() is read

    elsewhere = scorecards_compute().summarized()  # another process's refresh: only the cache knows of it
    cache.set_many({scorecards._CACHE_KEY: elsewhere, scorecards._STAMP_KEY: ("another", elsewhere.computed_at)})
    assert scorecards_current().computed_at == elsewhere.computed_at


def test_routing_leaves_outcomes_out_by_default(clinic):
    role_make(at=km_north(1))
    outcome = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT)
    assert "weights" not in outcome.decision.summary
    assert all("outcomes" not in c.get("components", {}) for c in outcome.decision.candidates)
    assert "outcomes" not in outcome.decision.gist


def test_with_outcomes_weighed_routing_prefers_the_record_and_says_by_how_much(clinic, settings):
    settings.HUB_ROUTING_OUTCOME_WEIGHT_PERCENT = 40
    near, proven = role_make(at=km_north(1)), role_make(at=km_north(4))
    for _ in range(12):
        closed_case_make(clinic, proven, baseline=30, latest=150)
        closed_case_make(clinic, near, baseline=30, latest=30)
    scorecards_refresh()

    outcome = referral_route(referral=referral_make(clinic, patient=CARDIAC_PATIENT), patient=CARDIAC_PATIENT)

    assert outcome.offer.role == proven
    assert outcome.decision.summary["weights"]["outcomes"] == 0.4
    assert sum(outcome.decision.summary["weights"].values()) == pytest.approx(1.0)
    components = {c["role"]: c["components"] for c in outcome.decision.candidates if c.get("components")}
    assert components[proven.fhir_id]["outcomes"] > 0.7
    assert components[near.fhir_id]["outcomes"] == 0.0
    assert "outcomes weighed 40%" in outcome.decision.gist
